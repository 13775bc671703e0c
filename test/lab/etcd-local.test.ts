// The etcd planner and its apply, end to end, against real etcd 3.4
// processes on 127.0.0.1 (TLS, client-cert auth) — facts → plan → apply →
// facts again, exactly as a pass does, on "nodes" that are directories with a
// systemd stand-in (see test/unit/etcd/helpers/local-cluster.ts). The same
// scenarios on the lab's real nodes and real systemd are in etcd.test.ts.
// Before the scenarios 1,000 keys are written; after each, all are there.
// While rollouts run, a writer puts a key every 100 ms through an ordinary
// client (which retries on another member) and counts what failed.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { localCluster, type LocalCluster } from '../unit/etcd/helpers/local-cluster.js';
import { writer, quorumWatch, writeKeys, assertKeys } from '../unit/etcd/helpers/load.js';
import { withEtcdClient } from '../../src/connect/etcd.js';
import { gatherEtcdFacts, gatherEtcdNodeFacts } from '../../src/facts/etcd.js';
import { planEtcd, type EtcdNodeView, type EtcdPlan } from '../../src/plan/etcd.js';
import { applyEtcdActions, agreedLeader, EtcdStepError, type EtcdApplyResult } from '../../src/apply/etcd.js';
import { etcdStatus } from '../../src/cli/status.js';
import type { ResolvedEtcd } from '../../src/model/types.js';
import type { EtcdAction } from '../../src/plan/types.js';

const ALL = ['cp-a', 'cp-b', 'cp-c', 'cp-d', 'cp-e'];
const THREE = ['cp-a', 'cp-b', 'cp-c'];
const FIVE = ALL;
const ENV = '/var/lib/etc/etcd.env';
let c: LocalCluster;
const figures: string[] = [];

function spec(members: string[], rollout: Partial<ResolvedEtcd['rollout']> = {}): ResolvedEtcd {
  return c.spec(members, { healthTimeoutSeconds: 30, learnerTimeoutSeconds: 30, ...rollout });
}

async function plan(s: ResolvedEtcd, restarts: Record<string, string[]> = {}): Promise<EtcdPlan> {
  const facts = await gatherEtcdFacts(s, c.tls, { extraUrls: ALL.map((n) => c.nodes.get(n)!.clientUrl) });
  const nodes: Record<string, EtcdNodeView> = {};
  for (const n of ALL) nodes[n] = await gatherEtcdNodeFacts(c.transport(n), s, [ENV]);
  return planEtcd(s, facts, nodes, Object.entries(restarts).map(([node, b]) => ({ node, etcdRestartBecause: b })), { nodes: ALL.map((n) => ({ name: n, address: '127.0.0.1' })) });
}

async function apply(s: ResolvedEtcd, actions: EtcdAction[]): Promise<EtcdApplyResult> {
  return applyEtcdActions(actions, { spec: s, tls: c.tls, transport: (n) => c.transport(n), pollMs: 200 });
}

const lines = (p: EtcdPlan): string[] =>
  p.actions.map((a) => {
    switch (a.type) {
      case 'etcd.member.restart':
      case 'etcd.member.add':
      case 'etcd.member.remove':
      case 'etcd.member.promote':
        return `${a.type} ${a.name}`;
      default:
        return a.type;
    }
  });

async function healthy(s: ResolvedEtcd, n: number): Promise<void> {
  const r = await etcdStatus({ spec: s, tls: c.tls, nodes: [], transport: (x) => c.transport(x) });
  assert.ok(r.healthy, r.problems.join('; '));
  assert.is(r.members.filter((m) => m.started && !m.learner && m.healthy).length, n);
  assert.is(r.members.filter((m) => m.leader).length, 1);
}

async function keysIntact(s: ResolvedEtcd): Promise<void> {
  await assertKeys(c.tls, s.members[0]!.clientUrl);
}

const writerFor = (s: ResolvedEtcd) => writer(c.tls, s.members.map((m) => m.clientUrl));

test.before(async () => {
  c = localCluster(ALL, 24900);
  const s = spec(THREE);
  const p = await plan(s);
  assert.equal(lines(p), ['etcd.bootstrap']);
  const t0 = Date.now();
  const r = await apply(s, p.actions);
  assert.ok(r.ok, r.error?.message);
  figures.push(`bootstrap of 3: ${Date.now() - t0} ms`);
  await writeKeys(c.tls, s.members[0]!.clientUrl);
});

test.after(async () => {
  // Absent when the before hook failed: its error is the one to read, not one from here.
  if (c !== undefined) await c.close();
  process.stdout.write(`\n  [measured]\n${figures.map((f) => `    ${f}`).join('\n')}\n`);
});

test('bootstrap: 3 started voters, one leader; a second plan restarts nothing', async () => {
  const s = spec(THREE);
  await healthy(s, 3);
  assert.equal(await plan(s), { actions: [], refusals: [], deferred: [] });
  await keysIntact(s);
});

test('rolling restart: followers first, the leader last after a leader move, quorum kept', async () => {
  const s = spec(THREE);
  const before = agreedLeader(await gatherEtcdFacts(s, c.tls))!;
  const p = await plan(s, { 'cp-a': [ENV], 'cp-b': [ENV], 'cp-c': [ENV] });
  assert.equal(p.actions.map((a) => a.type), ['etcd.member.restart', 'etcd.member.restart', 'etcd.leader.move', 'etcd.member.restart']);
  const last = p.actions[3]!;
  const facts = await gatherEtcdFacts(s, c.tls);
  assert.is(facts.members.find((m) => m.name === (last as { name: string }).name)!.id, before, 'the leader restarts last');
  const w = writerFor(s);
  const q = quorumWatch(s, c.tls);
  const t0 = Date.now();
  const r = await apply(s, p.actions);
  const figs = w.stop();
  const quorumSeen = await q.stop();
  assert.ok(quorumSeen.minHealthy >= 2, `healthy voters dropped to ${quorumSeen.minHealthy}`);
  assert.ok(r.ok, r.error?.message);
  figures.push(`rolling restart of 3: ${Date.now() - t0} ms; writer: ${figs.ok} ok, ${figs.failed} failed, longest outage ${figs.longestOutageMs} ms`);
  figures.push(`leader move: ${r.steps[2]!.timings.leaderMove} ms; member back healthy after restart: ${r.steps.filter((x) => x.timings.backHealthy).map((x) => x.timings.backHealthy).join(', ')} ms`);
  // Writes failing while the leader moves are a figure (they depend on the machine's load), not a bound; quorum and the data are the bounds.
  assert.ok(figs.ok > 0, 'writes went through during the rollout');
  await healthy(s, 3);
  await keysIntact(s);
  assert.equal((await plan(s)).actions, [], 'nothing is restarted twice');
});

test('scale 3 → 5 → 3: one member at a time, learner then voter; leaving members stopped with their data aside', async () => {
  const s5 = spec(FIVE);
  const p = await plan(s5);
  assert.equal(lines(p), ['etcd.member.add cp-d', 'etcd.member.add cp-e']);
  const w = writerFor(spec(THREE));
  const t0 = Date.now();
  const r = await apply(s5, p.actions);
  assert.ok(r.ok, r.error?.message);
  figures.push(`3 → 5: ${Date.now() - t0} ms; add → promoted: ${r.steps.map((x) => x.timings.promote).join(', ')} ms; add → healthy voter: ${r.steps.map((x) => x.timings.addToHealthy).join(', ')} ms`);
  await healthy(s5, 5);
  for (const n of ['cp-d', 'cp-e']) assert.equal((await gatherEtcdNodeFacts(c.transport(n), s5)).paths[s5.initialEnvFile], { exists: false });

  const s3 = spec(THREE);
  const q = await plan(s3);
  assert.equal(lines(q).filter((l) => l !== 'etcd.leader.move'), ['etcd.member.remove cp-d', 'etcd.member.remove cp-e']);
  const t1 = Date.now();
  const r2 = await apply(s3, q.actions);
  const figs = w.stop();
  assert.ok(r2.ok, r2.error?.message);
  figures.push(`5 → 3: ${Date.now() - t1} ms; writer during 3→5→3: ${figs.ok} ok, ${figs.failed} failed`);
  await healthy(s3, 3);
  for (const n of ['cp-d', 'cp-e']) {
    const f = await gatherEtcdNodeFacts(c.transport(n), s3);
    assert.is(f.units['etcd.service']!.activeState, 'inactive');
    assert.is(f.units['etcd.service']!.unitFileState, 'disabled');
    assert.is(f.etcdDataDir!.empty, true);
    assert.ok(readdirSync(c.nodes.get(n)!.root).some((d) => d.startsWith('etcd.removed-')), 'data dir moved aside');
  }
  // Writes failing while the leader moves are a figure (they depend on the machine's load), not a bound; quorum and the data are the bounds.
  assert.ok(figs.ok > 0, 'writes went through during the rollout');
  await keysIntact(s3);
  assert.equal((await plan(s3)).actions, []);
});

test('removing two of three is refused and nothing changes', async () => {
  const p = await plan(spec(['cp-a']));
  assert.equal(p.actions, []);
  assert.is(p.refusals.length, 1);
  assert.match(p.refusals[0]!.message, /refusing to shrink the etcd cluster from 3 to 1 member/);
  await healthy(spec(THREE), 3);
});

test('a member whose data dir is wiped is replaced (remove, then add)', async () => {
  const s = spec(THREE);
  await c.sh('cp-c', 'systemctl stop etcd.service && rm -rf /var/lib/etcd/member');
  const p = await plan(s);
  assert.equal(lines(p), ['etcd.member.remove cp-c', 'etcd.member.add cp-c']);
  const t0 = Date.now();
  const r = await apply(s, p.actions);
  assert.ok(r.ok, r.error?.message);
  figures.push(`replace of a wiped member: ${Date.now() - t0} ms`);
  await healthy(s, 3);
  await keysIntact(s);
});

test('a member that does not come back halts the rollout with its journal, quorum kept; the next pass finishes it', async () => {
  const s = spec(THREE, { healthTimeoutSeconds: 6 });
  const leader = agreedLeader(await gatherEtcdFacts(s, c.tls))!;
  const facts = await gatherEtcdFacts(s, c.tls);
  const follower = facts.members.find((m) => m.id !== leader)!.name;
  // A broken flag on the first follower to restart, the same harmless change elsewhere.
  for (const n of THREE) c.writeEnv(n, [n === follower ? 'ETCD_QUOTA_BACKEND_BYTES=not-a-number' : 'ETCD_SNAPSHOT_COUNT=50000']);
  const p = await plan(s);
  assert.is(p.actions[0]!.type, 'etcd.member.restart');
  assert.is((p.actions[0] as { name: string }).name, follower, 'pending restarts come from the node facts (env newer than the process)');
  assert.equal((p.actions[0] as { because: string[] }).because, [ENV]);
  const r = await apply(s, p.actions);
  assert.not.ok(r.ok);
  assert.is(r.steps.length, 1, 'the rollout stopped at the member that did not come back');
  assert.ok(r.error instanceof EtcdStepError);
  assert.match(r.error!.message, new RegExp(`${follower} did not come back healthy.*2 of 3 voters healthy`));
  const journal = (r.error!.data['journal'] as string[]).join('\n');
  assert.match(journal, /not-a-number|invalid/i);
  const mid = await etcdStatus({ spec: s, tls: c.tls, nodes: [], transport: (x) => c.transport(x) });
  assert.not.ok(mid.healthy);
  assert.is(mid.members.filter((m) => m.healthy).length, 2, 'quorum kept');

  c.writeEnv(follower, ['ETCD_SNAPSHOT_COUNT=50000']);
  const q = await plan(s);
  assert.equal(q.actions.filter((a) => a.type === 'etcd.member.restart').length, 3, `the next pass finishes the rollout: ${JSON.stringify(lines(q))}`);
  const r2 = await apply(s, q.actions);
  assert.ok(r2.ok, r2.error?.message);
  await healthy(s, 3);
  assert.equal((await plan(s)).actions, []);
  await keysIntact(s);
});

test('a crashed member is started again', async () => {
  const s = spec(THREE);
  await c.crash('cp-b');
  // If cp-b led, the planner rightly refuses to act until the others have elected a leader; a pass a moment later acts.
  for (let i = 0; i < 60 && agreedLeader(await gatherEtcdFacts(s, c.tls)) === null; i++) await new Promise((r) => setTimeout(r, 250));
  const p = await plan(s);
  assert.equal(p.actions.map((a) => a.type === 'etcd.member.restart' && a.because.join(',')), ['etcd.service is failed'], JSON.stringify(p.refusals));
  const r = await apply(s, p.actions);
  assert.ok(r.ok, r.error?.message);
  await healthy(s, 3);
});

test('an add interrupted after memberAdd is finished, not added twice', async () => {
  const s4 = spec(['cp-a', 'cp-b', 'cp-c', 'cp-d']);
  await c.sh('cp-d', 'systemctl enable etcd.service');
  // etcd refuses adds for 5 s after a member (re)connects ("unhealthy cluster"): try until it takes it.
  await withEtcdClient({ ...c.tls, endpoints: [s4.members[0]!.clientUrl] }, async (e) => {
    for (let i = 0; ; i++) {
      try {
        await e.cluster.memberAdd({ peerURLs: [c.nodes.get('cp-d')!.peerUrl], isLearner: true });
        return;
      } catch (err) {
        if (i > 30 || !/unhealthy cluster/.test(String(err))) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  });
  const p = await plan(s4);
  assert.equal(lines(p), ['etcd.member.add cp-d']);
  assert.ok((p.actions[0] as { memberId?: string }).memberId, 'resumes the existing learner');
  const r = await apply(s4, p.actions);
  assert.ok(r.ok, r.error?.message);
  assert.match(r.steps[0]!.detail.join('\n'), /not added again/);
  await healthy(s4, 4);
  const back = await apply(spec(THREE), (await plan(spec(THREE))).actions);
  assert.ok(back.ok, back.error?.message);
  await healthy(spec(THREE), 3);
});

test('a learner that never catches up is removed again, and the cluster is as before', async () => {
  const s4 = spec(['cp-a', 'cp-b', 'cp-c', 'cp-e'], { learnerTimeoutSeconds: 4 });
  await c.sh('cp-e', 'systemctl enable etcd.service');
  c.writeEnv('cp-e', ['ETCD_PEER_CERT_FILE=/nonexistent/peer.pem']);
  const p = await plan(s4);
  assert.equal(lines(p), ['etcd.member.add cp-e']);
  const r = await apply(s4, p.actions);
  assert.not.ok(r.ok);
  assert.match(r.error!.message, /learner cp-e did not catch up within 4 s .*removed again/);
  assert.ok((r.error!.data['journal'] as string[]).length > 0, 'journal lines are reported');
  const f = await gatherEtcdFacts(spec(THREE), c.tls);
  assert.is(f.members.length, 3);
  assert.not.ok(f.members.some((m) => m.isLearner));
  c.writeEnv('cp-e');
  await healthy(spec(THREE), 3);
  await keysIntact(spec(THREE));
});

test('an interrupted bootstrap (one member started, waiting for quorum) is finished', async () => {
  const d = localCluster(['cp-a', 'cp-b', 'cp-c'], 25100);
  try {
    const s = d.spec(['cp-a', 'cp-b', 'cp-c'], { healthTimeoutSeconds: 30 });
    const ctx = { spec: s, tls: d.tls, transport: (n: string) => d.transport(n), pollMs: 200 };
    const nodeFacts = async () => Object.fromEntries(await Promise.all(['cp-a', 'cp-b', 'cp-c'].map(async (n) => [n, await gatherEtcdNodeFacts(d.transport(n), s)] as const)));
    const p = planEtcd(s, await gatherEtcdFacts(s, d.tls), await nodeFacts(), []);
    const boot = p.actions[0]!;
    assert.is(boot.type, 'etcd.bootstrap');
    // What a bootstrap leaves when converge dies between the starts: every initial env written, one member started.
    const text = (await import('../../src/plan/etcd.js')).initialEnvText((boot as { initialCluster: string }).initialCluster, 'new');
    for (const n of ['cp-a', 'cp-b', 'cp-c']) writeFileSync(join(d.nodes.get(n)!.root, 'etc', 'etcd-initial.env'), text);
    await d.sh('cp-a', 'systemctl start etcd.service');
    await new Promise((r) => setTimeout(r, 1500));
    const q = planEtcd(s, await gatherEtcdFacts(s, d.tls), await nodeFacts(), []);
    assert.equal(q.actions.map((a) => a.type), ['etcd.bootstrap']);
    assert.match(q.actions[0]!.reason, /finish the bootstrap begun earlier: cp-a started/);
    const r = await applyEtcdActions(q.actions, ctx);
    assert.ok(r.ok, r.error?.message);
    const st = await etcdStatus({ spec: s, tls: d.tls, nodes: [], transport: (n) => d.transport(n) });
    assert.ok(st.healthy, st.problems.join('; '));
  } finally {
    await d.close();
  }
});

test('clients are closed: a process that gathers facts exits on its own', () => {
  const s = spec(THREE);
  const script = join(c.dir, 'exit-check.mts');
  const here = new URL('../../src/facts/etcd.ts', import.meta.url).pathname;
  const tls = `{ ca: Buffer.from(${JSON.stringify(c.tls.ca.toString())}), cert: Buffer.from(${JSON.stringify(c.tls.cert.toString())}), key: Buffer.from(${JSON.stringify(c.tls.key.toString())}) }`;
  writeFileSync(script, `import { gatherEtcdFacts } from ${JSON.stringify(here)};\nconst f = await gatherEtcdFacts(${JSON.stringify(s)}, ${tls});\nprocess.stdout.write(String(f.members.length));\n`);
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--no-deprecation', '--import', 'tsx', script], { encoding: 'utf8', timeout: 20_000 });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stdout.trim(), '3');
  figures.push(`a process that gathers facts exits ${Date.now() - t0} ms after it starts (tsx included)`);
  assert.ok(existsSync(script));
});

test.run();
