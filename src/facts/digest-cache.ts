/**
 * The digest cache on each node (STATE_DIR/digests, root-only): for each
 * managed regular file, the sha256 last read and the file's key
 * "=dev:inode:size:mtime:ctime" at that moment. The probe reuses a digest
 * only when the key is exactly the file's current one; any write, rename or
 * chmod changes the ctime, which no user can set. Pure: what to record is
 * decided here, apply writes it, plan never writes.
 *
 * Why only a file that had settled when the probe began is recorded: the
 * probe stats a file before hashing it, so a change in between pairs the old
 * key with the new content. That pair is harmless unless the change left the
 * ctime as it was, which happens only within one tick of the clock the
 * filesystem stamps with: milliseconds where timestamps have sub-second
 * resolution, a whole second where they do not. So a file is recorded when
 * its ctime is SETTLE_MS (50 ms) before the probe began and has a fraction
 * of a second, or a second before it in any case (the probe marks the
 * others "~", find -newerct against both moments).
 *
 * Format: NUL-terminated triples key, path, sha256, sorted by path.
 */
import type { NodeFacts } from './types.js';

export const DIGEST_CACHE_NAME = 'digests';

/** The cache to write from a probe's facts, or null when the node's cache is already exactly that. */
export function digestCacheContent(f: Pick<NodeFacts, 'paths' | 'digestCache'>): Buffer | null {
  const c = f.digestCache;
  if (!c) return null;
  const entries: string[] = [];
  for (const [path, key] of Object.entries(c.keys).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const p = f.paths[path];
    if (!p?.exists || p.type !== 'file' || p.sha256 === undefined) continue;
    entries.push(`${key}\0${path}\0${p.sha256}\0`);
  }
  // Every record answered and every settled file was among them: nothing to add or drop.
  if (entries.length === c.hits && c.records === c.hits) return null;
  return Buffer.from(entries.join(''), 'utf8');
}
