/**
 * GitHub- and Gitea-style push webhooks: the signature is HMAC-SHA256 of the
 * raw body with the shared secret, sent as `X-Hub-Signature-256: sha256=<hex>`.
 * Only the signature is trusted: the body is parsed after it checks out.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-hub-signature-256';

/** Constant-time check of `sha256=<64 hex digits>` against the body. */
export function verifySignature(secret: Buffer, body: Buffer, header: string | undefined): boolean {
  if (header === undefined) return false;
  const m = /^sha256=([0-9a-fA-F]{64})$/.exec(header.trim());
  if (m === null || m[1] === undefined) return false;
  const given = Buffer.from(m[1], 'hex');
  const expected = createHmac('sha256', secret).update(body).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** The signature header value for a body; used by tests and by operators checking their setup. */
export function signBody(secret: Buffer | string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export type PushVerdict = { kind: 'push'; ref: string; after: string | null } | { kind: 'ping' } | { kind: 'ignored'; why: string } | { kind: 'bad'; why: string };

/** What a verified delivery asks for. `event` is the X-GitHub-Event / X-Gitea-Event header. */
export function readDelivery(event: string | undefined, body: Buffer): PushVerdict {
  if (event === 'ping') return { kind: 'ping' };
  if (event !== undefined && event !== 'push') return { kind: 'ignored', why: `event ${event}` };
  let data: unknown;
  try {
    data = JSON.parse(body.toString('utf8'));
  } catch {
    return { kind: 'bad', why: 'the body is not JSON' };
  }
  if (data === null || typeof data !== 'object') return { kind: 'bad', why: 'the body is not a JSON object' };
  const { ref, after } = data as { ref?: unknown; after?: unknown };
  if (typeof ref !== 'string') return { kind: 'bad', why: 'no ref in the push event' };
  return { kind: 'push', ref, after: typeof after === 'string' && /^[0-9a-f]{40}$/.test(after) ? after : null };
}
