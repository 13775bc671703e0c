// `converge drift` output in text, Markdown and JSON; secrets redacted in all three.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderDriftText, renderDriftMarkdown, driftToJson } from '../../../src/report/drift-text.js';
import type { DriftReport } from '../../../src/plan/drift.js';

const A = '1'.repeat(64);
const B = '2'.repeat(64);
const LEAKED = '9'.repeat(64);

const report: DriftReport = {
  commit: 'fedcba9876543210fedcba9876543210fedcba98',
  createdAt: '2024-05-02T00:00:00.000Z',
  counts: { corrective: 2, intentional: 2 },
  nodes: [
    {
      node: 'cp-a',
      reachable: true,
      appliedCommit: '0123456789abcdef0123456789abcdef01234567',
      appliedAt: '2024-05-01T10:00:00.000Z',
      items: [
        { node: 'cp-a', resource: 'File/etcd-env', kind: 'File', target: '/etc/etcd/etcd.env', field: 'mode', label: 'corrective', applied: '0644', desired: '0644', actual: '0666' },
        { node: 'cp-a', resource: 'File/etcd-env', kind: 'File', target: '/etc/etcd/etcd.env', field: 'content', label: 'intentional', applied: A, desired: B, actual: A },
        // A secret item that (by a bug) carries a digest: every renderer must hide it.
        { node: 'cp-a', resource: 'File/key', kind: 'File', target: '/etc/etcd/pki/server-key.pem', field: 'content', label: 'corrective', applied: '(secret)', desired: '(secret)', actual: LEAKED, secret: true },
        { node: 'cp-a', resource: 'File/old', kind: 'File', target: '/etc/a|b.conf', field: 'exists', label: 'intentional', applied: 'present', desired: null, actual: 'present' },
      ],
    },
    { node: 'cp-b', reachable: true, appliedCommit: null, appliedAt: null, items: [] },
    { node: 'cp-c', reachable: false, error: 'connect timeout', appliedCommit: null, appliedAt: null, items: [] },
  ],
};

test('text: one line per item, labelled, digests short, secret redacted', () => {
  assert.fixture(
    renderDriftText(report),
    [
      'cp-a (last applied 0123456789ab at 2024-05-01T10:00:00.000Z):',
      '  corrective   File/etcd-env /etc/etcd/etcd.env  mode: node has 0666, last applied 0644',
      '  intentional  File/etcd-env /etc/etcd/etcd.env  content: node has 111111111111…, current commit wants 222222222222…',
      '  corrective   File/key /etc/etcd/pki/server-key.pem  content: node has (secret), last applied (secret)',
      '  intentional  File/old /etc/a|b.conf  exists: node has present, current commit no longer declares it (to be removed)',
      'cp-b (never applied): no drift',
      'cp-c: unreachable: connect timeout',
      '',
      'Drift: 2 corrective, 2 intentional on 1 node (1 node unreachable)',
      '',
    ].join('\n'),
  );
});

test('markdown: a table per node, pipes escaped, secret redacted', () => {
  const md = renderDriftMarkdown(report);
  assert.ok(md.startsWith('## Drift at `fedcba987654`\n\n**Drift: 2 corrective, 2 intentional on 1 node (1 node unreachable)**\n'), md);
  assert.ok(md.includes('| corrective | File/etcd-env | `/etc/etcd/etcd.env` | mode | `0644` | `0644` | `0666` |'), md);
  assert.ok(md.includes('| intentional | File/old | `/etc/a\\|b.conf` | exists | `present` | `(not declared)` | `present` |'), md);
  assert.ok(md.includes('### cp-b\n\nNever applied.\n\nNo drift.'), md);
  assert.ok(md.includes('### cp-c\n\nUnreachable: connect timeout'), md);
  assert.not.ok(md.includes(LEAKED.slice(0, 12)));
});

test('json: the report itself, with secret items reduced to placeholders', () => {
  const parsed = JSON.parse(driftToJson(report)) as DriftReport;
  assert.is(parsed.nodes[0]!.items[2]!.actual, '(secret)');
  assert.is(parsed.nodes[0]!.items[1]!.applied, A, 'non-secret digests are kept whole for machines');
  assert.not.ok(driftToJson(report).includes(LEAKED));
  assert.equal(parsed.counts, report.counts);
});

test('no drift at all', () => {
  const clean: DriftReport = { ...report, counts: { corrective: 0, intentional: 0 }, nodes: [{ node: 'cp-a', reachable: true, appliedCommit: 'fedcba9876543210', appliedAt: null, items: [] }] };
  assert.is(renderDriftText(clean), 'cp-a (last applied fedcba987654): no drift\n\nNo drift. The nodes match what was last applied and fedcba987654 has nothing new to roll out.\n');
});

test('a drifted text file shows a unified diff from the node to what is wanted; a secret never does', () => {
  const item = { node: 'cp-a', resource: 'File/etcd-env', kind: 'File' as const, target: '/etc/etcd/etcd.env', field: 'content' as const, label: 'corrective' as const, applied: A, desired: A, actual: B, text: { have: 'A=1\nB=2\n', want: 'A=1\nB=3\n' } };
  const secret = { ...item, resource: 'File/key', target: '/etc/etcd/pki/server-key.pem', secret: true as const, applied: '(secret)', desired: '(secret)', actual: '(secret changed on the node)', text: { have: 'SECRET-HAVE', want: 'SECRET-WANT' } };
  const r: DriftReport = { commit: null, createdAt: 'x', counts: { corrective: 2, intentional: 0 }, nodes: [{ node: 'cp-a', reachable: true, appliedCommit: null, appliedAt: null, items: [item, secret] }] };
  const text = renderDriftText(r);
  assert.ok(text.includes('      --- /etc/etcd/etcd.env (node)\n      +++ /etc/etcd/etcd.env (wanted)\n'), text);
  assert.ok(text.includes('      -B=2\n      +B=3\n'), text);
  const md = renderDriftMarkdown(r);
  assert.ok(md.includes('```diff\n--- /etc/etcd/etcd.env (node)'), md);
  for (const out of [text, md, driftToJson(r)]) assert.not.ok(out.includes('SECRET-'), 'secret text rendered');
});

test.run();
