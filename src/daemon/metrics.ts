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
  private readonly driftLabels = new Gauge({ name: 'converge_drift_items', help: 'Differing fields by node and label (corrective: changed on the node; intentional: changed in Git, not rolled out)', labelNames: ['node', 'label'], registers: [this.registry] });
  private readonly rollbacks = new Counter({ name: 'converge_rollbacks_total', help: 'Rollbacks to the last good commit after a halted rollout, by result', labelNames: ['result'], registers: [this.registry] });
  /** 1 while this instance leads (always 1 without an election). */
  readonly leader = new Gauge({ name: 'converge_leader', help: '1 while this instance is the one that reconciles', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    for (const result of ['ok', 'drift', 'invalid', 'halted', 'failed', 'aborted', 'skipped']) this.passes.inc({ result }, 0);
    for (const result of ['ok', 'failed']) this.rollbacks.inc({ result }, 0);
    this.leader.set(1);
  }

  pass(record: PassRecord, summary: PassSummary | null, consecutiveFailures: number, appliedCommit: string | null): void {
    this.passes.inc({ result: record.result });
    this.duration.observe(record.durationMs / 1000);
    this.failures.set(consecutiveFailures);
    this.sourceUp.set(record.sourceError === undefined ? 1 : 0);
    if (record.result === 'ok' || record.result === 'drift') this.lastSuccess.set(Date.parse(record.startedAt) / 1000 + record.durationMs / 1000);
    this.applied.reset();
    if (appliedCommit !== null) this.applied.set({ commit: appliedCommit }, 1);
    if (summary?.rolledBack !== undefined) this.rollbacks.inc({ result: summary.rolledBack.ok ? 'ok' : 'failed' });
    if (summary?.nodes !== undefined) {
      this.drifted.reset();
      this.reachable.reset();
      this.driftLabels.reset();
      for (const n of summary.nodes) {
        this.reachable.set({ node: n.node }, n.reachable ? 1 : 0);
        // A resource differing in several fields is one drifted resource.
        const resources = new Map<string, Set<string>>(KINDS.map((k) => [k, new Set()]));
        for (const d of n.drift) resources.set(d.kind, (resources.get(d.kind) ?? new Set()).add(d.resource));
        for (const [kind, set] of resources) this.drifted.set({ node: n.node, kind }, set.size);
        const labels = { corrective: 0, intentional: 0 };
        for (const d of n.drift) if (d.label !== undefined) labels[d.label] += 1;
        for (const [label, count] of Object.entries(labels)) this.driftLabels.set({ node: n.node, label }, count);
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
