/** Digests of the bytes converge will write: text, artifacts, secrets. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';

/** Largest secret read into memory. */
const MAX_SECRET_BYTES = 16 * 1024 * 1024;

export const sha256Text = (s: string): string => createHash('sha256').update(s, 'utf8').digest('hex');

/** sha256 and size of a file on the bastion, streamed (artifacts can be large); null when missing. */
export async function hashFile(path: string): Promise<{ sha256: string; size: number } | null> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return null;
    const h = createHash('sha256');
    for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
    return { sha256: h.digest('hex'), size: st.size };
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
