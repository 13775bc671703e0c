/**
 * The watch loop. Triggers (timer, webhook, a local ref watch, operator
 * requests) only ask for a pass; passes run one at a time, and everything
 * asked for while one runs becomes ONE more pass, which reads the branch
 * afresh and so reconciles the newest commit. Like controller-runtime, the
 * loop is level-based: a pass never depends on what the previous one did,
 * only on the commit it is given and what is on the nodes.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { ConvergeError, EtcdUnsafeError, ValidationError, formatDiagnostic } from '../errors/index.js';
import type { FileSource } from '../source/git.js';
import { backoffDelay, jittered } from './backoff.js';
import type { Leadership } from './leader.js';
import { Metrics } from './metrics.js';
import { EMPTY_STATE, loadState, saveState, type LoopState } from './state.js';
import type { DaemonStatus, Mode, PassRecord, PassResultLabel, PassSummary, ReconcileFn, TriggerReason } from './types.js';

/** The part of a Source the loop uses. */
export interface LoopSource {
  readonly display: string;
  readonly branch: string;
  resolve(): Promise<string>;
  files(commit: string): FileSource;
}

export interface DaemonOptions {
  source: LoopSource;
  reconcile: ReconcileFn;
  log: Logger;
  mode?: Mode;
  /** Poll interval; 0 turns polling off. Default 60 s. */
  intervalMs?: number;
  /** Spread of the poll interval, as a fraction (default 0.1 = ±10%). */
  jitter?: number;
  /** First retry delay after a failure (default 5 s); doubles per failure. */
  backoffBaseMs?: number;
  /** Longest retry delay (default 5 min). */
  backoffCapMs?: number;
  /** Where the last good and the rejected commit are kept across restarts. */
  stateFile?: string;
  metrics?: Metrics;
  random?: () => number;
  /** Return the nodes of a rollout halted at a health gate to the last good commit (and enforce it until a newer commit). */
  rollback?: boolean;
  /** With several watchers: only the elected one reconciles, and only while it leads. */
  leadership?: Leadership;
}

/** Emitted as 'pass-start' on Daemon.events. */
export interface PassStart {
  id: string;
  triggers: TriggerReason[];
  /** When the first trigger of this pass arrived (ms since the epoch). */
  triggeredAt: number;
  startedAt: number;
}

interface Target {
  commit: string;
  role: 'head' | 'last-good' | 'held';
  mode: Mode;
}

/** Triggers that say something changed: they cut a backoff wait short. */
const CHANGE: ReadonlySet<TriggerReason> = new Set(['start', 'webhook', 'watch', 'retry', 'resume', 'fallback']);

const short = (c: string | null): string | null => (c === null ? null : c.slice(0, 12));

export class Daemon {
  readonly metrics: Metrics;
  /** 'pass-start' (PassStart) and 'pass-end' (PassRecord). */
  readonly events = new EventEmitter();
  private readonly o: Required<Omit<DaemonOptions, 'stateFile' | 'metrics' | 'leadership'>> & { stateFile: string | undefined; leadership: Leadership | null };
  private mode: Mode;
  private suspended = false;
  private stopping = false;
  private state: LoopState = { ...EMPTY_STATE };
  private pending: { reasons: Set<TriggerReason>; at: number } | null = null;
  private loop: Promise<void> | null = null;
  private current: { id: string; startedAt: number; triggers: TriggerReason[]; controller: AbortController } | null = null;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryAt: number | null = null;
  private pollTimer: NodeJS.Timeout | null = null;
  private pollAt: number | null = null;
  private idleWaiters: (() => void)[] = [];
  private seen: string | null = null;
  private source: DaemonStatus['source'] = { ok: true, at: null };
  private lastPass: PassRecord | null = null;
  private lastSuccessAt: string | null = null;
  private drift: DaemonStatus['drift'] = {};
  private etcd: DaemonStatus['etcd'] = null;
  private lastRollback: DaemonStatus['lastRollback'] = null;

  constructor(opts: DaemonOptions) {
    this.o = {
      source: opts.source,
      reconcile: opts.reconcile,
      log: opts.log,
      mode: opts.mode ?? 'enforce',
      intervalMs: opts.intervalMs ?? 60_000,
      jitter: opts.jitter ?? 0.1,
      backoffBaseMs: opts.backoffBaseMs ?? 5_000,
      backoffCapMs: opts.backoffCapMs ?? 300_000,
      stateFile: opts.stateFile,
      random: opts.random ?? Math.random,
      rollback: opts.rollback ?? false,
      leadership: opts.leadership ?? null,
    };
    this.mode = this.o.mode;
    this.metrics = opts.metrics ?? new Metrics();
  }

  /** Load the remembered commits, start the poll timer and run the first pass. */
  async start(): Promise<void> {
    if (this.o.stateFile !== undefined) {
      try {
        this.state = await loadState(this.o.stateFile);
      } catch (e) {
        this.o.log.warn({ file: this.o.stateFile, error: (e as Error).message }, 'cannot read the saved state; starting without a last good commit');
      }
    }
    this.o.log.info(
      { repo: this.o.source.display, branch: this.o.source.branch, mode: this.mode, intervalMs: this.o.intervalMs, lastGood: short(this.state.lastGood), rollback: this.o.rollback, election: this.o.leadership?.id ?? null },
      'watch started',
    );
    this.schedulePoll();
    const l = this.o.leadership;
    if (l === null) {
      this.trigger('start');
      return;
    }
    this.metrics.leader.set(0);
    l.events.on('elected', () => void this.onElected());
    l.events.on('lost', (why: string) => this.onLost(why));
    l.start();
  }

  /** A new leader reads the state the previous one shared (its own file may be older), then reconciles. */
  private async onElected(): Promise<void> {
    const l = this.o.leadership;
    if (l === null || this.stopping) return;
    const shared = await l.loadState();
    if (shared !== null) {
      this.state = shared;
      if (this.o.stateFile !== undefined) await saveState(this.o.stateFile, shared).catch(() => undefined);
    }
    this.metrics.leader.set(l.isLeader() ? 1 : 0);
    this.o.log.info({ lastGood: short(this.state.lastGood), rejected: short(this.state.rejected?.commit ?? null), shared: shared !== null }, 'leading: reconciling from now on');
    this.trigger('elected');
  }

  /** Another instance may lead from now on: stop before the next step, drop what was asked for. */
  private onLost(why: string): void {
    this.metrics.leader.set(0);
    this.pending = null;
    this.clearRetry();
    this.o.log.warn({ why, during: this.current?.id ?? null }, 'leadership lost: the pass under way stops before its next step');
    this.current?.controller.abort(new Error(`leadership lost: ${why}`));
  }

  private leading(): boolean {
    return this.o.leadership === null || this.o.leadership.isLeader();
  }

  /** Ask for a pass. Returns false when the request is dropped (stopping, suspended, or a poll during a backoff wait). */
  trigger(reason: TriggerReason): boolean {
    if (this.stopping) return false;
    if (!this.leading()) {
      this.o.log.debug({ trigger: reason }, 'not the leader: trigger ignored');
      return false;
    }
    if (this.suspended && reason !== 'resume') {
      this.o.log.debug({ trigger: reason }, 'suspended: trigger ignored');
      return false;
    }
    if (this.retryTimer !== null) {
      // A backoff wait is not cut short by the timer, only by something that changed.
      if (!CHANGE.has(reason) && reason !== 'backoff') return false;
      this.clearRetry();
    }
    if (this.pending === null) this.pending = { reasons: new Set(), at: Date.now() };
    this.pending.reasons.add(reason);
    this.o.log.debug({ trigger: reason, during: this.current?.id ?? null }, 'trigger');
    this.kick();
    return true;
  }

  suspend(): void {
    if (this.suspended) return;
    this.suspended = true;
    this.pending = null;
    this.clearRetry();
    this.metrics.suspended.set(1);
    this.o.log.warn({ during: this.current?.id ?? null }, 'reconciliation suspended');
  }

  resume(): void {
    if (!this.suspended) return;
    this.suspended = false;
    this.metrics.suspended.set(0);
    this.o.log.info('reconciliation resumed');
    this.trigger('resume');
  }

  /** Forget the rejected commit (an operator fixed what made it fail elsewhere) and try again now. */
  async retry(): Promise<string | null> {
    const rejected = this.state.rejected?.commit ?? null;
    if (rejected !== null) {
      this.state.rejected = null;
      await this.persist();
      this.o.log.info({ commit: short(rejected) }, 'operator asked to retry the rejected commit');
    }
    this.trigger('retry');
    return rejected;
  }

  /**
   * Stop: no further trigger is accepted, the pass under way is signalled to
   * finish its current step and return; resolves when it has.
   */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.pending = null;
      this.clearRetry();
      if (this.pollTimer !== null) clearTimeout(this.pollTimer);
      this.pollTimer = null;
      this.pollAt = null;
      this.o.log.info({ during: this.current?.id ?? null }, 'stopping');
      this.current?.controller.abort(new Error('converge is stopping'));
    }
    await this.idle();
    // Only after the last step: resigning lets another instance start at once.
    await this.o.leadership?.stop();
  }

  /** Resolves when no pass runs and none is waiting. */
  idle(): Promise<void> {
    if (this.loop === null) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  ready(): { ready: boolean; reasons: string[]; role: 'single' | 'leader' | 'standby' } {
    const l = this.o.leadership;
    if (l !== null && !l.isLeader()) {
      // A standby is ready when it takes part in the election: it can take over.
      const error = l.status().error;
      return { ready: error === undefined, reasons: error === undefined ? [] : [`not campaigning: ${error}`], role: 'standby' };
    }
    const reasons: string[] = [];
    if (this.state.lastGood === null) reasons.push('no commit has been reconciled successfully yet');
    if (this.etcd !== null && !this.etcd.reachable) reasons.push('etcd is not reachable');
    return { ready: reasons.length === 0, reasons, role: l === null ? 'single' : 'leader' };
  }

  status(): DaemonStatus {
    return {
      repo: this.o.source.display,
      branch: this.o.source.branch,
      mode: this.mode,
      leader: this.leading(),
      election: this.o.leadership?.status() ?? null,
      rollback: this.o.rollback,
      lastRollback: this.lastRollback,
      suspended: this.suspended,
      stopping: this.stopping,
      current: this.current === null ? null : { id: this.current.id, startedAt: new Date(this.current.startedAt).toISOString(), triggers: this.current.triggers },
      commitSeen: this.seen,
      commitApplied: this.state.applied,
      lastGood: this.state.lastGood,
      rejected: this.state.rejected,
      source: this.source,
      lastPass: this.lastPass,
      lastSuccessAt: this.lastSuccessAt,
      consecutiveFailures: this.failures,
      nextRetryAt: this.retryAt === null ? null : new Date(this.retryAt).toISOString(),
      nextPollAt: this.pollAt === null || this.suspended ? null : new Date(this.pollAt).toISOString(),
      drift: this.drift,
      etcd: this.etcd,
    };
  }

  private kick(): void {
    if (this.loop !== null) return;
    this.loop = this.drain().finally(() => {
      this.loop = null;
      if (this.pending !== null && !this.stopping && !this.suspended) this.kick();
      else for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  private async drain(): Promise<void> {
    while (this.pending !== null && !this.stopping && !this.suspended) {
      const p = this.pending;
      this.pending = null;
      await this.runPass(p);
    }
  }

  private schedulePoll(): void {
    if (this.o.intervalMs <= 0 || this.stopping) return;
    const delay = jittered(this.o.intervalMs, this.o.jitter, this.o.random);
    this.pollAt = Date.now() + delay;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.trigger('poll');
      this.schedulePoll();
    }, delay);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
  }

  private scheduleRetry(log: Logger): void {
    const delay = backoffDelay(this.failures, this.o.backoffBaseMs, this.o.backoffCapMs);
    this.clearRetry();
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.retryAt = null;
      this.trigger('backoff');
    }, delay);
    log.info({ failures: this.failures, retryInMs: delay }, 'retrying after backoff');
  }

  private pickTarget(seen: string | null): Target | null {
    const { lastGood, rejected } = this.state;
    if (seen === null) return lastGood === null ? null : { commit: lastGood, role: 'last-good', mode: this.mode };
    if (rejected !== null && rejected.commit === seen) {
      if (rejected.kind === 'invalid') return lastGood === null || lastGood === seen ? null : { commit: lastGood, role: 'last-good', mode: this.mode };
      // Rolled back: the last good commit is what the nodes run, and it is enforced.
      if (this.o.rollback && lastGood !== null && lastGood !== seen) return { commit: lastGood, role: 'last-good', mode: this.mode };
      // A halted rollout waits for an operator: watch it, change nothing.
      return { commit: seen, role: 'held', mode: 'report' };
    }
    return { commit: seen, role: 'head', mode: this.mode };
  }

  private async callReconcile(t: Target, id: string, signal: AbortSignal, log: Logger): Promise<PassSummary> {
    const lastGood = this.state.lastGood;
    const rollbackTo = this.o.rollback && t.role === 'head' && t.mode === 'enforce' && lastGood !== null && lastGood !== t.commit ? lastGood : null;
    try {
      return await this.o.reconcile({ commit: t.commit, files: this.o.source.files(t.commit), passId: id, signal, mode: t.mode, log, rollbackTo });
    } catch (e) {
      if (e instanceof ValidationError) return { outcome: 'invalid', error: e.message, diagnostics: e.diagnostics };
      if (e instanceof EtcdUnsafeError) return { outcome: 'halted', error: e.hint ? `${e.message} (${e.hint})` : e.message };
      if (signal.aborted) return { outcome: 'aborted', error: (e as Error).message };
      if (e instanceof ConvergeError) return { outcome: 'failed', error: e.message };
      log.error({ err: e }, 'internal error in the reconcile pass');
      return { outcome: 'failed', error: `internal error: ${(e as Error).message}` };
    }
  }

  private async runPass(p: { reasons: Set<TriggerReason>; at: number }): Promise<void> {
    const l = this.o.leadership;
    // Fencing: etcd itself must say this instance still leads, right before the pass
    // (and the lease must still be valid once that answer is in).
    if (l !== null && (!(await l.confirm()) || !l.isLeader())) {
      this.o.log.warn({ triggers: [...p.reasons] }, 'leadership not confirmed by etcd: no pass');
      return;
    }
    const id = randomBytes(4).toString('hex');
    const log = this.o.log.child({ pass: id });
    const controller = new AbortController();
    const startedAt = Date.now();
    const triggers = [...p.reasons];
    this.current = { id, startedAt, triggers, controller };
    log.info({ triggers, waitedMs: startedAt - p.at }, 'pass started');
    this.events.emit('pass-start', { id, triggers, triggeredAt: p.at, startedAt } satisfies PassStart);

    let seen: string | null = null;
    let sourceError: string | undefined;
    try {
      seen = await this.o.source.resolve();
      this.seen = seen;
      this.source = { ok: true, at: new Date().toISOString() };
    } catch (e) {
      sourceError = e instanceof ConvergeError ? e.message : `cannot read the Git source: ${(e as Error).message}`;
      this.source = { ok: false, error: sourceError, at: new Date().toISOString() };
      log.error({ error: sourceError, hint: e instanceof ConvergeError ? e.hint : undefined, lastGood: short(this.state.lastGood) }, 'cannot read the Git source; enforcing the last good commit');
    }

    let stateChanged = false;
    if (seen !== null && this.state.rejected !== null && this.state.rejected.commit !== seen) {
      log.info({ rejected: short(this.state.rejected.commit), commit: short(seen) }, 'a newer commit replaces the rejected one');
      this.state.rejected = null;
      stateChanged = true;
    }

    const target = this.pickTarget(seen);
    let summary: PassSummary | null = null;
    if (target !== null && !controller.signal.aborted) {
      if (target.role === 'last-good' && seen !== null) log.warn({ commit: short(target.commit), rejected: short(seen) }, 'the newest commit is rejected; enforcing the last good commit');
      if (target.role === 'held') log.warn({ commit: short(target.commit) }, 'rollout of this commit halted; reporting only until a newer commit or a retry');
      summary = await this.callReconcile(target, id, controller.signal, log);
    } else if (target === null && sourceError === undefined && !controller.signal.aborted) {
      log.warn({ commit: short(seen) }, 'the newest commit is rejected and there is no good commit to enforce');
    }

    let result: PassResultLabel = summary?.outcome ?? (controller.signal.aborted ? 'aborted' : sourceError !== undefined ? 'failed' : 'skipped');
    const error = summary?.error ?? sourceError;
    if (sourceError !== undefined && (result === 'ok' || result === 'drift' || result === 'skipped')) result = 'failed';
    const now = new Date().toISOString();

    if (target !== null && summary !== null) {
      const o = summary.outcome;
      if ((o === 'ok' || o === 'drift') && target.role === 'head') {
        if (this.state.lastGood !== target.commit) stateChanged = true;
        this.state.lastGood = target.commit;
      }
      if (o === 'ok' && target.mode === 'enforce' && target.role !== 'held' && this.state.applied !== target.commit) {
        this.state.applied = target.commit;
        stateChanged = true;
      }
      if ((o === 'invalid' || o === 'halted') && target.role === 'head') {
        this.state.rejected = {
          commit: target.commit,
          kind: o,
          error: summary.error ?? o,
          diagnostics: (summary.diagnostics ?? []).map(formatDiagnostic),
          at: now,
          ...(summary.rolledBack === undefined ? {} : { rolledBack: summary.rolledBack }),
        };
        stateChanged = true;
        if (o === 'invalid' && this.state.lastGood !== null && this.state.lastGood !== target.commit && !this.stopping) {
          this.pending ??= { reasons: new Set(), at: Date.now() };
          this.pending.reasons.add('fallback');
        }
      }
      if (summary.nodes !== undefined) {
        this.drift = Object.fromEntries(
          summary.nodes.map((n) => [n.node, { reachable: n.reachable, resources: n.drift, ...(n.error === undefined ? {} : { error: n.error }) }]),
        );
      }
      if (summary.etcd !== undefined) this.etcd = summary.etcd;
      if (summary.rolledBack !== undefined) this.lastRollback = { ...summary.rolledBack, at: now, fromCommit: target.commit, pass: id };
    }

    const transient = result === 'failed' || ((result === 'invalid' || result === 'halted') && target?.role !== 'head');
    if (result === 'ok' || result === 'drift') {
      this.failures = 0;
      this.lastSuccessAt = now;
    } else if (transient) {
      this.failures += 1;
    }

    const record: PassRecord = {
      id,
      commit: target?.commit ?? null,
      seen,
      role: target?.role ?? null,
      mode: target?.mode ?? this.mode,
      triggers,
      result,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: Date.now() - startedAt,
      ...(error === undefined ? {} : { error }),
      ...(sourceError === undefined ? {} : { sourceError }),
      ...(summary?.diagnostics?.length ? { diagnostics: summary.diagnostics.map(formatDiagnostic) } : {}),
      ...(summary?.changes === undefined ? {} : { changes: summary.changes }),
      ...(summary?.driftBefore === undefined ? {} : { driftBefore: summary.driftBefore }),
      ...(summary?.rolledBack === undefined ? {} : { rolledBack: summary.rolledBack }),
      ...(l === null ? {} : { instance: l.id }),
    };
    this.lastPass = record;
    this.current = null;
    if (stateChanged) await this.persist();
    this.metrics.pass(record, summary, this.failures, this.state.applied);

    const fields = {
      commit: short(record.commit),
      result,
      durationMs: record.durationMs,
      ...(error === undefined ? {} : { error }),
      ...(record.changes === undefined ? {} : { changes: record.changes }),
      ...(record.driftBefore === undefined ? {} : { driftBefore: record.driftBefore }),
    };
    if (result === 'invalid') log.error({ ...fields, diagnostics: record.diagnostics ?? [] }, 'commit rejected: the desired state is invalid; nothing applied');
    else if (result === 'halted') log.error({ ...fields, ...(record.rolledBack ? { rolledBack: record.rolledBack } : {}) }, 'rollout halted');
    else if (result === 'failed') log.error(fields, 'pass failed');
    else if (result === 'aborted') log.warn(fields, 'pass aborted');
    else log.info(fields, 'pass finished');

    if (transient && !this.stopping && !this.suspended) {
      this.scheduleRetry(log);
      // Timer polls wait for the backoff; a change that arrived meanwhile does not.
      if (this.pending !== null) {
        for (const r of [...this.pending.reasons]) if (!CHANGE.has(r)) this.pending.reasons.delete(r);
        if (this.pending.reasons.size === 0) this.pending = null;
        else this.clearRetry();
      }
    }
    this.events.emit('pass-end', record);
  }

  private async persist(): Promise<void> {
    const l = this.o.leadership;
    if (l !== null && !(await l.saveState(this.state))) this.o.log.warn('cannot share the loop state in etcd (not the leader any more, or etcd unreachable)');
    if (this.o.stateFile === undefined) return;
    try {
      await saveState(this.o.stateFile, this.state);
    } catch (e) {
      this.o.log.warn({ file: this.o.stateFile, error: (e as Error).message }, 'cannot save the loop state');
    }
  }
}
