/**
 * A FileSource over one commit of a Git object store: the tree under the
 * desired-state folder is listed once, blobs are read on demand. Symbolic
 * links and submodules are not files of the desired state and are left out,
 * as are hidden entries, matching the model's directory source.
 */
import * as fs from 'node:fs';
import git from 'isomorphic-git';
import { ConfigError, SourceError } from '../errors/index.js';
import type { FileSource } from '../model/source.js';

/** `./a/b/` → `a/b`; refuses absolute paths and `..`. */
export function normaliseSubdir(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (path.startsWith('/') || parts.some((p) => p === '..')) {
    throw new ConfigError(`--path must be a folder inside the repository, not ${JSON.stringify(path)}`, 'give it relative to the repository root, e.g. desired-state');
  }
  return parts.join('/');
}

export interface GitFilesOptions {
  gitdir: string;
  commit: string;
  path: string;
  /** The repository as shown in messages. */
  where: string;
  /** Called once when the commit is not in the object store, to fetch it; null when it cannot be fetched. */
  onMissing: (() => Promise<void>) | null;
}

const FILE_MODES = new Set(['100644', '100755']);

export function gitFiles(o: GitFilesOptions): FileSource {
  const cache = {};
  const short = o.commit.slice(0, 12);
  let index: Promise<Map<string, string>> | null = null;

  async function treeOf(): Promise<string> {
    try {
      return (await git.readCommit({ fs, gitdir: o.gitdir, oid: o.commit, cache })).commit.tree;
    } catch (e) {
      if ((e as { code?: string }).code !== 'NotFoundError' || o.onMissing === null) throw missing(e);
    }
    await o.onMissing();
    try {
      return (await git.readCommit({ fs, gitdir: o.gitdir, oid: o.commit, cache })).commit.tree;
    } catch (e) {
      throw missing(e);
    }
  }

  function missing(e: unknown): SourceError {
    if ((e as { code?: string }).code === 'NotFoundError') {
      return new SourceError(`commit ${short} is not in ${o.where}`, { hint: 'it may have been removed from the branch by a force-push; push a new commit' });
    }
    return e instanceof SourceError ? e : new SourceError(`cannot read commit ${short} of ${o.where}: ${(e as Error).message}`);
  }

  async function build(): Promise<Map<string, string>> {
    let tree = await treeOf();
    const walked: string[] = [];
    for (const seg of o.path === '' ? [] : o.path.split('/')) {
      const { tree: entries } = await git.readTree({ fs, gitdir: o.gitdir, oid: tree, cache });
      const next = entries.find((e) => e.path === seg && e.type === 'tree');
      walked.push(seg);
      if (next === undefined) {
        throw new SourceError(`folder ${walked.join('/')} not found at commit ${short} of ${o.where}`, { hint: 'check --path: it names the desired-state folder inside the repository' });
      }
      tree = next.oid;
    }
    const out = new Map<string, string>();
    const walk = async (oid: string, prefix: string): Promise<void> => {
      const { tree: entries } = await git.readTree({ fs, gitdir: o.gitdir, oid, cache });
      for (const e of entries) {
        if (e.path.startsWith('.')) continue;
        const rel = prefix === '' ? e.path : `${prefix}/${e.path}`;
        if (e.type === 'tree') await walk(e.oid, rel);
        else if (e.type === 'blob' && FILE_MODES.has(e.mode)) out.set(rel, e.oid);
      }
    };
    await walk(tree, '');
    return out;
  }

  const load = (): Promise<Map<string, string>> => {
    index ??= build();
    index.catch(() => {
      index = null;
    });
    return index;
  };

  return {
    root: o.path === '' ? `git:${o.commit}` : `git:${o.commit}:${o.path}`,
    async list() {
      return [...(await load()).keys()].sort();
    },
    async read(path) {
      const oid = (await load()).get(path);
      if (oid === undefined) throw new SourceError(`no file ${path} at commit ${short}${o.path === '' ? '' : ` under ${o.path}`}`);
      const { blob } = await git.readBlob({ fs, gitdir: o.gitdir, oid, cache });
      return Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
    },
  };
}
