/**
 * One reconcile pass: desired state → facts → plan → (apply → verify).
 * A dry-run is the same pass stopped after the plan, so the plan printed is
 * the plan applied. Every pass starts from facts, never from memory.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { applyNodePlan, type ApplyProgress, type NodeApplyResult, type FileWriteAction } from '../apply/host.js';
import { writeDigestCache } from '../apply/inventory.js';
import { withNodes, type NodeOutcome } from '../connect/ssh.js';
import { ConvergeError, NodeError, StalePlanError } from '../errors/index.js';
import { factsDigest } from '../facts/digest.js';
import { digestCacheContent } from '../facts/digest-cache.js';
import { probeRequestFor } from '../facts/request.js';
import { gatherAllFacts, type EtcdProbePart } from '../facts/gather.js';
import { etcdRestartPaths } from '../facts/etcd.js';
import { settle, type SettleClock } from '../facts/settle.js';
import type { EtcdFacts, NodeFacts } from '../facts/types.js';
import type { DesiredFile, ResolvedNode } from '../model/types.js';
import { buildPlan, planHasChanges, type NodeFactsOrError } from '../plan/plan.js';
import type { NodePlan, Plan } from '../plan/types.js';
import { asConvergeError, type Session } from './session.js';
import { gatherEtcd, planEtcdSteps, applyEtcdSteps, type EtcdStepResult } from './etcd.js';

export interface Gathered {
  facts: Map<string, NodeFactsOrError>;
  digest: string;
  etcd: EtcdFacts | null;
}

/** Facts of every selected node (one probe each, in parallel) and of the etcd cluster. */
export async function gather(s: Session): Promise<Gathered> {
  const facts = new Map<string, NodeFactsOrError>();
  for (const [name, e] of s.unreachable) facts.set(name, { error: e.message });
  const reachable = s.nodes.filter((n) => s.transports.has(n.name));
  // Settle both before failing: an etcd error (an expired client certificate, say) must not end
  // the command while node probes still run, or they are cut off and leave their temp folders.
  const [probed, cluster] = await Promise.allSettled([
    withNodes(reachable, s.cfg.parallel, (n) => gatherAllFacts(s.transports.get(n.name)!, probeRequestFor(n, s.state.etcd), etcdProbeFor(s, n))),
    gatherEtcd(s),
  ]);
  if (probed.status === 'rejected') throw probed.reason;
  if (cluster.status === 'rejected') throw cluster.reason;
  const outcomes = probed.value;
  const etcd = cluster.value;
  for (const o of outcomes) facts.set(o.node.name, o.ok ? o.value : { error: asConvergeError(o.node.name, o.error).message });
  const good = [...facts.values()].filter((f): f is NodeFacts => 'paths' in f);
  return { facts, digest: factsDigest(good), etcd };
}

/** The etcd part of a node's probe: every node when a cluster is declared (a former member's data dir matters too). */
function etcdProbeFor(s: Session, n: ResolvedNode): EtcdProbePart | null {
  const spec = s.state.etcd;
  if (!spec || s.cfg.skipEtcd) return null;
  return { spec, watch: etcdRestartPaths(n, spec) };
}

export function computePlan(s: Session, g: Gathered, now: Date): Plan {
  const hostOnly = buildPlan({ state: { ...s.state, nodes: s.nodes }, facts: g.facts, factsDigest: g.digest, now: now.toISOString() });
  const steps = planEtcdSteps(s, g, hostOnly);
  return { ...hostOnly, etcd: steps.actions, refusals: steps.refusals };
}

/** How long a pass waits for etcd members that are still starting before it believes a refusal they cause. */
export const ETCD_START_SETTLE_MS = 30_000;

export interface SettleOptions extends SettleClock {
  /** Progress for the operator: what is waited for, and for how long. */
  log?: (line: string) => void;
  settleMs?: number;
}

/**
 * Make a plan again, from fresh facts, while it is refused only for now:
 * some refusal names etcd members that are still starting (converge killed
 * during a bootstrap, a node rebooted a moment ago). They publish themselves
 * within seconds; the refusal is believed once they have had `settleMs`.
 */
export async function settlePlan<T extends { plan: Pick<Plan, 'refusals'> }>(make: () => Promise<T>, o: SettleOptions = {}): Promise<T> {
  const settleMs = o.settleMs ?? ETCD_START_SETTLE_MS;
  const startingIn = (r: T): string[] => [...new Set(r.plan.refusals.flatMap((x) => x.starting ?? []))].sort();
  const first = await make();
  const waitingFor = startingIn(first);
  if (waitingFor.length === 0) return first;
  o.log?.(`etcd is still starting on ${waitingFor.join(', ')}: waiting up to ${Math.round(settleMs / 1000)} s for ${waitingFor.length === 1 ? 'it' : 'them'} before planning`);
  const made = await settle(first, make, (r) => startingIn(r).length > 0, { ...o, settleMs });
  const still = startingIn(made);
  o.log?.(still.length === 0 ? 'etcd finished starting' : `etcd is still not answering on ${still.join(', ')} after ${Math.round(settleMs / 1000)} s`);
  return made;
}

/** Facts and the plan made from them, waiting for etcd members that are starting (settlePlan). */
export async function gatherAndPlan(s: Session, o: SettleOptions & { date?: () => Date } = {}): Promise<{ g: Gathered; plan: Plan }> {
  const date = o.date ?? (() => new Date());
  return settlePlan(async () => {
    const g = await gather(s);
    return { g, plan: computePlan(s, g, date()) };
  }, o);
}

export function checkNotStale(saved: Plan, current: Plan): void {
  if (saved.commit !== current.commit) {
    throw new StalePlanError(`the saved plan is stale: it was made for ${saved.commit ?? 'no commit'}, the desired state is now ${current.commit ?? 'no commit'}`);
  }
  if (saved.factsDigest !== current.factsDigest) {
    throw new StalePlanError('the saved plan is stale: the nodes changed since it was made (facts digest differs)');
  }
}

/** Bytes for a file.write, from the desired state: text inline, artifacts and secrets from the bastion. */
export function contentResolver(nodes: ResolvedNode[]): (node: string) => (a: FileWriteAction) => Promise<{ stream: Readable; size: number }> {
  const files = new Map<string, DesiredFile>();
  for (const n of nodes) for (const f of n.files) files.set(`${n.name}\0${f.path}`, f);
  return (node) => async (a) => {
    const c = files.get(`${node}\0${a.path}`)?.content;
    if (!c) throw new NodeError('E_APPLY', node, `no content is declared for ${a.path}`);
    if (c.kind === 'text') {
      const b = Buffer.from(c.text, 'utf8');
      return { stream: Readable.from([b]), size: b.length };
    }
    const st = await stat(c.localPath).catch(() => null);
    if (!st) {
      throw new ConvergeError('E_CONFIG', `${node}: ${c.kind} ${c.name} for ${a.path} is missing on this machine (${c.localPath})`, {
        hint: c.kind === 'secret' ? 'check --secrets' : 'check --artifacts',
      });
    }
    // Read in 1 MiB chunks: a 20 MB artifact sent to three nodes is then 60 reads, not 1,000.
    return { stream: createReadStream(c.localPath, { highWaterMark: 1024 * 1024 }), size: st.size };
  };
}

export interface ApplyReport {
  plan: Plan;
  nodes: NodeApplyResult[];
  etcd: EtcdStepResult | null;
  /** What was left to do when facts were gathered again after apply. */
  verify: Plan | null;
  ok: boolean;
  errors: ConvergeError[];
}

export interface ApplyOptions {
  onProgress?: (ev: ApplyProgress) => void;
  log?: (line: string) => void;
  signal?: AbortSignal;
  now?: () => Date;
  /**
   * A rollout: host changes go to one node at a time, and the first node that
   * fails stops it there; no later node is touched (nor etcd, nor removals).
   */
  haltAtFirstFailure?: boolean;
}

function slice(p: NodePlan, from: number, to: number): NodePlan {
  return { ...p, actions: p.actions.slice(from, to) };
}

/**
 * Apply a plan computed against `g` in this session: host actions on every
 * node in parallel (removals held back), then the etcd steps one at a time,
 * then the removals; then facts again — anything left to do is a failure.
 */
export async function applyPlan(s: Session, plan: Plan, g: Gathered, o: ApplyOptions = {}): Promise<ApplyReport> {
  const now = o.now ?? (() => new Date());
  const errors: ConvergeError[] = [];
  for (const r of plan.refusals) errors.push(new ConvergeError('E_ETCD_UNSAFE', r.message, { hint: r.hint }));
  if (errors.length) return { plan, nodes: [], etcd: null, verify: null, ok: false, errors };

  const content = contentResolver(s.nodes);
  const byName = new Map(s.nodes.map((n) => [n.name, n]));
  const results = new Map<string, NodeApplyResult>();
  const notStarted: string[] = [];
  const runPhase = async (part: (p: NodePlan) => NodePlan): Promise<void> => {
    const todo = plan.nodes.filter((p) => p.reachable && (!results.has(p.node) || results.get(p.node)!.ok));
    const applyOne = async (p: NodePlan): Promise<NodeApplyResult> => {
      const t = s.transports.get(p.node);
      const node = byName.get(p.node);
      const facts = g.facts.get(p.node);
      if (!t || !node || !facts || !('paths' in facts)) throw new NodeError('E_CONNECT', p.node, 'no connection or facts for this node in this pass');
      // A second part (the removals) starts from the inventory the first part recorded.
      const recorded = results.get(p.node)?.inventory;
      return applyNodePlan(t, part(p), content(p.node), {
        commit: plan.commit,
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
        inventory: { node, facts: recorded ? { ...facts, inventory: recorded } : facts, now },
      });
    };
    let outcomes: NodeOutcome<NodePlan, NodeApplyResult>[];
    if (o.haltAtFirstFailure) {
      outcomes = [];
      for (const [i, p] of todo.entries()) {
        const [out] = await withNodes([p], 1, applyOne);
        outcomes.push(out!);
        if (!out!.ok || !out!.value.ok) {
          notStarted.push(...todo.slice(i + 1).filter((q) => q.actions.length > 0).map((q) => q.node));
          break;
        }
      }
    } else {
      outcomes = await withNodes(todo, s.cfg.parallel, applyOne);
    }
    for (const out of outcomes) {
      const prev = results.get(out.node.node);
      if (!out.ok) {
        results.set(out.node.node, { node: out.node.node, ok: false, outcomes: [], performed: [], execs: 0, durationMs: 0, error: new NodeError('E_APPLY', out.node.node, asConvergeError(out.node.node, out.error).message) });
        continue;
      }
      const r = out.value;
      const offset = prev ? prev.performed.length : 0;
      const outcomes = r.outcomes.map((x) => ({ ...x, index: x.index + offset }));
      results.set(out.node.node, prev ? { ...r, inventory: r.inventory ?? prev.inventory, outcomes: [...prev.outcomes, ...outcomes], performed: [...prev.performed, ...r.performed], execs: prev.execs + r.execs, durationMs: prev.durationMs + r.durationMs } : r);
    }
  };

  await runPhase((p) => slice(p, 0, p.firstRemoval ?? p.actions.length));
  let etcd: EtcdStepResult | null = null;
  const hostFailed = [...results.values()].some((r) => !r.ok);
  if (plan.etcd.length > 0) {
    if (hostFailed) {
      errors.push(new ConvergeError('E_APPLY', 'etcd steps not started: host changes failed on some node', { hint: 'fix the node errors above and apply again' }));
    } else {
      etcd = await applyEtcdSteps(s, plan, o);
      if (!etcd.ok && etcd.error) errors.push(etcd.error);
    }
  }
  const halted = o.haltAtFirstFailure === true && hostFailed;
  if (halted) {
    if (notStarted.length > 0) errors.push(new ConvergeError('E_APPLY', `rollout halted: ${notStarted.length} node(s) not started: ${notStarted.join(', ')}`, { hint: 'fix the failed node, then push a new commit or retry' }));
  } else if (!etcd || etcd.ok) await runPhase((p) => slice(p, p.firstRemoval ?? p.actions.length, p.actions.length));

  for (const r of results.values()) if (!r.ok && r.error) errors.push(r.error);
  // p.error is a NodeError's message, which already names the node.
  for (const p of plan.nodes) if (!p.reachable) errors.push(new NodeError('E_CONNECT', p.node, p.error?.startsWith(`${p.node}: `) ? p.error.slice(p.node.length + 2) : (p.error ?? 'unreachable')));
  for (const p of plan.nodes) for (const r of p.refusals ?? []) errors.push(new NodeError('E_APPLY', p.node, r.message, { hint: r.hint }));

  let verify: Plan | null = null;
  // A plan with nothing to do changed nothing: its facts are as fresh as a re-probe's.
  if (errors.length === 0 && !planHasChanges(plan)) {
    verify = plan;
    await recordDigests(s, g, o);
  } else if (errors.length === 0) {
    const again = await gather(s);
    verify = computePlan(s, again, now());
    if (planHasChanges(verify)) {
      errors.push(new ConvergeError('E_APPLY', 'the nodes still differ from the desired state after apply', { hint: 'see the remaining plan below; something on the node undoes converge\'s changes' }));
    } else await recordDigests(s, again, o);
  }
  return { plan, nodes: [...results.values()], etcd, verify, ok: errors.length === 0, errors };
}

/**
 * After a clean apply, the digests its last probe read are kept on each node
 * whose cache lacks them (facts/digest-cache.ts), so that the next probe
 * hashes only what changed. Only an optimisation: a node where this fails is
 * hashed in full next time, and the apply still succeeded.
 */
async function recordDigests(s: Session, g: Gathered, o: ApplyOptions): Promise<void> {
  const todo = [...g.facts.values()].flatMap((f) => {
    if (!('paths' in f)) return [];
    const content = digestCacheContent(f);
    const t = s.transports.get(f.node);
    return content && t ? [{ node: f.node, t, content }] : [];
  });
  const outcomes = await withNodes(todo, s.cfg.parallel, (x) => writeDigestCache(x.t, x.content));
  for (const out of outcomes) if (!out.ok) o.log?.(`${out.node.node}: the digest cache was not written (the next pass hashes every file): ${asConvergeError(out.node.node, out.error).message}`);
}
