// The watch loop: one pass at a time, coalescing, backoff, rejected commits,
// modes, suspend/resume and stop, on a real local repository.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backoffDelay, jittered } from '../../../src/daemon/backoff.js';
import { Daemon } from '../../../src/daemon/loop.js';
import type { PassRecord } from '../../../src/daemon/types.js';
import { BROKEN_NODES, NODES, harness, sleep, until } from './_harness.js';

test('backoff doubles from the base up to the cap; jitter stays within ±10%', () => {
  assert.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100].map((n) => backoffDelay(n, 5_000, 300_000)), [0, 5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000, 300_000]);
  assert.is(jittered(60_000, 0.1, () => 0), 54_000);
  assert.is(jittered(60_000, 0.1, () => 0.5), 60_000);
  assert.is(jittered(60_000, 0.1, () => 0.999999), 66_000);
});

test('first pass at the branch head; every log line of a pass carries its id', async () => {
  const h = await harness();
  try {
    await h.daemon.idle();
    assert.is(h.rec.calls.length, 1);
    const call = h.rec.calls[0]!;
    assert.is(call.commit, h.repo.head());
    assert.is(call.motd, 'first\n');
    assert.match(call.passId, /^[0-9a-f]{8}$/);
    const passLines = h.logs.filter((l) => l['pass'] === call.passId).map((l) => l['msg']);
    assert.ok(passLines.includes('pass started'));
    assert.ok(passLines.includes('pass finished'));
    const st = h.daemon.status();
    assert.is(st.commitSeen, call.commit);
    assert.is(st.commitApplied, call.commit);
    assert.is(st.lastGood, call.commit);
    assert.is(st.lastPass?.result, 'ok');
    assert.is(st.lastPass?.id, call.passId);
    assert.equal(h.daemon.ready(), { ready: true, reasons: [], role: 'single' });
  } finally {
    await h.done();
  }
});

test('three triggers during a pass → exactly one more pass, at the newest commit', async () => {
  const h = await harness({ start: false });
  try {
    let release!: () => void;
    h.rec.hold = new Promise((r) => (release = r));
    const first = h.rec.nextCall();
    await h.daemon.start();
    await first;
    const commits: string[] = [];
    for (let i = 0; i < 3; i++) {
      commits.push(h.commit(`burst ${i}\n`));
      assert.ok(h.daemon.trigger(i === 1 ? 'webhook' : 'watch'));
    }
    assert.is(h.daemon.status().current?.triggers[0], 'start');
    h.rec.hold = null;
    release();
    await h.daemon.idle();
    assert.equal(
      h.rec.calls.map((c) => c.commit),
      [h.rec.calls[0]!.commit, commits[2]],
    );
    assert.is(h.rec.calls[1]!.motd, 'burst 2\n');
    const ends = h.logs.filter((l) => l['msg'] === 'pass started').map((l) => l['triggers']);
    assert.equal(ends, [['start'], ['watch', 'webhook']]);
  } finally {
    await h.done();
  }
});

test('failures back off exponentially up to the cap; success resets; polls wait, changes do not', async () => {
  const h = await harness({ start: false, backoffBaseMs: 40, backoffCapMs: 200 });
  try {
    // When each pass ended: the backoff wait runs from there to the next call.
    const ended: number[] = [];
    h.daemon.events.on('pass-end', () => ended.push(Date.now()));
    const waits = (): number[] => h.rec.calls.slice(1).map((c, i) => c.at - ended[i]!);
    h.rec.outcomes.push('failed', 'failed', 'failed', 'failed', 'ok');
    await h.daemon.start();
    await until(() => h.rec.calls.length === 5 && h.daemon.status().lastPass?.result === 'ok', 5000, 'five passes');
    const want = [40, 80, 160, 200];
    // Timers never fire early; on a busy machine they may fire late.
    waits().forEach((g, i) => assert.ok(g >= want[i]! - 2 && g < want[i]! + 250, `wait ${i} was ${g} ms, want ${want[i]} ms (all: ${waits().join(', ')})`));
    assert.is(h.daemon.status().consecutiveFailures, 0);

    // After the reset the next failure waits the base delay again.
    h.rec.outcomes.push('failed');
    h.daemon.trigger('watch');
    await until(() => h.rec.calls.length === 6 && h.daemon.status().nextRetryAt !== null, 2000, 'sixth pass');
    assert.is(h.daemon.status().consecutiveFailures, 1);
    // A timer poll does not cut a backoff wait short.
    assert.is(h.daemon.trigger('poll'), false);
    await until(() => h.rec.calls.length === 7, 2000, 'retry after the base delay');
    const reset = waits()[5]!;
    assert.ok(reset >= 38 && reset < 40 + 250, `wait after the reset ${reset} ms`);
    await h.daemon.idle();

    // A change (webhook, local commit) does: with 160 ms of backoff ahead, a webhook runs a pass at once.
    h.rec.outcomes.push('failed', 'failed', 'failed');
    h.daemon.trigger('watch');
    await until(() => h.daemon.status().consecutiveFailures === 3 && h.daemon.status().nextRetryAt !== null, 3000, 'three failures');
    const t = Date.now();
    h.daemon.trigger('webhook');
    await until(() => h.rec.calls.length === 11, 2000, 'the webhook pass');
    assert.ok(Date.now() - t < 120, `the webhook pass started after ${Date.now() - t} ms: it waited for the backoff`);
    await h.daemon.idle();
    const delays = h.logs.filter((l) => l['msg'] === 'retrying after backoff').map((l) => l['retryInMs']);
    assert.equal(delays, [40, 80, 160, 200, 40, 40, 80, 160]);
    assert.is(h.daemon.status().nextRetryAt, null);
  } finally {
    await h.done();
  }
});

test('an invalid commit is never applied: reported with file:line, the last good commit is enforced, a newer good commit applies', async () => {
  const h = await harness();
  try {
    await h.daemon.idle();
    const good = h.repo.head();
    const bad = h.commit({ 'nodes.yaml': BROKEN_NODES });
    h.daemon.trigger('watch');
    await h.daemon.idle();
    // The bad commit was validated (and rejected), then the last good one was enforced at once.
    assert.equal(h.rec.calls.map((c) => c.commit), [good, bad, good]);
    const st = h.daemon.status();
    assert.is(st.rejected?.commit, bad);
    assert.is(st.rejected?.kind, 'invalid');
    assert.ok(st.rejected?.diagnostics.some((d) => /^nodes\.yaml:\d+:\d+: /.test(d)), JSON.stringify(st.rejected?.diagnostics));
    assert.is(st.commitApplied, good);
    assert.is(st.lastGood, good);
    assert.is(st.lastPass?.role, 'last-good');
    const rejectedLog = h.logs.find((l) => l['msg'] === 'commit rejected: the desired state is invalid; nothing applied');
    assert.ok(rejectedLog && (rejectedLog['diagnostics'] as string[]).some((d) => d.startsWith('nodes.yaml:')));

    // Further passes keep enforcing the last good commit; the bad one is not retried.
    h.daemon.trigger('poll');
    await h.daemon.idle();
    assert.is(h.rec.calls.at(-1)!.commit, good);
    assert.is(h.rec.calls.filter((c) => c.commit === bad).length, 1);

    // An operator asks: it is tried again (and rejected again).
    assert.is(await h.daemon.retry(), bad);
    await h.daemon.idle();
    assert.equal(h.rec.calls.slice(-2).map((c) => c.commit), [bad, good]);

    // A newer good commit replaces it.
    const fixed = h.commit({ 'nodes.yaml': NODES, 'files.yaml': 'apiVersion: converge.dev/v1\nkind: Group\nmetadata:\n  name: etcd\nspec:\n  system: true\n' });
    h.daemon.trigger('watch');
    await h.daemon.idle();
    assert.is(h.rec.calls.at(-1)!.commit, fixed);
    assert.is(h.daemon.status().rejected, null);
    assert.is(h.daemon.status().commitApplied, fixed);
  } finally {
    await h.done();
  }
});

test('the last good and the rejected commit survive a restart', async () => {
  const h = await harness();
  try {
    await h.daemon.idle();
    const good = h.repo.head();
    const bad = h.commit({ 'nodes.yaml': BROKEN_NODES });
    h.daemon.trigger('watch');
    await h.daemon.idle();
    await h.daemon.stop();
    const calls: string[] = [];
    const again = new Daemon({
      source: h.source,
      reconcile: async (job) => {
        calls.push(job.commit);
        return { outcome: 'ok' };
      },
      log: (await import('../../../src/daemon/log.js')).createLogger({ level: 'silent' }),
      intervalMs: 0,
      stateFile: h.stateFile,
    });
    await again.start();
    await again.idle();
    assert.equal(calls, [good]);
    assert.is(again.status().rejected?.commit, bad);
    await again.stop();
  } finally {
    await h.done();
  }
});

test('a halted rollout is held in report mode until a retry or a newer commit', async () => {
  const h = await harness({ start: false });
  try {
    h.rec.outcomes.push('ok', 'halted');
    await h.daemon.start();
    await h.daemon.idle();
    const next = h.commit('breaks etcd\n');
    h.daemon.trigger('watch');
    await h.daemon.idle();
    assert.is(h.daemon.status().rejected?.kind, 'halted');
    // Not retried by itself, and no backoff: the next passes only report.
    assert.is(h.daemon.status().nextRetryAt, null);
    h.daemon.trigger('poll');
    await h.daemon.idle();
    assert.equal(h.rec.calls.slice(-2).map((c) => [c.commit, c.mode]), [[next, 'enforce'], [next, 'report']]);
    await h.daemon.retry();
    await h.daemon.idle();
    assert.equal([h.rec.calls.at(-1)!.commit, h.rec.calls.at(-1)!.mode], [next, 'enforce']);
    assert.is(h.daemon.status().commitApplied, next);
  } finally {
    await h.done();
  }
});

test('report mode is passed to every pass and never marks a commit applied', async () => {
  const h = await harness({ mode: 'report', start: false });
  try {
    h.rec.outcomes.push('drift');
    await h.daemon.start();
    await h.daemon.idle();
    assert.is(h.rec.calls[0]!.mode, 'report');
    const st = h.daemon.status();
    assert.is(st.lastPass?.result, 'drift');
    assert.is(st.commitApplied, null);
    assert.is(st.lastGood, h.repo.head());
  } finally {
    await h.done();
  }
});

test('suspend: triggers are ignored and no pass starts; resume runs one', async () => {
  const h = await harness();
  try {
    await h.daemon.idle();
    h.daemon.suspend();
    h.commit('while suspended\n');
    assert.is(h.daemon.trigger('webhook'), false);
    assert.is(h.daemon.trigger('poll'), false);
    await sleep(50);
    assert.is(h.rec.calls.length, 1);
    assert.is(h.daemon.status().suspended, true);
    h.daemon.resume();
    await h.daemon.idle();
    assert.is(h.rec.calls.length, 2);
    assert.is(h.rec.calls[1]!.motd, 'while suspended\n');
  } finally {
    await h.done();
  }
});

test('stop() with a pass under way: the signal is observed, the step finishes, no further pass, then it resolves', async () => {
  let observed = false;
  let stepDone = 0;
  const calls: string[] = [];
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  // A pass that works in steps until told to stop, and finishes the step under way.
  const h = await harness({
    start: false,
    reconcile: async (job) => {
      calls.push(job.commit);
      started();
      while (!job.signal.aborted) await sleep(10);
      observed = true;
      await sleep(150);
      stepDone = Date.now();
      return { outcome: 'aborted', error: 'stopped after the current step' };
    },
  });
  try {
    const ends: PassRecord[] = [];
    h.daemon.events.on('pass-end', (r: PassRecord) => ends.push(r));
    await h.daemon.start();
    await running;
    const firstHead = h.repo.head();
    h.commit('pending\n');
    assert.ok(h.daemon.trigger('watch'));
    const t = Date.now();
    await h.daemon.stop();
    const stoppedAt = Date.now();
    assert.ok(observed, 'the pass did not see the abort signal');
    assert.ok(stepDone > 0 && stepDone <= stoppedAt, 'stop() resolved before the step finished');
    assert.ok(stoppedAt - t >= 140, `stop() took ${stoppedAt - t} ms`);
    assert.is(h.daemon.trigger('webhook'), false);
    await sleep(50);
    assert.equal(calls, [firstHead], 'a pass started after stop');
    assert.is(ends.length, 1);
    assert.is(ends[0]!.result, 'aborted');
    assert.is(h.logs.filter((l) => l['msg'] === 'pass started').length, 1);
  } finally {
    await h.done();
  }
});

test.run();
