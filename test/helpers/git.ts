/**
 * Changing the lab's Git repository the way an operator does: real `git
 * clone`, an edit, `git commit`, `git push`. The password travels in an HTTP
 * header set through the environment, never on a command line or in a URL.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labInfo, labPaths, readGitCredentials } from '../../src/lab/index.js';
import { ensureLab, projectDir } from './lab.js';

export interface GitAccess {
  url: string;
  username: string;
  password: string;
}

/** The lab's Git server, brought up only when it is not running. */
async function access(given?: GitAccess): Promise<GitAccess> {
  if (given) return given;
  const now = labInfo({ projectDir });
  if (now.git.url) return { url: now.git.url, username: now.git.username, password: readGitCredentials(labPaths(now.labDir)).password };
  const lab = await ensureLab();
  return { url: lab.git.url, username: lab.git.username, password: lab.git.password };
}

/** Environment for `git` with the lab's basic auth and a fixed identity, ignoring the user's git config. */
export function gitEnv(a: GitAccess): NodeJS.ProcessEnv {
  return {
    ...process.env,
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_TERMINAL_PROMPT: '0',
    GIT_CONFIG_COUNT: '1',
    GIT_CONFIG_KEY_0: 'http.extraHeader',
    GIT_CONFIG_VALUE_0: `Authorization: Basic ${Buffer.from(`${a.username}:${a.password}`).toString('base64')}`,
    GIT_AUTHOR_NAME: 'converge test',
    GIT_AUTHOR_EMAIL: 'test@converge.invalid',
    GIT_COMMITTER_NAME: 'converge test',
    GIT_COMMITTER_EMAIL: 'test@converge.invalid',
  };
}

export function git(args: string[], cwd: string, env: NodeJS.ProcessEnv): string {
  const r = spawnSync('git', args, { cwd, env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ${args[0]} failed (exit ${r.status}): ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/**
 * Clone the lab repository, let `edit` change the working tree (the
 * repository root is the desired state: nodes.yaml etc. at the top), commit
 * everything with `message` and push to `branch` (default main; a branch
 * that does not exist yet starts from main). Returns the new commit id.
 */
export async function commitChange(edit: (dir: string) => void | Promise<void>, message: string, opts: { branch?: string; git?: GitAccess } = {}): Promise<string> {
  const a = await access(opts.git);
  const branch = opts.branch ?? 'main';
  const env = gitEnv(a);
  const dir = mkdtempSync(join(tmpdir(), 'converge-commit-'));
  try {
    // A new branch starts from main.
    const exists = git(['ls-remote', a.url, `refs/heads/${branch}`], tmpdir(), env) !== '';
    git(['clone', '--quiet', '--branch', exists ? branch : 'main', a.url, dir], tmpdir(), env);
    await edit(dir);
    git(['add', '--all'], dir, env);
    git(['commit', '--quiet', '--allow-empty', '-m', message], dir, env);
    git(['push', '--quiet', 'origin', `HEAD:refs/heads/${branch}`], dir, env);
    return git(['rev-parse', 'HEAD'], dir, env);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The commit `branch` (default main) points at on the lab's Git server. */
export async function remoteHead(opts: { branch?: string; git?: GitAccess } = {}): Promise<string> {
  const a = await access(opts.git);
  const out = git(['ls-remote', a.url, `refs/heads/${opts.branch ?? 'main'}`], tmpdir(), gitEnv(a));
  const id = out.split(/\s+/)[0];
  if (!id) throw new Error(`branch ${opts.branch ?? 'main'} does not exist on ${a.url}`);
  return id;
}
