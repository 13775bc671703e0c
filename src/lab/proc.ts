/**
 * Running host commands and tracking the processes the lab starts. Every PID
 * the lab records is paired with its start time from /proc, so a PID reused
 * by an unrelated process after a crash is never mistaken for ours.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { constants } from 'node:os';
import { LabError } from '../errors/index.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

/** Run a command without a shell; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') reject(new LabError(`command not found: ${cmd}`, 'install it (lab up installs its prerequisites with apt-get when run as root)'));
      else reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Run a command and fail with a LabError (naming the command and its stderr) on a non-zero exit. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions & { what?: string } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    const tail = (r.stderr || r.stdout).trim().split('\n').slice(-8).join('\n');
    throw new LabError(`${opts.what ?? `${cmd} ${args.slice(0, 3).join(' ')}`} failed (exit ${r.code})${tail ? `:\n${tail}` : ''}`);
  }
  return r;
}

/** The process's start time (clock ticks since boot), or null when it does not exist or is a zombie. */
export function pidStart(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return null;
  const start = Number(rest[19]);
  return Number.isFinite(start) ? start : null;
}

/** True when `pid` is alive and is the very process that was recorded with `start`. */
export function isSameProcess(pid: number | undefined, start: number | undefined): boolean {
  if (!pid || start === undefined) return false;
  return pidStart(pid) === start;
}

export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s !== '');
  } catch {
    return [];
  }
}

/** All live processes whose argv satisfies `match`. */
export function findProcesses(match: (argv: string[]) => boolean): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    const argv = cmdline(pid);
    if (argv.length > 0 && match(argv) && pidStart(pid) !== null) found.push(pid);
  }
  return found;
}

/** The PIDs of a process's direct children. */
export function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return kids;
  }
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/)) {
        if (c) kids.push(Number(c));
      }
    } catch {
      // the task ended while we read it
    }
  }
  return kids;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait until the process is gone; true if it ended within `ms`. */
export async function waitGone(pid: number, start: number | null, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    const now = pidStart(pid);
    if (now === null || (start !== null && now !== start)) return true;
    if (Date.now() >= until) return false;
    await sleep(50);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function terminate(pid: number, start: number | null, graceMs: number): Promise<void> {
  const sig = (s: NodeJS.Signals): void => {
    try {
      process.kill(pid, s);
    } catch {
      // already gone
    }
  };
  if (pidStart(pid) === null || (start !== null && pidStart(pid) !== start)) return;
  sig('SIGTERM');
  if (await waitGone(pid, start, graceMs)) return;
  sig('SIGKILL');
  if (!(await waitGone(pid, start, 5000))) throw new LabError(`process ${pid} did not exit after SIGKILL`);
}

export function elapsed(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}
