/**
 * Assembles the whole Plan: one NodePlan per node (in name order), the etcd
 * steps computed by the etcd planner, and the refusals. Pure: the caller
 * passes the time and the digest of the facts.
 */
import type { ResolvedState } from '../model/types.js';
import type { NodeFacts } from '../facts/types.js';
import { PLAN_FORMAT, type EtcdAction, type NodePlan, type Plan } from './types.js';
import { planNode } from './host.js';
import { byString } from './compare.js';

export type NodeFactsOrError = NodeFacts | { error: string };

export interface BuildPlanInput {
  state: ResolvedState;
  /** Facts by node name; `{ error }` for a node whose facts could not be gathered. */
  facts: Map<string, NodeFactsOrError> | Record<string, NodeFactsOrError>;
  factsDigest: string;
  /** ISO time, from the caller's clock. */
  now: string;
  etcdActions?: EtcdAction[];
  refusals?: { message: string; hint: string }[];
}

function isFacts(f: NodeFactsOrError): f is NodeFacts {
  return 'paths' in f;
}

export function buildPlan(input: BuildPlanInput): Plan {
  const lookup = (name: string): NodeFactsOrError | undefined => (input.facts instanceof Map ? input.facts.get(name) : input.facts[name]);
  const nodes: NodePlan[] = [...input.state.nodes].sort(byString((n) => n.name)).map((desired) => {
    const facts = lookup(desired.name);
    if (facts === undefined) return unreachable(desired.name, 'no facts were gathered for this node');
    if (!isFacts(facts)) return unreachable(desired.name, facts.error);
    return planNode(desired, facts, { etcd: input.state.etcd });
  });
  return {
    format: PLAN_FORMAT,
    commit: input.state.commit,
    createdAt: input.now,
    factsDigest: input.factsDigest,
    nodes,
    etcd: input.etcdActions ?? [],
    refusals: input.refusals ?? [],
  };
}

function unreachable(node: string, error: string): NodePlan {
  return { node, reachable: false, error, actions: [], reported: [] };
}

export function planActionCount(plan: Plan): number {
  return plan.nodes.reduce((n, p) => n + p.actions.length, 0) + plan.etcd.length;
}

export function planHasChanges(plan: Plan): boolean {
  return planActionCount(plan) > 0;
}

/** Nodes that some host action or etcd step touches, by name. */
export function nodesWithChanges(plan: Plan): string[] {
  const touched = new Set([...plan.nodes.filter((n) => n.actions.length > 0).map((n) => n.node), ...plan.etcd.map((a) => a.node).filter(Boolean)]);
  return [...touched].sort();
}

/** Unreachable nodes, refused resources or refused cluster changes: `converge plan` exits 1. */
export function planHasErrors(plan: Plan): boolean {
  return plan.refusals.length > 0 || plan.nodes.some((n) => !n.reachable || (n.refusals?.length ?? 0) > 0);
}
