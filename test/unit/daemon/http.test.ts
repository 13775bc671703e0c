// The daemon's HTTP endpoint with a real loop behind it: webhook signatures,
// size and time bounds, status, readiness, metrics, operator controls.
import { test } from 'uvu';
import '../../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { request } from 'node:http';
import { connect } from 'node:net';
import { startHttp, parseListen, type HttpHandle } from '../../../src/daemon/http.js';
import { signBody } from '../../../src/daemon/webhook.js';
import { harness, sleep, until, type Harness } from './_harness.js';

const SECRET = 'whsec-Xk29_pQ!7vLz';

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

function call(base: string, method: string, path: string, opts: { body?: Buffer | string; headers?: Record<string, string>; chunked?: boolean } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const body = opts.body === undefined ? undefined : Buffer.from(opts.body);
    const headers: Record<string, string> = { ...(opts.headers ?? {}) };
    if (body !== undefined && !opts.chunked) headers['content-length'] = String(body.length);
    const req = request(`${base}${path}`, { method, headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8'), headers: res.headers }));
    });
    req.on('error', reject);
    if (body !== undefined && opts.chunked) {
      for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.subarray(i, i + 64 * 1024));
      req.end();
    } else req.end(body);
  });
}

const pushBody = (ref: string): string =>
  JSON.stringify({ ref, before: '0'.repeat(40), after: 'a'.repeat(40), repository: { full_name: 'ops/desired-state' }, pusher: { name: 'alice' } });

const hook = (body: string | Buffer, signature: string | null, extra: Record<string, string> = {}): Promise<Reply> =>
  call(http.url, 'POST', '/hooks/git', {
    body,
    headers: { 'content-type': 'application/json', 'x-github-event': 'push', ...(signature === null ? {} : { 'x-hub-signature-256': signature }), ...extra },
  });

let h: Harness;
let http: HttpHandle;
const figures: string[] = [];

test.before(async () => {
  h = await harness();
  await h.daemon.idle();
  http = await startHttp({ daemon: h.daemon, log: h.log, listen: '127.0.0.1:0', webhook: { secret: Buffer.from(SECRET), branch: 'main' }, requestTimeoutMs: 1000 });
});

test.after(async () => {
  // Absent when the before hook failed: its error is the one to read, not one from here.
  if (http !== undefined) await http.close();
  if (h !== undefined) await h.done();
  if (figures.length > 0) console.log(`\n  figures: ${figures.join('; ')}`);
});

test('listens on 127.0.0.1 unless told otherwise', () => {
  assert.equal(parseListen(':9479'), { host: '127.0.0.1', port: 9479 });
  assert.equal(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.equal(parseListen('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
  assert.throws(() => parseListen('9479'), /not an address to listen on/);
  assert.is(http.host, '127.0.0.1');
});

test('good signature on a push to the branch → 202 and a pass at the new commit', async () => {
  const before = h.rec.calls.length;
  const latencies: number[] = [];
  for (let i = 0; i < 5; i++) {
    await h.daemon.idle();
    const commit = h.commit(`webhook ${i}\n`);
    const body = pushBody('refs/heads/main');
    const next = h.rec.nextCall();
    const t = performance.now();
    const r = await hook(body, signBody(SECRET, body));
    assert.is(r.status, 202);
    assert.equal(JSON.parse(r.body), { accepted: true, triggered: true });
    const c = await next;
    latencies.push(performance.now() - t);
    assert.is(c.commit, commit);
  }
  await h.daemon.idle();
  assert.is(h.rec.calls.length, before + 5);
  latencies.sort((a, b) => a - b);
  figures.push(`webhook → pass start: median ${latencies[2]!.toFixed(1)} ms, max ${latencies[4]!.toFixed(1)} ms`);
  assert.ok(latencies[4]! < 1000);
});

test('bad or missing signature → 401 and no pass', async () => {
  await h.daemon.idle();
  const before = h.rec.calls.length;
  const body = pushBody('refs/heads/main');
  const cases = [
    null,
    signBody('another secret', body),
    signBody(SECRET, body + ' '),
    'sha256=' + 'z'.repeat(64),
    'sha256=abc',
    'sha1=' + signBody(SECRET, body).slice(7),
    signBody(SECRET, body).slice(7),
  ];
  for (const sig of cases) {
    const r = await hook(body, sig);
    assert.is(r.status, 401, `signature ${sig}`);
  }
  await sleep(100);
  assert.is(h.rec.calls.length, before);
  assert.ok(h.logs.some((l) => l['msg'] === 'webhook refused: bad signature' && l['signature'] === 'missing'));
});

test('a body over 1 MiB → 413 without reading it all, declared or chunked; no pass', async () => {
  await h.daemon.idle();
  const before = h.rec.calls.length;
  const big = Buffer.alloc(2 * 1024 * 1024, 0x61);
  const sig = signBody(SECRET, big);
  assert.is((await hook(big, sig)).status, 413);
  const chunked = await call(http.url, 'POST', '/hooks/git', { body: big, chunked: true, headers: { 'x-hub-signature-256': sig } });
  assert.is(chunked.status, 413);
  // A client that goes on sending after the 413 is cut off once past the drain bound (8 MiB).
  const endless = await new Promise<{ status: number; written: number }>((resolve) => {
    let status = 0;
    const req = request(`${http.url}/hooks/git`, { method: 'POST', agent: false, headers: { 'x-hub-signature-256': sig } }, (res) => {
      status = res.statusCode ?? 0;
      res.resume();
    });
    req.on('error', () => undefined);
    req.on('socket', (sock) => sock.once('close', () => resolve({ status, written: sock.bytesWritten })));
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    let sent = 0;
    const pump = (): void => {
      while (sent < 64 * 1024 * 1024 && !req.destroyed) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
  assert.is(endless.status, 413);
  assert.ok(endless.written < 32 * 1024 * 1024, `the server took ${endless.written} bytes after its 413`);
  // Exactly at the limit is fine (and then judged by its signature).
  const edge = Buffer.alloc(1024 * 1024, 0x20);
  assert.is((await hook(edge, null)).status, 401);
  await sleep(50);
  assert.is(h.rec.calls.length, before);
});

test('a push to another branch → 202, ignored; ping → 200; other events → 202 ignored', async () => {
  await h.daemon.idle();
  const before = h.rec.calls.length;
  const other = pushBody('refs/heads/feature');
  const r = await hook(other, signBody(SECRET, other));
  assert.is(r.status, 202);
  assert.match(JSON.parse(r.body).ignored, /refs\/heads\/feature/);
  const tag = pushBody('refs/tags/v1');
  assert.is((await hook(tag, signBody(SECRET, tag))).status, 202);
  const ping = '{"zen":"Keep it logically awesome."}';
  assert.is((await hook(ping, signBody(SECRET, ping), { 'x-github-event': 'ping' })).status, 200);
  const issue = '{"action":"opened"}';
  assert.is((await hook(issue, signBody(SECRET, issue), { 'x-github-event': 'issues' })).status, 202);
  const gitea = pushBody('refs/heads/main');
  const g = await call(http.url, 'POST', '/hooks/git', { body: gitea, headers: { 'x-gitea-event': 'push', 'x-hub-signature-256': signBody(SECRET, gitea) } });
  assert.is(g.status, 202);
  const notJson = 'ref=refs/heads/main';
  assert.is((await hook(notJson, signBody(SECRET, notJson))).status, 400);
  await h.daemon.idle();
  assert.is(h.rec.calls.length, before + 1, 'only the Gitea push to main starts a pass');
});

function slowClient(port: number, payload: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t = Date.now();
    const s = connect(port, '127.0.0.1', () => s.write(payload));
    s.on('data', () => undefined);
    s.on('close', () => resolve(Date.now() - t));
    s.on('error', () => undefined);
    setTimeout(() => {
      s.destroy();
      reject(new Error('the server kept a stalled client for 5 s'));
    }, 5000);
  });
}

test('a slow client that never finishes is cut off within the request bound', async () => {
  const body = pushBody('refs/heads/main');
  // Headers complete, then a few bytes of the body, then nothing.
  const stalledBody = await slowClient(http.port, `POST /hooks/git HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nx-hub-signature-256: ${signBody(SECRET, body)}\r\n\r\n${body.slice(0, 10)}`);
  // Headers never finished.
  const stalledHeaders = await slowClient(http.port, 'POST /hooks/git HTTP/1.1\r\nhost: x\r\nx-slow: ');
  figures.push(`stalled body closed after ${stalledBody} ms, stalled headers after ${stalledHeaders} ms (bound 1000 ms)`);
  for (const ms of [stalledBody, stalledHeaders]) assert.ok(ms >= 900 && ms < 2600, `closed after ${ms} ms`);
});

test('/healthz, /readyz, /status and /metrics; no secret in any of them', async () => {
  await h.daemon.idle();
  h.rec.extra = {
    nodes: [
      { node: 'cp-a', reachable: true, drift: [{ resource: 'File/etcd-env', kind: 'File', label: 'corrective' }, { resource: 'Service/etcd', kind: 'Service' }] },
      { node: 'cp-b', reachable: false, drift: [], error: 'connection refused' },
    ],
    etcd: { reachable: true, members: [{ name: 'cp-a', state: 'started' }, { name: 'cp-b', state: 'started' }, { name: 'cp-c', state: 'unhealthy' }] },
  };
  h.daemon.trigger('poll');
  await h.daemon.idle();
  assert.is((await call(http.url, 'GET', '/healthz')).status, 200);
  const ready = await call(http.url, 'GET', '/readyz');
  assert.is(ready.status, 200, ready.body);
  const st = JSON.parse((await call(http.url, 'GET', '/status')).body);
  assert.is(st.commitApplied, h.repo.head());
  assert.is(st.commitSeen, h.repo.head());
  assert.is(st.lastPass.result, 'ok');
  assert.type(st.lastPass.durationMs, 'number');
  assert.is(st.mode, 'enforce');
  assert.is(st.suspended, false);
  assert.equal(st.drift['cp-a'].resources.map((r: { resource: string }) => r.resource), ['File/etcd-env', 'Service/etcd']);
  assert.is(st.drift['cp-b'].reachable, false);
  const m = await call(http.url, 'GET', '/metrics');
  assert.match(m.headers['content-type'] as string, /^text\/plain/);
  for (const line of [
    'converge_drifted_resources{node="cp-a",kind="File"} 1',
    'converge_drifted_resources{node="cp-a",kind="Service"} 1',
    'converge_drifted_resources{node="cp-b",kind="File"} 0',
    'converge_node_reachable{node="cp-a"} 1',
    'converge_node_reachable{node="cp-b"} 0',
    'converge_etcd_members{state="started"} 2',
    'converge_etcd_members{state="unhealthy"} 1',
    `converge_applied_commit_info{commit="${h.repo.head()}"} 1`,
    'converge_passes_total{result="invalid"} 0',
  ]) {
    assert.ok(m.body.includes(line), `missing metric line: ${line}`);
  }
  assert.match(m.body, /converge_passes_total\{result="ok"\} \d+/);
  assert.match(m.body, /converge_pass_duration_seconds_bucket\{le="0.1"\} \d+/);
  // etcd unreachable → not ready
  h.rec.extra = { etcd: { reachable: false, members: [] } };
  h.daemon.trigger('poll');
  await h.daemon.idle();
  const notReady = await call(http.url, 'GET', '/readyz');
  assert.is(notReady.status, 503);
  assert.equal(JSON.parse(notReady.body).reasons, ['etcd is not reachable']);
  h.rec.extra = {};
  for (const text of [JSON.stringify(h.daemon.status()), m.body, h.rawLogs()]) assert.not.ok(text.includes(SECRET), 'the webhook secret leaked');
});

test('suspend/resume/retry: POST from this machine only, never from a web page', async () => {
  const s = await call(http.url, 'POST', '/suspend');
  assert.is(s.status, 200);
  assert.is(JSON.parse(s.body).status.suspended, true);
  const body = pushBody('refs/heads/main');
  const r = await hook(body, signBody(SECRET, body));
  assert.equal(JSON.parse(r.body), { accepted: true, triggered: false });
  assert.is((await call(http.url, 'GET', '/suspend')).status, 405);
  assert.is((await call(http.url, 'POST', '/resume', { headers: { origin: 'http://evil.invalid' } })).status, 403);
  assert.is(h.daemon.status().suspended, true);
  const before = h.rec.calls.length;
  assert.is((await call(http.url, 'POST', '/resume')).status, 200);
  await until(() => h.rec.calls.length === before + 1, 2000, 'a pass after resume');
  await h.daemon.idle();
  const retry = await call(http.url, 'POST', '/retry');
  assert.is(retry.status, 200);
  assert.equal(JSON.parse(retry.body).result, { retrying: null });
  await h.daemon.idle();
  assert.is((await call(http.url, 'GET', '/nope')).status, 404);
});

test('no secret configured → no webhook endpoint; a webhook-only listener serves nothing else', async () => {
  const plain = await startHttp({ daemon: h.daemon, log: h.log, listen: '127.0.0.1:0' });
  const hookOnly = await startHttp({ daemon: h.daemon, log: h.log, listen: '127.0.0.1:0', routes: 'webhook', webhook: { secret: Buffer.from(SECRET), branch: 'main' } });
  try {
    const body = pushBody('refs/heads/main');
    assert.is((await call(plain.url, 'POST', '/hooks/git', { body, headers: { 'x-hub-signature-256': signBody(SECRET, body) } })).status, 404);
    assert.is((await call(hookOnly.url, 'GET', '/status')).status, 404);
    assert.is((await call(hookOnly.url, 'POST', '/suspend')).status, 404);
    assert.is((await call(hookOnly.url, 'POST', '/hooks/git', { body, headers: { 'x-hub-signature-256': signBody(SECRET, body) } })).status, 202);
    await h.daemon.idle();
  } finally {
    await plain.close();
    await hookOnly.close();
  }
});

test.run();
