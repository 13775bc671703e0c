// The etcd probe of one node (pure parsing of recorded outputs, and the
// script's quoting): data dir judged by its WAL, the initial env file's
// digest, the unit, and restarts still owed (files newer than the process).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { etcdNodeScript, parseEtcdNodeProbe } from '../../../src/facts/etcd.js';
import { NodeError } from '../../../src/errors/index.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/etcd/node-probe');
const spec = { dataDir: '/var/lib/etcd', initialEnvFile: '/etc/etcd/etcd-initial.env', unit: 'etcd.service' };
const read = (f: string): string => readFileSync(join(dir, f), 'utf8');

test('a running member: data, no initial env, restarts owed for files changed after it started', () => {
  // started at now - uptime + 3500 s = 1795591908.5; etcd.env and server.pem changed later, the binary earlier
  const f = parseEtcdNodeProbe('cp-a', spec, read('member-pending.txt'));
  assert.equal(f.etcdDataDir, { path: '/var/lib/etcd', exists: true, empty: false });
  assert.equal(f.paths['/etc/etcd/etcd-initial.env'], { exists: false });
  assert.is(f.units['etcd.service']!.activeState, 'active');
  assert.equal(f.etcdRestartPending, ['/etc/etcd/etcd.env', '/etc/etcd/pki/server.pem']);
});

test('a fresh node: no data dir, no unit, nothing owed', () => {
  const f = parseEtcdNodeProbe('cp-d', spec, read('fresh-node.txt'));
  assert.equal(f.etcdDataDir, { path: '/var/lib/etcd', exists: false, empty: true });
  assert.is(f.units['etcd.service']!.loadState, 'not-found');
  assert.is(f.etcdRestartPending, undefined);
});

test('a bootstrap under way: the initial env digest and a WAL; a unit still activating owes no restart', () => {
  const f = parseEtcdNodeProbe('cp-a', spec, read('bootstrap-started.txt'));
  assert.equal(f.paths['/etc/etcd/etcd-initial.env'], { exists: true, type: 'file', owner: 'root', group: 'root', uid: 0, gid: 0, mode: '0644', size: 201, sha256: '0c5e8a09b3e8b8d8ad1f0e4b8a8e44c1f7d0b0d1a0f6b6f3b1d7e4d3b2a1c0f9' });
  assert.is(f.etcdDataDir!.empty, false);
  assert.is(f.etcdRestartPending, undefined);
});

test('leftovers of a failed start (member/snap/db, no WAL) are not a member\'s data', () => {
  const f = parseEtcdNodeProbe('cp-c', spec, read('leftovers-no-wal.txt'));
  assert.equal(f.etcdDataDir, { path: '/var/lib/etcd', exists: true, empty: true });
});

test('an unreadable data dir is an error naming the node, never taken for empty', () => {
  try {
    parseEtcdNodeProbe('cp-b', spec, read('unreadable.txt'));
    assert.unreachable('parsed');
  } catch (e) {
    assert.instance(e, NodeError);
    assert.match((e as Error).message, /^cp-b: \/var\/lib\/etcd is not readable/);
  }
});

test('the script quotes every path and runs in sh: a hostile data dir path stays literal', () => {
  const hostile = { dataDir: "/tmp/converge probe $(touch /tmp/pwned-etcd) 'x'", initialEnvFile: '/tmp/none `id`.env', unit: 'etcd.service' };
  const r = spawnSync('sh', ['-c', etcdNodeScript(hostile, ['/tmp/a b; touch /tmp/pwned-etcd2'])], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  const f = parseEtcdNodeProbe('local', hostile, r.stdout);
  assert.equal(f.etcdDataDir, { path: hostile.dataDir, exists: false, empty: true });
  assert.is(spawnSync('sh', ['-c', 'ls /tmp/pwned-etcd /tmp/pwned-etcd2 2>/dev/null | wc -l'], { encoding: 'utf8' }).stdout.trim(), '0');
});

test.run();
