/**
 * The connections and desired state of one reconcile pass. One SSH
 * connection per node per pass, opened in parallel (bounded), reused for
 * facts, apply and the verification that follows; a node that cannot be
 * reached is recorded with its error and the other nodes go on.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { connectSsh, withNodes } from '../connect/ssh.js';
import type { Transport } from '../connect/transport.js';
import { ConfigError, ConvergeError, type Diagnostic } from '../errors/index.js';
import { loadDesiredState, type FileSource } from '../model/index.js';
import { JsonDigestCache } from '../model/digest.js';
import type { ResolvedNode, ResolvedState } from '../model/types.js';

/** The artifacts' digests in the cache folder. */
export const ARTIFACT_DIGESTS = 'artifact-digests.json';

export interface PassConfig {
  /** SSH private key file; absent: ssh-agent via SSH_AUTH_SOCK. */
  sshKey?: string;
  knownHosts?: string;
  /** Trust-on-first-use for unknown host keys: only with an explicit flag. */
  insecureTrustOnFirstUse?: boolean;
  parallel: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  secretsDir?: string;
  artifactsDir?: string;
  /** converge's cache on this machine (.converge/cache): the artifacts' digests are kept there between runs. */
  cacheDir?: string;
  /** Host resources only: no etcd facts, no member-set changes, no etcd starts or restarts. */
  skipEtcd?: boolean;
  /** converge's etcd client TLS; absent: the EtcdCluster's client secrets. */
  etcdTls?: { caFile: string; certFile: string; keyFile: string };
}

export interface DesiredSource {
  files: FileSource;
  /** The Git commit the files were read at; null for a plain directory. */
  commit: string | null;
  /** The files at another commit of the same repository (drift, rollback); absent for a plain directory. */
  at?: (commit: string) => FileSource;
}

export interface Session {
  cfg: PassConfig;
  desired: DesiredSource;
  state: ResolvedState;
  warnings: Diagnostic[];
  nodes: ResolvedNode[];
  transports: Map<string, Transport>;
  /** Nodes that could not be connected, with the reason. */
  unreachable: Map<string, ConvergeError>;
  close(): Promise<void>;
}

/**
 * A directory that is not a Git commit still needs a name for what was
 * planned, so that a saved plan can be checked against it: the digest of
 * every file, prefixed so it is never taken for a commit id.
 */
export async function worktreeId(files: FileSource): Promise<string> {
  const h = createHash('sha256');
  for (const p of await files.list()) {
    const b = await files.read(p);
    h.update(`${p}\0${b.length}\0`).update(b);
  }
  return `worktree-${h.digest('hex').slice(0, 12)}`;
}

export async function loadState(cfg: PassConfig, desired: DesiredSource): Promise<{ state: ResolvedState; warnings: Diagnostic[] }> {
  const commit = desired.commit ?? (await worktreeId(desired.files));
  const cache = cfg.cacheDir && cfg.artifactsDir ? await JsonDigestCache.open(join(cfg.cacheDir, ARTIFACT_DIGESTS)) : undefined;
  const opts = {
    commit,
    ...(cfg.secretsDir ? { secretsDir: cfg.secretsDir } : {}),
    ...(cfg.artifactsDir ? { artifactsDir: cfg.artifactsDir } : {}),
    ...(cache ? { digestCache: cache } : {}),
  };
  const { state, diagnostics } = await loadDesiredState(desired.files, opts);
  // Only an optimisation: a cache that cannot be written means hashing the artifacts again next time.
  await cache?.save().catch(() => undefined);
  return { state, warnings: diagnostics.filter((d) => d.severity === 'warning') };
}

export function selectNodes(state: ResolvedState, only: string[] | undefined): ResolvedNode[] {
  if (!only || only.length === 0) return state.nodes;
  const known = new Set(state.nodes.map((n) => n.name));
  const missing = only.filter((n) => !known.has(n));
  if (missing.length) throw new ConfigError(`unknown node(s) in --nodes: ${missing.join(', ')}`, `the desired state declares: ${[...known].join(', ')}`);
  return state.nodes.filter((n) => only.includes(n.name));
}

export async function openSession(cfg: PassConfig, desired: DesiredSource, only?: string[]): Promise<Session> {
  const { state, warnings } = await loadState(cfg, desired);
  const nodes = selectNodes(state, only);
  if (!cfg.sshKey && !process.env.SSH_AUTH_SOCK) {
    throw new ConfigError('no SSH key: neither --ssh-key (CONVERGE_SSH_KEY, config sshKey) nor an ssh-agent (SSH_AUTH_SOCK) is set', 'give converge the private key that the nodes accept for root, or run `converge lab up` for the lab');
  }
  const transports = new Map<string, Transport>();
  const unreachable = new Map<string, ConvergeError>();
  const outcomes = await withNodes(nodes, cfg.parallel, (n) =>
    connectSsh({
      node: n.name,
      host: n.address,
      port: n.ssh.port,
      user: n.ssh.user,
      ...(cfg.sshKey ? { privateKey: cfg.sshKey } : { agent: process.env.SSH_AUTH_SOCK ?? '' }),
      ...(cfg.knownHosts ? { knownHostsFile: cfg.knownHosts } : {}),
      ...(n.ssh.hostKey ? { pinnedHostKey: n.ssh.hostKey } : {}),
      connectTimeoutMs: cfg.connectTimeoutMs,
      commandTimeoutMs: cfg.commandTimeoutMs,
      ...(cfg.insecureTrustOnFirstUse ? { insecureTrustOnFirstUse: true } : {}),
    }),
  );
  for (const o of outcomes) {
    if (o.ok) transports.set(o.node.name, o.value);
    else unreachable.set(o.node.name, asConvergeError(o.node.name, o.error));
  }
  return {
    cfg,
    desired,
    state,
    warnings,
    nodes,
    transports,
    unreachable,
    async close() {
      await Promise.allSettled([...transports.values()].map((t) => t.close()));
    },
  };
}

export function asConvergeError(node: string, e: unknown): ConvergeError {
  if (e instanceof ConvergeError) return e;
  return new ConvergeError('E_REMOTE', `${node}: ${e instanceof Error ? e.message : String(e)}`);
}
