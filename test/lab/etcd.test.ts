// The etcd issue's scenarios on the lab: real nodes, real systemd, real etcd
// 3.4 installed by converge itself, TLS with client-cert auth. Each scenario
// is one or more full reconcile passes (facts → plan → apply → verify) on
// desired states derived from desired-state/, on this suite's own nodes
// et-a … et-e. 1,000 keys are written after the bootstrap and checked after
// every scenario; while rollouts run, a writer puts a key every 100 ms and a
// watcher counts the healthy voters every 250 ms.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';
import { writeDesired, type Doc } from '../helpers/desired.js';
import { labReset, startNode, stopNode, runOnNode } from '../../src/lab/index.js';
import { fsSource } from '../../src/model/index.js';
import { openSession, type PassConfig, type Session } from '../../src/reconcile/session.js';
import { gatherAndPlan, applyPlan, type ApplyReport } from '../../src/reconcile/pass.js';
import { loadEtcdTls, type EtcdTls } from '../../src/connect/etcd.js';
import { etcdStatus } from '../../src/cli/status.js';
import { planHasChanges } from '../../src/plan/plan.js';
import type { ResolvedEtcd } from '../../src/model/types.js';
import type { EtcdAction, Plan } from '../../src/plan/types.js';
import type { StatusReport } from '../../src/report/status.js';
import { writer, quorumWatch, writeKeys, assertKeys } from '../unit/etcd/helpers/load.js';

const NODES = ['et-a', 'et-b', 'et-c', 'et-d', 'et-e'];
const THREE = NODES.slice(0, 3);
let lab: TestLab;
let cfg: PassConfig;
let tls: EtcdTls;
const figures: string[] = [];

/** desired-state/ on this suite's nodes, with `members` as the etcd members (and the control-plane role). */
function desired(members: string[], envExtra: string[] = []): string {
  const chapter = ['cp-a', 'cp-b', 'cp-c'];
  const nodes = Object.fromEntries(chapter.map((c, i) => [c, { name: NODES[i]!, address: lab.node(NODES[i]!).address }]));
  const role = (name: string): Record<string, string> => (members.includes(name) ? { role: 'control-plane' } : {});
  const extra: Doc[] = NODES.slice(3).map((n) => ({ kind: 'Node', metadata: { name: n, labels: role(n) }, spec: { address: lab.node(n).address } }));
  const env = readFileSync(join(projectDir, 'desired-state', 'templates', 'etcd.env'), 'utf8');
  return writeDesired({
    nodes,
    edit: (d) => {
      if (d.kind === 'Node') return { ...d, metadata: { ...d.metadata, labels: role(d.metadata.name) } };
      if (d.kind === 'EtcdCluster') return { ...d, spec: { ...d.spec, members: members.map((node) => ({ node })) } };
      return d;
    },
    extra,
    files: envExtra.length > 0 ? { 'templates/etcd.env': env + envExtra.join('\n') + '\n' } : {},
  });
}

interface PassResult {
  plan: Plan;
  report: ApplyReport | null;
  spec: ResolvedEtcd;
  log: string[];
}

/** One pass over `nodes` (default the three members; a scale step names the nodes that come and go). */
async function pass(dir: string, o: { apply?: boolean; nodes?: string[]; onLog?: (line: string) => void } = {}): Promise<PassResult> {
  const s: Session = await openSession(cfg, { files: fsSource(dir), commit: null }, o.nodes ?? THREE);
  const log: string[] = [];
  const onLine = (line: string): void => {
    log.push(line);
    o.onLog?.(line);
  };
  try {
    const { g, plan } = await gatherAndPlan(s, { log: onLine });
    const report = o.apply ? await applyPlan(s, plan, g, { log: onLine }) : null;
    return { plan, report, spec: s.state.etcd!, log };
  } finally {
    await s.close();
  }
}

function ok(r: PassResult): void {
  assert.ok(r.report, 'applied');
  const left = (r.report!.verify?.nodes ?? []).flatMap((n) => n.actions.map((a) => `${n.node}: ${a.type} (${a.reason})`));
  assert.ok(r.report!.ok, [...r.report!.errors.map((e) => `${e.message}${e.hint ? ` (${e.hint})` : ''}`), ...left, ...(r.report!.verify?.etcd ?? []).map((a) => `etcd: ${a.type} (${a.reason})`)].join('\n'));
}

function etcdSteps(p: Plan): string[] {
  return p.etcd.map((a: EtcdAction) => ('name' in a ? `${a.type} ${a.name}` : a.type));
}

async function status(spec: ResolvedEtcd): Promise<StatusReport> {
  const members = spec.members.map((m) => m.node);
  const s = await openSession(cfg, { files: fsSource(desired(members)), commit: null }, members);
  try {
    return await etcdStatus({ spec, tls, nodes: s.state.nodes, transport: (n) => s.transports.get(n) ?? s.unreachable.get(n) });
  } finally {
    await s.close();
  }
}

async function healthy(spec: ResolvedEtcd, voters: number): Promise<void> {
  const r = await status(spec);
  assert.ok(r.healthy, r.problems.join('; '));
  assert.is(r.members.filter((m) => m.started && !m.learner && m.healthy).length, voters);
  assert.is(r.members.filter((m) => m.leader).length, 1);
}

const urls = (spec: ResolvedEtcd): string[] => spec.members.map((m) => m.clientUrl);

test.before(async () => {
  lab = await ensureLab({ nodes: NODES });
  await Promise.all(NODES.map((n) => labReset(n)));
  cfg = {
    sshKey: lab.sshKey,
    knownHosts: lab.knownHosts,
    parallel: 64,
    connectTimeoutMs: 10_000,
    commandTimeoutMs: 300_000,
    secretsDir: lab.secretsDir,
    artifactsDir: lab.artifactsDir,
  };
});

test.after(() => {
  process.stdout.write(`\n  [measured]\n${figures.map((f) => `    ${f}`).join('\n')}\n`);
});

test('bootstrap 3 empty nodes: 3 started voters, 1 leader, over TLS; a second apply restarts nothing', async () => {
  const dir = desired(THREE);
  const first = await pass(dir);
  assert.equal(etcdSteps(first.plan), ['etcd.bootstrap']);
  const t0 = Date.now();
  const applied = await pass(dir, { apply: true });
  ok(applied);
  figures.push(`fresh nodes → bootstrapped cluster (host install + bootstrap): ${Date.now() - t0} ms`);
  tls = await loadEtcdTls(applied.spec.client);
  await healthy(applied.spec, 3);
  for (const n of THREE) assert.is((await runOnNode(n, 'test -e /etc/etcd/etcd-initial.env && echo yes || echo no')).stdout.trim(), 'no');
  await writeKeys(tls, urls(applied.spec)[0]!);

  const pids = await Promise.all(THREE.map(async (n) => (await runOnNode(n, 'systemctl show -p MainPID --value etcd.service')).stdout.trim()));
  const second = await pass(dir, { apply: true });
  ok(second);
  assert.equal(second.plan.etcd, []);
  assert.not.ok(planHasChanges(second.plan), 'the second plan has no changes');
  const after = await Promise.all(THREE.map(async (n) => (await runOnNode(n, 'systemctl show -p MainPID --value etcd.service')).stdout.trim()));
  assert.equal(after, pids, 'no member was restarted');
  const st = await status(applied.spec);
  figures.push(`converge status (3 members over TLS + 3 units over SSH): ${st.elapsedMs} ms`);
});

test('one etcd flag changed in the env template: rolling restart, leader last, quorum kept', async () => {
  const dir = desired(THREE, ['ETCD_SNAPSHOT_COUNT=20000']);
  const planned = await pass(dir);
  const steps = etcdSteps(planned.plan);
  assert.equal(steps.map((x) => x.split(' ')[0]), ['etcd.member.restart', 'etcd.member.restart', 'etcd.leader.move', 'etcd.member.restart']);
  for (const r of planned.plan.etcd) if (r.type === 'etcd.member.restart') assert.equal(r.because, ['/etc/etcd/etcd.env']);
  const spec = planned.spec;
  const w = writer(tls, urls(spec));
  const q = quorumWatch(spec, tls);
  const t0 = Date.now();
  const applied = await pass(dir, { apply: true });
  const figs = w.stop();
  const seen = await q.stop();
  ok(applied);
  const leaderMove = applied.log.find((l) => /leadership moved/.test(l)) ?? '';
  figures.push(`rolling restart of 3 (env change): ${Date.now() - t0} ms; ${leaderMove.trim()}`);
  figures.push(`writer during the rolling restart: ${figs.ok} ok, ${figs.failed} failed, longest outage ${figs.longestOutageMs} ms; healthy voters never below ${seen.minHealthy} of ${seen.voters} (${seen.samples} samples)`);
  assert.ok(seen.minHealthy >= 2, `quorum lost: ${seen.minHealthy} healthy`);
  for (const n of THREE) assert.match((await runOnNode(n, 'tr "\\0" "\\n" < /proc/$(systemctl show -p MainPID --value etcd.service)/environ | grep ETCD_SNAPSHOT_COUNT')).stdout, /20000/);
  await healthy(spec, 3);
  await assertKeys(tls, urls(spec)[0]!);
  const again = await pass(dir);
  assert.equal(again.plan.etcd, [], 'nothing is restarted twice');
});

test('scale 3 → 5 → 3 by commits to the desired state', async () => {
  const five = desired(NODES, ['ETCD_SNAPSHOT_COUNT=20000']);
  const p5 = await pass(five, { nodes: NODES });
  assert.equal(etcdSteps(p5.plan), ['etcd.member.add et-d', 'etcd.member.add et-e']);
  const w = writer(tls, urls(p5.spec).slice(0, 3));
  const t0 = Date.now();
  const up = await pass(five, { apply: true, nodes: NODES });
  ok(up);
  figures.push(`3 → 5: ${Date.now() - t0} ms (${up.log.filter((l) => /promoted after|healthy voter/.test(l)).map((l) => l.trim()).join('; ')})`);
  await healthy(up.spec, 5);

  const three = desired(THREE, ['ETCD_SNAPSHOT_COUNT=20000']);
  const p3 = await pass(three, { nodes: NODES });
  assert.equal(etcdSteps(p3.plan).filter((x) => x !== 'etcd.leader.move'), ['etcd.member.remove et-d', 'etcd.member.remove et-e']);
  const t1 = Date.now();
  const down = await pass(three, { apply: true, nodes: NODES });
  const figs = w.stop();
  ok(down);
  figures.push(`5 → 3: ${Date.now() - t1} ms; writer during 3 → 5 → 3: ${figs.ok} ok, ${figs.failed} failed, longest outage ${figs.longestOutageMs} ms`);
  await healthy(down.spec, 3);
  for (const n of ['et-d', 'et-e']) {
    const out = (await runOnNode(n, 'systemctl is-active etcd.service; systemctl is-enabled etcd.service 2>&1; ls -d /var/lib/etcd.removed-* | wc -l')).stdout;
    assert.match(out, /^(inactive|failed)\n/);
    assert.match(out, /\n1\n$/, 'the data dir was moved aside');
  }
  await assertKeys(tls, urls(down.spec)[0]!);
});

test('a wiped member node (lab reset) is replaced', async () => {
  const dir = desired(THREE, ['ETCD_SNAPSHOT_COUNT=20000']);
  await labReset('et-c');
  const p = await pass(dir);
  assert.equal(etcdSteps(p.plan), ['etcd.member.remove et-c', 'etcd.member.add et-c']);
  const t0 = Date.now();
  const r = await pass(dir, { apply: true });
  ok(r);
  figures.push(`replace of a wiped member (host reinstall + remove + add): ${Date.now() - t0} ms`);
  await healthy(r.spec, 3);
  await assertKeys(tls, urls(r.spec)[0]!);
});

test('a node stopped in the middle of a rolling restart: the rollout halts with quorum kept; back, the next pass finishes', async () => {
  const dir = desired(THREE, ['ETCD_SNAPSHOT_COUNT=30000']);
  const planned = await pass(dir);
  const restarts = planned.plan.etcd.filter((a): a is Extract<EtcdAction, { type: 'etcd.member.restart' }> => a.type === 'etcd.member.restart');
  assert.is(restarts.length, 3);
  const victim = restarts[1]!.node;
  let stopped: Promise<void> | null = null;
  const q = quorumWatch(planned.spec, tls);
  const halted = await pass(dir, {
    apply: true,
    onLog: (line) => {
      // Mid-rollout: the first member is back and healthy, the victim is next.
      // (Stopping a second node while the first is down would be a double
      // fault that no rollout can survive with 3 members.)
      if (!stopped && /etcd: step 2\//.test(line)) stopped = stopNode(victim);
    },
  });
  await stopped;
  const seen = await q.stop();
  try {
    assert.ok(halted.report);
    assert.not.ok(halted.report!.ok, 'the rollout halted');
    assert.ok(seen.minHealthy >= 2, `quorum lost: ${seen.minHealthy} healthy`);
    const mid = await status(planned.spec);
    assert.is(mid.members.filter((m) => m.healthy).length, 2, 'two of three stay healthy');
  } finally {
    // The following scenarios need the node back, whatever happened here.
    await startNode(victim);
  }
  const t0 = Date.now();
  let finished: PassResult | null = null;
  for (let i = 0; i < 3 && !finished?.report?.ok; i++) finished = await pass(dir, { apply: true });
  ok(finished!);
  figures.push(`rollout finished after the stopped node came back: ${Date.now() - t0} ms`);
  await healthy(planned.spec, 3);
  for (const n of THREE) assert.match((await runOnNode(n, 'tr "\\0" "\\n" < /proc/$(systemctl show -p MainPID --value etcd.service)/environ | grep ETCD_SNAPSHOT_COUNT')).stdout, /30000/, `${n} runs the new env`);
  assert.equal((await pass(dir)).plan.etcd, []);
  await assertKeys(tls, urls(planned.spec)[0]!);
});

test('removing two of three members is refused with a clear message, and nothing changes', async () => {
  const dir = desired(['et-a'], ['ETCD_SNAPSHOT_COUNT=30000']);
  const p = await pass(dir);
  assert.equal(p.plan.etcd, []);
  assert.is(p.plan.refusals.length, 1);
  assert.match(p.plan.refusals[0]!.message, /refusing to shrink the etcd cluster from 3 to 1 member: removing et-b, et-c passes through 2 members/);
  assert.ok(p.plan.refusals[0]!.hint.length > 0);
  const r = await pass(dir, { apply: true });
  assert.not.ok(r.report!.ok);
  assert.is(r.report!.errors[0]!.code, 'E_ETCD_UNSAFE');
  assert.equal(r.report!.nodes, [], 'no node was touched');
  const spec3 = (await pass(desired(THREE, ['ETCD_SNAPSHOT_COUNT=30000']))).spec;
  await healthy(spec3, 3);
  await assertKeys(tls, urls(spec3)[0]!);
});

test('two members rebooted a moment ago and still starting: the pass waits for them instead of refusing for lost quorum', async () => {
  const dir = desired(THREE, ['ETCD_SNAPSHOT_COUNT=30000']);
  const spec = (await pass(dir)).spec;
  const slow = ['et-b', 'et-c'];
  // A start that takes 35 s, longer than the etcd facts wait out an election (10 s, each answer
  // after a patient retry of up to 10 s): the refusal then stands when the plan is first made,
  // and only the pass's own wait lifts it.
  const dropIn = '/etc/systemd/system/etcd.service.d/converge-test-slow-start.conf';
  try {
    for (const n of slow) {
      const r = await runOnNode(n, `mkdir -p ${dropIn.replace(/\/[^/]+$/, '')} && printf '[Service]\\nExecStartPre=/bin/sleep 35\\n' > ${dropIn} && systemctl daemon-reload && systemctl stop etcd.service && systemctl start --no-block etcd.service && systemctl show -p ActiveState --value etcd.service`);
      assert.is(r.stdout.trim(), 'activating', `${n}: ${r.stderr}`);
    }
    const t0 = Date.now();
    const r = await pass(dir, { apply: true });
    ok(r);
    assert.ok(r.log.some((l) => /etcd is still starting on et-b, et-c: waiting up to 30 s/.test(l)), r.log.join('\n'));
    assert.ok(r.log.includes('etcd finished starting'), r.log.join('\n'));
    assert.equal(r.plan.refusals, []);
    figures.push(`pass started while 2 of 3 members were starting (35 s ExecStartPre): waited and converged in ${Date.now() - t0} ms`);
    await healthy(spec, 3);
  } finally {
    for (const n of slow) await runOnNode(n, `rm -f ${dropIn} && systemctl daemon-reload && systemctl start etcd.service`);
  }
  await assertKeys(tls, urls(spec)[0]!);
});

test.run();
