// Shorthand for plan fixtures, and a model of apply used to check that a
// plan converges: applying it to the facts and planning again gives nothing.
//
// Fixture shorthand (every field of the real types may also be given in full):
//   desired.files[i].content: { "text": "..." } | { "artifact": "etcd", "bytes": "..." }
//                             | { "secret": "server-key", "bytes": "..." } | a full ContentRef
//   facts.paths[p]: { "type": "file", "text": "..." }     (text kept as PathFact.text)
//                 | { "type": "file", "bytes": "..." }    (digest only, no text)
//                 | { "exists": false }
//   facts.units[u]: { "active": true, "enabled": true } or the UnitFact fields
import { createHash } from 'node:crypto';
import type { ContentRef, DesiredDirectory, DesiredFile, DesiredGroup, DesiredService, DesiredUser, ResolvedEtcd, ResolvedNode } from '../../../src/model/types.js';
import type { GroupFact, Inventory, InventoryEntry, NodeFacts, PathFact, UnitFact, UserFact } from '../../../src/facts/types.js';
import type { HostAction } from '../../../src/plan/types.js';

type Loose = Record<string, any>;

export const sha256 = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');
const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

const AT = { file: 'desired-state/files.yaml', line: 1, col: 1 };
const WELL_KNOWN_IDS: Record<string, number> = { root: 0, etcd: 998 };

function base(kind: string, name: string, r: Loose): Loose {
  return { id: `${kind}/${name}`, kind, name, ensure: 'present', policy: 'enforce', prune: true, at: AT, ...r };
}

function content(c: Loose | undefined): ContentRef | undefined {
  if (c === undefined || 'kind' in c) return c as ContentRef | undefined;
  if ('text' in c) return { kind: 'text', origin: 'inline', text: c.text, sha256: sha256(c.text), size: bytes(c.text) };
  if ('artifact' in c) return { kind: 'artifact', name: c.artifact, localPath: `/srv/artifacts/${c.artifact}`, sha256: sha256(c.bytes), size: bytes(c.bytes) };
  if ('secret' in c) return { kind: 'secret', name: c.secret, localPath: `/srv/secrets/${c.secret}`, sha256: c.bytes === null ? null : sha256(c.bytes), size: c.bytes === null ? null : bytes(c.bytes) };
  throw new Error(`fixture: unknown content shorthand ${JSON.stringify(c)}`);
}

export function node(d: Loose): ResolvedNode {
  return {
    name: d.name,
    address: d.address ?? '10.240.16.10',
    ssh: d.ssh ?? { user: 'root', port: 22 },
    labels: d.labels ?? {},
    vars: d.vars ?? {},
    groups: (d.groups ?? []).map((g: Loose) => base('Group', g.name, { system: true, ...g }) as DesiredGroup),
    users: (d.users ?? []).map((u: Loose) => base('User', u.name, { system: true, group: u.name, groups: [], home: '/nonexistent', shell: '/usr/sbin/nologin', ...u }) as DesiredUser),
    directories: (d.directories ?? []).map((x: Loose) => base('Directory', x.name ?? x.path, { owner: 'root', group: 'root', mode: '0755', purge: false, ...x }) as DesiredDirectory),
    files: (d.files ?? []).map((f: Loose) => {
      const out = base('File', f.name ?? f.path, { owner: 'root', group: 'root', mode: '0644', restarts: [], ...f }) as DesiredFile;
      const c = content(f.content);
      if (c) out.content = c;
      else delete out.content;
      return out;
    }),
    services: (d.services ?? []).map((s: Loose) => base('Service', s.name ?? s.unit.replace(/\.service$/, ''), { enabled: true, running: true, ...s }) as DesiredService),
  };
}

function pathFact(p: Loose): PathFact {
  if (p.exists === false) return { exists: false };
  const type = p.type ?? 'file';
  const owner = p.owner ?? 'root';
  const group = p.group ?? owner;
  const out: Loose = {
    exists: true,
    type,
    owner,
    group,
    uid: p.uid ?? WELL_KNOWN_IDS[owner] ?? (Number(owner) || 1000),
    gid: p.gid ?? WELL_KNOWN_IDS[group] ?? (Number(group) || 1000),
    mode: p.mode ?? (type === 'dir' ? '0755' : '0644'),
    size: p.size ?? 0,
  };
  const body = p.text ?? p.bytes;
  if (type === 'file' && body !== undefined) {
    out.sha256 = sha256(body);
    out.size = bytes(body);
  }
  if (p.sha256 !== undefined) out.sha256 = p.sha256;
  if (p.text !== undefined) out.text = p.text;
  if (p.target !== undefined) out.target = p.target;
  return out as PathFact;
}

function unitFact(unit: string, u: Loose): UnitFact {
  return {
    unit,
    loadState: u.loadState ?? 'loaded',
    activeState: u.activeState ?? (u.active === false ? 'inactive' : 'active'),
    unitFileState: u.unitFileState ?? (u.enabled === false ? 'disabled' : 'enabled'),
    needDaemonReload: u.needDaemonReload ?? false,
  };
}

export function facts(f: Loose, name: string): NodeFacts {
  const map = <T>(o: Loose | undefined, fn: (k: string, v: Loose) => T): Record<string, T> => Object.fromEntries(Object.entries(o ?? {}).map(([k, v]) => [k, fn(k, v as Loose)]));
  const inv = f.inventory as Loose | undefined | null;
  const out: NodeFacts = {
    node: f.node ?? name,
    paths: map(f.paths, (_k, v) => pathFact(v)),
    users: map(f.users, (k, v) => ({ name: k, uid: v.uid ?? WELL_KNOWN_IDS[k] ?? 1000, gid: v.gid ?? WELL_KNOWN_IDS[v.group ?? k] ?? 1000, group: v.group ?? k, groups: v.groups ?? [], home: v.home ?? '/nonexistent', shell: v.shell ?? '/usr/sbin/nologin' }) as UserFact),
    groups: map(f.groups, (k, v) => ({ name: k, gid: v.gid ?? WELL_KNOWN_IDS[k] ?? 1000, members: v.members ?? [] }) as GroupFact),
    units: map(f.units, (k, v) => unitFact(k, v)),
    dirListings: f.dirListings ?? {},
    inventory: inv
      ? ({
          commit: inv.commit ?? 'c0ffee0000000000000000000000000000000000',
          appliedAt: inv.appliedAt ?? '2024-05-01T10:00:00.000Z',
          resources: map(inv.resources, (_k, e) => ({ created: true, prune: true, ...e }) as InventoryEntry),
        } as Inventory)
      : null,
  };
  return out;
}

export function etcd(e: Loose | undefined): ResolvedEtcd | null {
  if (!e) return null;
  const members = (e.members as string[]).map((n, i) => ({ name: n, node: n, address: `10.240.${16 + 32 * i}.10`, peerUrl: `https://10.240.${16 + 32 * i}.10:2380`, clientUrl: `https://10.240.${16 + 32 * i}.10:2379` }));
  return {
    id: 'EtcdCluster/main',
    name: 'main',
    members,
    clientPort: 2379,
    peerPort: 2380,
    dataDir: '/var/lib/etcd',
    token: 'etcd-cluster-1',
    unit: e.unit ?? 'etcd.service',
    initialEnvFile: '/etc/etcd/initial.env',
    client: { caFile: 'ca.pem', certFile: 'client.pem', keyFile: 'client-key.pem' },
    rollout: { healthTimeoutSeconds: 60, learnerTimeoutSeconds: 120 },
    at: AT,
  };
}

/**
 * What apply would leave behind, as facts: the model the exactness promise
 * rests on. Unknown actions fail loudly so that new action types get modelled.
 */
export function applyToFacts(before: NodeFacts, desired: ResolvedNode, actions: HostAction[]): NodeFacts {
  const f: NodeFacts = structuredClone(before);
  const fileContent = new Map(desired.files.map((x) => [x.path, x.content]));
  let nextId = 990;
  const uidOf = (name: string): number => f.users[name]?.uid ?? WELL_KNOWN_IDS[name] ?? 0;
  const gidOf = (name: string): number => f.groups[name]?.gid ?? WELL_KNOWN_IDS[name] ?? 0;
  const unit = (u: string): UnitFact => (f.units[u] ??= { unit: u, loadState: 'not-found', activeState: 'inactive', unitFileState: '', needDaemonReload: false });
  for (const a of actions) {
    switch (a.type) {
      case 'group.create':
        f.groups[a.name] = { name: a.name, gid: a.gid ?? nextId--, members: [] };
        break;
      case 'group.remove':
        delete f.groups[a.name];
        break;
      case 'user.create':
      case 'user.modify':
        f.users[a.name] = { name: a.name, uid: a.uid ?? f.users[a.name]?.uid ?? nextId--, gid: gidOf(a.group), group: a.group, groups: a.groups, home: a.home, shell: a.shell };
        break;
      case 'user.remove':
        delete f.users[a.name];
        break;
      case 'dir.create':
        f.paths[a.path] = { exists: true, type: 'dir', owner: a.owner, group: a.group, uid: uidOf(a.owner), gid: gidOf(a.group), mode: a.mode, size: 4096 };
        break;
      case 'file.write': {
        const c = fileContent.get(a.path);
        if (!c || c.sha256 !== a.sha256) throw new Error(`apply model: ${a.path} written with a digest the desired state does not have`);
        f.paths[a.path] = { exists: true, type: 'file', owner: a.owner, group: a.group, uid: uidOf(a.owner), gid: gidOf(a.group), mode: a.mode, size: a.size ?? 0, sha256: a.sha256 };
        break;
      }
      case 'path.chown': {
        const p = f.paths[a.path];
        if (!p?.exists) throw new Error(`apply model: chown of missing ${a.path}`);
        Object.assign(p, { owner: a.owner, group: a.group, uid: uidOf(a.owner), gid: gidOf(a.group) });
        break;
      }
      case 'path.chmod': {
        const p = f.paths[a.path];
        if (!p?.exists) throw new Error(`apply model: chmod of missing ${a.path}`);
        p.mode = a.mode;
        break;
      }
      case 'path.remove':
        f.paths[a.path] = { exists: false };
        for (const [dir, list] of Object.entries(f.dirListings)) f.dirListings[dir] = list.filter((e) => e !== a.path && `${dir}/${e}` !== a.path);
        break;
      case 'systemd.daemon-reload':
        for (const u of Object.values(f.units)) {
          u.needDaemonReload = false;
          const declared = desired.files.some((x) => x.path.endsWith(`/${u.unit}`) && f.paths[x.path]?.exists);
          // The unit file state comes from the symlinks on disk: an enable before the reload counts.
          if (u.loadState === 'not-found' && declared) Object.assign(u, { loadState: 'loaded', unitFileState: u.unitFileState === 'enabled' ? 'enabled' : 'disabled' });
        }
        break;
      case 'service.enable':
        unit(a.unit).unitFileState = 'enabled';
        break;
      case 'service.disable':
        unit(a.unit).unitFileState = 'disabled';
        break;
      case 'service.start':
      case 'service.restart':
        unit(a.unit).activeState = 'active';
        break;
      case 'service.stop':
        unit(a.unit).activeState = 'inactive';
        break;
    }
  }
  return withInventory(f, desired, actions);
}

/** The inventory apply writes: what is declared now, plus what it kept. */
function withInventory(f: NodeFacts, desired: ResolvedNode, actions: HostAction[]): NodeFacts {
  const created = new Set(actions.flatMap((a) => (a.type === 'dir.create' || (a.type === 'file.write' && a.oldSha256 === null) ? [a.path] : a.type === 'user.create' || a.type === 'group.create' ? [a.name] : [])));
  const resources: Record<string, InventoryEntry> = {};
  const prev = f.inventory?.resources ?? {};
  const put = (id: string, kind: InventoryEntry['kind'], target: string, prune: boolean): void => {
    resources[id] = { kind, target, created: prev[id]?.created ?? created.has(target), prune };
  };
  for (const g of desired.groups) if (g.ensure === 'present') put(g.id, 'Group', g.name, g.prune);
  for (const u of desired.users) if (u.ensure === 'present') put(u.id, 'User', u.name, u.prune);
  for (const d of desired.directories) if (d.ensure === 'present') put(d.id, 'Directory', d.path, d.prune);
  for (const x of desired.files) if (x.ensure === 'present') put(x.id, 'File', x.path, x.prune);
  for (const s of desired.services) if (s.ensure === 'present') put(s.id, 'Service', s.unit, s.prune);
  return { ...f, inventory: { commit: 'next', appliedAt: 'later', resources } };
}
