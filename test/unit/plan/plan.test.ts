// buildPlan: one NodePlan per node in name order, unreachable nodes kept with
// their error, the etcd steps and refusals passed through, and the counters
// the CLI's exit code rests on.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildPlan, nodesWithChanges, planActionCount, planHasChanges, planHasErrors } from '../../../src/plan/plan.js';
import type { ResolvedState } from '../../../src/model/types.js';
import type { EtcdAction } from '../../../src/plan/types.js';
import { etcd, facts, node } from './kit.js';

const desired = (name: string) =>
  node({ name, groups: [{ name: 'etcd' }], services: [{ unit: 'etcd.service' }], files: [{ path: '/etc/systemd/system/etcd.service', content: { text: '[Service]\n' }, restarts: ['etcd.service'] }] });
const convergedFacts = (name: string) =>
  facts({ paths: { '/etc/systemd/system/etcd.service': { bytes: '[Service]\n' } }, groups: { etcd: {} }, units: { 'etcd.service': { active: true, enabled: true } } }, name);

const state: ResolvedState = { root: '/srv/desired', commit: 'abc', nodes: [desired('cp-c'), desired('cp-a'), desired('cp-b')], etcd: null };

test('nodes in name order; unreachable and missing facts become unreachable NodePlans', () => {
  const plan = buildPlan({
    state,
    facts: new Map<string, ReturnType<typeof convergedFacts> | { error: string }>([
      ['cp-a', facts({ units: { 'etcd.service': { active: true, enabled: true } } }, 'cp-a')],
      ['cp-c', { error: 'cp-c: host key changed' }],
    ]),
    factsDigest: 'digest',
    now: '2024-05-01T10:00:00.000Z',
  });
  assert.equal(plan.nodes.map((n) => [n.node, n.reachable, n.error]), [
    ['cp-a', true, undefined],
    ['cp-b', false, 'no facts were gathered for this node'],
    ['cp-c', false, 'cp-c: host key changed'],
  ]);
  assert.equal(plan.nodes[0]!.actions.map((a) => a.type), ['group.create', 'file.write', 'systemd.daemon-reload', 'service.restart']);
  assert.is(plan.format, 1);
  assert.is(plan.commit, 'abc');
  assert.is(plan.createdAt, '2024-05-01T10:00:00.000Z');
  assert.is(plan.factsDigest, 'digest');
  assert.equal(plan.etcd, []);
  assert.equal(plan.refusals, []);
  assert.is(planActionCount(plan), 4);
  assert.ok(planHasChanges(plan));
  assert.ok(planHasErrors(plan));
  assert.equal(nodesWithChanges(plan), ['cp-a']);
});

test('converged everywhere: no changes, no errors; a record of facts works like a map', () => {
  const plan = buildPlan({ state, facts: { 'cp-a': convergedFacts('cp-a'), 'cp-b': convergedFacts('cp-b'), 'cp-c': convergedFacts('cp-c') }, factsDigest: 'd', now: 'n' });
  assert.is(planActionCount(plan), 0);
  assert.not.ok(planHasChanges(plan));
  assert.not.ok(planHasErrors(plan));
  assert.equal(nodesWithChanges(plan), []);
});

test('etcd steps and refusals pass through and count', () => {
  const step: EtcdAction = { node: 'cp-b', resource: 'EtcdCluster/main', type: 'etcd.member.restart', name: 'cp-b', unit: 'etcd.service', because: ['/etc/etcd/etcd.env'], reason: '/etc/etcd/etcd.env changed' };
  const refusal = { message: 'quorum would be lost', hint: 'one member per commit' };
  const plan = buildPlan({ state, facts: { 'cp-a': convergedFacts('cp-a'), 'cp-b': convergedFacts('cp-b'), 'cp-c': convergedFacts('cp-c') }, factsDigest: 'd', now: 'n', etcdActions: [step], refusals: [refusal] });
  assert.equal(plan.etcd, [step]);
  assert.equal(plan.refusals, [refusal]);
  assert.is(planActionCount(plan), 1);
  assert.ok(planHasChanges(plan));
  assert.ok(planHasErrors(plan));
  assert.equal(nodesWithChanges(plan), ['cp-b']);
});

test('the etcd cluster of the state reaches the host planner', () => {
  const withEtcd: ResolvedState = { ...state, etcd: etcd({ members: ['cp-a', 'cp-b', 'cp-c'] }) };
  const stopped = (name: string) => facts({ paths: { '/etc/systemd/system/etcd.service': { bytes: '[Service]\n' } }, groups: { etcd: {} }, units: { 'etcd.service': { active: false, enabled: true } } }, name);
  const plan = buildPlan({ state: withEtcd, facts: { 'cp-a': stopped('cp-a'), 'cp-b': stopped('cp-b'), 'cp-c': stopped('cp-c') }, factsDigest: 'd', now: 'n' });
  assert.is(planActionCount(plan), 0, 'members are started by the etcd planner, not the host planner');
  const plain = buildPlan({ state, facts: { 'cp-a': stopped('cp-a'), 'cp-b': stopped('cp-b'), 'cp-c': stopped('cp-c') }, factsDigest: 'd', now: 'n' });
  assert.is(planActionCount(plain), 3, 'without an etcd cluster the host planner starts the unit');
});

test.run();
