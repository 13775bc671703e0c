/**
 * Gathering a node's facts: one exec of the probe over an open transport.
 */
import type { Transport } from '../connect/transport.js';
import { NodeError } from '../errors/index.js';
import type { NodeFacts } from './types.js';
import { parseProbeOutput } from './parse.js';
import { randomBytes } from 'node:crypto';
import { buildProbe } from './probe.js';
import { etcdNodeScript, parseEtcdNodeProbe, withEtcdNodeFacts, type EtcdNodeSpec } from './etcd.js';
import type { ProbeRequest } from './probe.js';

export interface ProbeStats {
  /** Wall time of the exec, ms. */
  ms: number;
  stdinBytes: number;
  stdoutBytes: number;
}

const PROBE_TIMEOUT_MS = 120_000;

export async function probeNode(transport: Transport, request: ProbeRequest): Promise<{ facts: NodeFacts; stats: ProbeStats }> {
  const { script, stdin } = buildProbe(request);
  const started = performance.now();
  const r = await transport.exec(script, { stdin, timeoutMs: PROBE_TIMEOUT_MS });
  const stats = { ms: performance.now() - started, stdinBytes: stdin.length, stdoutBytes: r.stdout.length };
  if (r.code !== 0) {
    const err = r.stderr.trim().split('\n').slice(-3).join(' | ');
    throw new NodeError('E_REMOTE', request.node, `gathering facts failed (exit code ${r.code})${err ? `: ${err}` : ''}`, {
      hint: 'the node needs a POSIX sh with GNU coreutils and findutils, awk, getent and systemd',
    });
  }
  return { facts: parseProbeOutput(request, r.stdout), stats };
}

/** Facts of one node in one round trip. */
export async function gatherNodeFacts(transport: Transport, request: ProbeRequest): Promise<NodeFacts> {
  return (await probeNode(transport, request)).facts;
}

export interface EtcdProbePart {
  spec: EtcdNodeSpec;
  /** Files that restart etcd when they change: a newer mtime than the running etcd means a restart is still owed. */
  watch: readonly string[];
}

/**
 * Everything a pass needs of a node in one exec: the host probe and, when
 * the node may run etcd, the etcd probe (data dir WAL, initial env file,
 * restarts still owed) after it, split by a marker no output can predict.
 */
async function probeOnce(transport: Transport, request: ProbeRequest, etcd: EtcdProbePart | null): Promise<NodeFacts> {
  if (!etcd) return gatherNodeFacts(transport, request);
  const { script, stdin } = buildProbe(request);
  const marker = `converge-etcd-probe-${randomBytes(12).toString('hex')}`;
  const combined = `(\n${script}\n)\nrc=$?\nprintf '\\n%s\\n' '${marker}'\n${etcdNodeScript(etcd.spec, etcd.watch)}\nexit $rc\n`;
  const r = await transport.exec(combined, { stdin, timeoutMs: PROBE_TIMEOUT_MS });
  const cut = r.stdout.lastIndexOf(`\n${marker}\n`);
  if (r.code !== 0 || cut < 0) {
    const err = r.stderr.trim().split('\n').slice(-3).join(' | ');
    throw new NodeError('E_REMOTE', request.node, `gathering facts failed (exit code ${r.code})${err ? `: ${err}` : ''}`, {
      hint: 'the node needs a POSIX sh with GNU coreutils and findutils, awk, getent and systemd',
    });
  }
  const host = parseProbeOutput(request, r.stdout.subarray(0, cut));
  const etcdFacts = parseEtcdNodeProbe(request.node, etcd.spec, r.stdout.subarray(cut + marker.length + 2).toString('utf8'));
  return withEtcdNodeFacts(host, etcdFacts);
}

/**
 * The node's facts, including the units of Services converge managed before
 * and no longer declares (named only in the node's inventory, which the
 * first probe reads): those need a second probe, only in that case, so that
 * pruning sees their real state.
 */
export async function gatherAllFacts(transport: Transport, request: ProbeRequest, etcd: EtcdProbePart | null = null): Promise<NodeFacts> {
  const facts = await probeOnce(transport, request, etcd);
  const known = new Set([...request.units, ...Object.keys(facts.units)]);
  const missing = Object.values(facts.inventory?.resources ?? {})
    .filter((e) => e.kind === 'Service' && !known.has(e.target))
    .map((e) => e.target);
  if (missing.length === 0) return facts;
  return probeOnce(transport, { ...request, units: [...new Set([...request.units, ...missing])].sort() }, etcd);
}
