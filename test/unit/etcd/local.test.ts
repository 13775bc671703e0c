// Against real etcd 3.4 members on 127.0.0.1 (TLS, client-cert auth): a
// bootstrap, the etcd client, cluster facts, the status report and a leader
// move — each through the real code, with real processes. Kept fast (a few seconds): the long scenarios are in
// test/lab/etcd-local.test.ts.
import { test } from 'uvu';
import '../../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { localCluster, type LocalCluster } from './helpers/local-cluster.js';
import { etcdClient } from '../../../src/connect/etcd.js';
import { gatherEtcdFacts, gatherEtcdNodeFacts } from '../../../src/facts/etcd.js';
import { planEtcd, type EtcdNodeView } from '../../../src/plan/etcd.js';
import { applyEtcdActions, agreedLeader, type EtcdApplyContext } from '../../../src/apply/etcd.js';
import { etcdStatus } from '../../../src/cli/status.js';
import { renderStatusText } from '../../../src/report/status.js';
import type { ResolvedEtcd } from '../../../src/model/types.js';

const NAMES = ['cp-a', 'cp-b', 'cp-c'];
let c: LocalCluster;
let spec: ResolvedEtcd;

function ctx(): EtcdApplyContext {
  return { spec, tls: c.tls, transport: (n) => c.transport(n), pollMs: 200 };
}

async function plan(restarts: Record<string, string[]> = {}) {
  const facts = await gatherEtcdFacts(spec, c.tls);
  const nodes: Record<string, EtcdNodeView> = {};
  for (const n of NAMES) nodes[n] = await gatherEtcdNodeFacts(c.transport(n), spec);
  return planEtcd(spec, facts, nodes, Object.entries(restarts).map(([node, b]) => ({ node, etcdRestartBecause: b })));
}

test.before(async () => {
  c = localCluster(NAMES, 24300);
  spec = c.spec(NAMES, { healthTimeoutSeconds: 15 });
  const p = await plan();
  assert.equal(p.actions.map((a) => a.type), ['etcd.bootstrap']);
  const r = await applyEtcdActions(p.actions, ctx());
  assert.ok(r.ok, r.error?.message);
});

test.after(async () => {
  // Absent when the before hook failed: its error is the one to read, not one from here.
  if (c !== undefined) await c.close();
});

test('bootstrap removed the initial env files and a second plan is empty', async () => {
  for (const n of NAMES) {
    const f = await gatherEtcdNodeFacts(c.transport(n), spec);
    assert.equal(f.paths[spec.initialEnvFile], { exists: false });
    assert.is(f.etcdDataDir?.empty, false, `${n} has a WAL`);
    assert.is(f.units['etcd.service']?.activeState, 'active');
  }
  assert.equal(await plan(), { actions: [], refusals: [], deferred: [] });
});

test('facts: three started voters, decimal-string IDs, one leader, all healthy, one client per member', async () => {
  const t0 = Date.now();
  const f = await gatherEtcdFacts(spec, c.tls);
  const ms = Date.now() - t0;
  assert.ok(ms < 1500, `facts took ${ms} ms`);
  assert.is(f.members.length, 3);
  for (const m of f.members) {
    assert.type(m.id, 'string');
    assert.match(m.id, /^\d+$/);
    assert.ok(m.name && m.clientUrls.length === 1 && !m.isLearner);
    const s = f.status[m.id]!;
    assert.is(s.id, m.id, 'status came from that very member');
    assert.ok(s.healthy && s.reachable);
  }
  // uint64 IDs do not fit a JS number: they must never pass through one.
  assert.ok(f.members.some((m) => BigInt(m.id) > BigInt(Number.MAX_SAFE_INTEGER)) || f.members.every((m) => String(Number(m.id)) === m.id));
  assert.ok(agreedLeader(f));
  assert.equal(f.alarms, []);
  assert.match(f.clusterId ?? '', /^\d+$/);
});

test('status: healthy report, one leader, text and JSON', async () => {
  const t0 = Date.now();
  const r = await etcdStatus({ spec, tls: c.tls, nodes: NAMES.map((n) => ({ name: n, address: '127.0.0.1' })), transport: (n) => c.transport(n) });
  const ms = Date.now() - t0;
  assert.ok(r.healthy, r.problems.join('; '));
  assert.is(r.members.filter((m) => m.leader).length, 1);
  assert.equal(r.nodes.map((n) => n.active), ['active', 'active', 'active']);
  const text = renderStatusText(r);
  assert.match(text, /HEALTHY — 3 started voters, leader cp-/);
  for (const n of NAMES) assert.match(text, new RegExp(`\\n\\d+\\s+${n}\\s+https://127\\.0\\.0\\.1:\\d+\\s+https://127\\.0\\.0\\.1:\\d+\\s+yes\\s+no\\s+(yes|no)\\s+\\d+\\s+healthy`));
  assert.ok(ms < 3000, `status took ${ms} ms`);
  process.stdout.write(`  [measured] status of 3 members + 3 units: ${ms} ms\n`);
});

test('leader move: leadership goes to the chosen member', async () => {
  const f = await gatherEtcdFacts(spec, c.tls);
  const from = agreedLeader(f)!;
  const to = f.members.find((m) => m.id !== from)!.id;
  const r = await applyEtcdActions([{ type: 'etcd.leader.move', node: '', resource: spec.id, fromMemberId: from, toMemberId: to, reason: 'test' }], ctx());
  assert.ok(r.ok, r.error?.message);
  const g = await gatherEtcdFacts(spec, c.tls);
  assert.is(agreedLeader(g), to);
  process.stdout.write(`  [measured] leader move: ${r.steps[0]!.timings.leaderMove} ms\n`);
});

test('a wrong CA is reported per member, not thrown', async () => {
  const f = await gatherEtcdFacts(spec, { ...c.tls, ca: c.tls.cert });
  assert.is(f.reachable, false);
  assert.equal(f.members, []);
  assert.match(f.error ?? '', /certificate/i);
});

test('etcdClient never retries a call on its own: a refused connection fails at once', async () => {
  const e = etcdClient({ ...c.tls, endpoints: ['https://127.0.0.1:1'], dialTimeoutMs: 5000 });
  const t0 = Date.now();
  try {
    await e.maintenance.status().then(
      () => assert.unreachable('status on a closed port answered'),
      (err: Error) => assert.match(err.message, /ECONNREFUSED|No connection established/),
    );
  } finally {
    e.close();
  }
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
});

test.run();
