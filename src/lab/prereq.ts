/**
 * What the lab needs from the host, and installing what is missing with
 * apt-get. Every failure says what is wrong and what to do.
 */
import { accessSync, constants, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { LabError } from '../errors/index.js';
import { findProcesses, run, terminate } from './proc.js';

/** Command → Debian package that provides it. */
const TOOLS: ReadonlyArray<readonly [string, string]> = [
  ['debootstrap', 'debootstrap'],
  ['systemd-nspawn', 'systemd-container'],
  ['ip', 'iproute2'],
  ['ssh', 'openssh-client'],
  ['ssh-keygen', 'openssh-client'],
  ['openssl', 'openssl'],
  ['git', 'git'],
  ['nsenter', 'util-linux'],
  ['mount', 'mount'],
];

/** The etcd binaries the lab hands to converge as artifacts. */
export const ETCD_BINARIES: ReadonlyArray<readonly [string, string, string]> = [
  ['etcd', '/usr/bin/etcd', 'etcd-server'],
  ['etcdctl', '/usr/bin/etcdctl', 'etcd-client'],
];

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new LabError(
      'the lab needs root: it creates a network bridge, mounts overlays and boots containers with systemd-nspawn',
      'run it as root (e.g. `sudo npm test`, `sudo converge lab up`)',
    );
  }
  if (process.platform !== 'linux') throw new LabError(`the lab needs Linux (this is ${process.platform})`);
}

/** Whether `cmd` is an executable on PATH (plus the sbin folders, which root's PATH may lack). */
function hasCommand(cmd: string): boolean {
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  return dirs.some((d) => {
    if (!d) return false;
    try {
      accessSync(join(d, cmd), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Install the host packages the lab needs when their commands are missing.
 * Debian's etcd-server starts etcd from its postinst: a policy-rc.d forbids
 * that during the install, and any etcd that still appears is stopped.
 */
export async function ensureHostPackages(log: (line: string) => void): Promise<void> {
  const missing = new Set<string>();
  for (const [cmd, pkg] of TOOLS) if (!(hasCommand(cmd))) missing.add(pkg);
  for (const [, path, pkg] of ETCD_BINARIES) if (!existsSync(path)) missing.add(pkg);
  if (missing.size === 0) return;
  const pkgs = [...missing].sort();
  if (!(hasCommand('apt-get'))) {
    throw new LabError(`missing host packages: ${pkgs.join(' ')}, and there is no apt-get to install them`, 'the lab runs on Debian or Ubuntu; install these packages by hand');
  }
  log(`installing host packages: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = await run('apt-get', ['update'], { env, timeoutMs: 10 * 60_000 });
  if (update.code !== 0) {
    throw new LabError(`apt-get update failed (exit ${update.code}):\n${tail(update)}`, `check the machine's apt sources, then install by hand: apt-get install ${pkgs.join(' ')}`);
  }
  const etcdBefore = new Set(hostEtcdPids());
  const policy = '/usr/sbin/policy-rc.d';
  const ownPolicy = !existsSync(policy);
  if (ownPolicy) {
    mkdirSync(dirname(policy), { recursive: true });
    writeFileSync(policy, '#!/bin/sh\n# written by converge lab while installing packages: start no services\nexit 101\n', { mode: 0o755 });
  }
  try {
    const inst = await run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { env, timeoutMs: 20 * 60_000 });
    if (inst.code !== 0) {
      throw new LabError(`apt-get install ${pkgs.join(' ')} failed (exit ${inst.code}):\n${tail(inst)}`, 'install these packages by hand, then run lab up again');
    }
  } finally {
    if (ownPolicy) rmSync(policy, { force: true });
    for (const pid of hostEtcdPids()) {
      if (!etcdBefore.has(pid)) {
        log(`stopping the etcd that the etcd-server package started on this host (pid ${pid})`);
        await terminate(pid, null, 5000);
      }
    }
  }
  for (const [cmd, pkg] of TOOLS) {
    if (!(hasCommand(cmd))) throw new LabError(`${cmd} is still missing after installing ${pkg}`);
  }
}

/** etcd processes of the host itself; those inside lab nodes (also visible in /proc) have another root. */
function hostEtcdPids(): number[] {
  return findProcesses((argv) => argv[0] === '/usr/bin/etcd' || argv[0] === 'etcd').filter((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/root`) === '/';
    } catch {
      return false;
    }
  });
}

function tail(r: { stdout: string; stderr: string }): string {
  return (r.stderr || r.stdout).trim().split('\n').slice(-10).join('\n');
}

/**
 * Every lab node's systemd, journald and logind take inotify instances from
 * the host's one per-user budget (about 20 per node; all run as root): with
 * the default of 128, seven nodes used them all, and every inotify watch on
 * the host then failed with EMFILE (chokidar, and so `converge watch`'s ref
 * watch of a local repository). The limits are raised, never lowered.
 */
const INOTIFY_LIMITS: ReadonlyArray<readonly [string, number]> = [
  ['/proc/sys/fs/inotify/max_user_instances', 8192],
  ['/proc/sys/fs/inotify/max_user_watches', 524288],
];

export function ensureInotifyLimits(log: (line: string) => void): void {
  for (const [file, want] of INOTIFY_LIMITS) {
    let now: number;
    try {
      now = Number.parseInt(readFileSync(file, 'utf8'), 10);
    } catch {
      continue;
    }
    if (now >= want) continue;
    try {
      writeFileSync(file, `${want}\n`);
      log(`raised ${file.slice('/proc/sys/'.length).replace(/\//g, '.')} from ${now} to ${want} (lab nodes use the host's inotify instances)`);
    } catch (e) {
      throw new LabError(`cannot raise ${file} from ${now} to ${want}: ${(e as Error).message}`, `run: sysctl -w ${file.slice('/proc/sys/'.length).replace(/\//g, '.')}=${want}`);
    }
  }
}

const MB = 1024 * 1024;

/** Fail unless the filesystem holding `path` has `neededMb` free. */
export function requireFreeDisk(path: string, neededMb: number, what: string): void {
  let p = path;
  while (!existsSync(p)) p = dirname(p);
  const s = statfsSync(p);
  const freeMb = Math.floor((Number(s.bavail) * Number(s.bsize)) / MB);
  if (freeMb < neededMb) {
    throw new LabError(
      `not enough free disk for ${what}: ${neededMb} MB needed in ${path}, ${freeMb} MB free`,
      `free at least ${neededMb - freeMb} MB on the filesystem holding ${p} (or point CONVERGE_IMAGE_CACHE / CONVERGE_LAB_DIR elsewhere)`,
    );
  }
}
