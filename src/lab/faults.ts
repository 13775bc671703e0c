/**
 * Faults for the tests: stop, start, restart or crash a node, cut and restore
 * its network link, kill processes inside it, and run commands in it without
 * the network (nsenter into the container, so this works while its link is cut).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { LabError } from '../errors/index.js';
import { withLock } from './lock.js';
import { linkExists, linkIsUp, setLink } from './network.js';
import { bootNode, crashNodeProcess, leaderPid, nodeAlive, prepareNode, stopNodeProcess } from './nodes.js';
import { imageCacheDir, labDir, labPaths, type LabPaths } from './paths.js';
import { requireRoot } from './prereq.js';
import { isSameProcess, pidStart, run, sleep, type RunResult } from './proc.js';
import { waitForSsh } from './ssh.js';
import { loadState, saveState, type LabState, type NodeState } from './state.js';

export interface FaultOptions {
  labDir?: string;
}

function paths(opts: FaultOptions): LabPaths {
  return labPaths(opts.labDir ? resolve(opts.labDir) : labDir());
}

function nodeOf(state: LabState, node: string): NodeState & { stopped?: boolean } {
  const n = state.nodes[node];
  if (!n) throw new LabError(`there is no node ${node} in the lab`, `nodes: ${Object.keys(state.nodes).join(', ') || 'none'}`);
  return n;
}

function runningNode(p: LabPaths, node: string): NodeState {
  const n = nodeOf(loadState(p.state), node);
  if (!nodeAlive(p, n)) throw new LabError(`lab node ${node} is not running`, `startNode('${node}') or \`converge lab up\``);
  return n;
}

function markerOf(p: LabPaths, kind: 'cuts' | 'stops', node: string): string {
  return join(p.root, kind, node);
}

/** Records that this process made the fault, so that another run's `lab up` leaves it alone while the process lives. */
function mark(p: LabPaths, kind: 'cuts' | 'stops', node: string): void {
  const f = markerOf(p, kind, node);
  mkdirSync(join(p.root, kind), { recursive: true, mode: 0o700 });
  writeFileSync(`${f}.tmp`, `${process.pid} ${pidStart(process.pid) ?? 0}\n`);
  renameSync(`${f}.tmp`, f);
}

function markedByLiveProcess(p: LabPaths, kind: 'cuts' | 'stops', node: string): boolean {
  try {
    const [pid, start] = readFileSync(markerOf(p, kind, node), 'utf8').trim().split(' ').map(Number);
    return isSameProcess(pid, start);
  } catch {
    return false;
  }
}

/**
 * Stops the node without waiting for the lab lock (a fault happens when the
 * test says, not when another lab run lets go of the lock); the state records
 * it under the lock afterwards.
 */
async function stopMarked(node: string, opts: FaultOptions, how: (n: NodeState) => Promise<void>): Promise<void> {
  requireRoot();
  const p = paths(opts);
  const n = nodeOf(loadState(p.state), node);
  mark(p, 'stops', node);
  await how(n);
  await withLock(p.lock, async () => {
    const state = loadState(p.state);
    const now = nodeOf(state, node);
    if (now.pid === n.pid) {
      state.nodes[node] = { ...now, stopped: true };
      saveState(p.state, state);
    }
  });
}

/** Clean shutdown of the node (systemd powers off); its disk is kept for startNode. */
export async function stopNode(node: string, opts: FaultOptions = {}): Promise<void> {
  await stopMarked(node, opts, (n) => stopNodeProcess(n));
}

/** Power cut: the node's init and everything in it are SIGKILLed; its disk is kept for startNode. */
export async function crashNode(node: string, opts: FaultOptions = {}): Promise<void> {
  await stopMarked(node, opts, (n) => crashNodeProcess(n));
}

/**
 * Whether the node was stopped by stopNode or crashNode in a process that
 * still runs: a test in the middle of a fault, whose node `lab up` must not
 * boot. A stop whose process is gone was left behind, and `lab up` boots it.
 */
export function stoppedOnPurpose(p: LabPaths, node: string): boolean {
  return markedByLiveProcess(p, 'stops', node);
}

/** Boot a stopped node on its kept disk and wait until it answers SSH; returns the milliseconds it took. */
export async function startNode(node: string, opts: FaultOptions = {}): Promise<number> {
  requireRoot();
  const p = paths(opts);
  return withLock(p.lock, async () => {
    const t0 = Date.now();
    const state = loadState(p.state);
    const n = nodeOf(state, node);
    if (nodeAlive(p, n)) {
      // Already booted (perhaps by another lab run): still make sure it answers before returning.
      await waitForSsh(node, { address: n.address, key: p.clientKey, knownHosts: p.knownHosts }, 90_000);
      return Date.now() - t0;
    }
    // The kept disk is an overlay upper layer: it only makes sense on the image it was made on.
    const rootfs = join(imageCacheDir(), n.image, 'rootfs');
    if (!existsSync(rootfs)) throw new LabError(`${node}: its image ${n.image} is no longer cached`, `converge lab reset ${node}`);
    const specs = Object.values(state.nodes).map((x) => ({ name: x.name, address: x.address }));
    await prepareNode(p, rootfs, { name: n.name, address: n.address }, specs, false);
    const booted = bootNode(p, { name: n.name, address: n.address }, n.image);
    state.nodes[node] = booted;
    saveState(p.state, state);
    rmSync(markerOf(p, 'stops', node), { force: true });
    await waitForSsh(node, { address: n.address, key: p.clientKey, knownHosts: p.knownHosts }, 90_000);
    return Date.now() - t0;
  });
}

/** stopNode + startNode: a clean reboot keeping the disk. */
export async function restartNode(node: string, opts: FaultOptions = {}): Promise<number> {
  const p = paths(opts);
  return withLock(p.lock, async () => {
    await stopNode(node, opts);
    return startNode(node, opts);
  });
}

/**
 * Whether the node's link was cut by cutLink in a process that still runs:
 * a test in the middle of a fault, whose cut `lab up` must leave alone. A
 * cut whose process is gone was left behind, and is restored.
 */
export function cutOnPurpose(p: LabPaths, node: string): boolean {
  return markedByLiveProcess(p, 'cuts', node);
}

/** Pull the node's cable: its veth on the host goes down; the node keeps running and keeps its address. */
export async function cutLink(node: string, opts: FaultOptions = {}): Promise<void> {
  requireRoot();
  const p = paths(opts);
  const n = runningNode(p, node);
  if (!linkExists(n.veth)) throw new LabError(`${node}: its link ${n.veth} does not exist`);
  // No lock: a cut must happen when the test says, not when another lab run lets go of the lock.
  mark(p, 'cuts', node);
  await setLink(n.veth, false);
}

/**
 * Plug the cable back in and wait (up to `waitMs`) until the host reaches the
 * node again, so that the caller's next step does not race ARP.
 */
export async function restoreLink(node: string, opts: FaultOptions & { waitMs?: number } = {}): Promise<void> {
  requireRoot();
  const p = paths(opts);
  const n = runningNode(p, node);
  await setLink(n.veth, true);
  rmSync(markerOf(p, 'cuts', node), { force: true });
  const until = Date.now() + (opts.waitMs ?? 10_000);
  while (Date.now() < until) {
    if (await tcpReachable(n.address, 22, 1000)) return;
    await sleep(100);
  }
  throw new LabError(`${node}: not reachable ${Math.round((opts.waitMs ?? 10_000) / 1000)} s after its link was restored`);
}

function tcpReachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host, port, timeout: timeoutMs });
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.once('connect', () => done(true));
    sock.once('timeout', () => done(false));
    sock.once('error', () => done(false));
  });
}

export function linkState(node: string, opts: FaultOptions = {}): 'up' | 'down' {
  const n = runningNode(paths(opts), node);
  return linkIsUp(n.veth) ? 'up' : 'down';
}

const NODE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8' };

/** Run argv inside the node's namespaces (as root in the node), without SSH and without a shell. */
export async function runArgvOnNode(node: string, argv: readonly string[], opts: FaultOptions & { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  requireRoot();
  const n = runningNode(paths(opts), node);
  const leader = leaderPid(n);
  return run('nsenter', ['-t', String(leader), '-a', '--', ...argv], {
    env: NODE_ENV,
    timeoutMs: opts.timeoutMs ?? 60_000,
    ...(opts.input === undefined ? {} : { input: opts.input }),
  });
}

/** Run a sh script inside the node (works while its link is cut). */
export function runOnNode(node: string, script: string, opts: FaultOptions & { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return runArgvOnNode(node, ['/bin/sh', '-c', script], opts);
}

/**
 * Send `signal` to the node's processes whose full command line matches the
 * extended regular expression `pattern` (pkill -f); returns the PIDs (as seen
 * inside the node) that were signalled.
 */
export async function killProcess(node: string, pattern: string, signal: NodeJS.Signals | number = 'SIGKILL', opts: FaultOptions = {}): Promise<number[]> {
  const sig = typeof signal === 'number' ? String(signal) : signal.replace(/^SIG/, '');
  const r = await runArgvOnNode(node, ['pkill', '--echo', `-${sig}`, '-f', pattern], opts);
  if (r.code > 1) throw new LabError(`${node}: pkill -f ${pattern} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return [...r.stdout.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
}
