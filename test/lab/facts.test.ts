// Facts over SSH against the real lab nodes (OpenSSH, systemd): strict host
// key checking, one exec per node for all its facts, hostile names reported
// literally, and a clear per-node error for an unknown host, a changed host
// key, a wrong client key and a node that refuses connections.
// Test files live only under /tmp/converge-test-* on the nodes and are removed.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectSsh, withNodes, type SshOptions } from '../../src/connect/ssh.js';
import { fingerprint, parseKnownHosts } from '../../src/connect/known-hosts.js';
import { shellQuote, type Transport } from '../../src/connect/transport.js';
import { NodeError } from '../../src/errors/index.js';
import { probeNode, type ProbeStats } from '../../src/facts/gather.js';
import { probeRequestFor } from '../../src/facts/request.js';
import type { ProbeRequest } from '../../src/facts/probe.js';
import { loadDesiredState } from '../../src/model/index.js';
import type { ResolvedState } from '../../src/model/types.js';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';

let lab: TestLab;
let state: ResolvedState;
const local = mkdtempSync(join(tmpdir(), 'converge-facts-lab-'));
const remoteDir = `/tmp/converge-test-facts-${process.pid}`;
const figures: string[] = [];

const sshOpts = (name: string, over: Partial<SshOptions> = {}): SshOptions => ({
  node: name,
  host: lab.node(name).address,
  port: 22,
  user: 'root',
  privateKey: lab.sshKey,
  knownHostsFile: lab.knownHosts,
  connectTimeoutMs: 10_000,
  ...over,
});

async function refused(o: SshOptions): Promise<NodeError> {
  try {
    const t = await connectSsh(o);
    await t.close();
  } catch (e) {
    assert.instance(e, NodeError);
    return e as NodeError;
  }
  throw new Error(`${o.node}: connection was not refused`);
}

/** The node's host keys as the lab recorded them in known_hosts (by address). */
function hostKeysOf(name: string) {
  const { entries } = parseKnownHosts(readFileSync(lab.knownHosts, 'utf8'));
  return entries.filter((e) => e.hosts.split(',').includes(lab.node(name).address)).map((e) => e.key);
}

/** `cd` with no argument goes to root's home: an injected command would leave its file in /root. */
const HOSTILE = ['a b.conf', `it's "q".conf`, '$(cd;touch pwned)', '`cd;touch pwned-bt`', "x'; cd; touch pwned-q; '", 'semi;cd;touch pwned-semi', '"; cd; touch pwned-dq; "', 'é中😀.txt', 'new\nline', '-rf'];

test.before(async () => {
  lab = await ensureLab();
  ({ state } = await loadDesiredState(join(projectDir, 'desired-state'), { artifactsDir: lab.artifactsDir, secretsDir: lab.secretsDir }));
});

test.after(() => {
  rmSync(local, { recursive: true, force: true });
  if (figures.length) process.stdout.write(`\n${figures.join('\n')}\n`);
});

test('facts for the desired state on every node: connect + one exec each, in parallel', async () => {
  const nodes = state.nodes.filter((n) => lab.nodes.some((l) => l.name === n.name));
  assert.equal(nodes.map((n) => n.name).sort(), ['cp-a', 'cp-b', 'cp-c']);
  const rounds: { node: string; connectMs: number; stats: ProbeStats; execs: number }[][] = [];
  for (let round = 0; round < 3; round++) {
    const started = performance.now();
    const out = await withNodes(nodes, 64, async (n) => {
      const t0 = performance.now();
      const t = await connectSsh(sshOpts(n.name));
      const connectMs = performance.now() - t0;
      try {
        const request = probeRequestFor(n, state.etcd);
        const { facts, stats } = await probeNode(t, request);
        for (const p of [...request.paths, state.etcd!.dataDir]) assert.ok(p in facts.paths, `${n.name}: ${p}`);
        assert.equal(Object.keys(facts.units).sort(), request.units);
        assert.ok(facts.users['root'] && facts.groups['root'], 'root is there');
        assert.is(facts.etcdDataDir?.path, state.etcd!.dataDir);
        for (const tw of request.textWanted) {
          const f = facts.paths[tw.path]!;
          // text comes back exactly when the file differs from the desired one
          if (f.exists && f.type === 'file') assert.is(f.text !== undefined, f.sha256 !== tw.sha256 && f.size <= 65536, tw.path);
        }
        return { node: n.name, connectMs, stats, execs: t.execCount };
      } finally {
        await t.close();
      }
    });
    const wall = performance.now() - started;
    const ok = out.map((o) => {
      if (!o.ok) throw o.error;
      return o.value;
    });
    for (const r of ok) assert.is(r.execs, 1, `${r.node}: one exec for all facts`);
    rounds.push(ok);
    figures.push(
      `facts round ${round + 1}: ${wall.toFixed(0)} ms wall for ${ok.length} nodes; ` +
        ok.map((r) => `${r.node} connect ${r.connectMs.toFixed(0)} ms, probe ${r.stats.ms.toFixed(0)} ms, ${r.stats.stdinBytes} B in / ${r.stats.stdoutBytes} B out, ${r.execs} exec`).join('; '),
    );
  }
});

test('hostile path names are reported literally and run nothing on the node', async () => {
  const t = await connectSsh(sshOpts('cp-b'));
  try {
    const before = await t.exec('ls -d /tmp/pwned* /root/pwned* /pwned* 2>/dev/null; true');
    assert.is(before.stdout.toString(), '', 'no pwned files before the test');
    const setup = [`mkdir -p ${shellQuote(remoteDir)}`, ...HOSTILE.map((h) => `printf '%s' ${shellQuote(h)} > ${shellQuote(`${remoteDir}/${h}`)}`), `ln -sfn /etc ${shellQuote(`${remoteDir}/link dir`)}`];
    const s = await t.exec(setup.join('\n'));
    assert.is(s.code, 0, s.stderr);
    const paths = [...HOSTILE.map((h) => `${remoteDir}/${h}`), `${remoteDir}/link dir`, `${remoteDir}/missing $(id)`];
    const request: ProbeRequest = {
      node: 'cp-b',
      paths,
      textWanted: paths.map((path) => ({ path, sha256: '0'.repeat(64) })),
      users: ['root', '$(cd;touch pwned-user)', '-x'],
      groups: ['`cd;touch pwned-group`'],
      units: ['ssh.service'],
      listDirs: [remoteDir],
      etcdDataDir: `${remoteDir}/etcd $(x)`,
      stateDir: `${remoteDir}/state`,
    };
    const { facts } = await probeNode(t, request);
    for (const h of HOSTILE) {
      const f = facts.paths[`${remoteDir}/${h}`];
      assert.ok(f && f.exists && f.type === 'file', JSON.stringify(h));
      if (f && f.exists) {
        assert.is(f.sha256, createHash('sha256').update(h).digest('hex'), h);
        assert.is(f.text, h);
      }
    }
    const link = facts.paths[`${remoteDir}/link dir`];
    assert.ok(link && link.exists && link.type === 'symlink' && link.target === '/etc' && link.text === undefined);
    assert.equal(facts.paths[`${remoteDir}/missing $(id)`], { exists: false });
    assert.equal(facts.dirListings[remoteDir]!.length, HOSTILE.length + 1);
    assert.equal(Object.keys(facts.users), ['root']);
    assert.equal(facts.groups, {});
    assert.equal(facts.etcdDataDir, { path: `${remoteDir}/etcd $(x)`, exists: false, empty: true });
    const after = await t.exec(`ls -d /tmp/pwned* /root/pwned* /pwned* ${shellQuote(remoteDir)}/pwned* 2>/dev/null; true`);
    assert.is(after.stdout.toString(), '', 'nothing was run');
  } finally {
    await t.exec(`rm -rf ${shellQuote(remoteDir)}`);
    await t.close();
  }
});

test('unknown host: E_HOSTKEY naming the node and its real SHA256 fingerprint', async () => {
  const empty = join(local, 'empty_known_hosts');
  writeFileSync(empty, '');
  const e = await refused(sshOpts('cp-a', { knownHostsFile: empty }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.is(e.node, 'cp-a');
  const fps = hostKeysOf('cp-a').map((k) => fingerprint(k.blob));
  assert.ok(fps.some((fp) => e.message.includes(fp)), `${e.message} names one of ${fps.join(', ')}`);
  assert.match(e.message, /unknown/);
  assert.match(e.hint ?? '', /out of band/);
});

test('changed host key: E_HOSTKEY saying CHANGED with both fingerprints', async () => {
  // cp-a's address listed with cp-b's keys: what a man-in-the-middle looks like
  const lines = readFileSync(lab.knownHosts, 'utf8').split('\n').filter((l) => l.startsWith(`${lab.node('cp-b').address},`));
  const wrong = join(local, 'wrong_known_hosts');
  writeFileSync(wrong, lines.map((l) => l.replace(/^\S+/, lab.node('cp-a').address)).join('\n'));
  const e = await refused(sshOpts('cp-a', { knownHostsFile: wrong }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.match(e.message, /^cp-a: host key of .* has CHANGED/);
  const a = hostKeysOf('cp-a').map((k) => fingerprint(k.blob));
  const b = hostKeysOf('cp-b').map((k) => fingerprint(k.blob));
  assert.ok(a.some((fp) => e.message.includes(fp)) && b.some((fp) => e.message.includes(fp)), e.message);
});

test('hashed known_hosts and pinned keys of each type work against OpenSSH', async () => {
  const hashed = join(local, 'hashed_known_hosts');
  copyFileSync(lab.knownHosts, hashed);
  execFileSync('ssh-keygen', ['-H', '-f', hashed], { stdio: 'ignore' });
  assert.not.ok(readFileSync(hashed, 'utf8').includes(lab.node('cp-c').address));
  const t = await connectSsh(sshOpts('cp-c', { knownHostsFile: hashed }));
  assert.is((await t.exec('hostname')).stdout.toString().trim(), 'cp-c');
  await t.close();
  for (const key of hostKeysOf('cp-c')) {
    const pinned = `${key.type} ${key.blob.toString('base64')}`;
    const p = await connectSsh(sshOpts('cp-c', { knownHostsFile: undefined, pinnedHostKey: pinned }));
    await p.close();
  }
  const other = hostKeysOf('cp-a')[0]!;
  const e = await refused(sshOpts('cp-c', { knownHostsFile: undefined, pinnedHostKey: `${other.type} ${other.blob.toString('base64')}` }));
  assert.match(e.message, /CHANGED/);
});

test('wrong client key: E_CONNECT authentication failed, key named by path only', async () => {
  const key = join(local, 'stranger');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  const e = await refused(sshOpts('cp-a', { privateKey: key }));
  assert.is(e.code, 'E_CONNECT');
  assert.is(e.message, `cp-a: authentication failed for root@${lab.node('cp-a').address}:22 with key ${key}`);
  assert.not.ok(e.message.includes('PRIVATE'));
});

test('one node refusing connections fails alone; the others give their facts', async () => {
  const targets = ['cp-a', 'refusing', 'cp-c'];
  const out = await withNodes(targets, 64, async (name) => {
    // port 2 on cp-b: a lab node that refuses the connection
    const t: Transport = await connectSsh(name === 'refusing' ? sshOpts('cp-b', { node: 'refusing', port: 2 }) : sshOpts(name));
    try {
      const n = state.nodes.find((x) => x.name === name)!;
      return (await probeNode(t, probeRequestFor(n, state.etcd))).facts.node;
    } finally {
      await t.close();
    }
  });
  assert.equal(out.map((o) => o.ok), [true, false, true]);
  const err = (out[1] as { error: NodeError }).error;
  assert.is(err.code, 'E_CONNECT');
  assert.is(err.message, `refusing: connection refused by ${lab.node('cp-b').address}:2`);
});

test.run();
