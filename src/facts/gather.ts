/**
 * Gathering a node's facts: one exec of the probe over an open transport.
 */
import type { Transport } from '../connect/transport.js';
import { NodeError } from '../errors/index.js';
import type { NodeFacts } from './types.js';
import { parseProbeOutput } from './parse.js';
import { buildProbe } from './probe.js';
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
