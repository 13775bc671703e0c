/**
 * Running the built CLI (`node dist/cli/main.js`) the way an operator does,
 * capturing stdout, stderr, the exit code and the time it took. The child
 * gets a clean environment (no CONVERGE_* settings, no ssh-agent, no colour)
 * and, unless told otherwise, runs in an empty folder of its own, so that no
 * ./.converge/config.json of the project steers it: tests pass every setting
 * as a flag, an env variable they set, or a config file they write.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectDir } from './lab.js';

export const CLI_MAIN = join(projectDir, 'dist', 'cli', 'main.js');

export interface CliResult {
  args: string[];
  /** Exit code, or null when a signal ended the process. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock milliseconds from spawn to exit. */
  ms: number;
  /** True when the run was killed for exceeding its time limit. */
  timedOut: boolean;
}

export interface CliOptions {
  /** Working directory (default: an empty temporary folder shared by this process's runs). */
  cwd?: string;
  /** Variables added to the clean environment (a value of undefined removes one). */
  env?: Record<string, string | undefined>;
  /** Written to stdin, which is then closed (default: stdin is closed at once). */
  input?: string;
  /** Kill with SIGKILL after this long (default 180 s). */
  timeoutMs?: number;
  /** The built CLI to run (default CLI_MAIN): a suite's own copy of dist, safe from a build running meanwhile. */
  main?: string;
}

let defaultCwd: string | undefined;

function emptyCwd(): string {
  defaultCwd ??= mkdtempSync(join(tmpdir(), 'converge-cli-'));
  return defaultCwd;
}

/** Where the lab lives is not a converge setting: `converge lab …` must find the same lab as the tests. */
const LAB_LOCATION = new Set(['CONVERGE_LAB_DIR', 'CONVERGE_IMAGE_CACHE']);

/** The parent's environment without anything that would configure converge behind the test's back. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const setting = k.startsWith('CONVERGE_') && !LAB_LOCATION.has(k);
    if (setting || k === 'SSH_AUTH_SOCK' || k.startsWith('NODE_') || k === 'FORCE_COLOR') continue;
    env[k] = v;
  }
  env['NO_COLOR'] = '1';
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

function assertBuilt(main: string): void {
  if (!existsSync(main)) throw new Error(`${main} does not exist: run \`npm run build\` first`);
}

/** A running CLI process (for the watch daemon): its output so far, and its end. */
export interface CliProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process exits (never rejects). */
  exited: Promise<CliResult>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the result. */
  stop(graceMs?: number): Promise<CliResult>;
}

/** Start the CLI and return at once. */
export function startCli(args: string[], opts: CliOptions = {}): CliProcess {
  const main = opts.main ?? CLI_MAIN;
  assertBuilt(main);
  const started = performance.now();
  const child = spawn(process.execPath, [main, ...args], {
    cwd: opts.cwd ?? emptyCwd(),
    env: cleanEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => out.push(b));
  child.stderr!.on('data', (b: Buffer) => err.push(b));
  child.stdin!.on('error', () => undefined);
  if (opts.input !== undefined) child.stdin!.end(opts.input);
  else child.stdin!.end();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, opts.timeoutMs ?? 180_000);
  const stdout = (): string => Buffer.concat(out).toString('utf8');
  const stderr = (): string => Buffer.concat(err).toString('utf8');
  const exited = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ args, code, signal, stdout: stdout(), stderr: stderr(), ms: Math.round(performance.now() - started), timedOut });
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ args, code: null, signal: null, stdout: stdout(), stderr: `${stderr()}${e.message}`, ms: Math.round(performance.now() - started), timedOut });
    });
  });
  return {
    child,
    stdout,
    stderr,
    exited,
    async stop(graceMs = 10_000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const r = await exited;
        clearTimeout(t);
        return r;
      }
      return exited;
    },
  };
}

/** Run the CLI to completion. */
export function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return startCli(args, opts).exited;
}

/** stdout and stderr together, for messages and for searching. */
export function output(r: CliResult): string {
  return `${r.stdout}${r.stderr}`;
}

/** A one-paragraph account of a run, for assertion messages. */
export function describe(r: CliResult): string {
  return `converge ${r.args.join(' ')} → exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''} in ${r.ms} ms\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}
