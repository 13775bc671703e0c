/** state.json: what the lab started, so that any later run can find and stop it. */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { LabError } from '../errors/index.js';
import { BRIDGE } from './paths.js';

export interface NodeState {
  name: string;
  address: string;
  /** PID of systemd-nspawn and its start time (to tell a reused PID apart). */
  pid: number;
  pidStart: number;
  /** Host side of the node's veth pair, on the lab bridge. */
  veth: string;
  image: string;
  bootedAt: string;
}

export interface GitServerState {
  pid: number;
  pidStart: number;
  port: number;
  url: string;
}

export interface LabState {
  version: 1;
  bridge: string;
  /** Every node the lab has made, running or stopped (by stopNode). */
  nodes: Record<string, NodeState & { stopped?: boolean }>;
  /** Addresses ever given out, by node, so a node keeps its address across down/up. */
  addresses: Record<string, string>;
  gitServer: GitServerState | null;
  /** The Git server's last port, reused when free so the repository URL stays the same. */
  gitPort?: number;
  imageKey: string | null;
}

export function emptyState(): LabState {
  return { version: 1, bridge: BRIDGE, nodes: {}, addresses: {}, gitServer: null, imageKey: null };
}

export function loadState(file: string): LabState {
  if (!existsSync(file)) return emptyState();
  try {
    const s = JSON.parse(readFileSync(file, 'utf8')) as LabState;
    if (s.version !== 1 || typeof s.nodes !== 'object') return emptyState();
    return { ...emptyState(), ...s };
  } catch (e) {
    throw new LabError(`cannot read the lab state ${file}: ${(e as Error).message}`, 'run `converge lab down` (it cleans up by scanning processes and mounts), then `lab up`');
  }
}

export function saveState(file: string, state: LabState): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}
