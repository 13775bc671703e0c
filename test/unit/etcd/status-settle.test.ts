// The status verdict waits, within a bound, for a member unit that is between
// states (systemd restarting a killed etcd shows "activating" for RestartSec
// plus the start): scripted reports over a fake clock.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { settleStatus, transientUnits } from '../../../src/cli/status.js';
import { buildStatusReport, type StatusReport, type UnitState } from '../../../src/report/status.js';
import type { EtcdFacts } from '../../../src/facts/types.js';
import { statusSpec } from './helpers/status-spec.js';

const healthyFixture = JSON.parse(readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/etcd/status/healthy.json'), 'utf8')) as { members: string[]; etcd: EtcdFacts; units: Record<string, UnitState> };

const spec = statusSpec(healthyFixture.members);

/** The healthy fixture with the second member node's unit in `state`. */
function report(state: string): StatusReport {
  const second = healthyFixture.members[1]!;
  return buildStatusReport(spec, healthyFixture.etcd, { ...healthyFixture.units, [second]: { state } }, { checkedAt: '2026-01-01T00:00:00.000Z', elapsedMs: 1 });
}

function scripted(script: StatusReport[]): { take: () => Promise<StatusReport>; asked: () => number } {
  let n = 0;
  return { asked: () => n, take: async () => script[Math.min(n++, script.length - 1)]! };
}

function clock(): { now: () => number; sleep: (ms: number) => Promise<void>; slept: number[] } {
  let t = 0;
  const slept: number[] = [];
  return { now: () => t, sleep: async (ms) => void (slept.push(ms), (t += ms)), slept };
}

test('the fixtures say what they are meant to', () => {
  assert.ok(report('active').healthy);
  const r = report('activating');
  assert.not.ok(r.healthy);
  assert.equal(transientUnits(r), [healthyFixture.members[1]]);
  assert.equal(transientUnits(report('failed')), []);
});

test('a healthy cluster is asked once', async () => {
  const s = scripted([report('active')]);
  const c = clock();
  assert.ok((await settleStatus(s.take, { settleMs: 30_000, ...c })).healthy);
  assert.is(s.asked(), 1);
  assert.equal(c.slept, []);
});

test('a unit restarting after a kill is waited for until it is active', async () => {
  const s = scripted([report('activating'), report('activating'), report('activating'), report('active')]);
  const c = clock();
  const r = await settleStatus(s.take, { settleMs: 30_000, ...c });
  assert.ok(r.healthy, r.problems.join('; '));
  assert.is(s.asked(), 4);
  assert.equal(c.slept, [1000, 1000, 1000]);
});

test('a unit that stays between states is judged when the bound runs out', async () => {
  const s = scripted([report('deactivating')]);
  const c = clock();
  const r = await settleStatus(s.take, { settleMs: 5_000, ...c });
  assert.not.ok(r.healthy);
  assert.match(r.problems.join('\n'), /etcd\.service is deactivating/);
  assert.is(s.asked(), 6);
  assert.is(c.now(), 5_000);
});

test('a failed or stopped unit is the verdict at once', async () => {
  for (const state of ['failed', 'inactive']) {
    const s = scripted([report(state), report('active')]);
    const c = clock();
    const r = await settleStatus(s.take, { settleMs: 30_000, ...c });
    assert.not.ok(r.healthy, state);
    assert.is(s.asked(), 1, state);
  }
});

test.run();
