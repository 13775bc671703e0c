// The etcd planner, driven by data: one JSON fixture per case under
// test/fixtures/etcd/plan/, one runner. A fixture describes the desired
// members, the cluster as gathered (compactly, or as full EtcdFacts), each
// node's etcd facts, and the restart causes of the host plans; it expects
// the actions (one line each), refusals and deferrals (regular expressions).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planEtcd, bootstrapInitialCluster, initialEnvText, sha256Hex, type EtcdNodeView } from '../../../src/plan/etcd.js';
import type { EtcdFacts, EtcdMemberStatus } from '../../../src/facts/types.js';
import type { ResolvedEtcd } from '../../../src/model/types.js';
import type { EtcdAction } from '../../../src/plan/types.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/etcd/plan');

interface ClusterMember {
  name: string;
  id: string;
  learner?: boolean;
  started?: boolean;
  healthy?: boolean;
  reachable?: boolean;
  leader?: boolean;
  /** The leader this member sees, when it differs from the agreed one. */
  sees?: string | null;
  error?: string;
  raftIndex?: string;
  /** Peer URL when it is not the node's (a member on a node unknown to the desired state). */
  peerUrl?: string;
}

interface NodeSpec {
  unit?: string;
  data?: 'empty' | 'data' | 'unknown';
  initialEnv?: 'bootstrap' | 'other';
  pending?: string[];
}

interface Fixture {
  description: string;
  members: string[];
  cluster?: ClusterMember[];
  /** Full facts instead of `cluster` (e.g. recorded from a real cluster). */
  etcd?: EtcdFacts;
  clusterReachable?: boolean;
  alarms?: { memberId: string; alarm: string }[];
  foreign?: { node: string; memberId: string; clusterId: string }[];
  /** Node name → facts overrides; null: the node cannot be reached. */
  nodes?: Record<string, NodeSpec | null>;
  restarts?: Record<string, string[]>;
  /** starting: the members the refusals name as still starting (a pass waits for them), none when absent. */
  expect: { actions: string[]; refusals?: string[]; deferred?: string[]; reasons?: Record<string, string>; starting?: string[] };
}

const address = (node: string): string => {
  const k = node.charCodeAt(node.length - 1) - 'a'.charCodeAt(0);
  return `10.240.${16 + 32 * k}.10`;
};
const peerUrl = (node: string): string => `https://${address(node)}:2380`;
const clientUrl = (node: string): string => `https://${address(node)}:2379`;

function specFor(members: string[]): ResolvedEtcd {
  return {
    id: 'EtcdCluster/main',
    name: 'main',
    members: members.map((n) => ({ name: n, node: n, address: address(n), peerUrl: peerUrl(n), clientUrl: clientUrl(n) })),
    clientPort: 2379,
    peerPort: 2380,
    dataDir: '/var/lib/etcd',
    token: 'etcd-cluster-main',
    unit: 'etcd.service',
    initialEnvFile: '/etc/etcd/etcd-initial.env',
    client: { caFile: '/secrets/ca.pem', certFile: '/secrets/client.pem', keyFile: '/secrets/client-key.pem' },
    rollout: { healthTimeoutSeconds: 60, learnerTimeoutSeconds: 120 },
    at: { file: 'etcd.yaml', line: 1, col: 1 },
  };
}

function etcdFactsFor(f: Fixture): EtcdFacts {
  if (f.etcd) return f.etcd;
  const cluster = f.cluster ?? [];
  const leader = cluster.find((m) => m.leader)?.id ?? null;
  const status: Record<string, EtcdMemberStatus> = {};
  for (const m of cluster) {
    const started = m.started ?? true;
    const reachable = m.reachable ?? (started && (m.healthy ?? true));
    status[m.id] = {
      id: m.id,
      reachable,
      leader: reachable ? (m.sees === undefined ? leader : m.sees) : null,
      raftIndex: reachable ? (m.raftIndex ?? '1000') : null,
      raftTerm: reachable ? '5' : null,
      dbSize: reachable ? 20480 : null,
      version: reachable ? '3.4.23' : null,
      healthy: reachable && !m.learner && (m.healthy ?? true),
      clusterId: '777',
      ...(m.error ? { error: m.error } : {}),
    };
  }
  const facts: EtcdFacts = {
    reachable: f.clusterReachable ?? cluster.some((m) => status[m.id]?.reachable),
    members: cluster.map((m) => {
      const started = m.started ?? true;
      return { id: m.id, name: started ? m.name : '', peerUrls: [m.peerUrl ?? peerUrl(m.name)], clientUrls: started ? [clientUrl(m.name)] : [], isLearner: m.learner ?? false };
    }),
    status,
    alarms: f.alarms ?? [],
  };
  if (cluster.length > 0) facts.clusterId = '777';
  if (f.foreign) facts.foreign = f.foreign.map((x) => ({ url: clientUrl(x.node), memberId: x.memberId, clusterId: x.clusterId }));
  return facts;
}

function nodeFactsFor(f: Fixture, spec: ResolvedEtcd): Record<string, EtcdNodeView> {
  const names = new Set([...f.members, ...(f.cluster ?? []).map((m) => m.name), ...Object.keys(f.nodes ?? {})]);
  const out: Record<string, EtcdNodeView> = {};
  const bootstrapSha = sha256Hex(initialEnvText(bootstrapInitialCluster(spec), 'new'));
  for (const name of names) {
    const o = f.nodes?.[name];
    if (o === null) continue;
    const member = (f.cluster ?? []).find((m) => m.name === name);
    const running = member !== undefined && (member.started ?? true);
    const unit = o?.unit ?? (running ? 'active' : member ? 'inactive' : 'not-found');
    const data = o?.data ?? (running ? 'data' : 'empty');
    const env = o?.initialEnv;
    const view: EtcdNodeView = {
      node: name,
      units: { 'etcd.service': { unit: 'etcd.service', loadState: unit === 'not-found' ? 'not-found' : 'loaded', activeState: unit === 'not-found' ? 'inactive' : unit, unitFileState: unit === 'not-found' ? '' : 'enabled', needDaemonReload: false } },
      paths: { [spec.initialEnvFile]: env ? { exists: true, type: 'file', owner: 'root', group: 'root', uid: 0, gid: 0, mode: '0644', size: 100, sha256: env === 'bootstrap' ? bootstrapSha : 'f'.repeat(64) } : { exists: false } },
    };
    if (data !== 'unknown') view.etcdDataDir = { path: spec.dataDir, exists: data === 'data', empty: data === 'empty' };
    if (o?.pending) view.etcdRestartPending = o.pending;
    out[name] = view;
  }
  return out;
}

/** One line per action, with member IDs shown by name where known. */
function line(a: EtcdAction, names: Map<string, string>): string {
  const n = (id: string): string => names.get(id) ?? id;
  switch (a.type) {
    case 'etcd.bootstrap':
      return `bootstrap ${a.members.join(',')}`;
    case 'etcd.member.add':
      return `add ${a.name}${a.memberId ? ` resume=${n(a.memberId)}` : ''} initial=${a.initialCluster.split(',').map((x) => x.split('=')[0]).join(',')}`;
    case 'etcd.member.promote':
      return `promote ${a.name}`;
    case 'etcd.member.remove':
      return `remove ${a.name} id=${a.memberId}${a.moveDataDirAside ? ' aside' : ''}`;
    case 'etcd.leader.move':
      return `leader ${n(a.fromMemberId)}->${n(a.toMemberId)}`;
    case 'etcd.member.restart':
      return `restart ${a.name} because=${a.because.join('|')}`;
  }
}

const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

test('there are fixtures', () => {
  assert.ok(files.length >= 20, `only ${files.length} fixtures`);
});

for (const file of files) {
  const f = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Fixture;
  test(`${file}: ${f.description}`, () => {
    const spec = specFor(f.members);
    const etcd = etcdFactsFor(f);
    const nodes = nodeFactsFor(f, spec);
    const hostPlans = Object.entries(f.restarts ?? {}).map(([node, because]) => ({ node, etcdRestartBecause: because }));
    const allNodes = [...new Set([...f.members, ...(f.cluster ?? []).map((m) => m.name)])].map((n) => ({ name: n, address: address(n) }));
    const plan = planEtcd(spec, etcd, nodes, hostPlans, { nodes: allNodes });
    const names = new Map(etcd.members.map((m) => [m.id, m.name || (f.cluster ?? []).find((c) => c.id === m.id)?.name || m.id]));
    const got = plan.actions.map((a) => line(a, names));
    assert.equal(got, f.expect.actions, 'actions');
    const refusals = plan.refusals.map((r) => `${r.message} || ${r.hint}`);
    assert.is(refusals.length, (f.expect.refusals ?? []).length, `refusals: ${JSON.stringify(refusals, null, 1)}`);
    (f.expect.refusals ?? []).forEach((re, i) => assert.match(refusals[i] ?? '', new RegExp(re), `refusal ${i}`));
    for (const r of plan.refusals) {
      assert.ok(r.message.length > 0 && r.hint.length > 0, 'every refusal says why and what to do');
    }
    if (plan.refusals.length > 0) assert.equal(plan.actions, [], 'a refused plan changes nothing');
    assert.equal([...new Set(plan.refusals.flatMap((r) => r.starting ?? []))].sort(), f.expect.starting ?? [], 'members still starting');
    for (const re of f.expect.deferred ?? []) assert.ok(plan.deferred.some((d) => new RegExp(re).test(d)), `deferred ${re} in ${JSON.stringify(plan.deferred)}`);
    for (const [i, re] of Object.entries(f.expect.reasons ?? {})) assert.match(plan.actions[Number(i)]?.reason ?? '', new RegExp(re), `reason of action ${i}`);
    for (const a of plan.actions) assert.ok(a.reason.length > 0, 'every action has a reason');
    // The plan is data: it survives JSON unchanged.
    assert.equal(JSON.parse(JSON.stringify(plan)), plan);
  });
}

test('planEtcd is deterministic and does not modify its inputs', () => {
  const f = JSON.parse(readFileSync(join(dir, 'rolling-restart-leader-last.json'), 'utf8')) as Fixture;
  const spec = specFor(f.members);
  const etcd = etcdFactsFor(f);
  const nodes = nodeFactsFor(f, spec);
  const before = JSON.stringify([spec, etcd, nodes]);
  const hostPlans = Object.entries(f.restarts ?? {}).map(([node, because]) => ({ node, etcdRestartBecause: because }));
  const a = planEtcd(spec, etcd, nodes, hostPlans);
  const b = planEtcd(spec, etcd, nodes, hostPlans);
  assert.equal(a, b);
  assert.is(JSON.stringify([spec, etcd, nodes]), before);
});

test('the bootstrap initial env names every member with state new', () => {
  const spec = specFor(['cp-a', 'cp-b', 'cp-c']);
  const text = initialEnvText(bootstrapInitialCluster(spec), 'new');
  assert.match(text, /^ETCD_INITIAL_CLUSTER=cp-a=https:\/\/10\.240\.16\.10:2380,cp-b=https:\/\/10\.240\.48\.10:2380,cp-c=https:\/\/10\.240\.80\.10:2380$/m);
  assert.match(text, /^ETCD_INITIAL_CLUSTER_STATE=new$/m);
});

test.run();
