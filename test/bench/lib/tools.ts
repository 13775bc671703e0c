/**
 * Running the two tools as an operator does, from a shell, each under
 * /usr/bin/time for its peak resident memory, with a time limit. converge is
 * the built CLI (a frozen copy of dist/, so that a rebuild by someone else
 * during a run cannot change what is measured).
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabInfo } from '../../../src/lab/index.js';
import { projectDir } from '../../helpers/lab.js';
import { ANSIBLE_DIR, type Workspace } from './workspace.js';

export interface RunResult {
  argv: string[];
  code: number;
  ms: number;
  /** Peak resident set of the process (for Ansible: its largest single process), KiB. */
  maxRssKb: number;
  /** CPU time (user + system) of the process and the children it waited for (Ansible's ssh and workers). */
  cpuMs: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const running = new Set<number>();

/** Kill every tool run still going (each runs in its own process group), e.g. when the bench is interrupted. */
export function killRunning(): void {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  running.clear();
}

export async function timed(argv: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<RunResult> {
  const rssFile = join(opts.cwd, `.rss-${process.pid}-${Date.now()}`);
  const full = ['/usr/bin/time', '-f', '%M %U %S', '-o', rssFile, ...argv];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(full[0]!, full.slice(1), { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (child.pid) running.add(child.pid);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, opts.timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - started;
      clearTimeout(timer);
      if (child.pid) running.delete(child.pid);
      let maxRssKb = 0;
      let cpuMs = 0;
      if (existsSync(rssFile)) {
        // The last line: earlier ones are "Command exited with non-zero status N".
        const f = (readFileSync(rssFile, 'utf8').trim().split('\n').pop() ?? '').split(' ').map(Number);
        maxRssKb = f[0] || 0;
        cpuMs = Math.round(((f[1] || 0) + (f[2] || 0)) * 1000);
        rmSync(rssFile, { force: true });
      }
      resolve({ argv, code: code ?? -1, ms, maxRssKb, cpuMs, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
  });
}

/** A copy of dist/ and schemas/ beside package.json and node_modules, as `npm install -g` would lay it out. */
export function freezeBuild(root: string): string {
  const dist = join(projectDir, 'dist', 'cli', 'main.js');
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` first`);
  const dir = join(root, 'converge');
  mkdirSync(dir, { recursive: true });
  for (const d of ['dist', 'schemas']) cpSync(join(projectDir, d), join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'package.json'), readFileSync(join(projectDir, 'package.json')));
  symlinkSync(join(projectDir, 'node_modules'), join(dir, 'node_modules'));
  return join(dir, 'dist', 'cli', 'main.js');
}

export interface Tools {
  converge(ws: Workspace, cmd: 'plan' | 'apply', timeoutMs: number): Promise<RunResult>;
  ansible(ws: Workspace, mode: 'check' | 'apply', timeoutMs: number): Promise<RunResult>;
}

/**
 * `controlDir`: Ansible's ControlPath directory (its default ControlPersist
 * masters live there), so that the bench can drop them when nodes are reset.
 */
export function tools(cli: string, lab: LabInfo, controlDir: string): Tools {
  return {
    converge: (ws, cmd, timeoutMs) =>
      timed(
        [
          process.execPath, cli, cmd,
          '--repo', ws.desired,
          '--secrets', lab.secretsDir,
          '--artifacts', lab.artifactsDir,
          '--ssh-key', lab.sshKey,
          '--known-hosts', lab.knownHosts,
          '--skip-etcd',
          '--stats',
        ],
        // Its own folder, so that no .converge/config.json is picked up: flags only.
        { cwd: ws.dir, env: { ...process.env, NO_COLOR: '1' }, timeoutMs },
      ),
    ansible: (ws, mode, timeoutMs) =>
      timed(['ansible-playbook', '-i', ws.inventory, join(ANSIBLE_DIR, 'site.yml'), ...(mode === 'check' ? ['--check', '--diff'] : [])], {
        cwd: ws.dir,
        env: { ...process.env, ANSIBLE_CONFIG: join(ANSIBLE_DIR, 'ansible.cfg'), ANSIBLE_NOCOLOR: '1', ANSIBLE_SSH_CONTROL_PATH_DIR: controlDir },
        timeoutMs,
      }),
  };
}

/**
 * End Ansible's ControlPersist masters: after a node is reset its old
 * connection is dead, and a fresh converge starts from no connection for
 * both tools.
 */
export function dropControlMasters(controlDir: string): void {
  if (!existsSync(controlDir)) return;
  for (const f of readdirSync(controlDir)) spawnSync('ssh', ['-S', join(controlDir, f), '-O', 'exit', 'bench'], { stdio: 'ignore', timeout: 5000 });
}

/** Sum of `changed=N` over the PLAY RECAP; null when there is no recap or a host failed. */
export function ansibleChanged(stdout: string): { changed: number; failed: number } | null {
  const rows = [...stdout.matchAll(/^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/gm)];
  if (!rows.length) return null;
  let changed = 0;
  let failed = 0;
  for (const r of rows) {
    changed += Number(r[2]);
    failed += Number(r[3]) + Number(r[4]);
  }
  return { changed, failed };
}

/** converge --stats: exec round trips per node. */
export function convergeExecs(stderr: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of stderr.matchAll(/^stats: (\S+): 1 connection, (\d+) exec round trips$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}
