/**
 * `converge status`: asks etcd (every member, in parallel, over TLS) and
 * every member node (`systemctl is-active`, over the session's SSH) at once,
 * and prints the chapter's validation. Exit 0 only when all is healthy with
 * exactly one leader.
 */
import { loadEtcdTls, type EtcdTls } from '../connect/etcd.js';
import type { Transport } from '../connect/transport.js';
import { ConfigError } from '../errors/index.js';
import { gatherEtcdFactsSettled, unitActive } from '../facts/etcd.js';
import { settle, type SettleClock } from '../facts/settle.js';
import type { ResolvedEtcd, ResolvedNode } from '../model/types.js';
import type { Session } from '../reconcile/session.js';
import { buildStatusReport, renderStatusJson, renderStatusText, type StatusReport, type UnitState } from '../report/status.js';
import { EXIT } from './exit.js';

export interface StatusInput {
  spec: ResolvedEtcd;
  tls: EtcdTls;
  /** Every node of the desired state (to name the node of a member that is leaving). */
  nodes: ReadonlyArray<Pick<ResolvedNode, 'name' | 'address'>>;
  /** A connected transport, or why the node cannot be reached. */
  transport: (node: string) => Transport | Error | undefined;
  timeoutMs?: number;
  now?: () => Date;
}

/**
 * How long a member unit in a transient state (activating, deactivating,
 * reloading) is waited for before the verdict: systemd restarting a crashed
 * etcd shows "activating" for RestartSec plus the start, and that is a
 * cluster on its way back, not a broken one.
 */
const UNIT_SETTLE_MS = 30_000;

const TRANSIENT = new Set(['activating', 'deactivating', 'reloading', 'refreshing']);

/** Member nodes whose unit is between states (nothing to judge yet). */
export function transientUnits(r: StatusReport): string[] {
  return r.nodes.filter((n) => TRANSIENT.has(n.active)).map((n) => n.node);
}

/**
 * Asks for the status again while an unhealthy verdict rests on a unit that
 * is between states, up to `settleMs`; a unit that is failed or inactive, or
 * a problem with every unit settled, is the answer at once.
 */
export async function settleStatus(take: () => Promise<StatusReport>, o: SettleClock & { settleMs: number }): Promise<StatusReport> {
  return settle(await take(), take, (r) => !r.healthy && transientUnits(r).length > 0, o);
}

/** Gathers and builds the status report (also used at the end of an apply). */
export async function etcdStatus(i: StatusInput): Promise<StatusReport> {
  const started = Date.now();
  const r = await settleStatus(() => etcdStatusOnce(i), { settleMs: UNIT_SETTLE_MS });
  return { ...r, elapsedMs: Date.now() - started };
}

async function etcdStatusOnce(i: StatusInput): Promise<StatusReport> {
  const started = Date.now();
  const now = i.now ?? (() => new Date());
  const timeoutMs = i.timeoutMs ?? 2000;
  const memberNodes = [...new Set(i.spec.members.map((m) => m.node))];
  const unitOf = async (node: string): Promise<[string, UnitState]> => {
    const t = i.transport(node);
    if (!t) return [node, { error: 'not connected' }];
    if (t instanceof Error) return [node, { error: t.message }];
    try {
      return [node, { state: await unitActive(t, i.spec.unit, timeoutMs * 5) }];
    } catch (e) {
      return [node, { error: e instanceof Error ? e.message : String(e) }];
    }
  };
  // A time-out is asked again with more time before it counts: a busy machine is not a sick cluster.
  const [etcd, units] = await Promise.all([gatherEtcdFactsSettled(i.spec, i.tls, { timeoutMs }), Promise.all(memberNodes.map(unitOf))]);
  const byNode: Record<string, UnitState> = Object.fromEntries(units);
  // Members on nodes outside the desired member set (leaving ones) are asked too.
  const report0 = buildStatusReport(i.spec, etcd, byNode, { checkedAt: now().toISOString(), elapsedMs: 0, nodes: i.nodes });
  const extra = report0.members.flatMap((m) => (m.node && !(m.node in byNode) ? [m.node] : []));
  for (const [node, u] of await Promise.all(extra.map(unitOf))) byNode[node] = u;
  return buildStatusReport(i.spec, etcd, byNode, { checkedAt: now().toISOString(), elapsedMs: Date.now() - started, nodes: i.nodes });
}

export interface StatusCommandOptions {
  session: Session;
  json: boolean;
  out: (s: string) => void;
}

export async function statusCommand(o: StatusCommandOptions): Promise<number> {
  const s = o.session;
  const spec = s.state.etcd;
  if (!spec) throw new ConfigError('the desired state declares no EtcdCluster', 'add an EtcdCluster document (etcd.yaml) to show its status');
  const tls = await loadEtcdTls(s.cfg.etcdTls ?? spec.client);
  const report = await etcdStatus({
    spec,
    tls,
    nodes: s.state.nodes,
    transport: (node) => s.transports.get(node) ?? s.unreachable.get(node) ?? (s.state.nodes.some((n) => n.name === node) ? undefined : new Error('not a node of the desired state')),
  });
  o.out(o.json ? renderStatusJson(report) : renderStatusText(report));
  return report.healthy ? EXIT.ok : EXIT.error;
}
