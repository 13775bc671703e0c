/**
 * The artifacts converge pushes to the nodes: the etcd binaries of the host's
 * Debian packages, copied into the lab's artifacts/ folder and checked against
 * the sha256 pins of desired-state/ (File documents with spec.artifact).
 */
import { createHash } from 'node:crypto';
import { copyFileSync, chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, renameSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { LabError } from '../errors/index.js';
import { ETCD_BINARIES } from './prereq.js';

export interface ArtifactPin {
  name: string;
  sha256: string;
  /** Where the pin is written: `file:line` relative to the desired-state root. */
  at: string;
}

export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/**
 * sha256 of a file, remembered in `cache` by inode, size and mtime: the
 * binaries are tens of MB and every lab up checks them.
 */
function cachedSha256(file: string, cache: Record<string, string>): string {
  const st = statSync(file);
  const id = `${file}:${st.ino}:${st.size}:${st.mtimeMs}`;
  return (cache[id] ??= sha256File(file));
}

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const f = join(dir, e.name);
    if (e.isDirectory() && !e.name.startsWith('.')) out.push(...yamlFiles(f));
    else if (e.isFile() && /\.ya?ml$/.test(e.name)) out.push(f);
  }
  return out.sort();
}

/** Every artifact pin in the desired state (File documents with spec.artifact), in file order. */
export function readArtifactPins(desiredStateDir: string): ArtifactPin[] {
  const pins: ArtifactPin[] = [];
  for (const file of yamlFiles(desiredStateDir)) {
    const text = readFileSync(file, 'utf8');
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) continue;
      const js = doc.toJS() as unknown;
      if (!js || typeof js !== 'object') continue;
      const d = js as { kind?: unknown; spec?: { artifact?: { name?: unknown; sha256?: unknown } } };
      const a = d.spec?.artifact;
      if (d.kind !== 'File' || !a || typeof a.name !== 'string' || typeof a.sha256 !== 'string') continue;
      const offset = doc.range[0];
      const line = text.slice(0, offset).split('\n').length;
      pins.push({ name: a.name, sha256: a.sha256.toLowerCase(), at: `${relative(desiredStateDir, file)}:${line}` });
    }
  }
  return pins;
}

export interface ArtifactsResult {
  files: Array<{ name: string; path: string; sha256: string; size: number }>;
  /** What happened to the pin check (always said, never silent). */
  pinCheck: string;
}

/**
 * Copy the host's etcd binaries into artifacts/ (when missing or changed) and
 * check them against the desired state's pins. A mismatch is an error: the
 * lab would hand converge binaries that the desired state refuses. Digests
 * are remembered in `cacheFile` (by inode, size and mtime) between runs.
 */
export function ensureArtifacts(artifactsDir: string, desiredStateDir: string, cacheFile: string): ArtifactsResult {
  mkdirSync(artifactsDir, { recursive: true, mode: 0o755 });
  let cache: Record<string, string> = {};
  try {
    cache = JSON.parse(readFileSync(cacheFile, 'utf8')) as Record<string, string>;
  } catch {
    cache = {};
  }
  const used: Record<string, string> = {};
  const files: ArtifactsResult['files'] = [];
  for (const [name, hostPath, pkg] of ETCD_BINARIES) {
    if (!existsSync(hostPath)) throw new LabError(`${hostPath} is missing`, `apt-get install ${pkg}`);
    const dest = join(artifactsDir, name);
    const want = cachedSha256(hostPath, cache);
    if (!existsSync(dest) || cachedSha256(dest, cache) !== want) {
      const tmp = `${dest}.tmp-${process.pid}`;
      copyFileSync(hostPath, tmp);
      chmodSync(tmp, 0o755);
      renameSync(tmp, dest);
    }
    const got = cachedSha256(dest, cache);
    for (const f of [hostPath, dest]) {
      const st = statSync(f);
      const id = `${f}:${st.ino}:${st.size}:${st.mtimeMs}`;
      used[id] = cache[id]!;
    }
    files.push({ name, path: dest, sha256: got, size: statSync(dest).size });
  }
  writeFileSync(`${cacheFile}.tmp-${process.pid}`, JSON.stringify(used) + '\n');
  renameSync(`${cacheFile}.tmp-${process.pid}`, cacheFile);
  if (!existsSync(desiredStateDir)) {
    return { files, pinCheck: `not checked: ${desiredStateDir} does not exist yet (checked on the next lab up)` };
  }
  const pins = readArtifactPins(desiredStateDir).filter((p) => files.some((f) => f.name === p.name));
  if (pins.length === 0) {
    return { files, pinCheck: `not checked: no File in ${desiredStateDir} pins ${files.map((f) => f.name).join(' or ')} yet` };
  }
  const wrong: string[] = [];
  for (const pin of pins) {
    const f = files.find((x) => x.name === pin.name)!;
    if (f.sha256 !== pin.sha256) wrong.push(`${pin.at}: artifact ${pin.name} is pinned to sha256 ${pin.sha256}, the host's ${f.path} has ${f.sha256}`);
  }
  if (wrong.length > 0) {
    throw new LabError(`artifact pins do not match the lab's etcd binaries:\n${wrong.join('\n')}`, "update the pins in desired-state/ to the host's Debian etcd binaries, or install the etcd packages they were taken from");
  }
  return { files, pinCheck: `checked: ${pins.map((p) => `${p.name} (${p.at})`).join(', ')} match` };
}
