/**
 * The lab's Git server process: a small HTTP server on 127.0.0.1 that runs
 * Git's own `git http-backend` as a CGI for each request, behind HTTP basic
 * auth. Started detached by gitserver.ts so that it outlives the command that
 * brought the lab up.
 *
 *   node gitserver-main.js --root DIR --credentials FILE --port N --port-file FILE
 */
import { spawn } from 'node:child_process';
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) {
    process.stderr.write(`gitserver: missing --${name}\n`);
    process.exit(2);
  }
  return v;
}

const root = arg('root');
const credentials = JSON.parse(readFileSync(arg('credentials'), 'utf8')) as { username: string; password: string };
const wantedPort = Number(arg('port'));
const portFile = arg('port-file');

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
const expected = digest(`${credentials.username}:${credentials.password}`);

function authorized(req: IncomingMessage): boolean {
  const h = req.headers.authorization;
  if (!h || !h.startsWith('Basic ')) return false;
  const given = Buffer.from(h.slice(6).trim(), 'base64').toString('utf8');
  return timingSafeEqual(digest(given), expected);
}

function log(req: IncomingMessage, status: number): void {
  process.stdout.write(`${new Date().toISOString()} ${req.method} ${req.url} ${status} ${req.headers['user-agent'] ?? '-'}\n`);
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  // Node 20 clients keep connections alive by default; one reused just as the
  // server's idle timeout closes it fails with "socket hang up". One request
  // per connection avoids that race (the cost on 127.0.0.1 is nil).
  res.shouldKeepAlive = false;
  if (!authorized(req)) {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="converge lab"', 'Content-Type': 'text/plain' });
    res.end('authentication required\n');
    log(req, 401);
    return;
  }
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: process.env['HOME'] ?? '/root',
    GIT_PROJECT_ROOT: root,
    GIT_HTTP_EXPORT_ALL: '1',
    REQUEST_METHOD: req.method ?? 'GET',
    PATH_INFO: decodeURIComponent(url.pathname),
    QUERY_STRING: url.search.replace(/^\?/, ''),
    CONTENT_TYPE: req.headers['content-type'] ?? '',
    REMOTE_USER: credentials.username,
    REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    GATEWAY_INTERFACE: 'CGI/1.1',
  };
  if (req.headers['content-length']) env['CONTENT_LENGTH'] = req.headers['content-length'];
  if (req.headers['content-encoding']) env['HTTP_CONTENT_ENCODING'] = String(req.headers['content-encoding']);
  if (req.headers['git-protocol']) env['GIT_PROTOCOL'] = String(req.headers['git-protocol']);

  const cgi = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  req.pipe(cgi.stdin);
  cgi.stdin.on('error', () => undefined);
  let head = Buffer.alloc(0);
  let headersDone = false;
  let status = 200;
  cgi.stdout.on('data', (chunk: Buffer) => {
    if (headersDone) {
      res.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const text = head.toString('latin1');
    const m = /\r?\n\r?\n/.exec(text);
    if (!m) return;
    headersDone = true;
    const headers: Record<string, string> = {};
    for (const line of text.slice(0, m.index).split(/\r?\n/)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const k = line.slice(0, i).trim();
      const v = line.slice(i + 1).trim();
      if (k.toLowerCase() === 'status') status = Number.parseInt(v, 10) || 200;
      else headers[k] = v;
    }
    res.writeHead(status, headers);
    res.write(head.subarray(Buffer.byteLength(text.slice(0, m.index + m[0].length), 'latin1')));
  });
  let stderr = '';
  cgi.stderr.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
  });
  cgi.on('close', (code) => {
    if (!headersDone) {
      status = 500;
      res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.write('git http-backend failed\n');
    }
    res.end();
    log(req, status);
    if (code !== 0 || stderr) process.stdout.write(`  http-backend exit ${code}: ${stderr.trim()}\n`);
  });
}

const server = createServer(handle);

function listen(port: number): void {
  server.once('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EADDRINUSE' && port !== 0) listen(0);
    else {
      process.stderr.write(`gitserver: ${e.message}\n`);
      process.exit(1);
    }
  });
  server.listen(port, '127.0.0.1', () => {
    const actual = (server.address() as AddressInfo).port;
    writeFileSync(`${portFile}.tmp`, `${actual}\n`);
    renameSync(`${portFile}.tmp`, portFile);
    process.stdout.write(`${new Date().toISOString()} listening on 127.0.0.1:${actual}, serving ${root}\n`);
  });
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}

listen(wantedPort);
