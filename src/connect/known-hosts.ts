/**
 * OpenSSH known_hosts: parsing, host matching (plain, `[host]:port`,
 * wildcard, negated and hashed `|1|salt|hash` entries) and the verdict on a
 * presented host key. Pure: the caller reads the file.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export interface PublicKey {
  /** Key type as written in the blob, e.g. "ssh-ed25519". */
  type: string;
  /** The key in SSH wire format (what known_hosts holds in base64). */
  blob: Buffer;
}

export interface KnownHostEntry {
  marker: 'revoked' | 'cert-authority' | null;
  /** Comma-separated patterns, or one `|1|salt|hash` hashed name. */
  hosts: string;
  key: PublicKey;
  /** 1-based line in the file, for messages. */
  line: number;
}

export type HostKeyVerdict =
  | { status: 'trusted' }
  | { status: 'unknown' }
  /** The host is known with other keys: possible man-in-the-middle. */
  | { status: 'changed'; known: PublicKey[] }
  | { status: 'revoked'; line: number };

/** The key type stored at the start of an SSH public key blob (a uint32-length string). */
export function blobKeyType(blob: Buffer): string | null {
  if (blob.length < 4) return null;
  const n = blob.readUInt32BE(0);
  if (n === 0 || n > 64 || 4 + n > blob.length) return null;
  const type = blob.subarray(4, 4 + n).toString('latin1');
  return /^[\x21-\x7e]+$/.test(type) ? type : null;
}

/** OpenSSH's fingerprint: "SHA256:" + unpadded base64 of sha256(blob). */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Parse "type base64 [comment]" (a .pub file line or a pinned key). Returns null when malformed. */
export function parsePublicKey(text: string): PublicKey | null {
  const [type, b64] = text.trim().split(/\s+/);
  if (!type || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return null;
  const blob = Buffer.from(b64, 'base64');
  if (blobKeyType(blob) !== type) return null;
  return { type, blob };
}

export function formatPublicKey(key: PublicKey): string {
  return `${key.type} ${key.blob.toString('base64')}`;
}

/**
 * Lines that cannot be parsed are skipped, as OpenSSH does; they are returned
 * in `skipped` so that a caller may mention them.
 */
export function parseKnownHosts(text: string): { entries: KnownHostEntry[]; skipped: number[] } {
  const entries: KnownHostEntry[] = [];
  const skipped: number[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'] = null;
    if (fields[0]?.startsWith('@')) {
      const m = fields.shift();
      if (m === '@revoked') marker = 'revoked';
      else if (m === '@cert-authority') marker = 'cert-authority';
      else {
        skipped.push(i + 1);
        return;
      }
    }
    const [hosts, type, b64] = fields;
    const key = hosts && type && b64 ? parsePublicKey(`${type} ${b64}`) : null;
    if (!hosts || !key) {
      skipped.push(i + 1);
      return;
    }
    entries.push({ marker, hosts, key, line: i + 1 });
  });
  return { entries, skipped };
}

/** The name OpenSSH looks a host up by: "host" on port 22, else "[host]:port". */
export function hostLookupName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

function wildcardMatch(pattern: string, name: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's').test(name);
}

function hashedMatch(entry: string, name: string): boolean {
  const parts = entry.split('|');
  // "|1|salt|hash" splits into ["", "1", salt, hash]
  if (parts.length !== 4 || parts[1] !== '1' || !parts[2] || !parts[3]) return false;
  const salt = Buffer.from(parts[2], 'base64');
  const want = Buffer.from(parts[3], 'base64');
  const got = createHmac('sha1', salt).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

/** Does the host field of an entry name `name` (already in lookup form)? */
export function hostsFieldMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith('|')) return hashedMatch(hosts, name);
  let matched = false;
  for (const raw of hosts.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (!wildcardMatch(pattern, name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/** Entries (excluding @cert-authority, which converge does not use) for any of the names. */
export function entriesFor(entries: readonly KnownHostEntry[], names: readonly string[]): KnownHostEntry[] {
  return entries.filter((e) => e.marker !== 'cert-authority' && names.some((n) => hostsFieldMatches(e.hosts, n)));
}

function sameKey(a: PublicKey, b: PublicKey): boolean {
  return a.type === b.type && a.blob.equals(b.blob);
}

/** Judge a presented key against the entries that name the host. */
export function checkHostKey(entries: readonly KnownHostEntry[], names: readonly string[], presented: PublicKey): HostKeyVerdict {
  const mine = entriesFor(entries, names);
  const revoked = mine.find((e) => e.marker === 'revoked' && sameKey(e.key, presented));
  if (revoked) return { status: 'revoked', line: revoked.line };
  const known = mine.filter((e) => e.marker === null).map((e) => e.key);
  if (known.some((k) => sameKey(k, presented))) return { status: 'trusted' };
  if (known.length === 0) return { status: 'unknown' };
  const sameType = known.filter((k) => k.type === presented.type);
  return { status: 'changed', known: sameType.length > 0 ? sameType : known };
}

/** The host key algorithms ssh2 may negotiate for keys of these types, so that a known type is chosen. */
export function hostKeyAlgorithms(types: Iterable<string>): string[] {
  const out: string[] = [];
  for (const t of types) {
    const algs = t === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [t];
    for (const a of algs) if (!out.includes(a)) out.push(a);
  }
  return out;
}

/** A known_hosts line for a host, hashed as `ssh-keygen -H` would write it. */
export function knownHostsLine(name: string, key: PublicKey, salt: Buffer): string {
  const hash = createHmac('sha1', salt).update(name).digest('base64');
  return `|1|${salt.toString('base64')}|${hash} ${formatPublicKey(key)}`;
}
