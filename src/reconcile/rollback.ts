/**
 * Rollback after a rollout halted at a health gate: the nodes the failed
 * commit changed are given the last good commit's desired state again, by an
 * ordinary pass restricted to them (facts → plan → apply → verify).
 *
 * Re-applying the last good commit rather than replaying the on-node backups
 * (apply/host.ts restoreFromBackup) is deliberate: the pass also undoes what
 * backups cannot (accounts, directories and units the failed commit created,
 * services it stopped, etcd members it restarted, one at a time and
 * health-gated), it starts from facts so it is right even after a crash
 * half-way, and every file it rewrites is itself backed up on the node.
 * Text, artifacts and secrets come from the bastion, as in any pass.
 */
import { ConvergeError } from '../errors/index.js';
import { planHasChanges, planHasErrors } from '../plan/plan.js';
import { applyPlan, gatherAndPlan, type ApplyReport } from './pass.js';
import { loadState, openSession, type DesiredSource, type PassConfig } from './session.js';

export interface RollbackOptions {
  signal?: AbortSignal;
  log?: (line: string) => void;
}

export interface RollbackResult {
  toCommit: string;
  /** The nodes the last good commit was re-applied to. */
  nodes: string[];
  /** Nodes asked for that the last good commit does not declare (added by the failed commit): left alone. */
  skipped: string[];
  ok: boolean;
  /** Host actions performed, plus the etcd steps when they all succeeded. */
  changes: number;
  durationMs: number;
  error?: string;
  report: ApplyReport | null;
}

function message(e: unknown): string {
  if (e instanceof ConvergeError) return e.hint ? `${e.message} (${e.hint})` : e.message;
  return e instanceof Error ? e.message : String(e);
}

/** Re-applies the desired state at `desired.commit` (the last good commit) to `nodes` only. Never throws. */
export async function rollbackNodes(cfg: PassConfig, desired: DesiredSource & { commit: string }, nodes: string[], o: RollbackOptions = {}): Promise<RollbackResult> {
  const started = Date.now();
  const result = (r: Omit<RollbackResult, 'toCommit' | 'durationMs'>): RollbackResult => ({ toCommit: desired.commit, durationMs: Date.now() - started, ...r });
  let declared: Set<string>;
  try {
    declared = new Set((await loadState(cfg, desired)).state.nodes.map((n) => n.name));
  } catch (e) {
    return result({ nodes: [], skipped: nodes, ok: false, changes: 0, error: `the last good commit no longer loads: ${message(e)}`, report: null });
  }
  const targets = nodes.filter((n) => declared.has(n));
  const skipped = nodes.filter((n) => !declared.has(n));
  if (targets.length === 0) return result({ nodes: [], skipped, ok: true, changes: 0, report: null });
  if (o.signal?.aborted) return result({ nodes: targets, skipped, ok: false, changes: 0, error: 'interrupted before the rollback started', report: null });

  try {
    const s = await openSession(cfg, desired, targets);
    try {
      const { g, plan } = await gatherAndPlan(s, { ...(o.signal ? { signal: o.signal } : {}), ...(o.log ? { log: o.log } : {}) });
      if (!planHasChanges(plan)) {
        const errors = plan.nodes.filter((n) => !n.reachable).map((n) => `${n.node}: ${n.error ?? 'unreachable'}`);
        return result({ nodes: targets, skipped, ok: !planHasErrors(plan), changes: 0, report: null, ...(errors.length ? { error: errors.join('; ') } : {}) });
      }
      const report = await applyPlan(s, plan, g, { ...(o.signal ? { signal: o.signal } : {}), ...(o.log ? { log: o.log } : {}) });
      const changes = report.nodes.reduce((n, r) => n + r.performed.length, 0) + (report.etcd?.ok ? plan.etcd.length : 0);
      return result({ nodes: targets, skipped, ok: report.ok, changes, report, ...(report.ok ? {} : { error: report.errors.map((e) => e.message).join('; ') }) });
    } finally {
      await s.close();
    }
  } catch (e) {
    return result({ nodes: targets, skipped, ok: false, changes: 0, error: message(e), report: null });
  }
}
