/**
 * The HTTP client handed to isomorphic-git. Its own Node client has no
 * timeout (a server that accepts and never answers would hang a pass forever)
 * and follows redirects (which could carry credentials to another host);
 * this one bounds the wait and the response size and never follows redirects.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { GitHttpRequest, GitHttpResponse, HttpClient } from 'isomorphic-git';

export interface HttpLimits {
  /** No byte for this long (connect included) fails the request. */
  idleTimeoutMs: number;
  /** A whole response (a pack) larger than this fails the request. */
  maxResponseBytes: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = { idleTimeoutMs: 30_000, maxResponseBytes: 512 * 1024 * 1024 };

/** Raised for the conditions isomorphic-git cannot describe itself; `code` is what source maps on. */
export class HttpTransportError extends Error {
  constructor(
    readonly code: 'ETIMEDOUT' | 'EREDIRECT' | 'ETOOBIG',
    message: string,
    readonly location?: string,
  ) {
    super(message);
  }
}

async function collectBody(body: GitHttpRequest['body']): Promise<Buffer | undefined> {
  if (body === undefined) return undefined;
  const parts: Uint8Array[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array> | Iterable<Uint8Array>) parts.push(chunk);
  return Buffer.concat(parts);
}

async function* limited(res: IncomingMessage, max: number): AsyncIterableIterator<Uint8Array> {
  let total = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) {
      res.destroy();
      throw new HttpTransportError('ETOOBIG', `the server sent more than ${max} bytes`);
    }
    yield chunk;
  }
}

export function boundedHttpClient(limits: HttpLimits = DEFAULT_HTTP_LIMITS): HttpClient {
  return {
    async request(req: GitHttpRequest): Promise<GitHttpResponse> {
      const url = new URL(req.url);
      const body = await collectBody(req.body);
      const headers: Record<string, string> = { ...(req.headers ?? {}) };
      if (body !== undefined) headers['content-length'] = String(body.length);
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      const method = req.method ?? 'GET';
      return new Promise<GitHttpResponse>((resolve, reject) => {
        const r = send(url, { method, headers, ...(req.signal ? { signal: req.signal } : {}) }, (res) => {
          const status = res.statusCode ?? 0;
          if (status >= 300 && status < 400) {
            res.resume();
            reject(new HttpTransportError('EREDIRECT', `the server redirected (${status})`, res.headers.location));
            return;
          }
          const out: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
          resolve({
            url: req.url,
            method,
            statusCode: status,
            statusMessage: res.statusMessage ?? '',
            headers: out,
            body: limited(res, limits.maxResponseBytes),
          });
        });
        // setTimeout on the request covers connecting and every pause in the response.
        r.setTimeout(limits.idleTimeoutMs, () => {
          r.destroy(new HttpTransportError('ETIMEDOUT', `no answer for ${Math.round(limits.idleTimeoutMs / 1000)} s`));
        });
        r.on('error', reject);
        r.end(body);
      });
    },
  };
}
