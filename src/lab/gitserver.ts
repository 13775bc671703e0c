/**
 * The lab's Git server: a bare repository (HEAD → main) served over HTTP on
 * 127.0.0.1 by `git http-backend` behind basic auth (user "converge", a random
 * password kept 0600 in the lab directory, never printed), pushes allowed.
 *
 * The repository's root is the content of the project's desired-state/ folder
 * (nodes.yaml etc. at the top level, not inside a desired-state/ folder), so
 * converge follows it with path "" (the repository root).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabError } from '../errors/index.js';
import type { LabPaths } from './paths.js';
import { GIT_REPO_NAME, GIT_USER } from './paths.js';
import { findProcesses, isSameProcess, pidStart, run, runOk, sleep, terminate } from './proc.js';
import type { GitServerState } from './state.js';

export interface GitCredentials {
  username: string;
  password: string;
}

/** Identity of the commits the lab makes itself. */
const LAB_IDENTITY = {
  GIT_AUTHOR_NAME: 'converge lab',
  GIT_AUTHOR_EMAIL: 'lab@converge.invalid',
  GIT_COMMITTER_NAME: 'converge lab',
  GIT_COMMITTER_EMAIL: 'lab@converge.invalid',
};

export function readGitCredentials(p: LabPaths): GitCredentials {
  try {
    return JSON.parse(readFileSync(p.gitCredentials, 'utf8')) as GitCredentials;
  } catch {
    throw new LabError(`the lab's Git credentials ${p.gitCredentials} are missing`, 'run `converge lab up`');
  }
}

function ensureCredentials(p: LabPaths): void {
  mkdirSync(p.gitDir, { recursive: true, mode: 0o700 });
  chmodSync(p.gitDir, 0o700);
  if (existsSync(p.gitCredentials)) return;
  const creds: GitCredentials = { username: GIT_USER, password: randomBytes(24).toString('base64url') };
  writeFileSync(p.gitCredentials, JSON.stringify(creds) + '\n', { mode: 0o600 });
}

async function git(args: string[], cwd: string, what: string): Promise<string> {
  return (await runOk('git', args, { cwd, env: { ...process.env, ...LAB_IDENTITY, GIT_TERMINAL_PROMPT: '0' }, what })).stdout.trim();
}

async function hasMain(repo: string): Promise<boolean> {
  return (await run('git', ['--git-dir', repo, 'rev-parse', '--verify', '--quiet', 'refs/heads/main'])).code === 0;
}

/**
 * Commit the content of `desiredStateDir` as the repository root on main (on
 * top of the current main when there is one) and return the commit id.
 */
export async function commitDesiredState(p: LabPaths, desiredStateDir: string, message: string): Promise<string> {
  const work = mkdtempSync(join(tmpdir(), 'converge-lab-seed-'));
  try {
    if (await hasMain(p.gitRepo)) {
      await git(['clone', '--quiet', '--branch', 'main', p.gitRepo, work], tmpdir(), 'cloning the lab repository');
      for (const e of readdirSync(work)) if (e !== '.git') rmSync(join(work, e), { recursive: true, force: true });
    } else {
      await git(['init', '--quiet', '--initial-branch=main', work], tmpdir(), 'preparing the seed commit');
      await git(['remote', 'add', 'origin', p.gitRepo], work, 'preparing the seed commit');
    }
    cpSync(desiredStateDir, work, { recursive: true, filter: (src) => !src.split('/').includes('.git') });
    await git(['add', '--all'], work, 'staging desired-state/');
    await git(['commit', '--quiet', '--allow-empty', '-m', message], work, 'committing desired-state/');
    await git(['push', '--quiet', 'origin', 'HEAD:refs/heads/main'], work, 'pushing to the lab repository');
    return await git(['rev-parse', 'HEAD'], work, 'reading the commit id');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The bare repository, seeded with desired-state/ when it has no main yet. */
export async function ensureGitRepo(p: LabPaths, desiredStateDir: string, log: (line: string) => void): Promise<void> {
  ensureCredentials(p);
  if (!existsSync(join(p.gitRepo, 'HEAD'))) {
    await git(['init', '--quiet', '--bare', '--initial-branch=main', p.gitRepo], p.gitDir, 'creating the lab repository');
  }
  const configured = readFileSync(join(p.gitRepo, 'config'), 'utf8').includes('receivepack = true') && readFileSync(join(p.gitRepo, 'HEAD'), 'utf8').trim() === 'ref: refs/heads/main';
  if (!configured) {
    await git(['config', 'http.receivepack', 'true'], p.gitRepo, 'configuring the lab repository');
    await git(['symbolic-ref', 'HEAD', 'refs/heads/main'], p.gitRepo, 'configuring the lab repository');
  }
  if (await hasMain(p.gitRepo)) return;
  if (!existsSync(desiredStateDir)) {
    log(`git: ${desiredStateDir} does not exist: the lab repository stays empty until the next lab up`);
    return;
  }
  const id = await commitDesiredState(p, desiredStateDir, 'desired state: initial commit from the project');
  log(`git: seeded the lab repository with ${desiredStateDir} (commit ${id.slice(0, 12)})`);
}

function mainScript(): { args: string[] } {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    // Running from source (tests under tsx): the child needs the same loader.
    return { args: ['--import', import.meta.resolve('tsx'), join(dirname(here), 'gitserver-main.ts')] };
  }
  return { args: [join(dirname(here), 'gitserver-main.js')] };
}

function isOurServer(p: LabPaths, argv: string[]): boolean {
  return argv.some((a) => /gitserver-main\.(js|ts)$/.test(a)) && argv.includes(p.gitDir);
}

export function gitServerAlive(p: LabPaths, s: GitServerState | null): boolean {
  if (!s || !isSameProcess(s.pid, s.pidStart)) return false;
  return isOurServer(p, readFileSync(`/proc/${s.pid}/cmdline`, 'utf8').split('\0'));
}

/** Stop the recorded server and any other server process serving this lab's repository. */
export async function stopGitServers(p: LabPaths, s: GitServerState | null): Promise<number> {
  const pids = new Set(findProcesses((argv) => isOurServer(p, argv)));
  if (s && gitServerAlive(p, s)) pids.add(s.pid);
  for (const pid of pids) await terminate(pid, pidStart(pid), 3000);
  return pids.size;
}

/** An authenticated request for the ref advertisement: 200 when the server works. */
export function probeGitServer(url: string, creds: GitCredentials, timeoutMs = 3000): Promise<number> {
  return new Promise((resolve) => {
    const req = request(`${url}/info/refs?service=git-upload-pack`, { headers: { Authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` }, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Start the server detached (it outlives this process) and wait until it answers. */
export async function startGitServer(p: LabPaths, preferredPort: number): Promise<GitServerState> {
  ensureCredentials(p);
  rmSync(p.gitPortFile, { force: true });
  const logFd = openSync(p.gitLog, 'a', 0o600);
  const { args } = mainScript();
  const child = spawn(process.execPath, [...args, '--root', p.gitDir, '--credentials', p.gitCredentials, '--port', String(preferredPort), '--port-file', p.gitPortFile], {
    cwd: p.gitDir,
    detached: true,
    stdio: ['ignore', logFd, logFd],
  });
  closeSync(logFd);
  const pid = child.pid;
  child.unref();
  if (!pid) throw new LabError('cannot start the lab Git server');
  const start = pidStart(pid);
  const until = Date.now() + 15_000;
  while (!existsSync(p.gitPortFile)) {
    if (pidStart(pid) === null || Date.now() > until) {
      const tail = existsSync(p.gitLog) ? readFileSync(p.gitLog, 'utf8').trim().split('\n').slice(-5).join('\n') : '';
      throw new LabError(`the lab Git server did not start${tail ? `:\n${tail}` : ''}`, `see ${p.gitLog}`);
    }
    await sleep(50);
  }
  const port = Number(readFileSync(p.gitPortFile, 'utf8').trim());
  const url = `http://127.0.0.1:${port}/${GIT_REPO_NAME}`;
  const status = await probeGitServer(url, readGitCredentials(p));
  if (status !== 200) throw new LabError(`the lab Git server answers ${status} instead of 200`, `see ${p.gitLog}`);
  return { pid, pidStart: start ?? 0, port, url };
}
