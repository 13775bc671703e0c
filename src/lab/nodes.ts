/**
 * One lab node: an overlay of the cached image (lower, read-only) and the
 * node's own upper directory, mounted on the host and booted with
 * systemd-nspawn (real systemd as PID 1) on the lab bridge. A fresh node is a
 * fresh upper directory, which is why a reset takes a few seconds.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LabError } from '../errors/index.js';
import { veth } from './addresses.js';
import { isMounted, mountOverlay, unmountUnder } from './mounts.js';
import { BRIDGE, PREFIX_LENGTH, type LabPaths, nodePaths } from './paths.js';
import { childrenOf, cmdline, findProcesses, isSameProcess, pidStart, runOk, terminate, waitGone } from './proc.js';
import type { NodeState } from './state.js';

export interface NodeSpec {
  name: string;
  address: string;
}

/**
 * The network file sorts before the image's 80-container-host0.network, or
 * that one wins. The address stays through a cut link so that a restored link
 * just works again, as it would on a real host whose cable was pulled.
 */
function networkFile(address: string): string {
  return `[Match]
Name=host0

[Network]
Address=${address}/${PREFIX_LENGTH}
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
IgnoreCarrierLoss=yes
`;
}

function hostsFile(self: NodeSpec, all: readonly NodeSpec[]): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  for (const n of [...all].sort((a, b) => a.name.localeCompare(b.name))) lines.push(`${n.address}\t${n.name}`);
  if (!all.some((n) => n.name === self.name)) lines.push(`${self.address}\t${self.name}`);
  return lines.join('\n') + '\n';
}

/** Discard the node's upper layer: the next mount shows the pristine image. */
export async function wipeNode(p: LabPaths, name: string): Promise<void> {
  const np = nodePaths(p, name);
  await unmountUnder(np.root);
  for (const d of [np.upper, np.work]) {
    if (existsSync(d)) await runOk('rm', ['-rf', '--one-file-system', d], { what: `removing ${d}` });
  }
}

/**
 * Mount the node's root (image + upper). With `fresh`, the upper layer is new
 * and the node's identity (hostname, address, host keys, the lab's client key)
 * is written into it; otherwise the node keeps its disk, as after a reboot.
 */
export async function prepareNode(p: LabPaths, imageRootfs: string, node: NodeSpec, all: readonly NodeSpec[], fresh: boolean): Promise<void> {
  const np = nodePaths(p, node.name);
  if (fresh) await wipeNode(p, node.name);
  for (const d of [np.dir, np.upper, np.work, np.root]) mkdirSync(d, { recursive: true, mode: 0o700 });
  // The overlay's root directory takes its owner and mode from the upper layer:
  // it must be the image's (0755), or the node's unprivileged services cannot chdir to /.
  const top = statSync(imageRootfs);
  chmodSync(np.upper, top.mode & 0o7777);
  chownSync(np.upper, top.uid, top.gid);
  if (!isMounted(np.root)) await mountOverlay(imageRootfs, np.upper, np.work, np.root);
  if (!fresh) return;
  const r = np.root;
  writeFileSync(join(r, 'etc/hostname'), `${node.name}\n`);
  writeFileSync(join(r, 'etc/hosts'), hostsFile(node, all));
  writeFileSync(join(r, 'etc/machine-id'), `${randomBytes(16).toString('hex')}\n`);
  mkdirSync(join(r, 'etc/systemd/network'), { recursive: true });
  writeFileSync(join(r, 'etc/systemd/network/10-host0.network'), networkFile(node.address));
  const keysDir = join(np.hostKeys, 'etc', 'ssh');
  for (const f of readdirSync(keysDir)) {
    if (!f.startsWith('ssh_host_')) continue;
    const dest = join(r, 'etc/ssh', f);
    copyFileSync(join(keysDir, f), dest);
    chmodSync(dest, f.endsWith('.pub') ? 0o644 : 0o600);
  }
  mkdirSync(join(r, 'root/.ssh'), { recursive: true, mode: 0o700 });
  const authorized = join(r, 'root/.ssh/authorized_keys');
  writeFileSync(authorized, readFileSync(`${p.clientKey}.pub`));
  chmodSync(authorized, 0o600);
}

/** Boot the node with systemd-nspawn in its own session (it outlives this process). */
export function bootNode(p: LabPaths, node: NodeSpec, imageKey: string): NodeState {
  const np = nodePaths(p, node.name);
  const fd = openSync(np.console, 'w', 0o600);
  const child = spawn(
    'systemd-nspawn',
    [
      '-D', np.root,
      '-b',
      '-M', node.name,
      `--network-bridge=${BRIDGE}`,
      // The host runs no systemd: nspawn must neither register with machined nor create a scope.
      '--register=no',
      '--keep-unit',
      '--link-journal=no',
      '--resolv-conf=off',
      '--timezone=off',
    ],
    { cwd: '/', detached: true, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  child.on('error', () => undefined);
  child.unref();
  const pid = child.pid;
  if (!pid) throw new LabError(`${node.name}: cannot start systemd-nspawn`, 'apt-get install systemd-container');
  return { name: node.name, address: node.address, pid, pidStart: pidStart(pid) ?? 0, veth: veth(node.name), image: imageKey, bootedAt: new Date().toISOString() };
}

/** True when the recorded nspawn process is alive and is really that node's. */
export function nodeAlive(p: LabPaths, n: Pick<NodeState, 'name' | 'pid' | 'pidStart'>): boolean {
  if (!isSameProcess(n.pid, n.pidStart)) return false;
  return isNspawnOf(p, cmdline(n.pid), n.name);
}

function isNspawnOf(p: LabPaths, argv: string[], name?: string): boolean {
  if (!(argv[0] ?? '').endsWith('systemd-nspawn')) return false;
  const d = argv[argv.indexOf('-D') + 1] ?? '';
  if (!d.startsWith(`${p.nodesDir}/`)) return false;
  return name === undefined || d === nodePaths(p, name).root;
}

/** Every nspawn process booting a root under this lab's nodes/ folder (recorded or not). */
export function labNspawnPids(p: LabPaths): number[] {
  return findProcesses((argv) => isNspawnOf(p, argv));
}

/** The node's init (PID 1 inside the container): the child of nspawn in another PID namespace. */
export function leaderPid(n: Pick<NodeState, 'name' | 'pid'>): number {
  const own = readlinkSync('/proc/self/ns/pid');
  const stack = [n.pid];
  while (stack.length) {
    const pid = stack.shift()!;
    for (const c of childrenOf(pid)) {
      try {
        if (readlinkSync(`/proc/${c}/ns/pid`) !== own) return c;
      } catch {
        continue;
      }
      stack.push(c);
    }
  }
  throw new LabError(`${n.name}: its container has no init process (is it still booting or stopped?)`, `converge lab status; converge lab reset ${n.name}`);
}

/**
 * Shut the node down: SIGTERM to nspawn powers the container off cleanly. If
 * that hangs, kill the container's init (which ends every process inside)
 * before nspawn, or the container would outlive its supervisor.
 */
export async function stopNodeProcess(n: Pick<NodeState, 'name' | 'pid' | 'pidStart'>, graceMs = 20_000): Promise<void> {
  if (!isSameProcess(n.pid, n.pidStart)) return;
  try {
    process.kill(n.pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitGone(n.pid, n.pidStart, graceMs)) return;
  await crashNodeProcess(n);
}

/** Power cut: SIGKILL the container's init, then make sure nspawn is gone. */
export async function crashNodeProcess(n: Pick<NodeState, 'name' | 'pid' | 'pidStart'>): Promise<void> {
  if (!isSameProcess(n.pid, n.pidStart)) return;
  try {
    const leader = leaderPid(n);
    process.kill(leader, 'SIGKILL');
  } catch {
    // no init left: only nspawn remains
  }
  if (await waitGone(n.pid, n.pidStart, 10_000)) return;
  await terminate(n.pid, n.pidStart, 1000);
}

/**
 * Processes whose root directory is inside this lab's nodes/ folder: container
 * inits orphaned by a killed nspawn, and anything inside them.
 */
export function processesInLabRoots(p: LabPaths): number[] {
  const prefix = `${p.nodesDir}/`;
  return findProcesses(() => true).filter((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/root`).startsWith(prefix);
    } catch {
      return false;
    }
  });
}

/** Kill stray nspawn processes of this lab that no recorded node accounts for. */
export async function killStrayNodes(p: LabPaths, keep: ReadonlySet<number>): Promise<number[]> {
  const stray = labNspawnPids(p).filter((pid) => !keep.has(pid));
  await Promise.all(stray.map((pid) => terminate(pid, pidStart(pid), 10_000)));
  return stray;
}
