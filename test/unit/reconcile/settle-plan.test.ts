// A pass makes its plan again while a refusal names etcd members that are
// still starting, within a bound: scripted plans over a fake clock.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { settlePlan, ETCD_START_SETTLE_MS } from '../../../src/reconcile/pass.js';
import type { PlanRefusal } from '../../../src/plan/types.js';

interface Made {
  plan: { refusals: PlanRefusal[] };
  n: number;
}

const startingRefusal = (...starting: string[]): PlanRefusal => ({ message: `etcd changes are waiting: ${starting.join(', ')} never finished starting`, hint: 'run converge again', starting });
const lasting: PlanRefusal = { message: 'refusing to shrink the etcd cluster from 3 to 1 member', hint: 'keep at least 3 members' };

function scripted(script: PlanRefusal[][]): () => Promise<Made> {
  let n = 0;
  return async () => {
    const refusals = script[Math.min(n, script.length - 1)]!;
    return { plan: { refusals }, n: n++ };
  };
}

function clock(): { now: () => number; sleep: (ms: number) => Promise<void>; slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return { now: () => t, sleep: async (ms) => void (slept.push(ms), (t += ms)), slept };
}

test('a plan with no refusal, or only lasting ones, is made once', async () => {
  for (const refusals of [[], [lasting]]) {
    const c = clock();
    const lines: string[] = [];
    const made = await settlePlan(scripted([refusals]), { now: c.now, sleep: c.sleep, log: (l) => lines.push(l) });
    assert.is(made.n, 0);
    assert.equal(c.slept, []);
    assert.equal(lines, []);
  }
});

test('a member that finishes starting: the plan is made again from fresh facts, and that plan is the one used', async () => {
  const c = clock();
  const lines: string[] = [];
  const made = await settlePlan(scripted([[startingRefusal('fa-b')], [startingRefusal('fa-b')], []]), { now: c.now, sleep: c.sleep, log: (l) => lines.push(l) });
  assert.is(made.n, 2);
  assert.equal(made.plan.refusals, []);
  assert.equal(c.slept, [1000, 1000]);
  assert.equal(lines, [`etcd is still starting on fa-b: waiting up to ${ETCD_START_SETTLE_MS / 1000} s for it before planning`, 'etcd finished starting']);
});

test('members that never finish: the refusal is believed after the bound, and returned as it stands', async () => {
  const c = clock();
  const lines: string[] = [];
  const made = await settlePlan(scripted([[startingRefusal('fa-c', 'fa-b')]]), { now: c.now, sleep: c.sleep, log: (l) => lines.push(l), settleMs: 5000 });
  assert.is(made.n, 5);
  assert.equal(made.plan.refusals[0]!.starting, ['fa-c', 'fa-b']);
  assert.is(c.now(), 5000);
  assert.equal(lines, ['etcd is still starting on fa-b, fa-c: waiting up to 5 s for them before planning', 'etcd is still not answering on fa-b, fa-c after 5 s']);
});

test('a starting refusal that turns into a lasting one ends the wait at once', async () => {
  const c = clock();
  const made = await settlePlan(scripted([[startingRefusal('fa-b')], [lasting]]), { now: c.now, sleep: c.sleep });
  assert.is(made.n, 1);
  assert.equal(made.plan.refusals, [lasting]);
});

test('an aborted pass stops waiting', async () => {
  const c = clock();
  const ac = new AbortController();
  const made = await settlePlan(scripted([[startingRefusal('fa-b')]]), {
    now: c.now,
    sleep: async (ms) => {
      await c.sleep(ms);
      ac.abort();
    },
    signal: ac.signal,
  });
  assert.is(made.n, 1);
  assert.equal(c.slept, [1000]);
});

test.run();
