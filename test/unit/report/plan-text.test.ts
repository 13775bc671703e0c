// The text of `converge plan`, checked exactly on a small plan, and the
// promise that a secret's content and digest never reach the output.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderPlanText, useColor, summaryLine } from '../../../src/report/plan-text.js';
import { planToJson, assertNoSecretText, SecretLeakError } from '../../../src/report/plan-json.js';
import { buildPlan } from '../../../src/plan/plan.js';
import type { Plan } from '../../../src/plan/types.js';
import { etcd, facts, node, sha256 } from '../plan/kit.js';

const OLD_ENV = 'ETCD_NAME=cp-a\nETCD_LISTEN_CLIENT_URLS=https://0.0.0.0:2379\nETCD_DATA_DIR=/var/lib/etcd\n';
const NEW_ENV = 'ETCD_NAME=cp-a\nETCD_LISTEN_CLIENT_URLS=https://10.240.16.10:2379\nETCD_DATA_DIR=/var/lib/etcd\n';
const SHA_A = 'a'.repeat(64);
const SHA_B = 'b'.repeat(64);
const SHA_S1 = 'c0ffee'.repeat(10) + 'c0ff';
const SHA_S2 = 'deadbeef'.repeat(8);

const small: Plan = {
  format: 1,
  commit: '0123456789abcdef0123456789abcdef01234567',
  createdAt: '2024-05-01T10:00:00.000Z',
  factsDigest: 'f'.repeat(64),
  nodes: [
    {
      node: 'cp-a',
      reachable: true,
      actions: [
        { node: 'cp-a', resource: 'File/etcd-env', type: 'file.write', path: '/etc/etcd/etcd.env', owner: 'etcd', group: 'etcd', mode: '0644', contentKind: 'text', sha256: sha256(NEW_ENV), size: NEW_ENV.length, oldSha256: sha256(OLD_ENV), oldText: OLD_ENV, newText: NEW_ENV, reason: 'content differs' },
        { node: 'cp-a', resource: 'File/etcd-binary', type: 'file.write', path: '/usr/local/bin/etcd', owner: 'root', group: 'root', mode: '0755', contentKind: 'artifact', sha256: SHA_B, size: 23_000_000, oldSha256: SHA_A, reason: 'content differs' },
        { node: 'cp-a', resource: 'File/etcd-key', type: 'file.write', path: '/etc/etcd/pki/server-key.pem', owner: 'etcd', group: 'etcd', mode: '0600', contentKind: 'secret', sha256: SHA_S2, size: 1704, oldSha256: SHA_S1, reason: 'content differs' },
        { node: 'cp-a', resource: 'Directory/etcd-config', type: 'path.chmod', path: '/etc/etcd', mode: '0750', from: '0755', reason: 'mode 0755, want 0750' },
        { node: 'cp-a', resource: 'Service/metrics', type: 'service.restart', unit: 'metrics.service', because: ['/etc/metrics.yaml'], reason: '/etc/metrics.yaml changed' },
        { node: 'cp-a', resource: 'File/old', type: 'path.remove', path: '/etc/etcd/old.conf', pathType: 'file', reason: 'no longer in the desired state (created by converge at 89abcdef0123)' },
      ],
      reported: [{ node: 'cp-a', resource: 'File/motd', field: 'mode', want: '0644', have: '0600' }],
      firstRemoval: 5,
    },
    { node: 'cp-b', reachable: true, actions: [], reported: [] },
    { node: 'cp-c', reachable: false, error: 'connect ECONNREFUSED 10.240.80.10:22', actions: [], reported: [] },
  ],
  etcd: [
    { node: 'cp-b', resource: 'EtcdCluster/main', type: 'etcd.member.restart', name: 'cp-b', unit: 'etcd.service', because: ['/etc/etcd/etcd.env'], reason: 'follower first' },
    { node: 'cp-a', resource: 'EtcdCluster/main', type: 'etcd.leader.move', fromMemberId: '10276657743932975437', toMemberId: '5789012345678901234', reason: 'cp-a is the leader: restart it last' },
    { node: 'cp-a', resource: 'EtcdCluster/main', type: 'etcd.member.restart', name: 'cp-a', unit: 'etcd.service', because: ['/etc/etcd/etcd.env'], reason: '' },
  ],
  refusals: [],
};

const EXPECTED = `cp-a: 6 changes
  ~ write /etc/etcd/etcd.env (etcd:etcd 0644)  content differs
      --- /etc/etcd/etcd.env
      +++ /etc/etcd/etcd.env
      @@ -1,3 +1,3 @@
       ETCD_NAME=cp-a
      -ETCD_LISTEN_CLIENT_URLS=https://0.0.0.0:2379
      +ETCD_LISTEN_CLIENT_URLS=https://10.240.16.10:2379
       ETCD_DATA_DIR=/var/lib/etcd
  ~ write /usr/local/bin/etcd (root:root 0755)  content differs
      sha256 aaaaaaaaaaaa… → bbbbbbbbbbbb…, 21.9 MiB
  ~ write /etc/etcd/pki/server-key.pem (etcd:etcd 0600)  content differs
      (secret changed)
  ~ chmod 0750 /etc/etcd  mode 0755, want 0750
  ~ restart metrics.service  /etc/metrics.yaml changed
  - remove /etc/etcd/old.conf  no longer in the desired state (created by converge at 89abcdef0123)
  reported, not changed:
    ? File/motd mode: want 0644, have 0600

cp-b: no changes

cp-c: unreachable: connect ECONNREFUSED 10.240.80.10:22

etcd:
  1. restart cp-b: /etc/etcd/etcd.env changed  follower first
  2. move leadership from 10276657743932975437 to 5789012345678901234  cp-a is the leader: restart it last
  3. restart cp-a: /etc/etcd/etcd.env changed

Plan: 9 to change on 2 nodes (1 node unreachable; 1 difference reported, not changed)
`;

test('a small plan renders exactly, with a unified diff, digests and a redacted secret', () => {
  assert.fixture(renderPlanText(small), EXPECTED);
});

test('the secret line carries neither digest', () => {
  const text = renderPlanText(small);
  assert.not.ok(text.includes(SHA_S1.slice(0, 12)));
  assert.not.ok(text.includes(SHA_S2.slice(0, 12)));
});

test('no changes: the commit is named', () => {
  const plan: Plan = { ...small, nodes: [{ node: 'cp-a', reachable: true, actions: [], reported: [] }], etcd: [] };
  assert.is(renderPlanText(plan), 'cp-a: no changes\n\nNo changes. The nodes match the desired state at 0123456789ab.\n');
});

test('no changes but a node unreachable is not called a match', () => {
  const plan: Plan = { ...small, nodes: [small.nodes[2]!], etcd: [] };
  assert.is(summaryLine(plan), 'No changes on the nodes that could be planned (1 node unreachable)');
});

test('one change on one node is singular; refusals are listed and counted', () => {
  const plan: Plan = {
    ...small,
    nodes: [
      {
        node: 'cp-a',
        reachable: true,
        actions: [{ node: 'cp-a', resource: 'Service/etcd', type: 'service.enable', unit: 'etcd.service', reason: 'unit file state disabled, want enabled' }],
        reported: [],
        refusals: [{ resource: 'File/env', path: '/etc/etcd/etcd.env', message: 'cp-a: /etc/etcd/etcd.env: is a symlink', hint: 'remove it' }],
        error: 'cp-a: /etc/etcd/etcd.env: is a symlink',
      },
    ],
    etcd: [],
    refusals: [{ message: 'removing cp-b and cp-c would leave 1 of 3 voters', hint: 'remove one member per commit' }],
  };
  assert.is(
    renderPlanText(plan),
    [
      'cp-a: 1 change',
      '  ~ enable etcd.service  unit file state disabled, want enabled',
      '  refused:',
      '    ! cp-a: /etc/etcd/etcd.env: is a symlink',
      '      hint: remove it',
      '',
      'Refused:',
      '  ! removing cp-b and cp-c would leave 1 of 3 voters',
      '    hint: remove one member per commit',
      '',
      'Plan: 1 to change on 1 node (2 changes refused)',
      '',
    ].join('\n'),
  );
});

test('a new text file diffs against /dev/null, an empty one says so, a big one shows digests', () => {
  const plan: Plan = {
    ...small,
    etcd: [],
    nodes: [
      {
        node: 'cp-a',
        reachable: true,
        reported: [],
        actions: [
          { node: 'cp-a', resource: 'File/a', type: 'file.write', path: '/etc/a', owner: 'root', group: 'root', mode: '0644', contentKind: 'text', sha256: sha256('x\n'), size: 2, oldSha256: null, newText: 'x\n', reason: 'missing' },
          { node: 'cp-a', resource: 'File/b', type: 'file.write', path: '/etc/b', owner: 'root', group: 'root', mode: '0644', contentKind: 'text', sha256: sha256(''), size: 0, oldSha256: null, newText: '', reason: 'missing' },
          { node: 'cp-a', resource: 'File/c', type: 'file.write', path: '/etc/c', owner: 'root', group: 'root', mode: '0644', contentKind: 'text', sha256: SHA_B, size: 100_000, oldSha256: SHA_A, reason: 'content differs' },
        ],
      },
    ],
  };
  const text = renderPlanText(plan);
  assert.ok(text.includes('  + write /etc/a (root:root 0644)  missing\n      --- /dev/null\n      +++ /etc/a\n      @@ -0,0 +1,1 @@\n      +x\n'), text);
  assert.ok(text.includes('  + write /etc/b (root:root 0644)  missing\n      (empty file)\n'), text);
  assert.ok(text.includes('  ~ write /etc/c (root:root 0644)  content differs\n      sha256 aaaaaaaaaaaa… → bbbbbbbbbbbb…, 97.7 KiB\n'), text);
});

test('colour only when asked, and then on signs and diff lines', () => {
  assert.not.ok(renderPlanText(small).includes('\u001b['));
  const coloured = renderPlanText(small, { color: true });
  assert.ok(coloured.includes('\u001b[33m~\u001b[0m write /etc/etcd/etcd.env'));
  assert.ok(coloured.includes('\u001b[31m-ETCD_LISTEN_CLIENT_URLS=https://0.0.0.0:2379\u001b[0m'));
  assert.ok(coloured.includes('\u001b[32m+ETCD_LISTEN_CLIENT_URLS=https://10.240.16.10:2379\u001b[0m'));
  assert.is(coloured.replace(/\u001b\[\d+m/g, ''), EXPECTED);
});

test('useColor: a terminal without NO_COLOR and not dumb', () => {
  assert.ok(useColor({ isTTY: true }, {}));
  assert.not.ok(useColor({ isTTY: false }, {}));
  assert.not.ok(useColor({}, {}));
  assert.not.ok(useColor({ isTTY: true }, { NO_COLOR: '1' }));
  assert.ok(useColor({ isTTY: true }, { NO_COLOR: '' }));
  assert.not.ok(useColor({ isTTY: true }, { TERM: 'dumb' }));
});

test('planToJson is the Plan itself and round-trips', () => {
  assert.equal(JSON.parse(planToJson(small)), small);
});

test('planToJson refuses a plan that carries the text of a secret', () => {
  const leaky = structuredClone(small);
  const write = leaky.nodes[0]!.actions[2]!;
  assert.is(write.type, 'file.write');
  (write as { oldText?: string }).oldText = 'SECRET-MARKER';
  assert.throws(() => planToJson(leaky), (e: unknown) => e instanceof SecretLeakError && !String((e as Error).message).includes('SECRET-MARKER'));
  assert.throws(() => assertNoSecretText(leaky), (e: unknown) => e instanceof SecretLeakError);
});

test('secret markers from desired content and from facts never reach the plan, its JSON or its text', () => {
  const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/plan');
  const fx = JSON.parse(readFileSync(join(dir, 'secret-changed.json'), 'utf8'));
  const desired = node(fx.desired);
  // As if a resolver bug had left the secret's text in its ContentRef.
  const key = desired.files.find((f) => f.content?.kind === 'secret')!;
  Object.assign(key.content!, { text: 'SECRET-MARKER-from-content' });
  const nodeFacts = facts(fx.facts, desired.name);
  const factsText = (nodeFacts.paths['/etc/etcd/pki/server-key.pem'] as { text?: string }).text ?? '';
  assert.ok(factsText.includes('OLD-SECRET-MARKER'), 'the fixture gives the facts a secret text');
  const plan = buildPlan({ state: { root: '/x', commit: null, nodes: [desired], etcd: etcd(fx.etcd) }, facts: { [desired.name]: nodeFacts }, factsDigest: 'd', now: 'n' });
  const outputs = [planToJson(plan), renderPlanText(plan), renderPlanText(plan, { color: true })];
  const secretDigests = [key.content!.sha256!, nodeFacts.paths['/etc/etcd/pki/server-key.pem']!.exists ? (nodeFacts.paths['/etc/etcd/pki/server-key.pem'] as { sha256: string }).sha256 : ''];
  for (const out of outputs) {
    assert.not.ok(out.includes('SECRET-MARKER'), 'no secret text');
    assert.not.ok(out.includes('PRIVATE KEY'), 'no secret text');
  }
  for (const out of outputs.slice(1)) for (const d of secretDigests) assert.not.ok(out.includes(d.slice(0, 12)), 'the text shows no digest of a secret');
  assert.ok(outputs[1]!.includes('(secret changed)'));
});

test.run();
