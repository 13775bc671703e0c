/**
 * `converge watch` as a real process for the lab suites: started from the
 * sources (tsx) with its settings in CONVERGE_* variables as the systemd
 * unit's environment file gives them, its JSON log lines parsed as they
 * come, its HTTP endpoint asked for /status; and the webhook a Git server
 * would send.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signBody } from '../../src/daemon/webhook.js';
import { git, gitEnv } from './git.js';
import { projectDir, type TestLab } from './lab.js';

export type LogLine = Record<string, unknown> & { msg?: string; time?: number };

export interface Watcher {
  proc: ChildProcess;
  lines: LogLine[];
  url: string;
  exited: Promise<number | null>;
}

export interface WatcherOptions {
  branch: string;
  mode: 'enforce' | 'report';
  intervalS: number;
  webhookSecret: string;
  /** More CONVERGE_* settings, e.g. CONVERGE_ROLLBACK. */
  env?: Record<string, string>;
}

export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false> | T | undefined | false, everyMs = 50): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function http(url: string, method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const b = body === undefined ? undefined : Buffer.from(body);
    // agent: false: a fresh connection per request, so a keep-alive socket the server is closing is never reused.
    const req = request(`${url}${path}`, { method, agent: false, headers: { ...headers, ...(b ? { 'content-length': String(b.length) } : {}) } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts).toString() }));
    });
    req.on('error', reject);
    req.end(b);
  });
}

export const status = async (w: Watcher): Promise<Record<string, any>> => JSON.parse((await http(w.url, 'GET', '/status')).body) as Record<string, any>;

/** A GitHub-style push event for `ref`, signed with `secret` (unsigned when secret is null). */
export function hook(w: Watcher, ref: string, secret: string | null): Promise<{ status: number; body: string }> {
  const body = JSON.stringify({ ref, after: '0'.repeat(40), repository: { full_name: 'lab/desired-state' } });
  return http(w.url, 'POST', '/hooks/git', body, { 'content-type': 'application/json', 'x-github-event': 'push', ...(secret !== null ? { 'x-hub-signature-256': signBody(secret, body) } : {}) });
}

export async function startWatcher(lab: TestLab, o: WatcherOptions): Promise<Watcher> {
  const cwd = mkdtempSync(join(tmpdir(), 'converge-watch-'));
  const proc = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(projectDir, 'src/cli/main.ts'), 'watch'], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      CONVERGE_REPO: lab.git.url,
      CONVERGE_BRANCH: o.branch,
      CONVERGE_PATH: '.',
      CONVERGE_GIT_CREDENTIALS: lab.git.credentialsFile,
      CONVERGE_SSH_KEY: lab.sshKey,
      CONVERGE_KNOWN_HOSTS: lab.knownHosts,
      CONVERGE_SECRETS_DIR: lab.secretsDir,
      CONVERGE_ARTIFACTS_DIR: lab.artifactsDir,
      CONVERGE_WEBHOOK_SECRET: o.webhookSecret,
      CONVERGE_LISTEN: '127.0.0.1:0',
      CONVERGE_STATE_DIR: join(cwd, 'state'),
      CONVERGE_INTERVAL: String(o.intervalS),
      CONVERGE_MODE: o.mode,
      ...(o.env ?? {}),
    },
  });
  const lines: LogLine[] = [];
  let buf = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') lines.push(JSON.parse(p) as LogLine);
  });
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const listening = await until(`the watcher to listen (stderr: ${stderr})`, 60_000, () => lines.find((l) => l.msg === 'HTTP listening')?.['listen'] as string | undefined);
  return { proc, lines, url: `http://${listening}`, exited };
}

export async function stopWatcher(w: Watcher): Promise<number | null> {
  w.proc.kill('SIGTERM');
  return w.exited;
}

/** After a suite: its watchers killed, its branch deleted from the lab's Git server, its measured figures printed. */
export function endSuite(lab: TestLab | undefined, branch: string, watchers: (Watcher | null)[], figures: string[]): void {
  for (const w of watchers) w?.proc.kill('SIGKILL');
  if (lab !== undefined) {
    // `git push` wants a repository to push from, even to delete a remote branch.
    const scratch = mkdtempSync(join(tmpdir(), 'converge-branch-'));
    try {
      const env = gitEnv({ url: lab.git.url, username: lab.git.username, password: lab.git.password });
      git(['init', '--quiet'], scratch, env);
      git(['push', '--quiet', lab.git.url, '--delete', `refs/heads/${branch}`], scratch, env);
    } catch {
      // the branch may never have been made
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  }
  if (figures.length) console.log(`\n  figures: ${figures.join('; ')}`);
}
