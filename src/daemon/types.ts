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
  /**
   * With --rollback, the last good commit: nodes this commit's rollout changed
   * are returned to it when the rollout halts at a health gate. Null: no rollback.
   */
  rollbackTo: string | null;
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
  /** corrective: the node changed under us; intentional: Git changed, not rolled out yet. Absent for etcd membership. */
  label?: 'corrective' | 'intentional';
  field?: string;
  /** Path, unit or account name. */
  target?: string;
}

/** Nodes returned to the last good commit after a rollout halted. */
export interface RollbackSummary {
  toCommit: string;
  /** The nodes the halted rollout had changed, which the rollback re-applied the last good commit to. */
  nodes: string[];
  ok: boolean;
  /** Actions the rollback applied. */
  changes: number;
  durationMs: number;
  error?: string;
  /** Changed nodes that the last good commit does not declare: left as they are. */
  skipped?: string[];
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
  /** Drift found before applying (enforce mode: what this pass corrected or rolled out). */
  driftBefore?: { corrective: number; intentional: number };
  /** A halted rollout whose nodes were returned to the last good commit. */
  rolledBack?: RollbackSummary;
}

export type ReconcileFn = (job: ReconcileJob) => Promise<PassSummary>;

export type TriggerReason = 'start' | 'poll' | 'webhook' | 'watch' | 'retry' | 'resume' | 'backoff' | 'fallback' | 'elected';

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
  driftBefore?: { corrective: number; intentional: number };
  rolledBack?: RollbackSummary;
  /** The watch instance that ran the pass (with --coordination). */
  instance?: string;
}

export interface RejectedCommit {
  commit: string;
  kind: 'invalid' | 'halted';
  error: string;
  diagnostics: string[];
  at: string;
  /** What the rollback after the halt did. */
  rolledBack?: RollbackSummary;
}

/** This instance's part in the election among watchers (--coordination). */
export interface ElectionStatus {
  /** This instance's id, the value it campaigns with. */
  id: string;
  /** The election's name in etcd. */
  name: string;
  leader: boolean;
  /** The current leader's id as etcd last showed it; null when unknown or none. */
  leaderId: string | null;
  /** When this instance last became leader. */
  since: string | null;
  ttlSeconds: number;
  /** The coordination endpoint could not be reached or the campaign failed: why. */
  error?: string;
}

export interface DaemonStatus {
  repo: string;
  branch: string;
  mode: Mode;
  /** Whether this instance reconciles: always true without --coordination; the elected one with it. */
  leader: boolean;
  election: ElectionStatus | null;
  /** --rollback: nodes of a halted rollout are returned to the last good commit. */
  rollback: boolean;
  lastRollback: (RollbackSummary & { at: string; fromCommit: string; pass: string }) | null;
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
