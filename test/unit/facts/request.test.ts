// What the probe is asked, derived from a node's desired resources.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CONVERGE_STATE_DIR } from '../../../src/facts/probe.js';
import { probeRequestFor } from '../../../src/facts/request.js';
import type { DesiredDirectory, DesiredFile, ResolvedEtcd, ResolvedNode } from '../../../src/model/types.js';

const at = { file: 'files.yaml', line: 1, col: 1 };
const base = { ensure: 'present' as const, policy: 'enforce' as const, prune: true, at };

const dir = (name: string, path: string, over: Partial<DesiredDirectory> = {}): DesiredDirectory => ({ ...base, id: `Directory/${name}`, kind: 'Directory', name, path, owner: 'root', group: 'root', mode: '0755', purge: false, ...over });
const file = (name: string, path: string, over: Partial<DesiredFile> = {}): DesiredFile => ({ ...base, id: `File/${name}`, kind: 'File', name, path, owner: 'root', group: 'root', mode: '0644', restarts: [], ...over });

const node: ResolvedNode = {
  name: 'cp-a',
  address: '10.240.16.10',
  ssh: { user: 'root', port: 22 },
  labels: {},
  vars: {},
  groups: [{ ...base, id: 'Group/etcd', kind: 'Group', name: 'etcd', system: true }],
  users: [
    { ...base, id: 'User/etcd', kind: 'User', name: 'etcd', system: true, group: 'etcd', groups: ['ssl-cert'], home: '/var/lib/etcd', shell: '/usr/sbin/nologin' },
    { ...base, id: 'User/old', kind: 'User', name: 'old', ensure: 'absent', system: true, group: 'oldgrp', groups: [], home: '/', shell: '/bin/false' },
  ],
  directories: [
    dir('pki', '/etc/etcd/pki', { owner: 'etcd', group: 'etcd', mode: '0700', purge: true }),
    dir('conf', '/etc/etcd'),
    dir('gone', '/srv/gone dir', { ensure: 'absent', purge: true, owner: 'ghost' }),
  ],
  files: [
    file('env', '/etc/etcd/etcd.env', { content: { kind: 'text', origin: 'template', text: 'A=1\n', sha256: 'a'.repeat(64), size: 4 }, restarts: ['etcd.service'] }),
    file('bin', '/usr/local/bin/etcd', { mode: '0755', content: { kind: 'artifact', name: 'etcd', localPath: '/bastion/etcd', sha256: 'b'.repeat(64), size: 10 } }),
    file('key', '/etc/etcd/pki/server-key.pem', { owner: 'etcd', group: 'etcd', mode: '0600', content: { kind: 'secret', name: 'server-key.pem', localPath: '/s/k', sha256: 'c'.repeat(64), size: 5 } }),
    file('old', "/etc/it's old.conf", { ensure: 'absent' }),
    file('unit', '/etc/systemd/system/etcd.service', { content: { kind: 'text', origin: 'source', text: '[Unit]\n', sha256: 'd'.repeat(64), size: 7 }, restarts: ['other.service'] }),
  ],
  services: [{ ...base, id: 'Service/etcd', kind: 'Service', name: 'etcd', unit: 'etcd.service', enabled: true, running: true }],
};

const etcd = { dataDir: '/var/lib/etcd' } as ResolvedEtcd;

test('every path of the node, present or absent, sorted and unique', () => {
  const r = probeRequestFor(node, null);
  assert.is(r.node, 'cp-a');
  assert.equal(r.paths, ['/etc/etcd', '/etc/etcd/etcd.env', '/etc/etcd/pki', '/etc/etcd/pki/server-key.pem', "/etc/it's old.conf", '/etc/systemd/system/etcd.service', '/srv/gone dir', '/usr/local/bin/etcd']);
  assert.is(r.stateDir, CONVERGE_STATE_DIR);
  assert.is(r.etcdDataDir, null);
});

test('text content is asked for text files only: never artifacts or secrets', () => {
  const r = probeRequestFor(node, null);
  assert.equal(r.textWanted, [
    { path: '/etc/etcd/etcd.env', sha256: 'a'.repeat(64) },
    { path: '/etc/systemd/system/etcd.service', sha256: 'd'.repeat(64) },
  ]);
});

test('accounts: declared ones plus every owner, group and membership named by present resources', () => {
  const r = probeRequestFor(node, null);
  assert.equal(r.users, ['etcd', 'old', 'root']);
  assert.equal(r.groups, ['etcd', 'root', 'ssl-cert']);
});

test('units: services and the units files restart; purge listings only for present directories', () => {
  const r = probeRequestFor(node, etcd);
  assert.equal(r.units, ['etcd.service', 'other.service']);
  assert.equal(r.listDirs, ['/etc/etcd/pki']);
  assert.is(r.etcdDataDir, '/var/lib/etcd');
});

test.run();
