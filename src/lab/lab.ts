/**
 * The lab: bring it up, tear it down, report on it, reset a node. Every
 * operation starts from what is true on the machine (recorded PIDs checked
 * against /proc, a scan for stray nspawn processes and mounts), so a run after
 * a crash finishes or cleans up whatever the crashed run left.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LabError } from '../errors/index.js';
import { allocateAddress, checkNodeName } from './addresses.js';
import { ensureArtifacts } from './artifacts.js';
import { ensureGitRepo, gitServerAlive, probeGitServer, readGitCredentials, startGitServer, stopGitServers } from './gitserver.js';
import { ensureImage, pruneImages, type Image } from './image.js';
import { withLock } from './lock.js';
import { mountsUnder, unmountUnder } from './mounts.js';
import { bridgePorts, deleteLink, ensureBridge, linkExists, linkIsUp, setLink } from './network.js';
import { bootNode, killStrayNodes, nodeAlive, prepareNode, processesInLabRoots, stopNodeProcess, wipeNode, type NodeSpec } from './nodes.js';
import { BRIDGE, DEFAULT_NODES, GIT_USER, HOST_ADDRESS, imageCacheDir, labDir as defaultLabDir, labPaths, nodePaths, type LabPaths } from './paths.js';
import { ensurePki } from './pki.js';
import { ensureHostPackages, ensureInotifyLimits, requireFreeDisk, requireRoot } from './prereq.js';
import { elapsed, isSameProcess, runOk, sleep, terminate } from './proc.js';
import { cutOnPurpose, stoppedOnPurpose } from './faults.js';
import { ensureClientKey, ensureHostKeys, hostPublicKeys, sshBanner, sshRun, waitForSsh, writeKnownHosts, type SshTarget } from './ssh.js';
import { loadState, saveState, type LabState, type NodeState } from './state.js';

export type Log = (line: string) => void;

export interface LabOptions {
  /** The lab directory (default: CONVERGE_LAB_DIR, else /var/lib/converge-lab). */
  labDir?: string;
  log?: Log;
}

export interface LabUpOptions extends LabOptions {
  /** Nodes to have running, added to those already up (default on an empty lab: cp-a, cp-b, cp-c). */
  nodes?: string[];
  /** The project whose desired-state/ seeds the Git server and whose .converge/config.json is written (default: cwd). */
  projectDir?: string;
}

export interface LabNode {
  name: string;
  address: string;
  running: boolean;
  /** Host side of the node's veth on the lab bridge ("vb-<name>"). */
  veth: string;
  pid: number | null;
  /** Whether the veth is up (false after cutLink). */
  linkUp: boolean;
}

export interface LabInfo {
  labDir: string;
  bridge: string;
  hostAddress: string;
  nodes: LabNode[];
  /** SSH private key of the lab's client (root on every node). */
  sshKey: string;
  knownHosts: string;
  secretsDir: string;
  artifactsDir: string;
  caFile: string;
  clientCert: string;
  clientKey: string;
  git: { url: string | null; username: string; credentialsFile: string; repoDir: string; branch: 'main' };
  /** The config file written for the project (converge commands read it with no flags). */
  configFile: string | null;
  desiredStateDir: string | null;
  imageKey: string | null;
}

const SSH_TIMEOUT_MS = 90_000;
/** Free disk each node's upper layer may grow into (logs, etcd data, binaries). */
const NODE_MB = 150;

function paths(opts: LabOptions): LabPaths {
  return labPaths(opts.labDir ? resolve(opts.labDir) : defaultLabDir());
}

export function sshTarget(p: LabPaths, address: string): SshTarget {
  return { address, key: p.clientKey, knownHosts: p.knownHosts };
}

function info(p: LabPaths, state: LabState, projectDir: string | null): LabInfo {
  const nodes = Object.values(state.nodes)
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((n) => {
      const running = nodeAlive(p, n);
      return { name: n.name, address: n.address, running, veth: n.veth, pid: running ? n.pid : null, linkUp: running && linkIsUp(n.veth) };
    });
  const configFile = projectDir ? join(projectDir, '.converge', 'config.json') : null;
  return {
    labDir: p.root,
    bridge: state.bridge,
    hostAddress: HOST_ADDRESS,
    nodes,
    sshKey: p.clientKey,
    knownHosts: p.knownHosts,
    secretsDir: p.secrets,
    artifactsDir: p.artifacts,
    caFile: p.caCert,
    clientCert: p.clientCert,
    clientKey: p.clientCertKey,
    git: { url: gitServerAlive(p, state.gitServer) ? state.gitServer!.url : null, username: GIT_USER, credentialsFile: p.gitCredentials, repoDir: p.gitRepo, branch: 'main' },
    configFile: configFile && existsSync(configFile) ? configFile : null,
    desiredStateDir: projectDir && existsSync(join(projectDir, 'desired-state')) ? join(projectDir, 'desired-state') : null,
    imageKey: state.imageKey,
  };
}

/** The settings converge needs to work against the lab (keys as in src/cli/config.ts). */
function labConfig(p: LabPaths, state: LabState, desiredStateDir: string): Record<string, unknown> {
  return {
    desiredState: desiredStateDir,
    repo: state.gitServer?.url ?? null,
    branch: 'main',
    path: '.',
    gitCredentials: p.gitCredentials,
    secretsDir: p.secrets,
    artifactsDir: p.artifacts,
    sshKey: p.clientKey,
    knownHosts: p.knownHosts,
    etcdCa: p.caCert,
    etcdCert: p.clientCert,
    etcdKey: p.clientCertKey,
  };
}

function writeJson(file: string, value: unknown, mode: number): void {
  mkdirSync(join(file, '..'), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode });
  renameSync(tmp, file);
}

function consoleTail(p: LabPaths, name: string): string {
  const f = nodePaths(p, name).console;
  if (!existsSync(f)) return '';
  return readFileSync(f, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').trim().split('\n').slice(-6).join('\n');
}

/** Wait for SSH on a node just booted, failing fast if its nspawn exits. */
async function waitNode(p: LabPaths, n: NodeState): Promise<number> {
  const t = sshTarget(p, n.address);
  const died = new Promise<never>((_, reject) => {
    const timer = setInterval(() => {
      if (!isSameProcess(n.pid, n.pidStart)) {
        clearInterval(timer);
        reject(new LabError(`${n.name}: systemd-nspawn exited while the node was booting:\n${consoleTail(p, n.name)}`, `see ${nodePaths(p, n.name).console}`));
      }
    }, 250);
    timer.unref();
    setTimeout(() => clearInterval(timer), SSH_TIMEOUT_MS + 1000).unref();
  });
  died.catch(() => undefined);
  return Promise.race([waitForSsh(n.name, t, SSH_TIMEOUT_MS), died]);
}

/**
 * Clean what a crashed or interrupted run left: stray nspawn processes and
 * container processes, overlay mounts of nodes not running, veths of dead nodes.
 */
async function recover(p: LabPaths, state: LabState, log: Log): Promise<void> {
  const alive = new Set(Object.values(state.nodes).filter((n) => nodeAlive(p, n)).map((n) => n.name));
  const keep = new Set(Object.values(state.nodes).filter((n) => alive.has(n.name)).map((n) => n.pid));
  const stray = await killStrayNodes(p, keep);
  if (stray.length) log(`lab: stopped ${stray.length} stray node process(es) left by an earlier run`);
  const aliveRoots = [...alive].map((n) => nodePaths(p, n).root);
  const orphans = processesInLabRoots(p).filter((pid) => !aliveRoots.some((r) => readRootSafe(pid).startsWith(r)));
  for (const pid of orphans) await terminate(pid, null, 0).catch(() => undefined);
  if (orphans.length) log(`lab: killed ${orphans.length} orphaned container process(es)`);
  for (const m of mountsUnder(p.nodesDir)) {
    if (aliveRoots.some((r) => m === r || m.startsWith(`${r}/`))) continue;
    await unmountUnder(m);
    log(`lab: unmounted a stale overlay ${m}`);
  }
  for (const n of Object.values(state.nodes)) {
    if (!alive.has(n.name) && linkExists(n.veth)) await deleteLink(n.veth);
  }
}

function readRootSafe(pid: number): string {
  try {
    return readlinkSync(`/proc/${pid}/root`);
  } catch {
    return '';
  }
}

/**
 * Nodes that run but whose sshd does not answer, after putting back any link
 * a test left cut: a lab that is "up" must be usable.
 */
async function unhealthy(p: LabPaths, nodes: NodeState[], log: Log): Promise<NodeState[]> {
  if (!existsSync(p.knownHosts) || !existsSync(p.clientKey)) return nodes;
  const bad = await Promise.all(
    nodes.map(async (n) => {
      // A test is stopping it right now: neither broken nor to be booted again.
      if (stoppedOnPurpose(p, n.name)) return null;
      if (linkExists(n.veth) && !linkIsUp(n.veth)) {
        // A test cutting it right now is not to be undone, nor its node taken for broken.
        if (cutOnPurpose(p, n.name)) return null;
        log(`lab: ${n.name}'s link was left cut: restoring it`);
        await setLink(n.veth, true);
      }
      // Generous: on a loaded machine a slow answer must not cost a healthy node its disk.
      for (let i = 0; i < 3; i++) {
        if (await sshBanner(n.address, 5000)) return null;
        await sleep(1000);
      }
      return n;
    }),
  );
  return bad.filter((n): n is NodeState => n !== null);
}

/**
 * Bring the lab up (idempotent): the image (built once), the bridge, the
 * nodes, their keys and certificates, the artifacts, the Git server and the
 * project's config file. Nodes already running are left as they are.
 */
export async function labUp(opts: LabUpOptions = {}): Promise<LabInfo> {
  requireRoot();
  const log = opts.log ?? (() => undefined);
  const p = paths(opts);
  const projectDir = resolve(opts.projectDir ?? process.cwd());
  const desiredStateDir = join(projectDir, 'desired-state');
  mkdirSync(p.root, { recursive: true, mode: 0o700 });
  chmodSync(p.root, 0o700);
  return withLock(p.lock, async () => {
    const t0 = Date.now();
    await ensureHostPackages(log);
    ensureInotifyLimits(log);
    const state = loadState(p.state);
    await recover(p, state, log);

    const known = Object.keys(state.nodes);
    const requested = opts.nodes ?? (known.length ? [] : [...DEFAULT_NODES]);
    for (const n of requested) checkNodeName(n);
    const wanted = [...new Set([...known, ...requested])].sort();

    const image: Image = await ensureImage(imageCacheDir(), log);
    state.imageKey = image.key;

    const running = wanted.filter((n) => state.nodes[n] && nodeAlive(p, state.nodes[n]!));
    const broken = await unhealthy(p, running.map((n) => state.nodes[n]!), log);
    for (const n of broken) {
      log(`lab: ${n.name} runs but does not answer SSH: giving it a fresh image`);
      await stopNodeProcess(n);
    }
    const healthy = running.filter((n) => !broken.some((b) => b.name === n));
    // A node a running test stopped on purpose stays down until that test starts it.
    const toBoot = wanted.filter((n) => !healthy.includes(n) && !stoppedOnPurpose(p, n));
    if (healthy.length === 0) {
      // Nothing of ours runs: whatever bridge is there is stale.
      if (linkExists(BRIDGE)) await deleteLink(BRIDGE);
    }
    await ensureBridge(BRIDGE);
    if (toBoot.length) requireFreeDisk(p.root, NODE_MB * toBoot.length, `${toBoot.length} lab node(s)`);

    const taken = new Set(Object.values(state.addresses));
    for (const n of wanted) {
      if (!state.addresses[n]) {
        const a = allocateAddress(n, taken);
        state.addresses[n] = a;
        taken.add(a);
      }
    }
    const specs: NodeSpec[] = wanted.map((n) => ({ name: n, address: state.addresses[n]! }));

    await ensureClientKey(p);
    await Promise.all(specs.map((s) => ensureHostKeys(nodePaths(p, s.name).hostKeys)));
    writeKnownHosts(p.knownHosts, specs.map((s) => ({ ...s, keys: hostPublicKeys(nodePaths(p, s.name).hostKeys) })));
    const pki = await ensurePki(p, specs);
    if (pki.made.length) log(`pki: made ${pki.made.join(', ')} in ${p.secrets}`);
    const art = ensureArtifacts(p.artifacts, desiredStateDir, join(p.root, 'artifacts-sha256.json'));
    log(`artifacts: ${art.files.map((f) => f.name).join(', ')} in ${p.artifacts}; sha256 pins ${art.pinCheck}`);

    if (toBoot.length) {
      const tBoot = Date.now();
      log(`nodes: booting ${toBoot.map((n) => `${n} (${state.addresses[n]})`).join(', ')}`);
      const booted: NodeState[] = [];
      for (const name of toBoot) {
        const prev = state.nodes[name];
        const spec = specs.find((s) => s.name === name)!;
        // A node stopped on purpose keeps its disk; one that crashed with the lab starts fresh.
        await prepareNode(p, image.rootfs, spec, specs, !(prev?.stopped && prev.image === image.key));
        const n = bootNode(p, spec, image.key);
        state.nodes[name] = n;
        booted.push(n);
        saveState(p.state, state);
      }
      await Promise.all(
        booted.map(async (n) => {
          await waitNode(p, n);
          log(`  ${n.name} ${n.address}: SSH ready ${elapsed(Date.parse(n.bootedAt))} after boot`);
        }),
      );
      log(`nodes: ${toBoot.length} booted and answering SSH in ${elapsed(tBoot)}`);
    }
    saveState(p.state, state);
    const inUse = new Set([image.key, ...Object.values(state.nodes).map((n) => n.image)]);
    const pruned = await pruneImages(imageCacheDir(), inUse);
    if (pruned.length) log(`image: removed outdated image(s) ${pruned.join(', ')}`);

    await ensureGitRepo(p, desiredStateDir, log);
    if (!gitServerAlive(p, state.gitServer)) {
      await stopGitServers(p, state.gitServer);
      state.gitServer = await startGitServer(p, state.gitServer?.port ?? state.gitPort ?? 0);
      state.gitPort = state.gitServer.port;
      saveState(p.state, state);
      log(`git: serving ${state.gitServer.url} (user ${GIT_USER}, password in ${p.gitCredentials})`);
    }

    const cfg = labConfig(p, state, desiredStateDir);
    writeJson(p.config, cfg, 0o600);
    const projectConfig = join(projectDir, '.converge', 'config.json');
    writeJson(projectConfig, cfg, 0o600);
    log(`config: wrote ${projectConfig}`);
    log(`lab up: ${wanted.length} node(s) on ${BRIDGE} (${HOST_ADDRESS}/16) in ${elapsed(t0)}`);
    return info(p, state, projectDir);
  }, { onWait: (pid) => log(`lab: waiting for another lab run (pid ${pid}) to finish`) });
}

export interface LabDownResult {
  stoppedNodes: string[];
  strayProcesses: number;
  unmounted: string[];
  bridgeRemoved: boolean;
  gitServersStopped: number;
}

/**
 * Stop everything the lab started: nodes (and any stray node process), their
 * overlay mounts and upper layers, veths, the bridge and the Git server. Keys,
 * certificates, artifacts and the Git repository stay (with `purge`, the whole
 * lab directory goes too).
 */
export async function labDown(opts: LabOptions & { purge?: boolean } = {}): Promise<LabDownResult> {
  requireRoot();
  const log = opts.log ?? (() => undefined);
  const p = paths(opts);
  if (!existsSync(p.root)) return { stoppedNodes: [], strayProcesses: 0, unmounted: [], bridgeRemoved: false, gitServersStopped: 0 };
  return withLock(p.lock, async () => {
    const state = loadState(p.state);
    const alive = Object.values(state.nodes).filter((n) => nodeAlive(p, n));
    await Promise.all(alive.map((n) => stopNodeProcess(n)));
    if (alive.length) log(`lab: stopped ${alive.map((n) => n.name).join(', ')}`);
    const stray = await killStrayNodes(p, new Set());
    const orphans = processesInLabRoots(p);
    for (const pid of orphans) await terminate(pid, null, 0).catch(() => undefined);
    const unmounted = mountsUnder(p.nodesDir);
    await unmountUnder(p.nodesDir);
    for (const name of Object.keys(state.nodes)) await wipeNode(p, name);
    for (const port of bridgePorts(BRIDGE)) await deleteLink(port);
    for (const n of Object.values(state.nodes)) await deleteLink(n.veth);
    const bridgeRemoved = linkExists(BRIDGE);
    await deleteLink(BRIDGE);
    const gitServersStopped = await stopGitServers(p, state.gitServer);
    state.nodes = {};
    state.gitServer = null;
    saveState(p.state, state);
    if (opts.purge) {
      await unmountUnder(p.root);
      await runOk('rm', ['-rf', '--one-file-system', p.root], { what: `removing ${p.root}` });
    }
    log(`lab down: ${alive.length} node(s) stopped, bridge ${BRIDGE} ${bridgeRemoved ? 'removed' : 'was not there'}${opts.purge ? `, ${p.root} removed` : ''}`);
    return { stoppedNodes: alive.map((n) => n.name), strayProcesses: stray.length + orphans.length, unmounted, bridgeRemoved, gitServersStopped };
  });
}

export interface LabNodeStatus extends LabNode {
  /** The node answered SSH (strict host key checking) within a few seconds. */
  ssh: boolean;
  /** `systemctl is-system-running`, when SSH answered. */
  system: string | null;
  /** Failed units when the system is degraded. */
  failedUnits: string[];
}

export interface LabStatus {
  labDir: string;
  up: boolean;
  bridge: { name: string; exists: boolean };
  nodes: LabNodeStatus[];
  git: { url: string | null; running: boolean; answers: boolean };
  imageKey: string | null;
}

/** What the lab looks like right now (no lock: it changes nothing). */
export async function labStatus(opts: LabOptions = {}): Promise<LabStatus> {
  const p = paths(opts);
  const state = loadState(p.state);
  const base = info(p, state, null);
  const nodes = await Promise.all(
    base.nodes.map(async (n): Promise<LabNodeStatus> => {
      if (!n.running || !existsSync(p.knownHosts)) return { ...n, ssh: false, system: null, failedUnits: [] };
      const r = await sshRun(sshTarget(p, n.address), 'systemctl is-system-running; systemctl --failed --no-legend --plain | cut -d" " -f1', { timeoutMs: 8000, connectTimeoutSec: 3 });
      // The script ends with `cut`, so any other exit than 0 is SSH failing or timing out.
      if (r.code !== 0) return { ...n, ssh: false, system: null, failedUnits: [] };
      const [system, ...failed] = r.stdout.trim().split('\n');
      return { ...n, ssh: true, system: system ?? null, failedUnits: failed.filter(Boolean) };
    }),
  );
  const gitRunning = gitServerAlive(p, state.gitServer);
  let answers = false;
  if (gitRunning && existsSync(p.gitCredentials)) answers = (await probeGitServer(state.gitServer!.url, readGitCredentials(p))) === 200;
  return {
    labDir: p.root,
    up: nodes.length > 0 && nodes.every((n) => n.running),
    bridge: { name: state.bridge, exists: linkExists(state.bridge) },
    nodes,
    git: { url: gitRunning ? state.gitServer!.url : null, running: gitRunning, answers },
    imageKey: state.imageKey,
  };
}

/** The lab's connection facts as they are now, without starting anything. */
export function labInfo(opts: LabOptions & { projectDir?: string } = {}): LabInfo {
  const p = paths(opts);
  return info(p, loadState(p.state), resolve(opts.projectDir ?? process.cwd()));
}

/** Give a node a fresh image (its address and host keys stay); returns the milliseconds it took. */
export async function labReset(node: string, opts: LabOptions = {}): Promise<{ ms: number; sshMs: number }> {
  requireRoot();
  const log = opts.log ?? (() => undefined);
  const p = paths(opts);
  return withLock(p.lock, async () => {
    const t0 = Date.now();
    const state = loadState(p.state);
    const n = state.nodes[node];
    if (!n) throw new LabError(`there is no node ${node} in the lab`, `nodes: ${Object.keys(state.nodes).join(', ') || 'none'}; add it with \`converge lab up --nodes ${node}\``);
    if (!state.imageKey) throw new LabError('the lab has no image yet', 'run `converge lab up`');
    const rootfs = join(imageCacheDir(), state.imageKey, 'rootfs');
    if (!existsSync(rootfs)) throw new LabError(`the lab image ${state.imageKey} is missing from ${imageCacheDir()}`, 'run `converge lab up` (it rebuilds the image)');
    await stopNodeProcess(n);
    const specs = Object.values(state.nodes).map((x) => ({ name: x.name, address: x.address }));
    await prepareNode(p, rootfs, { name: n.name, address: n.address }, specs, true);
    const booted = bootNode(p, { name: n.name, address: n.address }, state.imageKey);
    state.nodes[node] = booted;
    saveState(p.state, state);
    const sshMs = await waitNode(p, booted);
    log(`lab reset ${node}: fresh image, SSH ready in ${elapsed(t0)}`);
    return { ms: Date.now() - t0, sshMs };
  });
}

/** Take a node out of the lab: stop it and discard its disk (its address stays reserved for it). */
export async function labRemoveNode(node: string, opts: LabOptions = {}): Promise<void> {
  requireRoot();
  const p = paths(opts);
  await withLock(p.lock, async () => {
    const state = loadState(p.state);
    const n = state.nodes[node];
    if (!n) throw new LabError(`there is no node ${node} in the lab`, `nodes: ${Object.keys(state.nodes).join(', ') || 'none'}`);
    await stopNodeProcess(n);
    await wipeNode(p, node);
    await deleteLink(n.veth);
    delete state.nodes[node];
    saveState(p.state, state);
    opts.log?.(`lab: removed ${node}`);
  });
}
