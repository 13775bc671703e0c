/**
 * `converge status`: the etcd chapter's validation in one view. Per node:
 * the etcd unit active (`systemctl is-active`); per member: ID, name, peer and
 * client URLs, started, learner, leader, health (a linearizable read through
 * it); alarms. Healthy only when every member node runs etcd, every desired
 * member is a started, healthy voter, all agree on exactly one leader, and
 * no alarm is raised. Pure: built from facts, rendered as text or JSON.
 */
import type { EtcdFacts } from '../facts/types.js';
import type { ResolvedEtcd } from '../model/types.js';

/** The etcd unit on one node: systemctl is-active's answer, or why it is unknown. */
export type UnitState = { state: string } | { error: string };

export interface MemberStatusRow {
  /** Decimal string, as etcd's uint64. */
  id: string;
  name: string;
  node: string | null;
  peerUrls: string[];
  clientUrls: string[];
  started: boolean;
  learner: boolean;
  leader: boolean;
  healthy: boolean;
  reachable: boolean;
  /** In the desired member set. */
  desired: boolean;
  raftIndex: string | null;
  raftTerm: string | null;
  version: string | null;
  dbSize: number | null;
  error?: string;
}

export interface StatusReport {
  cluster: string;
  checkedAt: string;
  healthy: boolean;
  /** Why not healthy (empty when healthy). */
  problems: string[];
  /** Worth knowing, but not unhealthy (a healthy member not in the desired set). */
  notes: string[];
  nodes: { node: string; unit: string; active: string; error?: string }[];
  members: MemberStatusRow[];
  leader: { id: string; name: string } | null;
  alarms: { memberId: string; member: string; alarm: string }[];
  /** Desired members that are not in the cluster. */
  missing: string[];
  /** Milliseconds spent asking etcd and the nodes (in parallel) */
  elapsedMs: number;
}

export function buildStatusReport(spec: ResolvedEtcd, etcd: EtcdFacts, units: Record<string, UnitState>, o: { checkedAt: string; elapsedMs: number; nodes?: ReadonlyArray<{ name: string; address: string }> }): StatusReport {
  const problems: string[] = [];
  const notes: string[] = [];
  const nodeOfPeer = (urls: string[]): string | null => {
    const d = spec.members.find((m) => urls.includes(m.peerUrl));
    if (d) return d.node;
    const hosts = urls.map((u) => {
      try {
        return new URL(u).hostname;
      } catch {
        return '';
      }
    });
    return o.nodes?.find((n) => hosts.includes(n.address))?.name ?? null;
  };

  const leaders = new Set(etcd.members.flatMap((m) => (!m.isLearner && etcd.status[m.id]?.reachable && etcd.status[m.id]?.leader ? [etcd.status[m.id]!.leader!] : [])));
  const leaderId = leaders.size === 1 ? [...leaders][0]! : null;
  const members: MemberStatusRow[] = etcd.members.map((m) => {
    const s = etcd.status[m.id];
    const desired = spec.members.some((d) => m.peerUrls.includes(d.peerUrl));
    const row: MemberStatusRow = {
      id: m.id,
      name: m.name,
      node: nodeOfPeer(m.peerUrls),
      peerUrls: m.peerUrls,
      clientUrls: m.clientUrls,
      started: m.name !== '' && m.clientUrls.length > 0,
      learner: m.isLearner,
      leader: leaderId === m.id,
      healthy: s?.healthy === true,
      reachable: s?.reachable === true,
      desired,
      raftIndex: s?.raftIndex ?? null,
      raftTerm: s?.raftTerm ?? null,
      version: s?.version ?? null,
      dbSize: s?.dbSize ?? null,
    };
    if (s?.error) row.error = s.error;
    return row;
  });

  if (etcd.members.length === 0) problems.push(`no etcd member answers: ${etcd.error ?? 'no answer'}`);
  for (const r of members) {
    const who = r.name || r.node || r.id;
    if (!r.started) problems.push(`${who} (${r.id}) has not started`);
    else if (r.learner) problems.push(`${who} is a learner, not a voter yet`);
    else if (!r.healthy) problems.push(`${who} is not healthy: ${r.error ?? 'no answer'}`);
    if (!r.desired) {
      if (r.healthy) notes.push(`${who} is a member but not in the desired member set (converge removes it)`);
      else problems.push(`${who} is not in the desired member set`);
    }
  }
  const missing = etcd.members.length === 0 ? [] : spec.members.filter((d) => !etcd.members.some((m) => m.peerUrls.includes(d.peerUrl))).map((d) => d.name);
  for (const n of missing) problems.push(`${n} is in the desired member set but not in the cluster`);
  if (etcd.members.length > 0 && leaders.size === 0) problems.push('no leader');
  if (leaders.size > 1) problems.push(`members disagree on the leader (${[...leaders].map((l) => members.find((m) => m.id === l)?.name || l).join(', ')})`);
  for (const f of etcd.foreign ?? []) problems.push(`${f.url} answers as member ${f.memberId} of cluster ${f.clusterId}, not this one`);
  const alarms = etcd.alarms.map((a) => ({ memberId: a.memberId, member: members.find((m) => m.id === a.memberId)?.name || a.memberId, alarm: a.alarm }));
  for (const a of alarms) problems.push(`alarm ${a.alarm} raised on ${a.member}`);
  if (etcd.error && etcd.members.length > 0) problems.push(etcd.error);

  const nodeNames = [...new Set([...spec.members.map((d) => d.node), ...members.flatMap((m) => (m.node ? [m.node] : []))])];
  const nodes = nodeNames.map((node) => {
    const u = units[node];
    if (!u) return { node, unit: spec.unit, active: 'unknown', error: 'not asked' };
    if ('error' in u) return { node, unit: spec.unit, active: 'unknown', error: u.error };
    return { node, unit: spec.unit, active: u.state };
  });
  for (const n of nodes) {
    const member = spec.members.some((d) => d.node === n.node);
    if (member && n.active !== 'active') problems.push(`${n.node}: ${n.unit} is ${n.error ? `unknown (${n.error})` : n.active}`);
  }

  const leaderRow = members.find((m) => m.leader);
  return {
    cluster: spec.id,
    checkedAt: o.checkedAt,
    healthy: problems.length === 0,
    problems,
    notes,
    nodes,
    members,
    leader: leaderRow ? { id: leaderRow.id, name: leaderRow.name } : null,
    alarms,
    missing,
    elapsedMs: o.elapsedMs,
  };
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [fmt(head), ...rows.map(fmt)];
}

export function renderStatusText(r: StatusReport): string {
  const voters = r.members.filter((m) => m.started && !m.learner && m.healthy).length;
  const lines: string[] = [];
  lines.push(
    r.healthy
      ? `etcd ${r.cluster}: HEALTHY — ${voters} started voter${voters === 1 ? '' : 's'}, leader ${r.leader?.name ?? '?'}`
      : `etcd ${r.cluster}: NOT HEALTHY`,
  );
  lines.push('');
  lines.push(...table(['NODE', 'UNIT', 'ACTIVE'], r.nodes.map((n) => [n.node, n.unit, n.error ? `${n.active} (${n.error})` : n.active])));
  lines.push('');
  if (r.members.length > 0) {
    lines.push(
      ...table(
        ['ID', 'NAME', 'PEER URLS', 'CLIENT URLS', 'STARTED', 'LEARNER', 'LEADER', 'RAFT INDEX', 'HEALTH'],
        r.members.map((m) => [
          m.id,
          m.name || '-',
          m.peerUrls.join(','),
          m.clientUrls.join(',') || '-',
          m.started ? 'yes' : 'no',
          m.learner ? 'yes' : 'no',
          m.leader ? 'yes' : 'no',
          m.raftIndex ?? '-',
          m.healthy ? 'healthy' : m.learner && m.reachable ? 'learner' : `unhealthy${m.error ? `: ${m.error}` : ''}`,
        ]),
      ),
    );
  } else {
    lines.push('members: none answered');
  }
  if (r.missing.length > 0) lines.push(`missing from the cluster: ${r.missing.join(', ')}`);
  lines.push(`alarms: ${r.alarms.length === 0 ? 'none' : r.alarms.map((a) => `${a.alarm} on ${a.member}`).join(', ')}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  if (!r.healthy) {
    lines.push('');
    lines.push('problems:');
    for (const p of r.problems) lines.push(`  - ${p}`);
  }
  return lines.join('\n') + '\n';
}

export function renderStatusJson(r: StatusReport): string {
  return JSON.stringify(r, null, 2) + '\n';
}
