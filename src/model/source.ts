/**
 * Where the desired-state files come from. Loading never touches the file
 * system directly: a FileSource lists and reads root-relative paths, so the
 * same loader reads a working directory or a Git commit held in memory.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';

export interface FileSource {
  /** What was loaded, for ResolvedState.root and messages (an absolute path, or e.g. `git:<commit>`). */
  readonly root: string;
  /** Every regular file, as a root-relative POSIX path ('a/b.yaml'), sorted. */
  list(): Promise<string[]>;
  /** The bytes of a file that list() returned. */
  read(path: string): Promise<Buffer>;
}

/**
 * A directory on disk. Symbolic links are not followed (a link could make a
 * template read any file of the bastion, such as a private key), and hidden
 * entries (.git, .github, editor files) are not desired state.
 */
export function fsSource(root: string): FileSource {
  const abs = resolve(root);
  let listed: Set<string> | null = null;
  async function walk(dir: string, prefix: string, out: string[]): Promise<void> {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
      if (e.isDirectory()) await walk(join(dir, e.name), rel, out);
      else if (e.isFile()) out.push(rel);
    }
  }
  return {
    root: abs,
    async list() {
      const out: string[] = [];
      await walk(abs, '', out);
      out.sort();
      listed = new Set(out);
      return out;
    },
    async read(path) {
      if (listed !== null && !listed.has(path)) throw new Error(`not a listed file: ${path}`);
      const full = join(abs, ...path.split('/'));
      if (!full.startsWith(abs + sep)) throw new Error(`outside the root: ${path}`);
      const st = await lstat(full);
      if (!st.isFile()) throw new Error(`not a regular file: ${path}`);
      return readFile(full);
    },
  };
}

/**
 * Files held in memory, e.g. read from a Git commit without a checkout.
 * Keys are root-relative POSIX paths; strings are taken as UTF-8.
 */
export function memorySource(files: Map<string, Buffer | string> | Record<string, Buffer | string>, root = 'memory'): FileSource {
  const map = new Map<string, Buffer>();
  const entries = files instanceof Map ? [...files.entries()] : Object.entries(files);
  for (const [k, v] of entries) map.set(k.replace(/^\.\//, ''), typeof v === 'string' ? Buffer.from(v, 'utf8') : v);
  return {
    root,
    async list() {
      return [...map.keys()].filter((k) => !k.split('/').some((seg) => seg.startsWith('.'))).sort();
    },
    async read(path) {
      const b = map.get(path);
      if (b === undefined) throw new Error(`no such file: ${path}`);
      return b;
    },
  };
}
