// Drift labelling: corrective (the node changed under us) versus intentional
// (Git changed, not rolled out), from three views: the last applied commit,
// the current commit and the facts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildDriftReport, driftCount, nodeDrift } from '../../../src/plan/drift.js';
import type { ResolvedNode } from '../../../src/model/types.js';
import { facts, node, sha256 } from './kit.js';

const V1 = 'port: 1\n';
const V2 = 'port: 2\n';
const KEY1 = 'SECRET-KEY-ONE';
const KEY2 = 'SECRET-KEY-TWO';

function desired(conf: string, key: string, extra: Partial<Record<'files', object[]>> = {}): ResolvedNode {
  return node({
    name: 'cp-a',
    users: [{ name: 'app', home: '/var/lib/app' }],
    files: [
      { name: 'conf', path: '/etc/app.conf', content: { text: conf } },
      { name: 'key', path: '/etc/app.key', mode: '0600', content: { secret: 'app-key', bytes: key } },
      ...(extra.files ?? []),
    ],
    services: [{ name: 'app', unit: 'app.service' }],
  });
}

const inventory = { commit: 'c1', appliedAt: '2024-05-01T10:00:00.000Z', resources: { 'User/app': { kind: 'User', target: 'app' }, 'File/conf': { kind: 'File', target: '/etc/app.conf' }, 'File/key': { kind: 'File', target: '/etc/app.key' }, 'Service/app': { kind: 'Service', target: 'app.service' } } };

function nodeFacts(over: Record<string, unknown> = {}, withInventory = true) {
  return facts(
    {
      paths: { '/etc/app.conf': { bytes: V1 }, '/etc/app.key': { bytes: KEY1, mode: '0600' } },
      users: { app: { home: '/var/lib/app' } },
      units: { 'app.service': { active: true, enabled: true } },
      inventory: withInventory ? inventory : null,
      ...over,
    },
    'cp-a',
  );
}

const fields = (items: { resource: string; field: string; label: string }[]) => items.map((i) => `${i.label} ${i.resource} ${i.field}`);

test('applied, current and node agree: no drift', () => {
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: nodeFacts() });
  assert.equal(d.items, []);
  assert.is(d.appliedCommit, 'c1');
  assert.is(d.appliedAt, '2024-05-01T10:00:00.000Z');
});

test('the node changed under us: corrective, with what each side wants', () => {
  const f = nodeFacts({
    paths: { '/etc/app.conf': { bytes: V1, mode: '0666', owner: 'nobody', group: 'root' }, '/etc/app.key': { bytes: KEY1, mode: '0600' } },
    users: { app: { home: '/home/app', shell: '/bin/bash' } },
    units: { 'app.service': { active: false, enabled: false } },
  });
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: f });
  assert.equal(fields(d.items), [
    'corrective File/conf owner',
    'corrective File/conf mode',
    'corrective Service/app enabled',
    'corrective Service/app running',
    'corrective User/app home',
    'corrective User/app shell',
  ]);
  const mode = d.items.find((i) => i.field === 'mode')!;
  assert.equal({ applied: mode.applied, desired: mode.desired, actual: mode.actual, target: mode.target, kind: mode.kind }, { applied: '0644', desired: '0644', actual: '0666', target: '/etc/app.conf', kind: 'File' });
});

test('Git changed and the node still has the last applied state: intentional', () => {
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V2, KEY1), facts: nodeFacts() });
  assert.equal(fields(d.items), ['intentional File/conf content']);
  assert.equal([d.items[0]!.applied, d.items[0]!.desired, d.items[0]!.actual], [sha256(V1), sha256(V2), sha256(V1)]);
});

test('both: the node was edited and Git changed too: corrective, showing the new desire', () => {
  const f = nodeFacts({ paths: { '/etc/app.conf': { bytes: 'edited\n' }, '/etc/app.key': { bytes: KEY1, mode: '0600' } } });
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V2, KEY1), facts: f });
  assert.equal(fields(d.items), ['corrective File/conf content']);
  assert.equal([d.items[0]!.applied, d.items[0]!.desired, d.items[0]!.actual], [sha256(V1), sha256(V2), sha256('edited\n')]);
});

test('a file deleted by hand: one corrective existence item, no field noise', () => {
  const f = nodeFacts({ paths: { '/etc/app.conf': { exists: false }, '/etc/app.key': { bytes: KEY1, mode: '0600' } } });
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: f });
  assert.equal(fields(d.items), ['corrective File/conf exists']);
  assert.equal([d.items[0]!.applied, d.items[0]!.actual], ['present', 'absent']);
});

test('a symlink where the file was: corrective type, nothing else about it', () => {
  const f = nodeFacts({ paths: { '/etc/app.conf': { type: 'symlink', target: '/tmp/x' }, '/etc/app.key': { bytes: KEY1, mode: '0600' } } });
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: f });
  assert.equal(fields(d.items), ['corrective File/conf type']);
  assert.is(d.items[0]!.actual, 'symlink');
});

test('secrets: labelled like any file, but only placeholders, never digests', () => {
  const edited = nodeFacts({ paths: { '/etc/app.conf': { bytes: V1 }, '/etc/app.key': { bytes: 'TAMPERED', mode: '0600' } } });
  const corrective = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: edited });
  assert.equal(corrective.items.map((i) => [i.label, i.field, i.applied, i.desired, i.actual, i.secret]), [['corrective', 'content', '(secret)', '(secret)', '(secret changed on the node)', true]]);
  const intentional = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY2), facts: nodeFacts() });
  assert.equal(intentional.items.map((i) => [i.label, i.field, i.applied, i.desired, i.actual]), [['intentional', 'content', '(secret)', '(secret changed in Git)', '(secret as last applied)']]);
  const json = JSON.stringify([corrective, intentional]);
  for (const s of [KEY1, KEY2, 'TAMPERED']) assert.not.ok(json.includes(sha256(s).slice(0, 12)), 'no digest of a secret');
});

test('never applied (no inventory): everything that differs is intentional', () => {
  const f = nodeFacts({ paths: { '/etc/app.conf': { exists: false }, '/etc/app.key': { exists: false } }, users: {}, units: {} }, false);
  const d = nodeDrift({ node: 'cp-a', applied: null, current: desired(V1, KEY1), facts: f });
  assert.equal(fields(d.items), ['intentional File/conf exists', 'intentional File/key exists', 'intentional Service/app enabled', 'intentional Service/app running', 'intentional User/app exists']);
  assert.ok(d.items.every((i) => i.applied === null));
  assert.is(d.appliedCommit, null);
});

test('a new resource in Git not yet on the node: intentional', () => {
  const current = desired(V1, KEY1, { files: [{ name: 'extra', path: '/etc/extra.conf', content: { text: 'x\n' } }] });
  const d = nodeDrift({ node: 'cp-a', applied: desired(V1, KEY1), current, facts: nodeFacts() });
  assert.equal(fields(d.items), ['intentional File/extra exists']);
});

test('deleted from Git: intentional only when the planner would remove it', () => {
  const applied = desired(V1, KEY1, { files: [{ name: 'old', path: '/etc/old.conf', content: { text: 'o\n' } }] });
  const withOld = (created: boolean) =>
    nodeFacts({
      paths: { '/etc/app.conf': { bytes: V1 }, '/etc/app.key': { bytes: KEY1, mode: '0600' }, '/etc/old.conf': { bytes: 'o\n' } },
      inventory: { ...inventory, resources: { ...inventory.resources, 'File/old': { kind: 'File', target: '/etc/old.conf', created } } },
    });
  const pruned = nodeDrift({ node: 'cp-a', applied, current: desired(V1, KEY1), facts: withOld(true) });
  assert.equal(pruned.items.map((i) => [i.label, i.resource, i.field, i.desired, i.actual]), [['intentional', 'File/old', 'exists', null, 'present']]);
  const adopted = nodeDrift({ node: 'cp-a', applied, current: desired(V1, KEY1), facts: withOld(false) });
  assert.equal(adopted.items, []);
});

test('without the applied commit, the inventory digests still label the drift', () => {
  const withDigest = { ...inventory, resources: { ...inventory.resources, 'File/conf': { kind: 'File', target: '/etc/app.conf', sha256: sha256(V1), mode: '0644' } } };
  const gitChanged = nodeDrift({ node: 'cp-a', applied: null, current: desired(V2, KEY1), facts: nodeFacts({ inventory: withDigest }) });
  assert.equal(fields(gitChanged.items), ['intentional File/conf content']);
  const nodeChanged = nodeDrift({ node: 'cp-a', applied: null, current: desired(V1, KEY1), facts: nodeFacts({ inventory: withDigest, paths: { '/etc/app.conf': { bytes: 'edited\n' }, '/etc/app.key': { bytes: KEY1, mode: '0600' } } }) });
  assert.equal(fields(nodeChanged.items), ['corrective File/conf content']);
});

test('the report: nodes in order, unreachable kept, counts', () => {
  const report = buildDriftReport({
    commit: 'c2',
    now: '2024-05-02T00:00:00.000Z',
    nodes: [
      { node: 'cp-b', applied: desired(V1, KEY1), current: desired(V2, KEY1), facts: nodeFacts() },
      { node: 'cp-c', applied: null, current: desired(V1, KEY1), facts: { error: 'timeout' } },
      { node: 'cp-a', applied: desired(V1, KEY1), current: desired(V1, KEY1), facts: nodeFacts({ units: { 'app.service': { active: false, enabled: true } } }) },
    ],
  });
  assert.equal(report.nodes.map((n) => [n.node, n.reachable, n.items.length]), [['cp-a', true, 1], ['cp-b', true, 1], ['cp-c', false, 0]]);
  assert.is(report.nodes[2]!.error, 'timeout');
  assert.equal(report.counts, { corrective: 1, intentional: 1 });
  assert.is(driftCount(report), 2);
  assert.is(report.commit, 'c2');
  assert.is(report.createdAt, '2024-05-02T00:00:00.000Z');
});

test.run();
