/**
 * Prometheus metrics of the watch loop, in a registry of its own (the global
 * one would mix in whatever else the process registered, and break tests that
 * make more than one loop).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { PassRecord, PassSummary } from './types.js';

/** Resource kinds always exported (0 when in sync), so that an alert can tell "no drift" from "no data". */
const KINDS = ['Group', 'User', 'Directory', 'File', 'Service', 'EtcdMember'];

export class Metrics {
  readonly registry = new Registry();
  private readonly passes = new Counter({ name: 'converge_passes_total', help: 'Reconcile passes by result', labelNames: ['result'], registers: [this.registry] });
  private readonly duration = new Histogram({
    name: 'converge_pass_duration_seconds',
    help: 'Duration of reconcile passes',
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  private readonly drifted = new Gauge({ name: 'converge_drifted_resources', help: 'Resources differing from the desired state, by node and kind', labelNames: ['node', 'kind'], registers: [this.registry] });
  private readonly applied = new Gauge({ name: 'converge_applied_commit_info', help: 'The commit last applied to every node (value 1)', labelNames: ['commit'], registers: [this.registry] });
  private readonly members = new Gauge({ name: 'converge_etcd_members', help: 'etcd members by state', labelNames: ['state'], registers: [this.registry] });
  private readonly reachable = new Gauge({ name: 'converge_node_reachable', help: '1 when the node answered in the last pass', labelNames: ['node'], registers: [this.registry] });
  readonly suspended = new Gauge({ name: 'converge_suspended', help: '1 while reconciliation is suspended', registers: [this.registry] });
  private readonly failures = new Gauge({ name: 'converge_consecutive_failures', help: 'Failed passes since the last success', registers: [this.registry] });
  private readonly sourceUp = new Gauge({ name: 'converge_source_up', help: '1 when the last fetch of the Git source succeeded', registers: [this.registry] });
  private readonly lastSuccess = new Gauge({ name: 'converge_last_success_timestamp_seconds', help: 'When a pass last succeeded', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    for (const result of ['ok', 'drift', 'invalid', 'halted', 'failed', 'aborted', 'skipped']) this.passes.inc({ result }, 0);
  }

  pass(record: PassRecord, summary: PassSummary | null, consecutiveFailures: number, appliedCommit: string | null): void {
    this.passes.inc({ result: record.result });
    this.duration.observe(record.durationMs / 1000);
    this.failures.set(consecutiveFailures);
    this.sourceUp.set(record.sourceError === undefined ? 1 : 0);
    if (record.result === 'ok' || record.result === 'drift') this.lastSuccess.set(Date.parse(record.startedAt) / 1000 + record.durationMs / 1000);
    this.applied.reset();
    if (appliedCommit !== null) this.applied.set({ commit: appliedCommit }, 1);
    if (summary?.nodes !== undefined) {
      this.drifted.reset();
      this.reachable.reset();
      for (const n of summary.nodes) {
        this.reachable.set({ node: n.node }, n.reachable ? 1 : 0);
        const counts = new Map<string, number>(KINDS.map((k) => [k, 0]));
        for (const d of n.drift) counts.set(d.kind, (counts.get(d.kind) ?? 0) + 1);
        for (const [kind, count] of counts) this.drifted.set({ node: n.node, kind }, count);
      }
    }
    if (summary?.etcd !== undefined) {
      this.members.reset();
      if (summary.etcd !== null) {
        const byState = new Map<string, number>();
        for (const m of summary.etcd.members) byState.set(m.state, (byState.get(m.state) ?? 0) + 1);
        for (const [state, count] of byState) this.members.set({ state }, count);
      }
    }
  }
}
