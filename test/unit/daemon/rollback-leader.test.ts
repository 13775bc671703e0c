// The loop's side of --rollback and of leader election, on a real local
// repository: which commit a halted rollout is returned to, what /status and
// the metrics say, what is enforced afterwards; and that only a leader
// reconciles, that losing the leadership stops the pass under way, and that
// the loop state is shared through the election (here a scripted one; the
// etcd election itself is tested in election.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { EventEmitter } from 'node:events';
import { Daemon } from '../../../src/daemon/loop.js';
import type { Leadership } from '../../../src/daemon/leader.js';
import type { LoopState } from '../../../src/daemon/state.js';
import { loadState } from '../../../src/daemon/state.js';
import type { ElectionStatus, PassSummary, ReconcileFn, ReconcileJob } from '../../../src/daemon/types.js';
import { createLogger } from '../../../src/daemon/log.js';
import { harness, sleep, until } from './_harness.js';

interface Seen {
  commit: string;
  mode: string;
  rollbackTo: string | null;
}

/** A pass that halts on one commit (and reports the rollback it was asked for), ok otherwise. */
function halting(bad: () => string | null, seen: Seen[]): ReconcileFn {
  return async (job: ReconcileJob): Promise<PassSummary> => {
    seen.push({ commit: job.commit, mode: job.mode, rollbackTo: job.rollbackTo });
    if (job.commit !== bad()) return { outcome: 'ok', changes: 0 };
    return {
      outcome: 'halted',
      error: 'n1: start demo.service: demo.service did not become active after restart (failed)',
      changes: 2,
      ...(job.rollbackTo === null ? {} : { rolledBack: { toCommit: job.rollbackTo, nodes: ['n1'], ok: true, changes: 2, durationMs: 12 } }),
    };
  };
}

test('--rollback: a halted rollout is returned to the last good commit, reported, and the last good commit is enforced until a newer one', async () => {
  let bad: string | null = null;
  const seen: Seen[] = [];
  const h = await harness({ start: false, rollback: true, reconcile: halting(() => bad, seen) });
  try {
    await h.daemon.start();
    await h.daemon.idle();
    const good = h.repo.head();
    assert.equal(seen, [{ commit: good, mode: 'enforce', rollbackTo: null }], 'nothing to roll back to before a good commit');

    bad = h.commit('breaks the service\n');
    h.daemon.trigger('watch');
    await h.daemon.idle();
    assert.equal(seen.at(-1), { commit: bad, mode: 'enforce', rollbackTo: good });
    const st = h.daemon.status();
    assert.is(st.rollback, true);
    assert.is(st.rejected?.commit, bad);
    assert.is(st.rejected?.kind, 'halted');
    assert.equal(st.rejected?.rolledBack?.nodes, ['n1']);
    assert.is(st.lastRollback?.fromCommit, bad);
    assert.is(st.lastRollback?.toCommit, good);
    assert.is(st.lastRollback?.ok, true);
    assert.is(st.lastPass?.rolledBack?.toCommit, good);
    assert.is(st.commitApplied, good);
    assert.is(st.nextRetryAt, null, 'a halted commit is not retried by itself');
    assert.match(await h.daemon.metrics.registry.metrics(), /converge_rollbacks_total\{result="ok"\} 1/);
    const rollbackLog = h.logs.find((l) => l['msg'] === 'rollout halted');
    assert.ok(rollbackLog && (rollbackLog['rolledBack'] as { toCommit: string }).toCommit === good, 'the halt is logged with the rollback');

    // Next passes enforce the last good commit (no rollback asked: it is not a new rollout).
    h.daemon.trigger('poll');
    await h.daemon.idle();
    assert.equal(seen.at(-1), { commit: good, mode: 'enforce', rollbackTo: null });
    assert.is(h.daemon.status().lastPass?.role, 'last-good');

    // Remembered across a restart.
    assert.is((await loadState(h.stateFile)).rejected?.rolledBack?.toCommit, good);

    const fixed = h.commit('fixed\n');
    h.daemon.trigger('watch');
    await h.daemon.idle();
    assert.equal(seen.at(-1), { commit: fixed, mode: 'enforce', rollbackTo: good });
    assert.is(h.daemon.status().commitApplied, fixed);
    assert.is(h.daemon.status().rejected, null);
  } finally {
    await h.done();
  }
});

test('without --rollback no pass is asked to roll back, and a halted commit is held in report mode', async () => {
  let bad: string | null = null;
  const seen: Seen[] = [];
  const h = await harness({ start: false, reconcile: halting(() => bad, seen) });
  try {
    await h.daemon.start();
    await h.daemon.idle();
    bad = h.commit('breaks\n');
    h.daemon.trigger('watch');
    await h.daemon.idle();
    h.daemon.trigger('poll');
    await h.daemon.idle();
    assert.equal(seen.map((s) => s.rollbackTo), [null, null, null]);
    assert.equal(seen.at(-1), { commit: bad, mode: 'report', rollbackTo: null });
    assert.is(h.daemon.status().lastRollback, null);
    assert.is(h.daemon.status().rollback, false);
  } finally {
    await h.done();
  }
});

class Scripted implements Leadership {
  readonly events = new EventEmitter();
  readonly id = 'bastion-1';
  leader = false;
  /** What etcd answers to confirm() while leading. */
  etcdAgrees = true;
  shared: LoopState | null = null;
  saves: LoopState[] = [];
  started = false;
  stopped = false;
  isLeader(): boolean {
    return this.leader;
  }
  async confirm(): Promise<boolean> {
    return this.leader && this.etcdAgrees;
  }
  status(): ElectionStatus {
    return { id: this.id, name: 'test', leader: this.leader, leaderId: this.leader ? this.id : 'bastion-2', since: null, ttlSeconds: 10 };
  }
  async loadState(): Promise<LoopState | null> {
    return this.shared;
  }
  async saveState(s: LoopState): Promise<boolean> {
    if (!this.leader) return false;
    this.shared = JSON.parse(JSON.stringify(s)) as LoopState;
    this.saves.push(this.shared);
    return true;
  }
  start(): void {
    this.started = true;
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  elect(): void {
    this.leader = true;
    this.events.emit('elected');
  }
  lose(): void {
    this.leader = false;
    this.events.emit('lost', 'test: lease expired');
  }
}

test('a standby reconciles nothing; once elected it starts from the shared state; losing the leadership stops the pass before its next step', async () => {
  const l = new Scripted();
  const calls: { commit: string; steps: number; result: string }[] = [];
  let loseDuring: string | null = null;
  // A pass in ten steps that looks at its signal before each, as apply does.
  const reconcile: ReconcileFn = async (job) => {
    const call = { commit: job.commit, steps: 0, result: 'ok' };
    calls.push(call);
    for (let i = 0; i < 10; i++) {
      if (job.signal.aborted) {
        call.result = 'aborted';
        return { outcome: 'aborted', error: String(job.signal.reason) };
      }
      if (i === 3 && loseDuring === job.commit) l.lose();
      await sleep(5);
      call.steps++;
    }
    return { outcome: 'ok', changes: call.steps };
  };
  const h = await harness({ start: false, leadership: l, reconcile });
  try {
    const first = h.repo.head();
    const second = h.commit('second\n');
    // The previous leader had rejected `second`.
    l.shared = { lastGood: first, applied: first, rejected: { commit: second, kind: 'invalid', error: 'x', diagnostics: [], at: new Date().toISOString() } };
    await h.daemon.start();
    assert.ok(l.started);
    await sleep(30);
    assert.is(calls.length, 0, 'a standby ran a pass');
    assert.is(h.daemon.trigger('webhook'), false);
    assert.is(h.daemon.status().leader, false);
    assert.equal(h.daemon.ready(), { ready: true, reasons: [], role: 'standby' });
    assert.match(await h.daemon.metrics.registry.metrics(), /converge_leader 0/);

    l.elect();
    await until(() => calls.length === 1, 3000, 'a pass once elected');
    await h.daemon.idle();
    assert.is(calls[0]!.commit, first, 'the new leader knew the rejected commit and enforced the last good one');
    assert.is(h.daemon.status().leader, true);
    assert.is(h.daemon.status().lastPass?.instance, 'bastion-1');
    assert.match(await h.daemon.metrics.registry.metrics(), /converge_leader 1/);

    const third = h.commit('third\n');
    loseDuring = third;
    assert.ok(h.daemon.trigger('watch'));
    await h.daemon.idle();
    assert.equal(calls.at(-1), { commit: third, steps: 4, result: 'aborted' }, 'the pass went on after the leadership was lost');
    assert.is(h.daemon.status().lastPass?.result, 'aborted');
    assert.is(h.daemon.trigger('poll'), false, 'a former leader accepted a trigger');
    assert.is(h.daemon.status().leader, false);

    // Elected again, but etcd does not confirm it: no pass.
    loseDuring = null;
    const before = calls.length;
    l.etcdAgrees = false;
    l.elect();
    await sleep(50);
    await h.daemon.idle();
    assert.is(calls.length, before, 'a pass ran without etcd confirming the leadership');
    assert.ok(h.logs.some((x) => x['msg'] === 'leadership not confirmed by etcd: no pass'));
    l.etcdAgrees = true;
    h.daemon.trigger('poll');
    await h.daemon.idle();
    assert.is(calls.length, before + 1);
    assert.is(calls.at(-1)!.result, 'ok');
    assert.ok(l.saves.some((x) => x.lastGood === third), 'the new last good commit was shared');

    await h.daemon.stop();
    assert.ok(l.stopped, 'stop() resigns');
  } finally {
    await h.done();
  }
});

test('the pass signal is aborted by a lost leadership even when the pass never looks at the loop', async () => {
  const l = new Scripted();
  let signal: AbortSignal | null = null;
  const h = await harness({ start: false });
  const d = new Daemon({
    source: h.source,
    reconcile: async (job) => {
      signal = job.signal;
      await new Promise<void>((resolve) => job.signal.addEventListener('abort', () => resolve(), { once: true }));
      return { outcome: 'aborted' };
    },
    log: createLogger({ level: 'silent' }),
    intervalMs: 0,
    leadership: l,
  });
  await d.start();
  l.elect();
  await until(() => signal !== null, 3000, 'the pass');
  const t = Date.now();
  l.lose();
  await d.idle();
  assert.ok(signal!.aborted);
  assert.match(String((signal! as AbortSignal).reason), /leadership lost/);
  assert.ok(Date.now() - t < 100);
  await d.stop();
  await h.done();
});

test.run();
