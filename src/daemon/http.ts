/**
 * The daemon's HTTP endpoint: health, readiness, status and metrics for
 * people and Prometheus; suspend/resume/retry for operators on this machine;
 * and the Git webhook. Every request is bounded in size and in time, so a
 * client that sends slowly or endlessly costs a socket for seconds, not memory.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import { ConfigError } from '../errors/index.js';
import type { Daemon } from './loop.js';
import { SIGNATURE_HEADER, readDelivery, verifySignature } from './webhook.js';

export interface HttpOptions {
  daemon: Daemon;
  log: Logger;
  /** `host:port`, `[v6]:port` or `:port` (127.0.0.1). Port 0 picks a free one. */
  listen: string;
  /** 'all' serves everything; 'webhook' serves only POST /hooks/git (for a listener exposed to the Git server). */
  routes?: 'all' | 'webhook';
  /** No secret, no webhook: POST /hooks/git answers 404. */
  webhook?: { secret: Buffer; branch: string } | null;
  bodyLimitBytes?: number;
  /** Whole request (headers and body) must arrive within this. */
  requestTimeoutMs?: number;
  headersTimeoutMs?: number;
}

export interface HttpHandle {
  readonly host: string;
  readonly port: number;
  /** e.g. http://127.0.0.1:9479 */
  readonly url: string;
  close(): Promise<void>;
}

export const DEFAULT_LISTEN = '127.0.0.1:9479';
export const BODY_LIMIT = 1024 * 1024;
/** After a 413, what the client may still send (dropped, never kept) before the connection is cut. */
const DRAIN_LIMIT = 8 * 1024 * 1024;
const DRAIN_MS = 2_000;

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(s.trim());
  const port = m?.[3] === undefined ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(`not an address to listen on: ${JSON.stringify(s)}`, 'use host:port, e.g. 127.0.0.1:9479 (or [::1]:9479)');
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '127.0.0.1' : host, port };
}

function isLoopback(addr: string | undefined): boolean {
  if (addr === undefined) return false;
  return addr === '::1' || /^(::ffff:)?127\./.test(addr);
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body, null, 2) + '\n';
  res.writeHead(status, {
    'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  });
  res.end(text);
}

/**
 * 413, then read and drop what the client still sends, up to a bound, before
 * closing. Closing a socket with unread data makes the kernel answer with a
 * reset, which can destroy the 413 before the client reads it (the client
 * sees EPIPE/ECONNRESET instead); a client that sends more than the bound,
 * or for longer, is cut off.
 */
function refuseTooBig(req: IncomingMessage, res: ServerResponse, limit: number): void {
  const socket = req.socket;
  let dropped = 0;
  const cut = setTimeout(() => socket.destroy(), DRAIN_MS);
  cut.unref();
  socket.once('close', () => clearTimeout(cut));
  req.on('data', (c: Buffer) => {
    dropped += c.length;
    if (dropped > DRAIN_LIMIT) socket.destroy();
  });
  req.once('end', () => {
    clearTimeout(cut);
    socket.end();
  });
  req.resume();
  // Node closes a connection marked "close" as soon as the response is out,
  // unread data or not: this one is closed above, once drained.
  res.shouldKeepAlive = true;
  send(res, 413, { error: `body over ${limit} bytes` });
}

type Body = { ok: true; body: Buffer } | { ok: false; why: 'too-big' | 'incomplete' };

/** Read at most `limit` bytes; past that stop reading (nothing more is buffered) and say so. */
function readBody(req: IncomingMessage, limit: number): Promise<Body> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: Body): void => {
      if (done) return;
      done = true;
      req.off('data', onData);
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        finish({ ok: false, why: 'too-big' });
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => finish({ ok: true, body: Buffer.concat(chunks) }));
    req.once('close', () => finish(req.complete ? { ok: true, body: Buffer.concat(chunks) } : { ok: false, why: 'incomplete' }));
    req.once('error', () => finish({ ok: false, why: 'incomplete' }));
  });
}

export async function startHttp(o: HttpOptions): Promise<HttpHandle> {
  const { host, port } = parseListen(o.listen);
  const limit = o.bodyLimitBytes ?? BODY_LIMIT;
  const routes = o.routes ?? 'all';
  const webhook = o.webhook ?? null;
  const requestTimeout = o.requestTimeoutMs ?? 10_000;
  const headersTimeout = Math.min(o.headersTimeoutMs ?? requestTimeout, requestTimeout);
  const log = o.log.child({ component: 'http' });
  const d = o.daemon;

  const tooBig = (req: IncomingMessage): boolean => {
    const declared = req.headers['content-length'];
    return declared !== undefined && Number(declared) > limit;
  };

  async function hook(req: IncomingMessage, res: ServerResponse, secret: Buffer, branch: string): Promise<void> {
    if (req.method !== 'POST') return send(res, 405, { error: 'use POST' }, { allow: 'POST' });
    const from = req.socket.remoteAddress;
    if (tooBig(req)) {
      log.warn({ from, declared: req.headers['content-length'] }, 'webhook refused: body over the limit');
      return refuseTooBig(req, res, limit);
    }
    const body = await readBody(req, limit);
    if (!body.ok) {
      if (body.why === 'too-big') {
        log.warn({ from }, 'webhook refused: body over the limit');
        return refuseTooBig(req, res, limit);
      }
      return;
    }
    const sig = req.headers[SIGNATURE_HEADER];
    if (!verifySignature(secret, body.body, Array.isArray(sig) ? sig[0] : sig)) {
      log.warn({ from, signature: sig === undefined ? 'missing' : 'wrong' }, 'webhook refused: bad signature');
      return send(res, 401, { error: 'missing or wrong X-Hub-Signature-256' });
    }
    const eventHeader = req.headers['x-github-event'] ?? req.headers['x-gitea-event'];
    const event = Array.isArray(eventHeader) ? eventHeader[0] : eventHeader;
    const v = readDelivery(event, body.body);
    if (v.kind === 'ping') return send(res, 200, { pong: true });
    if (v.kind === 'bad') return send(res, 400, { error: v.why });
    if (v.kind === 'ignored') return send(res, 202, { ignored: v.why });
    const want = `refs/heads/${branch}`;
    if (v.ref !== want) {
      log.info({ ref: v.ref }, 'webhook: push to another branch ignored');
      return send(res, 202, { ignored: `push to ${v.ref}, following ${want}` });
    }
    const triggered = d.trigger('webhook');
    log.info({ after: v.after, triggered }, 'webhook: push received');
    return send(res, 202, { accepted: true, triggered });
  }

  function control(req: IncomingMessage, res: ServerResponse, action: () => Promise<unknown> | unknown): Promise<void> | void {
    if (req.method !== 'POST') return send(res, 405, { error: 'use POST' }, { allow: 'POST' });
    // Operators on this machine only; a browser page (which sends Origin) must not reach these.
    if (!isLoopback(req.socket.remoteAddress) || req.headers.origin !== undefined) return send(res, 403, { error: 'only from this machine' });
    req.resume();
    return Promise.resolve(action()).then((r) => send(res, 200, { ...(r === undefined ? {} : { result: r }), status: d.status() }));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/hooks/git' && webhook !== null) return hook(req, res, webhook.secret, webhook.branch);
    if (routes === 'webhook') return send(res, 404, { error: 'not found' });
    const get = (): boolean => req.method === 'GET' || req.method === 'HEAD';
    switch (path) {
      case '/healthz':
        if (!get()) return send(res, 405, { error: 'use GET' }, { allow: 'GET' });
        return send(res, 200, 'ok\n');
      case '/readyz': {
        if (!get()) return send(res, 405, { error: 'use GET' }, { allow: 'GET' });
        const r = d.ready();
        return send(res, r.ready ? 200 : 503, r);
      }
      case '/status':
        if (!get()) return send(res, 405, { error: 'use GET' }, { allow: 'GET' });
        return send(res, 200, d.status());
      case '/metrics': {
        if (!get()) return send(res, 405, { error: 'use GET' }, { allow: 'GET' });
        const text = await d.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': d.metrics.registry.contentType, 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      case '/suspend':
        return control(req, res, () => d.suspend());
      case '/resume':
        return control(req, res, () => d.resume());
      case '/retry':
        return control(req, res, async () => ({ retrying: await d.retry() }));
      default:
        return send(res, 404, { error: 'not found' });
    }
  }

  const server: Server = createServer(
    {
      requestTimeout,
      headersTimeout,
      // How often Node checks those timeouts; its default (30 s) would let a stalled client linger 3× too long.
      connectionsCheckingInterval: Math.max(100, Math.min(1_000, Math.floor(requestTimeout / 4))),
      keepAliveTimeout: 5_000,
      maxHeaderSize: 16 * 1024,
    },
    (req, res) => {
      handle(req, res).catch((e: unknown) => {
        log.error({ err: e }, 'HTTP handler failed');
        if (!res.headersSent) send(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    },
  );
  // A client waiting for 100-continue learns about an oversized body before sending it.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (tooBig(req)) return send(res, 413, { error: `body over ${limit} bytes` }, { connection: 'close' });
    res.writeContinue();
    server.emit('request', req, res);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    log.debug({ code: err.code }, 'HTTP client error');
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const [status, text] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout'] : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large'] : [400, 'Bad Request'];
    socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    // A client that never reads or closes must not keep the half-closed socket.
    setTimeout(() => socket.destroy(), 1_000).unref();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new ConfigError(`cannot listen on ${o.listen}: ${e.code ?? e.message}`, e.code === 'EADDRINUSE' ? 'another process uses that port: choose another with --listen' : 'check --listen')),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  log.info({ listen: `${shownHost}:${addr.port}`, routes, webhook: webhook !== null }, 'HTTP listening');
  return {
    host: addr.address,
    port: addr.port,
    url: `http://${shownHost}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
