/** Digests of the bytes converge will write: text, artifacts, secrets. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Largest secret read into memory. */
const MAX_SECRET_BYTES = 16 * 1024 * 1024;

export const sha256Text = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

export interface FileDigest {
  sha256: string;
  size: number;
}

/**
 * Digests of bastion files kept between runs, keyed by what stat(2) says of
 * the file (device, inode, size, mtime and ctime to the nanosecond): hashing
 * the etcd binaries costs a run 0.1–0.2 s. A content change always moves the
 * ctime, which no one can set back.
 */
export interface FileDigestCache {
  get(key: string): FileDigest | undefined;
  set(key: string, digest: FileDigest): void;
}

/** Read size: larger than the stream default, so a 20 MB artifact is a few dozen reads. */
const HASH_CHUNK = 1024 * 1024;
/** A file changed this recently may still be changing: its digest is not kept. */
const SETTLED_NS = 1_000_000_000n;

/** sha256 and size of a file on the bastion, streamed (artifacts can be large); null when missing. */
export async function hashFile(path: string, cache?: FileDigestCache): Promise<FileDigest | null> {
  try {
    const st = await stat(path, { bigint: true });
    if (!st.isFile()) return null;
    const key = `${path}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    const hit = cache?.get(key);
    if (hit) return hit;
    const settled = st.ctimeNs < BigInt(Date.now()) * 1_000_000n - SETTLED_NS;
    const h = createHash('sha256');
    let size = 0;
    for await (const chunk of createReadStream(path, { highWaterMark: HASH_CHUNK })) {
      h.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    const digest = { sha256: h.digest('hex'), size };
    const after = await stat(path, { bigint: true });
    if (cache && settled && after.ctimeNs === st.ctimeNs && after.size === st.size && BigInt(size) === st.size) cache.set(key, digest);
    return digest;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw e;
  }
}

/** sha256 and size of a secret; null when missing, a message when unusable. */
export async function hashSecret(path: string): Promise<{ sha256: string; size: number } | string | null> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return 'is not a regular file';
    if (st.size > MAX_SECRET_BYTES) return `is larger than ${MAX_SECRET_BYTES} bytes`;
    const bytes = await readFile(path);
    return { sha256: createHash('sha256').update(bytes).digest('hex'), size: bytes.length };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}

/**
 * A FileDigestCache in a JSON file. Only the entries used by this run are
 * saved, so files that changed or went away drop out; a missing or garbled
 * file is an empty cache. Saved atomically, and only when it changed.
 */
export class JsonDigestCache implements FileDigestCache {
  private readonly used = new Map<string, FileDigest>();
  private changed = false;

  private constructor(
    private readonly file: string,
    private readonly known: Map<string, FileDigest>,
  ) {}

  static async open(file: string): Promise<JsonDigestCache> {
    const known = new Map<string, FileDigest>();
    try {
      const data = JSON.parse(await readFile(file, 'utf8')) as unknown;
      if (data && typeof data === 'object') {
        for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
          const d = v as Partial<FileDigest> | null;
          if (d && typeof d.sha256 === 'string' && /^[0-9a-f]{64}$/.test(d.sha256) && Number.isSafeInteger(d.size)) known.set(k, { sha256: d.sha256, size: d.size as number });
        }
      }
    } catch {
      // No cache yet, or one that cannot be read: every file is hashed.
    }
    return new JsonDigestCache(file, known);
  }

  get(key: string): FileDigest | undefined {
    const d = this.known.get(key);
    if (d) this.used.set(key, d);
    return d;
  }

  set(key: string, digest: FileDigest): void {
    this.used.set(key, digest);
    this.changed = true;
  }

  async save(): Promise<void> {
    if (!this.changed && this.used.size === this.known.size) return;
    await mkdir(dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(Object.fromEntries(this.used))}\n`, { mode: 0o600 });
    await rename(tmp, this.file);
  }
}
