// One runner for every plan fixture in test/fixtures/plan/: a case is a file
// { desired, facts, etcd?, expect: { actions, reported?, refusals?, ... } }.
// Expected actions are matched field by field (only the fields a case names),
// in order and in number. Every case is also checked for the properties every
// plan must have: deterministic, JSON-clean, secrets without text, phases in
// order, and converged after one simulated apply.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planNode } from '../../../src/plan/host.js';
import type { HostAction, NodePlan } from '../../../src/plan/types.js';
import { applyToFacts, etcd, facts, node } from './kit.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/plan');
const cases = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

/** Rank of an action's phase; chown/chmod belong to the directories or the files. */
function rank(a: HostAction, dirs: Set<string>): number {
  switch (a.type) {
    case 'group.create':
      return 0;
    case 'user.create':
    case 'user.modify':
      return 1;
    case 'dir.create':
      return 2;
    case 'path.chown':
    case 'path.chmod':
      return dirs.has(a.path) ? 2 : 3;
    case 'file.write':
      return 3;
    case 'service.enable':
    case 'service.disable':
      return 4;
    case 'systemd.daemon-reload':
      return 5;
    case 'service.start':
    case 'service.stop':
      return 6;
    case 'service.restart':
      return 7;
    case 'path.remove':
    case 'user.remove':
    case 'group.remove':
      return 9;
  }
}

/** Each named field equals; `absent: [fields]` asserts fields that must not be there at all. */
function subset(actual: unknown, expected: Record<string, unknown>, where: string): void {
  const got = actual as Record<string, unknown>;
  for (const [k, v] of Object.entries(expected)) {
    if (k === 'absent') for (const field of v as string[]) assert.ok(!(field in got), `${where}: ${field} must be absent`);
    else assert.equal(got[k], v, `${where}: field ${k}`);
  }
}

function checkList(actual: object[], expected: Record<string, unknown>[], what: string): void {
  const show = (xs: object[]): string => xs.map((x) => JSON.stringify(x)).join('\n  ');
  assert.is(actual.length, expected.length, `${what}: expected ${expected.length}, got ${actual.length}:\n  ${show(actual)}`);
  expected.forEach((e, i) => subset(actual[i], e, `${what}[${i}] (${JSON.stringify(actual[i])})`));
}

test('there are fixtures', () => {
  assert.ok(cases.length >= 25, `only ${cases.length} fixtures`);
});

for (const file of cases) {
  test(`fixture ${file}`, () => {
    const fx = JSON.parse(readFileSync(join(dir, file), 'utf8'));
    const desired = node(fx.desired);
    const f = facts(fx.facts ?? {}, desired.name);
    const ctx = { etcd: etcd(fx.etcd) };
    const plan: NodePlan = planNode(desired, f, ctx);
    const exp = fx.expect;

    checkList(plan.actions, exp.actions, 'actions');
    checkList(plan.reported, exp.reported ?? [], 'reported');
    const refusals = plan.refusals ?? [];
    assert.is(refusals.length, (exp.refusals ?? []).length, `refusals: ${JSON.stringify(refusals)}`);
    (exp.refusals ?? []).forEach((r: { path: string; messageIncludes: string[] }, i: number) => {
      const got = refusals[i];
      assert.ok(got, `refusal ${i}`);
      assert.is(got.path, r.path);
      for (const s of r.messageIncludes) assert.ok(got.message.includes(s), `refusal message ${JSON.stringify(got.message)} lacks ${JSON.stringify(s)}`);
      assert.ok(got.message.startsWith(`${desired.name}: `), 'a refusal names its node');
      assert.ok(got.hint.length > 0, 'a refusal says what to do');
    });
    assert.is(plan.error, refusals.length > 0 ? refusals.map((r) => r.message).join('\n') : undefined);
    assert.equal(plan.etcdRestartBecause, exp.etcdRestartBecause);
    if ('firstRemoval' in exp) assert.is(plan.firstRemoval, exp.firstRemoval);
    else if (plan.firstRemoval !== undefined) assert.ok(['path.remove', 'user.remove', 'group.remove', 'service.stop', 'service.disable'].includes(plan.actions[plan.firstRemoval]!.type), 'firstRemoval points at a removal');

    // Properties of every plan.
    assert.equal(planNode(desired, f, ctx), plan, 'deterministic');
    assert.equal(JSON.parse(JSON.stringify(plan)), plan, 'plain JSON data');
    for (const a of plan.actions) {
      assert.is(a.node, desired.name);
      assert.ok(a.reason.length > 0, `${a.type} has a reason`);
      if (a.type === 'file.write' && a.contentKind === 'secret') assert.ok(a.oldText === undefined && a.newText === undefined, 'no secret text');
    }
    const main = plan.firstRemoval === undefined ? plan.actions : plan.actions.slice(0, plan.firstRemoval);
    const dirs = new Set(desired.directories.map((d) => d.path));
    const ranks = main.map((a) => rank(a, dirs));
    assert.equal(ranks, [...ranks].sort((x, y) => x - y), `phases in order: ${main.map((a) => a.type).join(', ')}`);
    const reloads = main.filter((a) => a.type === 'systemd.daemon-reload').length;
    assert.ok(reloads <= 1, 'at most one daemon-reload before the services');

    const after = planNode(desired, applyToFacts(f, desired, plan.actions), ctx);
    assert.equal(after.actions, [], `converges in one pass, left: ${JSON.stringify(after.actions)}`);
  });
}

test.run();
