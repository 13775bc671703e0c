// Hostile YAML is refused quickly and cheaply, with a located message.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { formatDiagnostic } from '../../../src/errors/index.js';
import { LIMITS, memorySource, validateDesiredState } from '../../../src/model/index.js';

const NODE = 'apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: cp-a\nspec:\n  address: 10.240.16.10\n';

/** The classic "billion laughs": 9 levels of 9 aliases, about 387 million strings expanded. */
function bomb(levels: number): string {
  let s = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
  for (let i = 1; i <= levels; i++) s += `l${i}: &l${i} [${Array(9).fill(`*l${i - 1}`).join(',')}]\n`;
  return s;
}

async function measure(files: Record<string, string>): Promise<{ ms: number; heapMB: number; lines: string[] }> {
  // Warm up (schema compilation) so that only the input is measured.
  await validateDesiredState(memorySource({ 'nodes.yaml': NODE }));
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const r = await validateDesiredState(memorySource(files));
  const ms = performance.now() - t0;
  const heapMB = (process.memoryUsage().heapUsed - heap0) / 1024 / 1024;
  return { ms, heapMB, lines: r.diagnostics.map(formatDiagnostic) };
}

test('a billion-laughs alias bomb is refused in well under a second', async () => {
  const m = await measure({ 'nodes.yaml': NODE, 'bomb.yaml': bomb(9) });
  assert.equal(m.lines, [
    'bomb.yaml:2:10: YAML aliases expand to more than 100 nodes: refused as a possible "billion laughs" attack (write the values out instead of nesting aliases)',
  ]);
  assert.ok(m.ms < 1000, `took ${m.ms.toFixed(1)} ms`);
  assert.ok(m.heapMB < 50, `heap grew ${m.heapMB.toFixed(1)} MB`);
});

test('deep flow nesting is refused before the parser sees it', async () => {
  const deep = `a: ${'['.repeat(200_000)}${']'.repeat(200_000)}\n`;
  const m = await measure({ 'nodes.yaml': NODE, 'deep.yaml': deep });
  assert.equal(m.lines, ['deep.yaml:1:67: YAML nesting deeper than 64 levels (flatten the document; desired state never needs this depth)']);
  assert.ok(m.ms < 1000, `took ${m.ms.toFixed(1)} ms`);
});

test('deep compact block nesting ("- - - …") is refused', async () => {
  const m = await measure({ 'nodes.yaml': NODE, 'deep.yaml': `a:\n  ${'- '.repeat(100_000)}x\n` });
  assert.equal(m.lines, ['deep.yaml:2:129: YAML nesting deeper than 64 levels (flatten the document; desired state never needs this depth)']);
  assert.ok(m.ms < 1000, `took ${m.ms.toFixed(1)} ms`);
});

test('deep indentation nesting is refused', async () => {
  const lines: string[] = [];
  for (let i = 0; i < 1000; i++) lines.push(`${' '.repeat(i)}k${i}:`);
  const m = await measure({ 'nodes.yaml': NODE, 'deep.yaml': lines.join('\n') + ' x\n' });
  assert.equal(m.lines, ['deep.yaml:65:65: YAML nesting deeper than 64 levels (flatten the document; desired state never needs this depth)']);
  assert.ok(m.ms < 1000, `took ${m.ms.toFixed(1)} ms`);
});

test('nesting up to the limit is accepted by the parser (then judged by the schema)', async () => {
  const ok = `${'['.repeat(LIMITS.maxDepth - 1)}${']'.repeat(LIMITS.maxDepth - 1)}`;
  const m = await measure({ 'nodes.yaml': NODE, 'x.yaml': `a: ${ok}\n` });
  assert.equal(m.lines, ['x.yaml:1:1: missing required field apiVersion (start every document with apiVersion: converge.dev/v1)', 'x.yaml:1:1: missing required field kind (kind is one of Node, Group, User, Directory, File, Service, EtcdCluster)']);
});

test('a file over the size limit is refused without parsing', async () => {
  const big = `# ${'x'.repeat(LIMITS.maxFileBytes)}\n`;
  const m = await measure({ 'nodes.yaml': NODE, 'big.yaml': big });
  assert.equal(m.lines, [`big.yaml:1:1: file is ${LIMITS.maxFileBytes + 3} bytes, larger than the limit of ${LIMITS.maxFileBytes} bytes (split it into several files)`]);
});

test('a few legitimate aliases are fine', async () => {
  const files = {
    'nodes.yaml': NODE,
    'files.yaml': [
      'apiVersion: converge.dev/v1',
      'kind: File',
      'metadata:',
      '  name: motd',
      'spec:',
      '  path: /etc/motd',
      '  content: hello',
      '  owner: &account root',
      '  group: *account',
      '  nodes: &controlPlane',
      '    names: [cp-a]',
      '  restarts: []',
      '',
    ].join('\n'),
  };
  const r = await validateDesiredState(memorySource(files));
  assert.equal(r.diagnostics, []);
  const f = r.state?.nodes[0]?.files[0];
  assert.is(f?.owner, 'root');
  assert.is(f?.group, 'root');
});

test.run();
