// The Git source over HTTP against a real Git server (the lab's: git
// http-backend behind basic auth on 127.0.0.1), and against servers that
// misbehave in the ways a real network does.
import { test } from 'uvu';
import '../../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SourceError } from '../../../src/errors/index.js';
import { openSource, type SourceOptions } from '../../../src/source/git.js';
import { tempDir } from './_repo.js';
import { startTestGitServer, type TestGitServer } from './_gitserver.js';

let srv: TestGitServer;
let first: string;
const figures: string[] = [];

test.before(async () => {
  srv = await startTestGitServer({ 'desired/nodes.yaml': 'nodes: [cp-a]\n', 'desired/templates/unit.tmpl': 'ExecStart=/usr/bin/etcd\n', 'README.md': 'hi\n' });
  first = await (await openSource({ repo: srv.url, branch: 'main', cacheDir: tempDir('cache'), auth: srv.creds, env: {} })).resolve();
});

test.after(async () => {
  // Absent when the before hook failed: its error is the one to read, not one from here.
  if (srv !== undefined) await srv.stop();
  if (figures.length > 0) console.log(`\n  figures: ${figures.join('; ')}`);
});

function allBytes(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else parts.push(readFileSync(p));
    }
  };
  walk(dir);
  return Buffer.concat(parts);
}

async function failure(opts: Partial<SourceOptions> & { repo: string }): Promise<SourceError> {
  const src = await openSource({ branch: 'main', cacheDir: tempDir('cache'), env: {}, ...opts });
  try {
    await src.resolve();
  } catch (e) {
    assert.instance(e, SourceError);
    return e as SourceError;
  }
  throw new Error('expected the fetch to fail');
}

function noSecret(e: SourceError, ...secrets: string[]): void {
  for (const s of secrets) {
    assert.not.ok(e.message.includes(s), `message leaks a secret: ${e.message}`);
    assert.not.ok((e.hint ?? '').includes(s), `hint leaks a secret: ${e.hint}`);
    assert.not.ok(String(e.stack).includes(s), 'stack leaks a secret');
  }
}

test('clones over HTTP with the right credentials; fetches a new commit; never stores the credentials', async () => {
  const cacheDir = tempDir('cache');
  const src = await openSource({ repo: srv.url, branch: 'main', path: 'desired', cacheDir, auth: { username: srv.creds.username, password: srv.creds.password }, env: {} });
  let t = Date.now();
  const c1 = await src.resolve();
  figures.push(`first clone ${Date.now() - t} ms`);
  assert.is(c1, first);
  const f1 = src.files(c1);
  assert.equal(await f1.list(), ['nodes.yaml', 'templates/unit.tmpl']);
  assert.is((await f1.read('nodes.yaml')).toString(), 'nodes: [cp-a]\n');

  const c2 = await srv.push({ 'desired/nodes.yaml': 'nodes: [cp-a, cp-b]\n', 'desired/templates/unit.tmpl': 'ExecStart=/usr/bin/etcd\n' });
  t = Date.now();
  assert.is(await src.resolve(), c2);
  figures.push(`incremental fetch ${Date.now() - t} ms`);
  assert.is((await src.files(c2).read('nodes.yaml')).toString(), 'nodes: [cp-a, cp-b]\n');
  // The last good commit stays readable from the cache after a shallow fetch moved on.
  assert.is((await src.files(c1).read('nodes.yaml')).toString(), 'nodes: [cp-a]\n');
  // Shallow: one commit deep.
  assert.ok(readFileSync(join(src.gitdir, 'shallow'), 'utf8').includes(c2));
  const stored = allBytes(cacheDir);
  assert.not.ok(stored.includes(Buffer.from(srv.creds.password)), 'the password is stored in the cache');

  // A fresh cache that never saw c1 deepens once to read it.
  const fresh = await openSource({ repo: srv.url, branch: 'main', path: 'desired', cacheDir: tempDir('cache'), auth: srv.creds, env: {} });
  assert.is(await fresh.resolve(), c2);
  assert.is((await fresh.files(c1).read('nodes.yaml')).toString(), 'nodes: [cp-a]\n');
});

test('a token from the environment or from a file is sent as basic auth', async () => {
  const viaEnv = await openSource({ repo: srv.url, branch: 'main', cacheDir: tempDir('cache'), env: { CONVERGE_GIT_USERNAME: srv.creds.username, CONVERGE_GIT_TOKEN: srv.creds.password } });
  const head = await viaEnv.resolve();
  const file = join(tempDir('tok'), 'token');
  writeFileSync(file, `${srv.creds.password}\n`, { mode: 0o600 });
  const viaFile = await openSource({ repo: srv.url, branch: 'main', cacheDir: tempDir('cache'), auth: { username: srv.creds.username, tokenFile: file }, env: {} });
  assert.is(await viaFile.resolve(), head);
  const credDir = tempDir('creds');
  writeFileSync(join(credDir, 'git-token'), srv.creds.password);
  const viaSystemd = await openSource({ repo: srv.url, branch: 'main', cacheDir: tempDir('cache'), env: { CONVERGE_GIT_USERNAME: srv.creds.username, CREDENTIALS_DIRECTORY: credDir } });
  assert.is(await viaSystemd.resolve(), head);
});

test('wrong password: "authentication failed for <url>", no credential anywhere in the error', async () => {
  const wrong = 'not-the-password-Zq81';
  const e = await failure({ repo: srv.url, auth: { username: srv.creds.username, password: wrong } });
  assert.is(e.message, `authentication failed for ${srv.url}`);
  assert.match(e.hint ?? '', /refused the credentials/);
  noSecret(e, wrong);
  // Credentials written into the URL are used, and shown nowhere.
  const inUrl = srv.url.replace('http://', `http://${srv.creds.username}:${wrong}@`);
  const e2 = await failure({ repo: inUrl });
  assert.is(e2.message, `authentication failed for ${srv.url}`);
  noSecret(e2, wrong, `${srv.creds.username}:`);
  const right = await openSource({ repo: srv.url.replace('http://', `http://${srv.creds.username}:${encodeURIComponent(srv.creds.password)}@`), branch: 'main', cacheDir: tempDir('cache'), env: {} });
  assert.is(right.display, srv.url);
  assert.match(await right.resolve(), /^[0-9a-f]{40}$/);
});

test('no credentials: says the server wants them and how to give them', async () => {
  const e = await failure({ repo: srv.url });
  assert.is(e.message, `authentication failed for ${srv.url}`);
  assert.match(e.hint ?? '', /CONVERGE_GIT_TOKEN/);
});

test('a URL naming no repository: 404 with a hint about --repo', async () => {
  const url = srv.url.replace(/desired-state\.git$/, 'no-such-repo.git');
  const e = await failure({ repo: url, auth: srv.creds });
  assert.is(e.message, `no Git repository at ${url} (HTTP 404)`);
  assert.match(e.hint ?? '', /--repo/);
});

test('a branch the server does not have', async () => {
  const e = await failure({ repo: srv.url, branch: 'release', auth: srv.creds });
  assert.is(e.message, `branch release not found at ${srv.url}`);
});

async function listen(server: Server | ReturnType<typeof createHttpServer>): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return (server.address() as AddressInfo).port;
}

test('server down: connection refused, with the host and port', async () => {
  const probe = createTcpServer();
  const port = await listen(probe);
  await new Promise<void>((r) => probe.close(() => r()));
  const e = await failure({ repo: `http://127.0.0.1:${port}/x.git`, auth: { username: 'u', password: 'secret-pw-1' } });
  assert.is(e.message, `cannot connect to the Git server at 127.0.0.1:${port}: connection refused`);
  noSecret(e, 'secret-pw-1');
});

test('garbage answers: a web page, bytes that are not HTTP, silence, a redirect', async () => {
  const page = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html><body>Welcome to our wiki</body></html>');
  });
  const junk = createTcpServer((s) => s.end('\x00\x01 this is not HTTP at all\r\n\r\n'));
  const silent = createTcpServer(() => undefined);
  const redirect = createHttpServer((_req, res) => {
    res.writeHead(301, { location: 'http://other.invalid/moved.git/info/refs?token=abc' });
    res.end();
  });
  const ports = await Promise.all([page, junk, silent, redirect].map(listen));
  try {
    const [p1, p2, p3, p4] = ports;
    const e1 = await failure({ repo: `http://127.0.0.1:${p1}/x.git` });
    assert.is(e1.message, `http://127.0.0.1:${p1}/x.git did not answer as a Git server`);
    const e2 = await failure({ repo: `http://127.0.0.1:${p2}/x.git` });
    assert.is(e2.message, `http://127.0.0.1:${p2}/x.git did not answer as a Git server`);
    const t = Date.now();
    const e3 = await failure({ repo: `http://127.0.0.1:${p3}/x.git`, http: { idleTimeoutMs: 300, maxResponseBytes: 1 << 20 } });
    assert.match(e3.message, new RegExp(`^no answer from the Git server at 127\\.0\\.0\\.1:${p3}`));
    assert.ok(Date.now() - t < 3000, 'the silent server was not cut off in time');
    const e4 = await failure({ repo: `http://127.0.0.1:${p4}/x.git` });
    assert.is(e4.message, `http://127.0.0.1:${p4}/x.git redirects to http://other.invalid/moved.git/info/refs`);
    noSecret(e4, 'token=abc');
  } finally {
    for (const s of [page, junk, silent, redirect]) {
      if ('closeAllConnections' in s) s.closeAllConnections();
      s.close();
    }
  }
});

test.run();
