/**
 * The Git source: a branch of a repository, pinned to one commit per pass.
 * A remote repository (HTTP/HTTPS) is fetched shallow, one branch, into a
 * bare cache; a local repository is read in place. Files are read straight
 * from the object store at a commit: there is never a checkout, so a working
 * tree's uncommitted edits are not desired state.
 */
import * as fs from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import git from 'isomorphic-git';
import type { HttpClient } from 'isomorphic-git';
import { ConfigError, SourceError } from '../errors/index.js';
import type { FileSource } from '../model/source.js';

export type { FileSource };
export { detectRepo } from './detect.js';
import { resolveCredentials, type Credentials, type SourceAuth } from './auth.js';
import { sourceFailure } from './errors.js';
import { boundedHttpClient, DEFAULT_HTTP_LIMITS, type HttpLimits } from './http.js';
import { displayUrl } from './redact.js';
import { findGitdir } from './detect.js';
import { gitFiles, normaliseSubdir } from './tree.js';

export interface SourceOptions {
  /** An http(s) URL, a file:// URL or the path of a local repository (working tree or bare). */
  repo: string;
  branch: string;
  /** Folder of the desired state inside the repository ('' or '.' for the root). */
  path?: string;
  /** Where remote repositories are cached (required for a URL). */
  cacheDir?: string;
  auth?: SourceAuth;
  /** Environment to read CONVERGE_GIT_* and CREDENTIALS_DIRECTORY from (default process.env). */
  env?: NodeJS.ProcessEnv;
  http?: HttpLimits;
}

export interface Source {
  readonly kind: 'remote' | 'local';
  /** The repository as it may be shown: a URL without credentials, or an absolute path. */
  readonly display: string;
  readonly branch: string;
  /** Normalised desired-state folder inside the repository ('' for the root). */
  readonly path: string;
  /** The git directory read from: the cache's for a remote, the repository's own for a local one. */
  readonly gitdir: string;
  /** The newest commit of the branch; fetches first for a remote repository. */
  resolve(): Promise<string>;
  /** Bring the branch up to date from the remote (no-op for a local repository); returns its commit. */
  fetch(): Promise<string>;
  /** The desired-state files at a commit, read from the object store. */
  files(commit: string): FileSource;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;

function checkCommit(commit: string): void {
  if (!COMMIT_RE.test(commit)) throw new SourceError(`not a commit id: ${JSON.stringify(commit.slice(0, 64))}`, { hint: 'a commit id is 40 hexadecimal digits' });
}

export async function openSource(opts: SourceOptions): Promise<Source> {
  if (!/^[A-Za-z0-9._/-]+$/.test(opts.branch) || opts.branch.includes('..') || opts.branch.startsWith('/') || opts.branch.endsWith('/')) {
    throw new ConfigError(`not a usable branch name: ${JSON.stringify(opts.branch)}`, 'give --branch a plain branch name such as main');
  }
  const path = normaliseSubdir(opts.path ?? '');
  const env = opts.env ?? process.env;
  if (/^https?:\/\//i.test(opts.repo)) return openRemote(opts, path, env);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(opts.repo) && !opts.repo.startsWith('file://')) {
    throw new ConfigError(`unsupported Git URL scheme in ${displayUrl(opts.repo)}`, 'use an https:// (or http://) URL, or the path of a local repository');
  }
  if (/^[^/]+@[^/:]+:/.test(opts.repo)) {
    throw new ConfigError(`SSH Git URLs are not supported: ${displayUrl(opts.repo)}`, 'use the https:// URL of the repository with a token');
  }
  const dir = resolvePath(opts.repo.startsWith('file://') ? fileURLToPath(opts.repo) : opts.repo);
  const gitdir = await findGitdir(dir);
  if (gitdir === null) {
    throw new SourceError(`${dir} is not a Git repository`, { hint: 'give --repo a Git working tree, a bare repository or an https:// URL' });
  }
  return localSource(dir, gitdir, opts.branch, path);
}

function localSource(dir: string, gitdir: string, branch: string, path: string): Source {
  const resolve = async (): Promise<string> => {
    try {
      return await git.resolveRef({ fs, gitdir, ref: `refs/heads/${branch}` });
    } catch (e) {
      if ((e as { code?: string }).code === 'NotFoundError') {
        throw new SourceError(`branch ${branch} not found in ${dir}`, { hint: 'check --branch (and that the repository has a commit on it)' });
      }
      throw new SourceError(`cannot read branch ${branch} of ${dir}: ${(e as Error).message}`);
    }
  };
  return {
    kind: 'local',
    display: dir,
    branch,
    path,
    gitdir,
    resolve,
    fetch: resolve,
    files(commit) {
      checkCommit(commit);
      return gitFiles({ gitdir, commit, path, where: dir, onMissing: null });
    },
  };
}

function cacheName(display: string, branch: string): string {
  const digest = createHash('sha256').update(`${display}\0${branch}`).digest('hex').slice(0, 16);
  const slug = display.replace(/^https?:\/\//i, '').replace(/[^A-Za-z0-9.-]+/g, '_').slice(0, 60);
  return `${slug}-${digest}.git`;
}

async function openRemote(opts: SourceOptions, path: string, env: NodeJS.ProcessEnv): Promise<Source> {
  if (opts.cacheDir === undefined) throw new ConfigError('a Git URL needs a cache directory', 'pass --cache DIR (the service uses its state directory)');
  let parsed: URL;
  try {
    parsed = new URL(opts.repo);
  } catch {
    throw new ConfigError(`not a valid URL: ${displayUrl(opts.repo)}`, 'check --repo');
  }
  const creds: Credentials | null = await resolveCredentials(opts.auth ?? {}, parsed, env);
  // The URL handed to isomorphic-git never carries user-info: credentials go through onAuth only.
  const clean = new URL(parsed.toString());
  clean.username = '';
  clean.password = '';
  const url = clean.toString();
  const display = displayUrl(opts.repo);
  const gitdir = join(resolvePath(opts.cacheDir), cacheName(display, opts.branch));
  const http: HttpClient = boundedHttpClient(opts.http ?? DEFAULT_HTTP_LIMITS);
  const ctx = { url: opts.repo, branch: opts.branch, hasCredentials: creds !== null, secrets: [creds?.password, creds?.username] };
  const onAuth = () => (creds === null ? undefined : { username: creds.username, password: creds.password });

  async function ensureInit(): Promise<void> {
    await mkdir(dirname(gitdir), { recursive: true, mode: 0o700 });
    try {
      await stat(join(gitdir, 'HEAD'));
    } catch {
      await git.init({ fs, gitdir, bare: true, defaultBranch: opts.branch });
      // Only the refspec: the URL is passed on every fetch and never stored, credentials least of all.
      await git.setConfig({ fs, gitdir, path: 'remote.origin.fetch', value: `+refs/heads/${opts.branch}:refs/remotes/origin/${opts.branch}` });
    }
  }

  async function fetchOnce(depth: number): Promise<string> {
    await ensureInit();
    const res = await git.fetch({ fs, http, gitdir, url, remote: 'origin', ref: opts.branch, singleBranch: true, depth, tags: false, onAuth });
    if (res.fetchHead === null) {
      throw new SourceError(`${display} has no commits`, { hint: 'push a commit to the branch first' });
    }
    // A local branch ref lets the next fetch tell the server what is already here.
    await git.writeRef({ fs, gitdir, ref: `refs/heads/${opts.branch}`, value: res.fetchHead, force: true });
    return res.fetchHead;
  }

  /** The cached branch and its commit read back: the cache is sound whatever the server answered. */
  async function cacheReadable(): Promise<boolean> {
    try {
      await git.readCommit({ fs, gitdir, oid: await git.resolveRef({ fs, gitdir, ref: `refs/heads/${opts.branch}` }) });
      return true;
    } catch {
      return false;
    }
  }

  async function fetch(depth = 1): Promise<string> {
    try {
      return await fetchOnce(depth);
    } catch (e) {
      const mapped = sourceFailure(e, ctx);
      // A server answering garbage fails the same way as a damaged cache; wiping a sound
      // cache then would lose the last good commit while the server is broken.
      if (!isLocalDamage(e, opts.branch) || (await cacheReadable())) throw mapped;
    }
    // The cache is converge's own: when it is damaged (a crash mid-write), start it afresh once.
    await rm(gitdir, { recursive: true, force: true });
    try {
      return await fetchOnce(depth);
    } catch (e) {
      throw sourceFailure(e, ctx);
    }
  }

  return {
    kind: 'remote',
    display,
    branch: opts.branch,
    path,
    gitdir,
    resolve: () => fetch(),
    fetch: () => fetch(),
    files(commit) {
      checkCommit(commit);
      // An older commit (the last good one) may be missing from a fresh shallow cache: deepen once.
      const onMissing = async (): Promise<void> => {
        await fetch(0x7fffffff);
      };
      return gitFiles({ gitdir, commit, path, where: `${display} (branch ${opts.branch})`, onMissing });
    },
  };
}

/** Errors from reading the cache itself, as opposed to the network or the server. */
function isLocalDamage(e: unknown, branch: string): boolean {
  const { code, data } = e as { code?: string; data?: { what?: string } };
  if (code === 'NotFoundError') return data?.what !== branch;
  return code === 'InternalError' || code === 'ObjectTypeError' || code === 'InvalidOidError';
}
