// The SSH transport against an SSH server on 127.0.0.1 (ssh2's own server,
// running real sh for exec): host key checking, authentication, stdin
// streaming with backpressure, timeouts, and the error for each failure.
// The lab suite (test/lab/facts.test.ts) does the same against OpenSSH.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import ssh2 from 'ssh2';
import { connectSsh, withNodes, type SshOptions } from '../../../src/connect/ssh.js';
import { NodeError } from '../../../src/errors/index.js';

const dir = mkdtempSync(join(tmpdir(), 'converge-ssh-'));

function keygen(name: string, passphrase = ''): { path: string; pub: string; fp: string } {
  const path = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', name, '-f', path]);
  const pub = readFileSync(`${path}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${path}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  return { path, pub, fp };
}

const hostKey = keygen('host');
const otherHostKey = keygen('host2');
const clientKey = keygen('client');
const strangerKey = keygen('stranger');
const lockedKey = keygen('locked', 'secret passphrase');

const parsed = ssh2.utils.parseKey(readFileSync(`${clientKey.path}.pub`));
if (parsed instanceof Error) throw parsed;
const allowed: ssh2.ParsedKey = parsed;

/** An SSH server that runs exec requests with /bin/sh, as sshd does with the login shell. */
function startServer(hostKeyPath: string): Promise<{ port: number; server: ssh2.Server; clients: Set<ssh2.Connection> }> {
  const clients = new Set<ssh2.Connection>();
  const server = new ssh2.Server({ hostKeys: [readFileSync(hostKeyPath)] }, (client) => {
    clients.add(client);
    client.on('close', () => clients.delete(client));
    client.on('error', () => undefined);
    client.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey' || ctx.username !== 'root' || !allowed.equals(ctx.key.data) || ctx.key.algo !== allowed.type) return ctx.reject(['publickey']);
      if (ctx.signature && ctx.blob && !allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo)) return ctx.reject(['publickey']);
      ctx.accept();
    });
    client.on('ready', () => {
      client.on('session', (acceptSession) => {
        const session = acceptSession();
        let child: ReturnType<typeof spawn> | undefined;
        session.on('exec', (accept, _reject, info) => {
          const stream = accept();
          child = spawn('/bin/sh', ['-c', info.command], { stdio: ['pipe', 'pipe', 'pipe'] });
          stream.pipe(child.stdin!);
          child.stdin!.on('error', () => undefined);
          child.stdout!.pipe(stream, { end: false });
          child.stderr!.pipe(stream.stderr, { end: false });
          stream.on('close', () => child?.kill('SIGKILL'));
          child.on('close', (code, signal) => {
            if (signal) stream.exit(signal.replace(/^SIG/, ''), false, '');
            else stream.exit(code ?? 255);
            stream.end();
          });
        });
        session.on('signal', (accept, _reject, info) => {
          accept?.();
          child?.kill(`SIG${info.name}` as NodeJS.Signals);
        });
      });
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as AddressInfo).port, server, clients })));
}

const main = await startServer(`${hostKey.path}`);
const knownHosts = join(dir, 'known_hosts');
writeFileSync(knownHosts, `[127.0.0.1]:${main.port} ${hostKey.pub}\n`);

const base = (over: Partial<SshOptions> = {}): SshOptions => ({
  node: 'n1',
  host: '127.0.0.1',
  port: main.port,
  user: 'root',
  privateKey: clientKey.path,
  knownHostsFile: knownHosts,
  connectTimeoutMs: 5000,
  ...over,
});

async function refusal(o: SshOptions): Promise<NodeError> {
  try {
    const t = await connectSsh(o);
    await t.close();
  } catch (e) {
    assert.instance(e, NodeError);
    return e as NodeError;
  }
  throw new Error('connection was not refused');
}

function noKeyMaterial(e: Error): void {
  const all = `${e.message} ${(e as NodeError).hint ?? ''}`;
  const priv = readFileSync(clientKey.path, 'utf8');
  assert.not.ok(all.includes('PRIVATE KEY'));
  for (const line of priv.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'))) assert.not.ok(all.includes(line));
}

test.after(async () => {
  await new Promise((r) => main.server.close(r));
  rmSync(dir, { recursive: true, force: true });
});

test('connects with a known host key, runs a script, reports exit code, stdout and stderr', async () => {
  const t = await connectSsh(base());
  try {
    assert.is(t.node, 'n1');
    const r = await t.exec("printf 'out %s' \"$0\"; echo err >&2; exit 3");
    assert.is(r.code, 3);
    assert.is(r.stdout.toString(), 'out sh');
    assert.is(r.stderr, 'err\n');
    // the script is one literal word for the remote shell: quotes and $ survive
    const q = await t.exec(`x='it'"'"'s $HOME'; printf '%s' "$x"`);
    assert.is(q.stdout.toString(), "it's $HOME");
    assert.is(t.execCount, 2);
  } finally {
    await t.close();
  }
});

test('stdin: a large Buffer and a Readable are streamed completely, with progress', async () => {
  const t = await connectSsh(base());
  try {
    const big = Buffer.alloc(8 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    const progress: number[] = [];
    const r = await t.exec('sha256sum', { stdin: big, onProgress: (n) => progress.push(n) });
    assert.is(r.code, 0);
    assert.is(r.stdout.toString().split(' ')[0], createHash('sha256').update(big).digest('hex'));
    assert.ok(progress.length > 10);
    assert.is(progress.at(-1), big.length);
    assert.ok(progress.every((n, i) => i === 0 || n > progress[i - 1]!), 'progress only grows');

    const parts = Array.from({ length: 64 }, (_, i) => Buffer.alloc(32 * 1024, i));
    const r2 = await t.exec('wc -c', { stdin: Readable.from(parts) });
    assert.is(r2.stdout.toString().trim(), String(64 * 32 * 1024));

    const r3 = await t.exec('cat', { stdin: 'héllo\n' });
    assert.is(r3.stdout.toString(), 'héllo\n');
    // without stdin the remote side sees EOF at once instead of hanging
    const r4 = await t.exec('cat; echo done');
    assert.is(r4.stdout.toString(), 'done\n');
    // --stats' timeline: the connection, then each exec in order, with the bytes it sent
    const tm = t.timings!;
    assert.ok(tm.connect.ms > 0 && tm.connect.at >= 0);
    assert.equal(tm.execs.map((e) => e.stdinBytes), [big.length, 64 * 32 * 1024, 7, 0]);
    assert.ok(tm.execs.every((e, i) => e.ms > 0 && e.at >= (i === 0 ? tm.connect.at + tm.connect.ms : tm.execs[i - 1]!.at + tm.execs[i - 1]!.ms)));
  } finally {
    await t.close();
  }
});

test('a command that exits without reading its stdin does not hang the upload', async () => {
  const t = await connectSsh(base());
  try {
    const r = await t.exec('exit 4', { stdin: Buffer.alloc(16 * 1024 * 1024), timeoutMs: 20_000 });
    assert.is(r.code, 4);
  } finally {
    await t.close();
  }
});

test('per-command timeout: E_REMOTE, and the connection stays usable', async () => {
  const t = await connectSsh(base({ commandTimeoutMs: 300 }));
  try {
    const started = Date.now();
    try {
      await t.exec('sleep 5');
      assert.unreachable();
    } catch (e) {
      assert.instance(e, NodeError);
      assert.is((e as NodeError).code, 'E_REMOTE');
      assert.match((e as NodeError).message, /^n1: command timed out after 0\.3 s/);
    }
    assert.ok(Date.now() - started < 3000);
    const r = await t.exec('echo ok', { timeoutMs: 5000 });
    assert.is(r.stdout.toString(), 'ok\n');
  } finally {
    await t.close();
  }
});

test('several commands at once on one connection', async () => {
  const t = await connectSsh(base());
  try {
    const rs = await Promise.all([1, 2, 3, 4].map((i) => t.exec(`sleep 0.2; echo ${i}`)));
    assert.equal(rs.map((r) => r.stdout.toString()), ['1\n', '2\n', '3\n', '4\n']);
    assert.is(t.execCount, 4);
  } finally {
    await t.close();
  }
});

test('unknown host key: E_HOSTKEY with the SHA256 fingerprint and what to do', async () => {
  const empty = join(dir, 'empty_known_hosts');
  writeFileSync(empty, '');
  const e = await refusal(base({ knownHostsFile: empty }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.is(e.node, 'n1');
  assert.ok(e.message.includes('unknown'), e.message);
  assert.ok(e.message.includes(hostKey.fp), `${e.message} should name ${hostKey.fp}`);
  assert.match(e.hint ?? '', /out of band/);
  assert.ok((e.hint ?? '').includes(empty) && (e.hint ?? '').includes('ssh.hostKey'), e.hint);
  // a missing file is the same as an empty one
  const e2 = await refusal(base({ knownHostsFile: join(dir, 'nope') }));
  assert.is(e2.code, 'E_HOSTKEY');
});

test('changed host key: E_HOSTKEY saying CHANGED with both fingerprints', async () => {
  const wrong = join(dir, 'wrong_known_hosts');
  writeFileSync(wrong, `[127.0.0.1]:${main.port} ${otherHostKey.pub}\n`);
  const e = await refusal(base({ knownHostsFile: wrong }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.ok(e.message.includes('CHANGED'), e.message);
  assert.ok(e.message.includes(otherHostKey.fp) && e.message.includes(hostKey.fp), e.message);
  assert.match(e.message, /man-in-the-middle/);
  assert.ok((e.hint ?? '').includes('ssh-keygen -R'), e.hint);
});

test('hashed known_hosts (ssh-keygen -H) is accepted', async () => {
  const hashed = join(dir, 'hashed_known_hosts');
  writeFileSync(hashed, `# lab\n[127.0.0.1]:${main.port} ${hostKey.pub}\n`);
  execFileSync('ssh-keygen', ['-H', '-f', hashed], { stdio: 'ignore' });
  assert.not.ok(readFileSync(hashed, 'utf8').includes('127.0.0.1'));
  const t = await connectSsh(base({ knownHostsFile: hashed }));
  assert.is((await t.exec('echo hi')).stdout.toString(), 'hi\n');
  await t.close();
});

test('an entry for port 22 does not vouch for another port', async () => {
  const file = join(dir, 'port22_known_hosts');
  writeFileSync(file, `127.0.0.1 ${hostKey.pub}\n`);
  const e = await refusal(base({ knownHostsFile: file }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.match(e.message, /unknown/);
});

test('pinned host key: the right one connects, another is a CHANGED refusal, garbage is refused', async () => {
  const t = await connectSsh(base({ knownHostsFile: undefined, pinnedHostKey: hostKey.pub }));
  await t.close();
  const e = await refusal(base({ pinnedHostKey: otherHostKey.pub }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.match(e.message, /CHANGED/);
  assert.ok(e.message.includes(`pinned ssh-ed25519 ${otherHostKey.fp}`), e.message);
  const g = await refusal(base({ pinnedHostKey: 'ssh-ed25519 nonsense' }));
  assert.is(g.code, 'E_HOSTKEY');
  assert.match(g.message, /pinned host key .* not a valid public key/);
});

test('@revoked key is refused even when also listed as known', async () => {
  const file = join(dir, 'revoked_known_hosts');
  writeFileSync(file, `@revoked * ${hostKey.pub}\n[127.0.0.1]:${main.port} ${hostKey.pub}\n`);
  const e = await refusal(base({ knownHostsFile: file }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.match(e.message, /revoked/);
});

test('host known only with a key type the server does not offer: E_HOSTKEY', async () => {
  const rsa = join(dir, 'rsa');
  execFileSync('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', rsa]);
  const file = join(dir, 'rsa_known_hosts');
  writeFileSync(file, `[127.0.0.1]:${main.port} ${readFileSync(`${rsa}.pub`, 'utf8').split(' ').slice(0, 2).join(' ')}\n`);
  const e = await refusal(base({ knownHostsFile: file }));
  assert.is(e.code, 'E_HOSTKEY');
  assert.match(e.message, /offers none of the host key types known for it \(ssh-rsa SHA256:/);
});

test('trust on first use records the key; afterwards checking is strict again', async () => {
  const file = join(dir, 'tofu_known_hosts');
  writeFileSync(file, '');
  const t = await connectSsh(base({ knownHostsFile: file, insecureTrustOnFirstUse: true }));
  await t.close();
  const recorded = readFileSync(file, 'utf8');
  assert.match(recorded, /^\|1\|[^ ]+ ssh-ed25519 AAAA/);
  const out = execFileSync('ssh-keygen', ['-F', `[127.0.0.1]:${main.port}`, '-f', file], { encoding: 'utf8' });
  assert.ok(out.includes(hostKey.pub.split(' ')[1]!));
  const t2 = await connectSsh(base({ knownHostsFile: file }));
  await t2.close();
  // a changed key is never trusted on "first" use
  const other = await startServer(otherHostKey.path);
  const file2 = join(dir, 'tofu2_known_hosts');
  writeFileSync(file2, `[127.0.0.1]:${other.port} ${hostKey.pub}\n`);
  const e = await refusal(base({ port: other.port, knownHostsFile: file2, insecureTrustOnFirstUse: true }));
  assert.match(e.message, /CHANGED/);
  await new Promise((r) => other.server.close(r));
});

test('wrong client key: E_CONNECT "authentication failed" naming the key path, never its content', async () => {
  const e = await refusal(base({ privateKey: strangerKey.path }));
  assert.is(e.code, 'E_CONNECT');
  assert.is(e.message, `n1: authentication failed for root@127.0.0.1:${main.port} with key ${strangerKey.path}`);
  assert.match(e.hint ?? '', /authorized_keys/);
  noKeyMaterial(e);
  const buf = await refusal(base({ privateKey: readFileSync(strangerKey.path) }));
  assert.match(buf.message, /authentication failed .* with the configured key$/);
  noKeyMaterial(buf);
});

test('ssh-agent: the key held by the agent authenticates; an agent without it fails with E_CONNECT', async () => {
  const sock = join(dir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', sock], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 50 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    execFileSync('ssh-add', [strangerKey.path], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
    const e = await refusal(base({ privateKey: undefined, agent: sock }));
    assert.is(e.code, 'E_CONNECT');
    assert.is(e.message, `n1: authentication failed for root@127.0.0.1:${main.port} with the keys in ssh-agent (${sock})`);
    execFileSync('ssh-add', [clientKey.path], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
    const t = await connectSsh(base({ privateKey: undefined, agent: sock }));
    assert.is((await t.exec('echo agent')).stdout.toString(), 'agent\n');
    await t.close();
  } finally {
    agent.kill('SIGTERM');
  }
});

test('unreadable, encrypted or missing credentials: E_CONNECT with a hint', async () => {
  const missing = await refusal(base({ privateKey: join(dir, 'no-such-key') }));
  assert.is(missing.code, 'E_CONNECT');
  assert.match(missing.message, /cannot read SSH key .*no-such-key: ENOENT/);
  const locked = await refusal(base({ privateKey: lockedKey.path }));
  assert.is(locked.code, 'E_CONNECT');
  assert.match(locked.message, /it is encrypted/);
  assert.match(locked.hint ?? '', /ssh-agent/);
  const garbage = join(dir, 'garbage');
  writeFileSync(garbage, 'not a key');
  const g = await refusal(base({ privateKey: garbage }));
  assert.match(g.message, /not a valid private key/);
  const none = await refusal(base({ privateKey: undefined }));
  assert.match(none.message, /no SSH credentials/);
});

test('connection refused and connect timeout: E_CONNECT with a hint', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const e = await refusal(base({ port }));
  assert.is(e.code, 'E_CONNECT');
  assert.is(e.message, `n1: connection refused by 127.0.0.1:${port}`);
  assert.match(e.hint ?? '', /sshd/);

  // accepts TCP, never speaks SSH
  const silent: NetServer = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const started = Date.now();
  const t = await refusal(base({ port: (silent.address() as AddressInfo).port, connectTimeoutMs: 400 }));
  assert.is(t.code, 'E_CONNECT');
  assert.match(t.message, /timed out after 0\.4 s connecting to/);
  assert.ok(Date.now() - started < 3000);
  silent.close();
});

test('connection lost during a command: E_CONNECT for that command and the next', async () => {
  const t = await connectSsh(base());
  const running = t.exec('sleep 5');
  await new Promise((r) => setTimeout(r, 200));
  for (const c of main.clients) c.end();
  try {
    await running;
    assert.unreachable();
  } catch (e) {
    assert.instance(e, NodeError);
    assert.is((e as NodeError).code, 'E_CONNECT');
  }
  try {
    await t.exec('true');
    assert.unreachable();
  } catch (e) {
    assert.is((e as NodeError).code, 'E_CONNECT');
  }
  await t.close();
});

test('withNodes: bounded concurrency, outcomes in order, one failure does not stop the others', async () => {
  let running = 0;
  let peak = 0;
  const nodes = Array.from({ length: 10 }, (_, i) => `n${i}`);
  const out = await withNodes(nodes, 3, async (n, i) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 20 + ((i * 7) % 5) * 10));
    running--;
    if (n === 'n4') throw new Error('boom');
    return n.toUpperCase();
  });
  assert.is(peak, 3);
  assert.equal(out.map((o) => o.node), nodes);
  assert.equal(out.map((o) => o.ok), nodes.map((n) => n !== 'n4'));
  const bad = out[4]!;
  assert.ok(!bad.ok && (bad.error as Error).message === 'boom');
  const good = out[5]!;
  assert.ok(good.ok && good.value === 'N5');
  assert.equal(await withNodes([], undefined, async () => 1), []);
  try {
    await withNodes(nodes, 0, async () => 1);
    assert.unreachable();
  } catch (e) {
    assert.match((e as Error).message, /positive integer/);
  }
});

test('withNodes over real connections: an unreachable node fails alone', async () => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const deadPort = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const targets = [
    { node: 'a', port: main.port },
    { node: 'dead', port: deadPort },
    { node: 'c', port: main.port },
  ];
  const out = await withNodes(targets, 64, async (x) => {
    const t = await connectSsh(base({ node: x.node, port: x.port }));
    try {
      return (await t.exec('echo up')).stdout.toString().trim();
    } finally {
      await t.close();
    }
  });
  assert.equal(out.map((o) => (o.ok ? o.value : (o.error as NodeError).code)), ['up', 'E_CONNECT', 'up']);
  assert.match((out[1] as { error: NodeError }).error.message, /^dead: connection refused/);
});

test.run();
