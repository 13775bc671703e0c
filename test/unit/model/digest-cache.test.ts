// The bastion's cache of artifact digests (model/digest.ts), on real files:
// a digest is reused only while stat(2) says the file is the same one,
// unchanged, and only once it has settled.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { JsonDigestCache, hashFile, type FileDigest } from '../../../src/model/digest.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

let dir = '';
test.before.each(() => {
  dir = mkdtempSync('/tmp/converge-test-digests-');
});
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

/** A cache in memory that records what was asked and kept. */
function memory(): { cache: { get(k: string): FileDigest | undefined; set(k: string, d: FileDigest): void }; map: Map<string, FileDigest> } {
  const map = new Map<string, FileDigest>();
  return { cache: { get: (k) => map.get(k), set: (k, d) => void map.set(k, d) }, map };
}

test('a settled file is hashed once; the kept digest is what later runs answer', async () => {
  const f = join(dir, 'etcd');
  writeFileSync(f, 'binary v1\n');
  await sleep(1100);
  const m = memory();
  assert.equal(await hashFile(f, m.cache), { sha256: sha('binary v1\n'), size: 10 });
  assert.is(m.map.size, 1);
  const [key] = [...m.map.keys()];
  // Plant another digest under the same key: it is answered, so the cache is read, not bypassed.
  m.map.set(key!, { sha256: 'f'.repeat(64), size: 10 });
  assert.equal(await hashFile(f, m.cache), { sha256: 'f'.repeat(64), size: 10 });
});

test('a same-size edit with the mtime put back is hashed again: the ctime moved', async () => {
  const f = join(dir, 'etcd');
  writeFileSync(f, 'binary v1\n');
  await sleep(1100);
  const m = memory();
  await hashFile(f, m.cache);
  const before = statSync(f, { bigint: true });
  writeFileSync(f, 'binary v2\n');
  const ns = before.mtimeNs;
  execFileSync('touch', ['-m', '-d', `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`, f]);
  assert.is(statSync(f, { bigint: true }).mtimeNs, ns, 'the mtime is put back to the nanosecond');
  assert.equal(await hashFile(f, m.cache), { sha256: sha('binary v2\n'), size: 10 });
});

test('a file changed less than a second ago is not kept; a missing one is null', async () => {
  const f = join(dir, 'fresh');
  writeFileSync(f, 'still being written');
  const m = memory();
  assert.equal(await hashFile(f, m.cache), { sha256: sha('still being written'), size: 19 });
  assert.is(m.map.size, 0);
  assert.is(await hashFile(join(dir, 'missing'), m.cache), null);
});

test('the JSON cache keeps only the entries this run used, ignores a garbled file, and is private', async () => {
  const file = join(dir, 'cache', 'artifact-digests.json');
  const d = { sha256: 'a'.repeat(64), size: 3 };
  const first = await JsonDigestCache.open(file);
  first.set('k1', d);
  first.set('k2', { ...d, sha256: 'b'.repeat(64) });
  await first.save();
  assert.is(statSync(file).mode & 0o777, 0o600);
  const second = await JsonDigestCache.open(file);
  assert.equal(second.get('k1'), d);
  await second.save();
  assert.equal(Object.keys(JSON.parse(readFileSync(file, 'utf8'))), ['k1'], 'k2 was not used: dropped');
  writeFileSync(file, '{not json');
  const garbled = await JsonDigestCache.open(file);
  assert.is(garbled.get('k1'), undefined);
  writeFileSync(file, JSON.stringify({ k1: { sha256: 'not a digest', size: 3 } }));
  assert.is((await JsonDigestCache.open(file)).get('k1'), undefined);
});

test.run();
