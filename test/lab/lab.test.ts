/**
 * The lab itself, against the real thing: nodes with systemd and OpenSSH,
 * strict host keys, the PKI, the Git server, the fault helpers, reset, crash
 * recovery and a clean `lab down` (last: the suite runs after all others).
 * Needs root; fails, never skips, when the lab cannot run.
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import git from 'isomorphic-git';
import http from 'isomorphic-git/http/node';
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { configCommand, resolveConfig } from '../../src/cli/config.js';
import { labCommand } from '../../src/cli/lab.js';
import {
  BRIDGE,
  crashNode,
  cutLink,
  fixedAddress,
  killProcess,
  labDown,
  labPaths,
  labRemoveNode,
  labReset,
  labStatus,
  labUp,
  readArtifactPins,
  restartNode,
  restoreLink,
  runOnNode,
  sha256File,
  startNode,
  stopNode,
} from '../../src/lab/index.js';
import { commitChange, git as runGit, gitEnv, remoteHead } from '../helpers/git.js';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';

let lab: TestLab;

function ssh(address: string, command: string, knownHosts = lab.knownHosts, connectTimeout = 5): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(
    'ssh',
    [
      '-F', '/dev/null',
      '-i', lab.sshKey,
      '-o', 'IdentitiesOnly=yes',
      '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${knownHosts}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', `ConnectTimeout=${connectTimeout}`,
      `root@${address}`,
      command,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function sshOk(address: string, command: string): string {
  const r = ssh(address, command);
  assert.is(r.code, 0, `ssh root@${address} ${command}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

const addr = (name: string): string => lab.node(name).address;

test.before(async () => {
  lab = await ensureLab();
});

test('the default nodes run at the etcd chapter addresses', () => {
  const want = { 'cp-a': '10.240.16.10', 'cp-b': '10.240.48.10', 'cp-c': '10.240.80.10' };
  for (const [name, address] of Object.entries(want)) {
    const n = lab.node(name);
    assert.is(n.address, address);
    assert.ok(n.running, `${name} runs`);
  }
  assert.is(lab.bridge, BRIDGE);
  assert.is(fixedAddress('cp-d'), '10.240.112.10');
  assert.is(fixedAddress('cp-e'), '10.240.144.10');
  assert.is(fixedAddress('cp-h'), '10.240.240.10');
  assert.is(fixedAddress('cp-i'), '10.240.16.11');
});

test('every node answers SSH with strict host key checking, as itself, with systemd running', () => {
  const ids = new Set<string>();
  for (const name of ['cp-a', 'cp-b', 'cp-c']) {
    const r = ssh(addr(name), 'hostname; ip -4 -o addr show dev host0; cat /etc/machine-id; cat /proc/1/comm; systemctl is-system-running --wait; systemctl --failed --no-legend --plain');
    assert.is(r.code === 0 || r.code === 1, true, `ssh root@${addr(name)}: exit ${r.code}: ${r.stderr.trim()}`);
    const [hostname, ip, machineId, init, state, ...failed] = r.stdout.trim().split('\n');
    assert.is(hostname, name);
    assert.match(ip ?? '', `${addr(name)}/16`);
    assert.is(init, 'systemd', 'systemd is PID 1');
    assert.ok(state === 'running' || state === 'degraded', `${name}: systemctl is-system-running = ${state}; failed units: ${failed.join('; ') || 'none'}`);
    if (state === 'degraded') process.stderr.write(`  ${name} is degraded; failed units: ${failed.join('; ')}\n`);
    ids.add(machineId ?? '');
  }
  assert.is(ids.size, 3, 'machine ids differ');
});

test('a wrong or unknown host key is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lab-hostkey-'));
  try {
    const key = join(dir, 'other');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const otherPub = readFileSync(`${key}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
    const wrong = join(dir, 'known_hosts_wrong');
    writeFileSync(wrong, `${addr('cp-a')} ${otherPub}\n`);
    const r = ssh(addr('cp-a'), 'true', wrong);
    assert.is(r.code, 255);
    assert.match(r.stderr, /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
    const empty = join(dir, 'known_hosts_empty');
    writeFileSync(empty, '');
    const u = ssh(addr('cp-a'), 'true', empty);
    assert.is(u.code, 255);
    assert.match(u.stderr, /Host key verification failed|No .* host key is known/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('root logs in with the lab key only: no password login, no other key', () => {
  const conf = sshOk(addr('cp-b'), 'sshd -T 2>/dev/null | grep -E "^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication) "');
  assert.match(conf, 'permitrootlogin without-password');
  assert.match(conf, 'passwordauthentication no');
  const dir = mkdtempSync(join(tmpdir(), 'lab-clientkey-'));
  try {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'k')]);
    const r = spawnSync('ssh', ['-F', '/dev/null', '-i', join(dir, 'k'), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${lab.knownHosts}`, `root@${addr('cp-b')}`, 'true'], { encoding: 'utf8' });
    assert.is(r.status, 255);
    assert.match(r.stderr, /Permission denied/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the image has what converge and Ansible rely on, and no etcd', () => {
  const out = sshOk(addr('cp-c'), 'for c in sha256sum stat getent tar python3 ip systemctl install useradd groupadd pkill; do command -v $c >/dev/null || echo "missing $c"; done; command -v etcd || echo no-etcd; ls /usr/local/bin');
  assert.not.match(out, 'missing');
  assert.match(out, 'no-etcd');
  const kh = readFileSync(lab.knownHosts, 'utf8');
  for (const n of ['cp-a', 'cp-b', 'cp-c']) assert.match(kh, `${addr(n)},${n} ssh-ed25519 `);
});

test('the PKI has exactly the layout desired-state refers to, 0600/0700, with the right SANs', () => {
  const s = lab.secretsDir;
  const files = ['ca.pem', 'client/etcd-client.pem', 'client/etcd-client-key.pem'];
  for (const n of ['cp-a', 'cp-b', 'cp-c']) for (const f of ['server.pem', 'server-key.pem', 'peer.pem', 'peer-key.pem']) files.push(`nodes/${n}/${f}`);
  for (const f of files) {
    const st = statSync(join(s, f));
    assert.is(st.mode & 0o777, 0o600, `${f} is 0600`);
  }
  for (const d of ['', 'client', 'nodes', 'nodes/cp-a']) assert.is(statSync(join(s, d)).mode & 0o777, 0o700, `secrets/${d} is 0700`);
  assert.not.ok(readdirSync(s).some((f) => f.includes('ca-key')), 'the CA key is not in secrets/');
  const ca = new X509Certificate(readFileSync(join(s, 'ca.pem')));
  for (const n of ['cp-a', 'cp-b', 'cp-c']) {
    for (const kind of ['server', 'peer']) {
      const cert = new X509Certificate(readFileSync(join(s, 'nodes', n, `${kind}.pem`)));
      assert.ok(cert.verify(ca.publicKey), `${n}/${kind} is signed by the lab CA`);
      assert.is(cert.subjectAltName, `DNS:${n}, IP Address:${addr(n)}, IP Address:127.0.0.1`);
      const text = spawnSync('openssl', ['x509', '-noout', '-ext', 'extendedKeyUsage', '-in', join(s, 'nodes', n, `${kind}.pem`)], { encoding: 'utf8' }).stdout;
      assert.match(text, 'TLS Web Server Authentication');
      assert.match(text, 'TLS Web Client Authentication');
      assert.ok(cert.checkPrivateKey(createPrivateKey(readFileSync(join(s, 'nodes', n, `${kind}-key.pem`)))), `${n}/${kind} key matches`);
    }
  }
  const client = new X509Certificate(readFileSync(join(s, 'client/etcd-client.pem')));
  assert.ok(client.verify(ca.publicKey));
  const verify = spawnSync('openssl', ['verify', '-CAfile', join(s, 'ca.pem'), join(s, 'client/etcd-client.pem')], { encoding: 'utf8' });
  assert.is(verify.status, 0, verify.stderr);
});

test('artifacts are the host etcd binaries and match the desired-state pins', () => {
  for (const name of ['etcd', 'etcdctl']) {
    const f = join(lab.artifactsDir, name);
    assert.ok(existsSync(f), `${f} exists`);
    assert.is(sha256File(f), sha256File(`/usr/bin/${name}`));
  }
  const ds = join(projectDir, 'desired-state');
  assert.ok(existsSync(ds), 'desired-state/ exists');
  const pins = readArtifactPins(ds).filter((p) => p.name === 'etcd' || p.name === 'etcdctl');
  assert.ok(pins.length >= 2, `desired-state pins etcd and etcdctl (found ${pins.map((p) => p.name).join(', ') || 'none'})`);
  for (const p of pins) assert.is(p.sha256, sha256File(join(lab.artifactsDir, p.name)), `pin at ${p.at}`);
});

test('the Git server serves desired-state/ to real git (root = its content) and refuses a wrong password', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lab-gitclone-'));
  try {
    const env = gitEnv({ url: lab.git.url, username: lab.git.username, password: lab.git.password });
    runGit(['clone', '--quiet', lab.git.url, join(dir, 'ok')], dir, env);
    assert.is(runGit(['rev-parse', '--abbrev-ref', 'HEAD'], join(dir, 'ok'), env), 'main');
    const first = runGit(['rev-list', '--max-parents=0', 'HEAD'], join(dir, 'ok'), env);
    const tree = runGit(['ls-tree', '--name-only', first], join(dir, 'ok'), env).split('\n');
    assert.ok(tree.includes('nodes.yaml'), `the first commit's root holds nodes.yaml (${tree.join(' ')})`);
    const bad = spawnSync('git', ['clone', '--quiet', lab.git.url, join(dir, 'bad')], { encoding: 'utf8', env: gitEnv({ ...lab.git, password: 'not-the-password' }) });
    assert.is.not(bad.status, 0);
    assert.match(bad.stderr, /401|Authentication failed|could not read Username/);
    const none = spawnSync('git', ['clone', '--quiet', lab.git.url, join(dir, 'none')], { encoding: 'utf8', env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_GLOBAL: '/dev/null' } });
    assert.is.not(none.status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('isomorphic-git clones over HTTP with the credentials and gets 401 without them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lab-isogit-'));
  try {
    await git.clone({ fs, http, dir: join(dir, 'ok'), url: lab.git.url, singleBranch: true, ref: 'main', onAuth: () => ({ username: lab.git.username, password: lab.git.password }) });
    assert.ok(existsSync(join(dir, 'ok', 'nodes.yaml')));
    let err: unknown = null;
    try {
      await git.clone({ fs, http, dir: join(dir, 'bad'), url: lab.git.url, onAuth: () => ({ username: lab.git.username, password: 'wrong' }) });
    } catch (e) {
      err = e;
    }
    assert.ok(err, 'clone with a wrong password fails');
    assert.is((err as { code?: string }).code, 'HttpError');
    assert.match(String((err as Error).message), /401/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('commitChange pushes a real commit that real git and isomorphic-git then see', async () => {
  const branch = `lab-test-${Date.now()}`;
  const id = await commitChange((dir) => writeFileSync(join(dir, 'lab-test.txt'), 'hello\n'), 'lab test: add a file', { branch });
  assert.match(id, /^[0-9a-f]{40}$/);
  assert.is(await remoteHead({ branch }), id);
  const id2 = await commitChange((dir) => rmSync(join(dir, 'lab-test.txt')), 'lab test: remove it again', { branch });
  assert.is.not(id2, id);
  const refs = await git.listServerRefs({ http, url: lab.git.url, prefix: `refs/heads/${branch}`, onAuth: () => ({ username: lab.git.username, password: lab.git.password }) });
  assert.is(refs[0]?.oid, id2);
});

test('lab up wrote the config: converge settings point at the lab with no flags', async () => {
  const { config, origins, file } = resolveConfig({}, {}, projectDir);
  assert.is(file, join(projectDir, '.converge', 'config.json'));
  assert.is(config.sshKey, lab.sshKey);
  assert.is(config.knownHosts, lab.knownHosts);
  assert.is(config.secretsDir, lab.secretsDir);
  assert.is(config.artifactsDir, lab.artifactsDir);
  assert.is(config.etcdCa, lab.caFile);
  assert.is(config.etcdCert, lab.clientCert);
  assert.is(config.etcdKey, lab.clientKey);
  assert.is(config.repo, lab.git.url);
  assert.is(config.desiredState, join(projectDir, 'desired-state'));
  assert.is(origins.sshKey, `file:${file}`);
  let printed = '';
  assert.is(await configCommand({}, (s) => (printed += s), {}, projectDir), 0);
  assert.match(printed, lab.sshKey);
  assert.not.match(printed, lab.git.password);
  assert.not.match(printed, 'PRIVATE KEY');
});

test('settings: flags beat environment beat the config file beat defaults, each with its origin', () => {
  const fixtures = join(projectDir, 'test', 'fixtures', 'lab');
  const file = join(fixtures, 'config.json');
  const env = { CONVERGE_CONFIG: file, CONVERGE_PARALLEL: '16', CONVERGE_SSH_KEY: 'env-key', CONVERGE_ETCD_CA: '/pki/ca.pem' };
  const { config, origins } = resolveConfig({ parallel: 4, secrets: 'flag-secrets', json: true }, env, '/work/dir');
  assert.is(config.parallel, 4);
  assert.is(origins.parallel, 'flag');
  assert.is(config.secretsDir, '/work/dir/flag-secrets', 'flag paths are relative to the current directory');
  assert.is(config.sshKey, '/work/dir/env-key');
  assert.is(origins.sshKey, 'env');
  assert.is(config.etcdCa, '/pki/ca.pem');
  assert.is(config.desiredState, join(projectDir, 'test', 'fixtures', 'ds'), 'file paths are relative to the file');
  assert.is(origins.desiredState, `file:${file}`);
  assert.is(config.knownHosts, '/etc/converge/known_hosts');
  assert.is(config.repo, 'http://127.0.0.1:9/desired-state.git', 'a URL is not a path');
  assert.is(config.branch, 'release');
  assert.is(config.connectTimeoutMs, 10_000);
  assert.is(origins.connectTimeoutMs, 'default');
  assert.throws(() => resolveConfig({ config: join(fixtures, 'config-unknown-key.json') }, {}, '/'), /unknown setting "password"/);
  assert.throws(() => resolveConfig({ config: join(fixtures, 'missing.json') }, {}, '/'), /does not exist/);
  assert.throws(() => resolveConfig({}, { CONVERGE_PARALLEL: 'many' }, '/nonexistent'), /CONVERGE_PARALLEL: parallel must be a positive whole number/);
  const none = resolveConfig({}, {}, '/nonexistent');
  assert.is(none.file, null);
  assert.is(none.config.parallel, 64);
  assert.is(none.config.desiredState, '/nonexistent/desired-state');
});

test('lab status reports every node running, answering SSH, systemd up', async () => {
  const s = await labStatus();
  assert.ok(s.up);
  assert.ok(s.bridge.exists);
  assert.ok(s.git.answers);
  // Other suites may have added nodes of their own: the default three are this suite's.
  for (const n of s.nodes.filter((x) => ['cp-a', 'cp-b', 'cp-c'].includes(x.name))) {
    assert.ok(n.ssh, `${n.name} answers SSH`);
    assert.ok(n.system === 'running' || n.system === 'degraded', `${n.name}: ${n.system} ${n.failedUnits.join(' ')}`);
  }
  let out = '';
  assert.is(await labCommand('status', {}, [], (x) => (out += x)), 0);
  assert.match(out, /cp-a\s+10\.240\.16\.10\s+running\s+up\s+yes\s+running|cp-a\s+10\.240\.16\.10\s+running\s+up\s+yes\s+degraded/);
  out = '';
  await labCommand('status', { json: true }, [], (x) => (out += x));
  assert.is((JSON.parse(out) as { nodes: unknown[] }).nodes.length, s.nodes.length);
});

test('cutLink isolates a node; runOnNode still reaches it; restoreLink brings it back', async () => {
  await cutLink('cp-c');
  try {
    const r = ssh(addr('cp-c'), 'true', lab.knownHosts, 2);
    assert.is(r.code, 255, 'ssh fails while the link is cut');
    const inside = await runOnNode('cp-c', 'hostname; ip -4 -o addr show dev host0');
    assert.is(inside.code, 0, inside.stderr);
    assert.match(inside.stdout, /^cp-c\n/);
    assert.match(inside.stdout, `${addr('cp-c')}/16`, 'the node keeps its address while cut');
    assert.is((await labStatus()).nodes.find((n) => n.name === 'cp-c')?.linkUp, false);
  } finally {
    await restoreLink('cp-c');
  }
  assert.is(sshOk(addr('cp-c'), 'hostname'), 'cp-c');
});

test('killProcess signals matching processes inside the node only', async () => {
  sshOk(addr('cp-b'), 'systemd-run --unit=lab-test-sleeper --property=Restart=no sleep 4242');
  sshOk(addr('cp-b'), 'for i in $(seq 50); do systemctl is-active --quiet lab-test-sleeper && break; sleep 0.1; done');
  assert.equal(await killProcess('cp-a', 'sleep 4242', 'SIGKILL'), [], 'nothing matches on cp-a');
  const killed = await killProcess('cp-b', 'sleep 4242', 'SIGKILL');
  assert.is(killed.length, 1, `one process killed (${killed.join(',')})`);
  const state = sshOk(addr('cp-b'), 'for i in $(seq 50); do s=$(systemctl is-active lab-test-sleeper); [ "$s" = active ] || break; sleep 0.1; done; echo $s; systemctl reset-failed lab-test-sleeper 2>/dev/null; true');
  assert.is.not(state, 'active');
});

test('stopNode / startNode keep the node disk; crashNode is a power cut; restartNode reboots', async () => {
  sshOk(addr('cp-c'), 'echo kept > /root/stop-marker && sync');
  await stopNode('cp-c');
  assert.is(ssh(addr('cp-c'), 'true', lab.knownHosts, 2).code, 255);
  assert.is((await labStatus()).nodes.find((n) => n.name === 'cp-c')?.running, false);
  await startNode('cp-c');
  assert.is(sshOk(addr('cp-c'), 'cat /root/stop-marker'), 'kept');
  // PID 1's start time (field 22 of /proc/1/stat) changes with every boot of the node.
  const initStart = (): string => sshOk(addr('cp-c'), 'cut -d" " -f22 /proc/1/stat');
  const first = initStart();
  await crashNode('cp-c');
  assert.is(ssh(addr('cp-c'), 'true', lab.knownHosts, 2).code, 255);
  await startNode('cp-c');
  assert.is(sshOk(addr('cp-c'), 'cat /root/stop-marker'), 'kept');
  const second = initStart();
  assert.is.not(second, first, 'the node booted again after the crash');
  await restartNode('cp-c');
  assert.is.not(initStart(), second, 'the node booted again after restartNode');
  sshOk(addr('cp-c'), 'rm /root/stop-marker');
});

test('lab reset gives a node a fresh image in seconds, same address and host keys', async () => {
  sshOk(addr('cp-b'), 'echo dirty > /root/reset-marker; mkdir -p /etc/etcd && echo x > /etc/etcd/leftover');
  const t0 = Date.now();
  const r = await labReset('cp-b');
  const ms = Date.now() - t0;
  process.stderr.write(`  lab reset cp-b took ${(ms / 1000).toFixed(1)} s\n`);
  // A few seconds on an idle machine; the bound leaves room for a loaded CI runner.
  assert.ok(ms < 60_000, `reset took ${ms} ms`);
  assert.ok(r.ms > 0);
  assert.is(sshOk(addr('cp-b'), 'ls /root/reset-marker /etc/etcd 2>&1 | grep -c "No such file"'), '2');
  assert.is(sshOk(addr('cp-b'), 'hostname'), 'cp-b');
});

test('a node can be added (cp-d at its fixed address, with certificates) and removed', async () => {
  const withD = await ensureLab({ nodes: ['cp-d'] });
  assert.is(withD.node('cp-d').address, '10.240.112.10');
  assert.is(sshOk('10.240.112.10', 'hostname'), 'cp-d');
  assert.ok(existsSync(join(withD.secretsDir, 'nodes', 'cp-d', 'peer.pem')));
  assert.is(sshOk('10.240.112.10', 'getent hosts cp-a | cut -d" " -f1'), '10.240.16.10');
  await labRemoveNode('cp-d');
  assert.is(ssh('10.240.112.10', 'true', lab.knownHosts, 2).code, 255);
  assert.not.ok((await labStatus()).nodes.some((n) => n.name === 'cp-d'));
});

test('a stale lock from a dead run is taken over', async () => {
  const p = labPaths(lab.labDir);
  const dead = spawnSync('true').pid ?? 999_999;
  writeFileSync(p.lock, JSON.stringify({ pid: dead, start: 1 }));
  const info = await labUp({ projectDir });
  assert.ok(info.nodes.every((n) => n.running));
  assert.not.ok(existsSync(p.lock), 'the lock is released');
});

test('lab up after a crash: a node process the state lost is found by scanning /proc and replaced', async () => {
  const p = labPaths(lab.labDir);
  const state = JSON.parse(readFileSync(p.state, 'utf8')) as { nodes: Record<string, { pid: number }> };
  const lostPid = state.nodes['cp-a']!.pid;
  delete state.nodes['cp-a'];
  writeFileSync(p.state, JSON.stringify(state));
  const info = await ensureLab();
  assert.ok(!existsSync(`/proc/${lostPid}`) || readFileSync(`/proc/${lostPid}/stat`, 'utf8').split(' ')[2] === 'Z', 'the lost nspawn process was stopped');
  assert.ok(info.node('cp-a').running);
  assert.is.not(info.node('cp-a').pid, lostPid);
  assert.is(sshOk(addr('cp-a'), 'hostname'), 'cp-a');
});

test('lab down leaves no process, mount, veth or bridge behind (even one the state forgot)', async () => {
  const p = labPaths(lab.labDir);
  const state = JSON.parse(readFileSync(p.state, 'utf8')) as { nodes: Record<string, { pid: number }>; gitServer: { pid: number } | null };
  const pids = Object.values(state.nodes).map((n) => n.pid);
  const gitPid = state.gitServer?.pid;
  delete state.nodes['cp-b'];
  writeFileSync(p.state, JSON.stringify(state));
  const r = await labDown();
  assert.ok(r.stoppedNodes.length >= 2);
  const alive = (pid: number): boolean => existsSync(`/proc/${pid}`) && readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  for (const pid of pids) assert.not.ok(alive(pid), `node process ${pid} is gone`);
  if (gitPid) assert.not.ok(alive(gitPid), 'the Git server is gone');
  const procs = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
  assert.not.match(procs, p.nodesDir, 'no process runs from the lab nodes');
  assert.not.match(procs, 'gitserver-main', 'no Git server process');
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.not.match(mounts, p.nodesDir, 'no overlay mounted');
  assert.not.ok(existsSync(`/sys/class/net/${BRIDGE}`), 'the bridge is gone');
  assert.not.ok(readdirSync('/sys/class/net').some((i) => i.startsWith('vb-cp-')), 'no veth left');
  const s = await labStatus();
  assert.not.ok(s.up);
  assert.is(s.nodes.length, 0);
});

test.run();
