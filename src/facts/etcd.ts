/**
 * Facts of the etcd cluster, through its API, and of etcd on one node,
 * through the node's transport.
 *
 * Cluster facts: every known client URL is asked at once, each through its
 * own client (etcd3 would otherwise pick a random member), with a short
 * deadline: status (leader, raft index, cluster ID), the member list, and a
 * linearizable read (what `etcdctl endpoint health` does). The member list
 * is taken from the leader when it answers, since 3.4 serves it from the
 * answering member's local view.
 */
import type { Etcd3, IMember, IMemberListResponse, IStatusResponse } from 'etcd3';
import { withMemberClients, etcdErrorText, type EtcdTls, type MemberClients } from '../connect/etcd.js';
import { shellQuote, type Transport } from '../connect/transport.js';
import { NodeError } from '../errors/index.js';
import type { ResolvedEtcd, ResolvedNode } from '../model/types.js';
import { settle, type SettleClock } from './settle.js';
import type { EtcdFacts, EtcdMemberFact, EtcdMemberStatus, NodeFacts, PathFact, UnitFact } from './types.js';

export interface GatherEtcdOptions {
  /** Deadline of each call. Default 2000 ms. */
  timeoutMs?: number;
  /** Client URLs to ask besides the desired members' (members leaving the cluster). */
  extraUrls?: string[];
}

interface Probe {
  url: string;
  status?: IStatusResponse;
  members?: IMember[];
  healthy: boolean;
  error?: string;
}

/** The read `etcdctl endpoint health` does; permission denied still proves a quorum answered. */
async function healthRead(c: Etcd3): Promise<void> {
  try {
    await c.get('health').exec();
  } catch (e) {
    if (/permission denied/i.test(String(e))) return;
    throw e;
  }
}

async function probe(clients: MemberClients, url: string, withList: boolean): Promise<Probe> {
  const c = clients.get(url);
  const [status, list, health] = await Promise.allSettled([
    c.maintenance.status(),
    withList ? c.cluster.memberList({ linearizable: true }) : Promise.resolve(undefined as IMemberListResponse | undefined),
    healthRead(c),
  ]);
  const p: Probe = { url, healthy: health.status === 'fulfilled' };
  if (status.status === 'fulfilled') p.status = status.value;
  if (list.status === 'fulfilled' && list.value) p.members = list.value.members;
  const failure = [status, health].find((r) => r.status === 'rejected');
  if (failure && failure.status === 'rejected') p.error = etcdErrorText(failure.reason);
  return p;
}

function memberFact(m: IMember): EtcdMemberFact {
  return { id: String(m.ID), name: m.name ?? '', peerUrls: [...(m.peerURLs ?? [])], clientUrls: [...(m.clientURLs ?? [])], isLearner: Boolean(m.isLearner) };
}

/** The member list to trust: the leader's, else a healthy member's, else any. */
function pickList(probes: Probe[]): Probe | undefined {
  const withList = probes.filter((p) => p.members && p.status);
  return (
    withList.find((p) => p.status && p.status.leader !== '0' && p.status.leader === p.status.header.member_id) ??
    withList.find((p) => p.healthy) ??
    withList[0]
  );
}

/** Client URLs to ask for a member: its own, or (not started yet) the desired one with its peer URL. */
export function memberClientUrls(m: EtcdMemberFact, spec: ResolvedEtcd): string[] {
  if (m.clientUrls.length > 0) return m.clientUrls;
  const d = spec.members.find((s) => m.peerUrls.includes(s.peerUrl));
  return d ? [d.clientUrl] : [];
}

export async function gatherEtcdFacts(spec: ResolvedEtcd, tls: EtcdTls, opts: GatherEtcdOptions = {}): Promise<EtcdFacts> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  return withMemberClients(tls, timeoutMs, async (clients) => {
    const first = [...new Set([...spec.members.map((m) => m.clientUrl), ...(opts.extraUrls ?? [])])];
    const probes = await Promise.all(first.map((u) => probe(clients, u, true)));
    const source = pickList(probes);
    if (!source?.members || !source.status) {
      // One line per distinct error: a wrong CA fails the same way at every member.
      const byError = new Map<string, string[]>();
      for (const p of probes) byError.set(p.error ?? 'no answer', [...(byError.get(p.error ?? 'no answer') ?? []), p.url]);
      const errors = [...byError].map(([err, urls]) => `${urls.join(', ')}: ${err}`);
      return { reachable: probes.some((p) => p.status), members: [], status: {}, alarms: [], error: `no etcd member answered with its member list (${errors.join('; ')})` };
    }
    const members = source.members.map(memberFact).sort((a, b) => (a.name || a.peerUrls[0] || '').localeCompare(b.name || b.peerUrls[0] || ''));
    const clusterId = source.status.header.cluster_id;

    const asked = new Set(first);
    const more = [...new Set(members.flatMap((m) => memberClientUrls(m, spec)).filter((u) => !asked.has(u)))];
    probes.push(...(await Promise.all(more.map((u) => probe(clients, u, false)))));

    const status: Record<string, EtcdMemberStatus> = {};
    const foreign: NonNullable<EtcdFacts['foreign']> = [];
    const ids = new Set(members.map((m) => m.id));
    for (const p of probes) {
      if (!p.status) continue;
      const id = p.status.header.member_id;
      if (p.status.header.cluster_id !== clusterId || !ids.has(id)) {
        foreign.push({ url: p.url, memberId: id, clusterId: p.status.header.cluster_id });
        continue;
      }
      const s: EtcdMemberStatus = {
        id,
        reachable: true,
        leader: p.status.leader && p.status.leader !== '0' ? p.status.leader : null,
        raftIndex: p.status.raftIndex,
        raftTerm: p.status.raftTerm,
        dbSize: Number(p.status.dbSize),
        version: p.status.version,
        healthy: p.healthy,
        clusterId: p.status.header.cluster_id,
      };
      if (p.error) s.error = p.error;
      const prev = status[id];
      if (!prev || (!prev.healthy && s.healthy)) status[id] = s;
    }
    for (const m of members) {
      if (status[m.id]) continue;
      const urls = memberClientUrls(m, spec);
      const errs = probes.filter((p) => urls.includes(p.url) && p.error).map((p) => p.error);
      status[m.id] = {
        id: m.id,
        reachable: false,
        leader: null,
        raftIndex: null,
        raftTerm: null,
        dbSize: null,
        version: null,
        healthy: false,
        error: urls.length === 0 ? 'no client URL known (member not started)' : (errs[0] ?? 'no answer'),
      };
    }

    const facts: EtcdFacts = { reachable: true, members, status, alarms: [], clusterId };
    if (foreign.length > 0) facts.foreign = foreign;
    try {
      const alarms = await clients.get(source.url).maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' });
      facts.alarms = (alarms.alarms ?? []).map((a) => ({ memberId: String(a.memberID), alarm: String(a.alarm) }));
    } catch (e) {
      facts.error = `alarms could not be read: ${etcdErrorText(e)}`;
    }
    return facts;
  });
}

/**
 * gatherEtcdFacts for a decision. A busy bastion or cluster can miss the short
 * deadline everywhere at once, which reads as "no member answers" or "a
 * member is down"; a time-out is asked again with time to spare before it is
 * believed. Members that answer in the middle of a leader election ("leader
 * changed", "no leader", or answers naming no leader or different ones: a
 * partitioned member that comes back with a higher term forces one) are not
 * down either: they are asked again until the election settles, for at most
 * `electionSettleMs`.
 */
export async function gatherEtcdFactsSettled(spec: ResolvedEtcd, tls: EtcdTls, opts: GatherEtcdOptions & { patientTimeoutMs?: number; electionSettleMs?: number } = {}): Promise<EtcdFacts> {
  const { patientTimeoutMs = 10_000, electionSettleMs = 10_000, ...quickOpts } = opts;
  return settleEtcdFacts((timeoutMs) => gatherEtcdFacts(spec, tls, timeoutMs === undefined ? quickOpts : { ...quickOpts, timeoutMs }), { patientTimeoutMs, electionSettleMs });
}

const timedOut = (e: string | undefined): boolean => /timed out/.test(e ?? '');
const electing = (e: string | undefined): boolean => /leader changed|no leader/.test(e ?? '');

/**
 * An election under way: a member says so in its error, or the members that
 * answer name no leader at all, or name different ones (each still on its
 * own term).
 */
function electionUnderway(f: EtcdFacts): boolean {
  if (doubts(f).some(electing)) return true;
  const answered = Object.values(f.status).filter((m) => m.reachable);
  if (answered.length === 0) return false;
  return new Set(answered.flatMap((m) => (m.leader ? [m.leader] : []))).size !== 1;
}

function doubts(f: EtcdFacts): (string | undefined)[] {
  return f.members.length === 0 ? [f.error] : Object.values(f.status).filter((m) => !m.healthy).map((m) => m.error);
}

/** The retry policy of gatherEtcdFactsSettled, over any way of gathering (`timeoutMs` undefined: the quick deadline). */
export async function settleEtcdFacts(
  gather: (timeoutMs?: number) => Promise<EtcdFacts>,
  o: { patientTimeoutMs: number; electionSettleMs: number } & SettleClock,
): Promise<EtcdFacts> {
  // Every answer the election is judged on has had its patient retry: a member that missed the quick
  // deadline (a link just back, say) is often one whose return starts an election.
  const take = async (): Promise<EtcdFacts> => {
    const f = await gather();
    return doubts(f).some(timedOut) ? gather(o.patientTimeoutMs) : f;
  };
  return settle(await take(), take, electionUnderway, { ...o, pauseMs: o.pauseMs ?? 500, settleMs: o.electionSettleMs });
}

// ---- etcd on one node --------------------------------------------------------

export type EtcdNodeSpec = Pick<ResolvedEtcd, 'dataDir' | 'initialEnvFile' | 'unit'>;

/** Files on a node whose change restarts the etcd unit. */
export function etcdRestartPaths(node: Pick<ResolvedNode, 'files'>, spec: Pick<ResolvedEtcd, 'unit'>): string[] {
  return node.files.filter((f) => f.ensure === 'present' && f.restarts.includes(spec.unit)).map((f) => f.path);
}

/**
 * One sh script that reports the etcd unit, whether the data dir holds a
 * write-ahead log (a member's real state: a failed start leaves member/snap/db
 * behind but no WAL), the digest of the initial env file, and which of
 * `watch` changed after the running etcd started (restarts still owed).
 * Times are compared on the node's own clock: the unit's start is
 * ExecMainStartTimestampMonotonic turned into epoch seconds via /proc/uptime.
 */
export function etcdNodeScript(spec: EtcdNodeSpec, watch: readonly string[] = []): string {
  return [
    'set -u',
    `d=${shellQuote(spec.dataDir)}; f=${shellQuote(spec.initialEnvFile)}; u=${shellQuote(spec.unit)}`,
    'if [ -d "$d" ]; then if [ -r "$d" ] && [ -x "$d" ]; then echo "datadir=dir"; else echo "datadir=unreadable"; fi; elif [ -e "$d" ]; then echo "datadir=other"; else echo "datadir=missing"; fi',
    'if ls "$d"/member/wal/*.wal >/dev/null 2>&1; then echo "wal=yes"; else echo "wal=no"; fi',
    'if [ -f "$f" ]; then echo "initenv=$(sha256sum < "$f" | cut -d" " -f1) $(stat -c \'%U %G %u %g %a %s\' -- "$f")"; else echo "initenv=-"; fi',
    'systemctl show -p LoadState -p ActiveState -p UnitFileState -p NeedDaemonReload -p ExecMainStartTimestampMonotonic -- "$u" 2>/dev/null || true',
    'echo "now=$(date +%s.%N) $(cut -d" " -f1 /proc/uptime)"',
    ...watch.map((p) => `m=$(stat -c %.9Y -- ${shellQuote(p)} 2>/dev/null) && printf 'mtime=%s %s\\n' "$m" ${shellQuote(p)}`),
    'true',
  ].join('\n');
}

/** The NodeFacts fields the etcd planner reads (unit, data dir, initial env file, restarts owed). */
export type EtcdNodeFacts = Pick<NodeFacts, 'node' | 'units' | 'paths' | 'etcdDataDir' | 'etcdRestartPending'>;

export function parseEtcdNodeProbe(node: string, spec: EtcdNodeSpec, stdout: string): EtcdNodeFacts {
  const kv = new Map<string, string>();
  const mtimes: [number, string][] = [];
  for (const line of stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i <= 0) continue;
    const key = line.slice(0, i);
    const value = line.slice(i + 1);
    if (key === 'mtime') {
      const sp = value.indexOf(' ');
      if (sp > 0) mtimes.push([Number(value.slice(0, sp)), value.slice(sp + 1)]);
    } else kv.set(key, value.trim());
  }
  const dir = kv.get('datadir');
  if (dir === undefined || !kv.has('wal') || !kv.has('initenv')) throw new NodeError('E_REMOTE', node, 'the etcd probe printed no answer', { hint: 'check that the node runs a POSIX sh with systemctl' });
  if (dir === 'unreadable' || dir === 'other') {
    throw new NodeError('E_REMOTE', node, `${spec.dataDir} is ${dir === 'other' ? 'not a directory' : 'not readable'}`, { hint: 'converge needs root on the node to see whether the etcd data dir holds data' });
  }
  const unit: UnitFact = {
    unit: spec.unit,
    loadState: kv.get('LoadState') ?? 'not-found',
    activeState: kv.get('ActiveState') ?? 'inactive',
    unitFileState: kv.get('UnitFileState') ?? '',
    needDaemonReload: kv.get('NeedDaemonReload') === 'yes',
  };
  const [sha256, owner, group, uid, gid, mode, size] = (kv.get('initenv') ?? '-').split(' ');
  const env: PathFact =
    sha256 === '-' || sha256 === undefined
      ? { exists: false }
      : { exists: true, type: 'file', owner: owner ?? '', group: group ?? '', uid: Number(uid), gid: Number(gid), mode: (mode ?? '').padStart(4, '0'), size: Number(size), sha256 };
  const facts: EtcdNodeFacts = {
    node,
    units: { [spec.unit]: unit },
    paths: { [spec.initialEnvFile]: env },
    etcdDataDir: { path: spec.dataDir, exists: dir === 'dir', empty: kv.get('wal') !== 'yes' },
  };
  const started = unitStartedAt(kv);
  if (started !== null && unit.activeState === 'active') {
    const pending = mtimes.filter(([t]) => Number.isFinite(t) && t > started).map(([, p]) => p);
    if (pending.length > 0) facts.etcdRestartPending = pending.sort();
  }
  return facts;
}

/** Epoch seconds at which the unit's main process started, or null when it is not running. */
function unitStartedAt(kv: Map<string, string>): number | null {
  const mono = Number(kv.get('ExecMainStartTimestampMonotonic') ?? '0');
  const [now, uptime] = (kv.get('now') ?? '').split(' ').map(Number);
  if (!mono || now === undefined || uptime === undefined || !Number.isFinite(now) || !Number.isFinite(uptime)) return null;
  return now - uptime + mono / 1e6;
}

export async function gatherEtcdNodeFacts(t: Transport, spec: EtcdNodeSpec, watch: readonly string[] = [], timeoutMs = 10_000): Promise<EtcdNodeFacts> {
  const r = await t.exec(etcdNodeScript(spec, watch), { timeoutMs });
  if (r.code !== 0) throw new NodeError('E_REMOTE', t.node, `the etcd probe failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
  return parseEtcdNodeProbe(t.node, spec, r.stdout.toString('utf8'));
}

/** The last lines of the unit's journal, for a report when a member does not come back. */
export async function unitJournal(t: Transport, unit: string, lines = 20): Promise<string[]> {
  const r = await t.exec(`journalctl -u ${shellQuote(unit)} -n ${lines} --no-pager -o short-iso 2>&1 || true`, { timeoutMs: 10_000 });
  return r.stdout
    .toString('utf8')
    .split('\n')
    .filter((l) => l.trim() !== '');
}

/** `systemctl is-active` of the unit: active, inactive, failed, activating, ... */
export async function unitActive(t: Transport, unit: string, timeoutMs = 10_000): Promise<string> {
  const r = await t.exec(`systemctl is-active ${shellQuote(unit)} 2>/dev/null || true`, { timeoutMs });
  const state = r.stdout.toString('utf8').trim().split('\n')[0] ?? '';
  if (state === '') throw new NodeError('E_REMOTE', t.node, `systemctl is-active ${unit} printed nothing${r.stderr.trim() ? `: ${r.stderr.trim()}` : ''}`);
  return state;
}

/**
 * The host probe's facts of a member node completed with the etcd probe's:
 * the unit as systemctl shows it, the initial env file's digest, the data
 * dir judged by its write-ahead log, and the restarts still owed.
 */
export function withEtcdNodeFacts(host: NodeFacts, etcd: EtcdNodeFacts): NodeFacts {
  const merged: NodeFacts = { ...host, units: { ...host.units, ...etcd.units }, paths: { ...host.paths, ...etcd.paths } };
  if (etcd.etcdDataDir) merged.etcdDataDir = etcd.etcdDataDir;
  if (etcd.etcdRestartPending) merged.etcdRestartPending = etcd.etcdRestartPending;
  else delete merged.etcdRestartPending;
  return merged;
}
