/**
 * The etcd part of a pass: cluster facts through the API, the member-set and
 * rolling-restart steps from the pure planner, and their health-gated
 * execution — always after the host actions of the same pass (binaries,
 * certificates and env files are in place before any member starts).
 */
import { loadEtcdTls, type EtcdTls } from '../connect/etcd.js';
import { ConvergeError } from '../errors/index.js';
import { gatherEtcdFactsSettled } from '../facts/etcd.js';
import { applyEtcdActions } from '../apply/etcd.js';
import type { EtcdFacts, NodeFacts } from '../facts/types.js';
import { planEtcd, type EtcdRefusal } from '../plan/etcd.js';
import type { EtcdAction, Plan } from '../plan/types.js';
import type { Session } from './session.js';
import type { Gathered, ApplyOptions } from './pass.js';

export interface EtcdStepResult {
  ok: boolean;
  /** One line per step taken, for the report. */
  log: string[];
  error?: ConvergeError;
}

export async function etcdTls(s: Session): Promise<EtcdTls | null> {
  const spec = s.state.etcd;
  if (!spec) return null;
  return loadEtcdTls(s.cfg.etcdTls ?? spec.client);
}

export async function gatherEtcd(s: Session): Promise<EtcdFacts | null> {
  const spec = s.state.etcd;
  if (!spec || s.cfg.skipEtcd) return null;
  const tls = await etcdTls(s);
  if (!tls) return null;
  return gatherEtcdFactsSettled(spec, tls);
}

export function planEtcdSteps(s: Session, g: Gathered, host: Plan): { actions: EtcdAction[]; refusals: EtcdRefusal[] } {
  const spec = s.state.etcd;
  if (!spec || !g.etcd) return { actions: [], refusals: [] };
  const nodeFacts: Record<string, NodeFacts> = {};
  for (const [name, f] of g.facts) if ('paths' in f) nodeFacts[name] = f;
  const p = planEtcd(spec, g.etcd, nodeFacts, host.nodes, { nodes: s.state.nodes });
  return { actions: p.actions, refusals: p.refusals };
}

export async function applyEtcdSteps(s: Session, plan: Plan, o: ApplyOptions): Promise<EtcdStepResult> {
  const spec = s.state.etcd;
  const tls = await etcdTls(s);
  if (!spec || !tls) return { ok: true, log: [] };
  const r = await applyEtcdActions(plan.etcd, {
    spec,
    tls,
    transport: (node) => s.transports.get(node),
    ...(o.log ? { log: o.log } : {}),
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.now ? { now: o.now } : {}),
  });
  return { ok: r.ok, log: r.log, ...(r.error ? { error: r.error } : {}) };
}
