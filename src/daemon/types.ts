/**
 * What the watch loop needs from one reconcile pass, and what it reports.
 * The loop never looks inside a pass: it hands over a commit and its files
 * and gets back a summary. cli/ adapts reconcile's PassResult to PassSummary.
 */
import type { Logger } from 'pino';
import type { Diagnostic } from '../errors/index.js';
import type { FileSource } from '../source/git.js';

/** enforce: correct drift; report: never change anything, report drift only. */
export type Mode = 'enforce' | 'report';

export interface ReconcileJob {
  commit: string;
  files: FileSource;
  /** Short random id, in every log line of the pass. */
  passId: string;
  /** Aborted on shutdown: finish the current step, start no other, return. */
  signal: AbortSignal;
  mode: Mode;
  /** Logger bound to this pass (`pass` field). */
  log: Logger;
}

/**
 * ok: the nodes match the commit (enforce: after applying; report: no drift).
 * drift: report mode found differences (not a failure).
 * invalid: the commit's desired state failed validation; nothing was applied.
 * halted: a rollout stopped at a health gate or a change was refused as unsafe;
 *   the commit is not retried until a newer one arrives or an operator asks.
 * failed: anything else (a node unreachable, a step failed); retried with backoff.
 * aborted: stopped by the signal.
 */
export type PassOutcome = 'ok' | 'drift' | 'invalid' | 'halted' | 'failed' | 'aborted';

export interface DriftItem {
  /** `Kind/name`, or an etcd member as `EtcdMember/<name>`. */
  resource: string;
  kind: string;
  /** corrective: the node changed under us; intentional: Git changed, not rolled out yet. */
  label?: 'corrective' | 'intentional';
  field?: string;
}

export interface NodeSummary {
  node: string;
  reachable: boolean;
  drift: DriftItem[];
  error?: string;
}

export interface PassSummary {
  outcome: PassOutcome;
  /** One line, for people; never a secret. */
  error?: string;
  /** For invalid: where and why (file:line). */
  diagnostics?: Diagnostic[];
  /** Actions applied in this pass. */
  changes?: number;
  /** Per node, after the pass (for /status and the drift metrics). */
  nodes?: NodeSummary[];
  /** null when the desired state has no etcd cluster. */
  etcd?: { reachable: boolean; members: { name: string; state: string }[] } | null;
}

export type ReconcileFn = (job: ReconcileJob) => Promise<PassSummary>;

export type TriggerReason = 'start' | 'poll' | 'webhook' | 'watch' | 'retry' | 'resume' | 'backoff' | 'fallback';

/** The result label of a pass, as counted in converge_passes_total. */
export type PassResultLabel = PassOutcome | 'skipped';

export interface PassRecord {
  id: string;
  /** The commit reconciled (null when there was nothing to reconcile). */
  commit: string | null;
  /** The newest commit of the branch as seen by this pass (null when the source failed). */
  seen: string | null;
  /** Why this commit: the branch head, the last good commit instead of a rejected one, or held in report mode. */
  role: 'head' | 'last-good' | 'held' | null;
  mode: Mode;
  triggers: TriggerReason[];
  result: PassResultLabel;
  startedAt: string;
  durationMs: number;
  error?: string;
  sourceError?: string;
  diagnostics?: string[];
  changes?: number;
}

export interface RejectedCommit {
  commit: string;
  kind: 'invalid' | 'halted';
  error: string;
  diagnostics: string[];
  at: string;
}

export interface DaemonStatus {
  repo: string;
  branch: string;
  mode: Mode;
  suspended: boolean;
  stopping: boolean;
  /** The pass under way, if any. */
  current: { id: string; startedAt: string; triggers: TriggerReason[] } | null;
  commitSeen: string | null;
  /** Last commit an enforce pass brought every node to. */
  commitApplied: string | null;
  /** Last commit that validated and whose pass succeeded: what is enforced when a newer one is rejected. */
  lastGood: string | null;
  rejected: RejectedCommit | null;
  source: { ok: boolean; error?: string; at: string | null };
  lastPass: PassRecord | null;
  lastSuccessAt: string | null;
  consecutiveFailures: number;
  nextRetryAt: string | null;
  nextPollAt: string | null;
  drift: Record<string, { reachable: boolean; resources: DriftItem[]; error?: string }>;
  etcd: { reachable: boolean; members: { name: string; state: string }[] } | null;
}
