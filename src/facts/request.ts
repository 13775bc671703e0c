/**
 * What to ask a node about, derived from its desired resources: every path,
 * account and unit they name, whether present or absent, so that one probe
 * answers everything the planner needs.
 */
import type { ResolvedEtcd, ResolvedNode } from '../model/types.js';
import { CONVERGE_STATE_DIR } from './probe.js';
import type { ProbeRequest } from './probe.js';

const sorted = (xs: Iterable<string>): string[] => [...new Set(xs)].sort();

export function probeRequestFor(node: ResolvedNode, etcd: ResolvedEtcd | null): ProbeRequest {
  const paths = [...node.directories.map((d) => d.path), ...node.files.map((f) => f.path)];
  const textWanted = node.files.flatMap((f) => (f.ensure === 'present' && f.content?.kind === 'text' ? [{ path: f.path, sha256: f.content.sha256 }] : []));
  const owned = [...node.directories, ...node.files].filter((r) => r.ensure === 'present');
  const users = [...node.users.map((u) => u.name), ...owned.map((r) => r.owner)];
  const groups = [
    ...node.groups.map((g) => g.name),
    ...node.users.flatMap((u) => (u.ensure === 'present' ? [u.group, ...u.groups] : [])),
    ...owned.map((r) => r.group),
  ];
  const units = [...node.services.map((s) => s.unit), ...node.files.flatMap((f) => f.restarts)];
  return {
    node: node.name,
    paths: sorted(paths),
    textWanted: [...new Map(textWanted.map((t) => [t.path, t])).values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
    users: sorted(users),
    groups: sorted(groups),
    units: sorted(units),
    listDirs: sorted(node.directories.filter((d) => d.ensure === 'present' && d.purge).map((d) => d.path)),
    // every node, member or not: a former member's leftover data dir matters before it is reused
    etcdDataDir: etcd ? etcd.dataDir : null,
    stateDir: CONVERGE_STATE_DIR,
  };
}
