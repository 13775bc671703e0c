// nextInventory: what converge records as created (prunable) or adopted.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeManagedPaths, nextInventory, sameInventory } from '../../../src/apply/inventory.js';
import type { Inventory, NodeFacts, PathFact } from '../../../src/facts/types.js';
import type { DesiredDirectory, DesiredFile, DesiredGroup, DesiredService, DesiredUser, ResolvedNode } from '../../../src/model/types.js';
import type { HostAction, NodePlan } from '../../../src/plan/types.js';

const at = { file: 'files.yaml', line: 1, col: 1 };
const common = { ensure: 'present' as const, policy: 'enforce' as const, prune: true, at };
const SHA_NEW = '1'.repeat(64);
const SHA_OLD = '2'.repeat(64);
const NOW = new Date('2026-01-02T03:04:05.000Z');

const group: DesiredGroup = { ...common, id: 'Group/etcd', kind: 'Group', name: 'etcd', system: true };
const user: DesiredUser = { ...common, id: 'User/etcd', kind: 'User', name: 'etcd', system: true, group: 'etcd', groups: [], home: '/var/lib/etcd', shell: '/usr/sbin/nologin' };
const dir: DesiredDirectory = { ...common, id: 'Directory/etcd-conf', kind: 'Directory', name: 'etcd-conf', path: '/etc/etcd', owner: 'root', group: 'etcd', mode: '0750', purge: false };
const file = (name: string, path: string, extra: Partial<DesiredFile> = {}): DesiredFile => ({
  ...common,
  id: `File/${name}`,
  kind: 'File',
  name,
  path,
  owner: 'root',
  group: 'etcd',
  mode: '0640',
  content: { kind: 'text', origin: 'inline', text: 'x', sha256: SHA_NEW, size: 1 },
  restarts: [],
  ...extra,
});
const svc: DesiredService = { ...common, id: 'Service/etcd', kind: 'Service', name: 'etcd', unit: 'etcd.service', enabled: true, running: true };

function node(parts: Partial<ResolvedNode>): ResolvedNode {
  return { name: 'cp-a', address: '10.240.16.10', ssh: { user: 'root', port: 22 }, labels: {}, vars: {}, groups: [], users: [], directories: [], files: [], services: [], ...parts };
}

const existing = (type: 'file' | 'dir', sha256?: string): PathFact => ({ exists: true, type, owner: 'root', group: 'root', uid: 0, gid: 0, mode: '0644', size: 1, ...(sha256 ? { sha256 } : {}) });

function facts(parts: Partial<NodeFacts>): NodeFacts {
  return { node: 'cp-a', paths: {}, users: {}, groups: {}, units: {}, dirListings: {}, inventory: null, ...parts };
}

const act = (a: { type: HostAction['type']; resource: string } & Record<string, unknown>): HostAction => ({ node: 'cp-a', reason: 'test', ...a }) as unknown as HostAction;
const plan = (actions: HostAction[]): NodePlan => ({ node: 'cp-a', reachable: true, actions, reported: [] });
const write = (f: DesiredFile, oldSha: string | null = null): HostAction =>
  act({ type: 'file.write', resource: f.id, path: f.path, owner: f.owner, group: f.group, mode: f.mode, contentKind: 'text', sha256: SHA_NEW, size: 1, oldSha256: oldSha });

test('fresh node: everything converge creates is recorded as created, with the commit and the applied values', () => {
  const env = file('env', '/etc/etcd/etcd.env');
  const n = node({ groups: [group], users: [user], directories: [dir], files: [env], services: [svc] });
  const f = facts({ paths: { '/etc/etcd': { exists: false }, '/etc/etcd/etcd.env': { exists: false } }, units: { 'etcd.service': { unit: 'etcd.service', loadState: 'not-found', activeState: 'inactive', unitFileState: '', needDaemonReload: false } } });
  const p = plan([
    act({ type: 'group.create', resource: group.id, name: 'etcd', system: true }),
    act({ type: 'user.create', resource: user.id, name: 'etcd', group: 'etcd', groups: [], home: '/var/lib/etcd', shell: '/usr/sbin/nologin', system: true }),
    act({ type: 'dir.create', resource: dir.id, path: '/etc/etcd', owner: 'root', group: 'etcd', mode: '0750' }),
    write(env),
    act({ type: 'service.enable', resource: svc.id, unit: 'etcd.service' }),
  ]);
  const inv = nextInventory(null, n, f, p, 'c1', NOW);
  assert.equal(inv, {
    commit: 'c1',
    appliedAt: '2026-01-02T03:04:05.000Z',
    resources: {
      'Directory/etcd-conf': { kind: 'Directory', target: '/etc/etcd', created: true, prune: true, owner: 'root', group: 'etcd', mode: '0750' },
      'File/env': { kind: 'File', target: '/etc/etcd/etcd.env', created: true, prune: true, sha256: SHA_NEW, owner: 'root', group: 'etcd', mode: '0640' },
      'Group/etcd': { kind: 'Group', target: 'etcd', created: true, prune: true },
      'Service/etcd': { kind: 'Service', target: 'etcd.service', created: true, prune: true },
      'User/etcd': { kind: 'User', target: 'etcd', created: true, prune: true },
    },
  });
  assert.equal(Object.keys(inv.resources), [...Object.keys(inv.resources)].sort());
});

test('what existed before converge first managed it is adopted (created: false)', () => {
  const hosts = file('hosts', '/etc/hosts');
  const n = node({ groups: [{ ...group, name: 'adm', id: 'Group/adm' }], files: [hosts], services: [{ ...svc, unit: 'ssh.service', id: 'Service/ssh' }] });
  const f = facts({
    paths: { '/etc/hosts': existing('file', SHA_OLD) },
    groups: { adm: { name: 'adm', gid: 4, members: [] } },
    units: { 'ssh.service': { unit: 'ssh.service', loadState: 'loaded', activeState: 'active', unitFileState: 'enabled', needDaemonReload: false } },
  });
  const inv = nextInventory(null, n, f, plan([write(hosts, SHA_OLD)]), 'c1', NOW);
  assert.is(inv.resources['File/hosts']?.created, false);
  assert.is(inv.resources['Group/adm']?.created, false);
  assert.is(inv.resources['Service/ssh']?.created, false);
  assert.is(inv.resources['File/hosts']?.sha256, SHA_NEW);
});

test('a path with no fact at all counts as adopted: never claim what is not known to be ours', () => {
  const f1 = file('a', '/etc/a');
  const inv = nextInventory(null, node({ files: [f1] }), facts({}), plan([]), 'c1', NOW);
  assert.is(inv.resources['File/a']?.created, false);
});

test('created is carried over from the previous inventory, also across a rename of the resource', () => {
  const old: Inventory = {
    commit: 'c0',
    appliedAt: 'x',
    resources: {
      'File/env': { kind: 'File', target: '/etc/etcd/etcd.env', created: true, prune: true, sha256: SHA_OLD },
      'File/old-name': { kind: 'File', target: '/etc/etcd/ca.pem', created: true, prune: true },
      'Group/etcd': { kind: 'Group', target: 'etcd', created: false, prune: true },
    },
  };
  const n = node({ groups: [group], files: [file('env', '/etc/etcd/etcd.env'), file('ca', '/etc/etcd/ca.pem')] });
  const f = facts({ paths: { '/etc/etcd/etcd.env': existing('file', SHA_OLD), '/etc/etcd/ca.pem': existing('file', SHA_NEW) }, groups: { etcd: { name: 'etcd', gid: 990, members: [] } } });
  const inv = nextInventory(old, n, f, plan([]), 'c1', NOW);
  assert.is(inv.resources['File/env']?.created, true);
  assert.is(inv.resources['File/ca']?.created, true, 'renamed resource keeps created');
  assert.not.ok('File/old-name' in inv.resources, 'the old id is not pruned: its path is still declared');
  assert.is(inv.resources['Group/etcd']?.created, false, 'adopted stays adopted');
});

test('no longer desired: kept until pruned when created, dropped when adopted or prune: false', () => {
  const old: Inventory = {
    commit: 'c0',
    appliedAt: 'x',
    resources: {
      'File/gone': { kind: 'File', target: '/etc/gone', created: true, prune: true },
      'File/removed-now': { kind: 'File', target: '/etc/removed-now', created: true, prune: true },
      'File/adopted': { kind: 'File', target: '/etc/adopted', created: false, prune: true },
      'File/keep': { kind: 'File', target: '/etc/keep', created: true, prune: false },
      'File/vanished': { kind: 'File', target: '/etc/vanished', created: true, prune: true },
      'User/old': { kind: 'User', target: 'old', created: true, prune: true },
      'Service/old': { kind: 'Service', target: 'old.service', created: true, prune: true },
    },
  };
  const f = facts({
    paths: { '/etc/gone': existing('file'), '/etc/removed-now': existing('file'), '/etc/adopted': existing('file'), '/etc/keep': existing('file'), '/etc/vanished': { exists: false } },
    users: { old: { name: 'old', uid: 1, gid: 1, group: 'old', groups: [], home: '/', shell: '/bin/sh' } },
    units: { 'old.service': { unit: 'old.service', loadState: 'loaded', activeState: 'active', unitFileState: 'enabled', needDaemonReload: false } },
  });
  const rmNow = act({ type: 'path.remove', resource: 'File/removed-now', path: '/etc/removed-now', pathType: 'file' });
  const rmGone = act({ type: 'path.remove', resource: 'File/gone', path: '/etc/gone', pathType: 'file' });
  const stop = act({ type: 'service.stop', resource: 'Service/old', unit: 'old.service' });
  const disable = act({ type: 'service.disable', resource: 'Service/old', unit: 'old.service' });
  const p = plan([stop, disable, rmNow, rmGone, act({ type: 'user.remove', resource: 'User/old', name: 'old' })]);

  // The removal of /etc/gone and of the user failed: they stay recorded, to be pruned next time.
  const inv = nextInventory(old, node({}), f, p, 'c1', NOW, [stop, disable, rmNow]);
  assert.equal(Object.keys(inv.resources), ['File/gone', 'User/old']);
  assert.is(inv.commit, 'c0', 'a partial pass keeps the last fully applied commit');

  const all = nextInventory(old, node({}), f, p, 'c1', NOW);
  assert.equal(Object.keys(all.resources), []);
  assert.is(all.commit, 'c1');
});

test('a service stopped but not yet disabled is still to be pruned', () => {
  const old: Inventory = { commit: 'c0', appliedAt: 'x', resources: { 'Service/old': { kind: 'Service', target: 'old.service', created: true, prune: true } } };
  const f = facts({ units: { 'old.service': { unit: 'old.service', loadState: 'loaded', activeState: 'active', unitFileState: 'enabled', needDaemonReload: false } } });
  const stop = act({ type: 'service.stop', resource: 'Service/old', unit: 'old.service' });
  const disable = act({ type: 'service.disable', resource: 'Service/old', unit: 'old.service' });
  assert.ok('Service/old' in nextInventory(old, node({}), f, plan([stop, disable]), 'c1', NOW, [stop]).resources);
});

test('partial pass: a failed write keeps the previous digest; the intent record marks what is about to be created', () => {
  const env = file('env', '/etc/etcd/etcd.env');
  const unit = file('unit', '/etc/systemd/system/etcd.service');
  const old: Inventory = { commit: 'c0', appliedAt: 'x', resources: { 'File/env': { kind: 'File', target: '/etc/etcd/etcd.env', created: true, prune: true, sha256: SHA_OLD, owner: 'root', group: 'etcd', mode: '0640' } } };
  const f = facts({ paths: { '/etc/etcd/etcd.env': existing('file', SHA_OLD), '/etc/systemd/system/etcd.service': { exists: false } } });
  const p = plan([write(env, SHA_OLD), write(unit)]);

  const intent = nextInventory(old, node({ files: [env, unit] }), f, p, 'c1', NOW, []);
  assert.is(intent.commit, 'c0');
  assert.is(intent.resources['File/env']?.sha256, SHA_OLD);
  assert.equal(intent.resources['File/unit'], { kind: 'File', target: '/etc/systemd/system/etcd.service', created: true, prune: true });

  const partial = nextInventory(intent, node({ files: [env, unit] }), f, p, 'c1', NOW, [p.actions[0] as HostAction]);
  assert.is(partial.resources['File/env']?.sha256, SHA_NEW);
  assert.is(partial.resources['File/unit']?.sha256, undefined);
  assert.is(partial.resources['File/unit']?.created, true);
  assert.is(partial.commit, 'c0');
});

test('policy report: desired values are not recorded as applied', () => {
  const f1 = file('r', '/etc/r', { policy: 'report' });
  const inv = nextInventory(null, node({ files: [f1] }), facts({ paths: { '/etc/r': existing('file', SHA_OLD) } }), plan([]), 'c1', NOW);
  assert.equal(inv.resources['File/r'], { kind: 'File', target: '/etc/r', created: false, prune: true });
});

test('ensure: absent resources are not recorded', () => {
  const f1 = file('a', '/etc/a', { ensure: 'absent' });
  const inv = nextInventory(null, node({ files: [f1] }), facts({ paths: { '/etc/a': { exists: false } } }), plan([]), 'c1', NOW);
  assert.equal(inv.resources, {});
});

test('sameInventory ignores only the time of writing', () => {
  const a: Inventory = { commit: 'c', appliedAt: '1', resources: { 'Group/x': { kind: 'Group', target: 'x', created: true, prune: true } } };
  assert.ok(sameInventory(a, { ...a, appliedAt: '2' }));
  assert.not.ok(sameInventory(a, { ...a, commit: 'd' }));
  assert.not.ok(sameInventory(a, null));
  assert.ok(sameInventory(null, null));
});

test('managed paths: one base64 path per line, files and directories only, hostile names round-trip', () => {
  const weird = "/srv/a b'c\"$(touch /tmp/pwned)`x`\n\u00e9";
  const inv: Inventory = {
    commit: null,
    appliedAt: 'x',
    resources: {
      'File/w': { kind: 'File', target: weird, created: true, prune: true },
      'Directory/d': { kind: 'Directory', target: '/srv', created: true, prune: true },
      'User/u': { kind: 'User', target: 'u', created: true, prune: true },
    },
  };
  const text = encodeManagedPaths(inv);
  assert.is(text.split('\n').length, 3);
  assert.match(text, /^[A-Za-z0-9+/=\n]+$/);
  assert.equal(text.split('\n').filter(Boolean).map((l) => Buffer.from(l, 'base64').toString('utf8')), ['/srv', weird]);
});

test.run();
