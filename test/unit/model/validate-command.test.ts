// `converge validate`: what it prints and what it returns.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { validateCommand } from '../../../src/cli/validate.js';
import { memorySource } from '../../../src/model/index.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

async function run(root: string, json = false): Promise<{ code: number; out: string }> {
  let out = '';
  const code = await validateCommand({ root, json, out: (s) => (out += s) });
  return { code, out };
}

test('the example is valid: exit 0 and a one-line summary', async () => {
  const r = await run(join(repo, 'desired-state'));
  assert.is(r.code, 0);
  assert.is(r.out, 'valid: 3 nodes, 54 resources, etcd cluster main with 3 members\n');
});

test('an invalid root: exit 1, every located error, then the summary', async () => {
  const r = await run(join(repo, 'test/fixtures/model/dangling-reference'));
  assert.is(r.code, 1);
  assert.is(
    r.out,
    'files.yaml:7:10: File/site: spec.owner "nginx" is not a declared User (declare a User named nginx, or use root)\n' +
      'files.yaml:9:14: File/site: spec.restarts[0]: no Service named "nginx" (restarts names Service resources (metadata.name), not units)\n' +
      'invalid: 2 error(s)\n',
  );
});

test('warnings are printed and counted; alone they keep the state valid', async () => {
  const mixed = await run(join(repo, 'test/fixtures/model/etcd-non-member'));
  assert.is(mixed.code, 1);
  assert.match(mixed.out, /^etcd\.yaml:6:3: warning: EtcdCluster\/main: a single-member etcd cluster has no fault tolerance/);
  assert.match(mixed.out, /\ninvalid: 3 error\(s\), 1 warning\(s\)\n$/);
  const even = await run(join(repo, 'test/fixtures/model/etcd-even-members'));
  assert.is(even.code, 0);
  assert.is(
    even.out,
    'etcd.yaml:6:3: warning: EtcdCluster/main: 2 members tolerate no more failures than 1 (use an odd number of members)\n' +
      'valid: 2 nodes, 2 resources, etcd cluster main with 2 members, 1 warning(s)\n',
  );
});

test('--json: machine-readable, same verdict', async () => {
  const bad = await run(join(repo, 'test/fixtures/model/bad-mode'), true);
  assert.is(bad.code, 1);
  const parsed = JSON.parse(bad.out) as { valid: boolean; errors: number; diagnostics: Array<{ file: string; line: number; col: number; resource: string; message: string }> };
  assert.is(parsed.valid, false);
  assert.is(parsed.errors, 1);
  assert.equal(parsed.diagnostics[0], { severity: 'error', file: 'files.yaml', line: 7, col: 9, resource: 'File/motd', message: 'spec.mode must be an octal mode string such as "0640"' });
  const good = await run(join(repo, 'desired-state'), true);
  assert.is(good.code, 0);
  assert.equal((JSON.parse(good.out) as { summary: { etcdMembers: string[] } }).summary.etcdMembers, ['cp-a', 'cp-b', 'cp-c']);
});

test('a FileSource root (files read at a commit) is named by its commit', async () => {
  const fixture = join(repo, 'test/fixtures/model/relative-path');
  const files = memorySource({ 'nodes.yaml': readFileSync(join(fixture, 'nodes.yaml')), 'files.yaml': readFileSync(join(fixture, 'files.yaml')) }, 'git:abc123');
  let out = '';
  const code = await validateCommand({ root: files, commit: 'abc123', json: false, out: (s) => (out += s) });
  assert.is(code, 1);
  assert.is(out, "files.yaml:6:9: File/motd: spec.path must be an absolute path (starting with '/')\ninvalid at commit abc123: 1 error(s)\n");
});

test('a root that does not exist is a ConfigError, not a crash', async () => {
  let err: unknown;
  await run(join(repo, 'no-such-dir')).catch((e: unknown) => (err = e));
  assert.is((err as { code?: string }).code, 'E_CONFIG');
});

test.run();
