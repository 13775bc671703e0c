// The digest cache: the probe, run for real with this machine's sh, answers a
// file's digest from the cache only when the file's key (dev, inode, size,
// mtime, ctime) is exactly the recorded one; anything else is hashed. What to
// record (digestCacheContent) is pure and tested over facts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { digestCacheContent, DIGEST_CACHE_NAME } from '../../../src/facts/digest-cache.js';
import { parseProbeOutput } from '../../../src/facts/parse.js';
import { buildProbe, SETTLE_MS, type ProbeRequest } from '../../../src/facts/probe.js';
import type { NodeFacts, PathFact } from '../../../src/facts/types.js';

const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const root = mkdtempSync(join(tmpdir(), 'converge-test-digests-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

const stateDir = join(root, 'state');
mkdirSync(stateDir);
const files = ['a', 'b', 'c'].map((n) => join(root, n));
const request: ProbeRequest = { node: 'local', paths: [...files, join(root, 'missing')], textWanted: [], users: [], groups: [], units: [], listDirs: [], etcdDataDir: null, stateDir };

function probe(settleMs?: number, req: ProbeRequest = request): NodeFacts {
  const { script, stdin } = buildProbe(req, settleMs);
  const r = spawnSync('sh', ['-c', script], { input: stdin, cwd: root, maxBuffer: 1 << 24 });
  assert.is(r.status, 0, r.stderr.toString());
  return parseProbeOutput(req, r.stdout);
}

const shaOf = (f: NodeFacts, p: string): string | undefined => {
  const x = f.paths[p];
  return x?.exists ? x.sha256 : undefined;
};

/** A cache as apply would write it: triples key, path, sha256. */
function writeCache(entries: [string, string, string][]): void {
  writeFileSync(join(stateDir, DIGEST_CACHE_NAME), entries.map((e) => e.join('\0') + '\0').join(''));
}

test('without a cache every regular file is hashed; a file gets its key once it has not changed for a second', async () => {
  for (const [i, f] of files.entries()) writeFileSync(f, `content ${i}`);
  // A settle time of a whole second, so that a slow start of the probe cannot make the files settled already.
  let f = probe(1000);
  for (const [i, p] of files.entries()) assert.is(shaOf(f, p), sha(`content ${i}`));
  assert.equal(f.digestCache!.keys, {}, 'just written: not settled, nothing to record');
  await new Promise((r) => setTimeout(r, 1100));
  f = probe(1000);
  assert.equal(Object.keys(f.digestCache!.keys).sort(), [...files].sort());
  for (const k of Object.values(f.digestCache!.keys)) assert.match(k, /^=\d+:\d+:\d+:\d+(\.\d+)?:\d+(\.\d+)?$/);
  assert.is(f.digestCache!.records, 0);
  assert.is(f.digestCache!.hits, 0);
});

test('with sub-second timestamps a file is settled once unchanged for SETTLE_MS; with whole-second ones, only after a second', async () => {
  // A filesystem that keeps whole seconds only: ext4 with 128-byte inodes, on a loop device.
  const img = join(root, 'coarse.img');
  const mnt = join(root, 'coarse');
  mkdirSync(mnt);
  const run = (cmd: string, args: string[]): void => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    assert.is(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  };
  run('truncate', ['-s', '8M', img]);
  run('mkfs.ext4', ['-q', '-F', '-I', '128', img]);
  run('mount', ['-o', 'loop', img, mnt]);
  try {
    const fine = join(root, 'fine');
    const coarse = join(mnt, 'coarse');
    const req: ProbeRequest = { ...request, paths: [fine, coarse] };
    // A whole-second ctime is the second the change fell in, and the file is rightly settled once
    // that second is over (no later change can share it). Written late in a second, it would be
    // settled within milliseconds; written at its start (past the kernel's coarse clock lag),
    // the second is still running at the first probe below.
    await sleep(1000 - (Date.now() % 1000) + 50);
    const second = Math.floor(Date.now() / 1000);
    writeFileSync(fine, 'fine');
    writeFileSync(coarse, 'coarse');
    const ctime = spawnSync('stat', ['-c', '%.9Z', coarse], { encoding: 'utf8' }).stdout.trim();
    assert.is(ctime, `${second}.000000000`, 'the loop filesystem keeps whole seconds, and the file was written in the second the test aimed at');
    await sleep(SETTLE_MS * 4);
    let f = probe(undefined, req);
    assert.equal(Object.keys(f.digestCache!.keys), [fine], `${SETTLE_MS * 4} ms later: only the file with sub-second timestamps`);
    assert.is(shaOf(f, coarse), sha('coarse'), 'hashed all the same');
    await sleep(1100);
    f = probe(undefined, req);
    assert.equal(Object.keys(f.digestCache!.keys).sort(), [coarse, fine].sort(), 'a second later: both');
  } finally {
    run('umount', [mnt]);
  }
});

test('a file whose key is the recorded one is answered from the cache, not read', () => {
  const keys = probe().digestCache!.keys;
  // A digest no file has: seen in the facts only if the cache answered.
  const planted = 'f'.repeat(64);
  writeCache([[keys[files[0]!]!, files[0]!, planted], [keys[files[1]!]!, files[1]!, sha('content 1')]]);
  const f = probe();
  assert.is(shaOf(f, files[0]!), planted);
  assert.is(shaOf(f, files[1]!), sha('content 1'));
  assert.is(shaOf(f, files[2]!), sha('content 2'));
  assert.is(f.digestCache!.records, 2);
  assert.is(f.digestCache!.hits, 2);
});

test('a change that keeps size and mtime still misses: the ctime moved', () => {
  const keys = probe().digestCache!.keys;
  writeCache([[keys[files[0]!]!, files[0]!, 'f'.repeat(64)]]);
  const stat = (): string[] => spawnSync('stat', ['-c', '%s|%y|%z', files[0]!], { encoding: 'utf8' }).stdout.trim().split('|');
  const before = stat();
  const ref = join(root, 'times');
  writeFileSync(ref, '');
  assert.is(spawnSync('touch', ['-r', files[0]!, ref]).status, 0);
  writeFileSync(files[0]!, 'CONTENT 0');
  assert.is(spawnSync('touch', ['-m', '-r', ref, files[0]!]).status, 0);
  const f = probe();
  const after = stat();
  assert.equal(after.slice(0, 2), before.slice(0, 2), 'same size and mtime, to the nanosecond');
  assert.is.not(after[2], before[2]);
  assert.is(shaOf(f, files[0]!), sha('CONTENT 0'));
  assert.is(f.digestCache!.hits, 0);
  assert.is(f.digestCache!.records, 1);
});

test('a cache for another path, or a garbled one, answers nothing', () => {
  const keys = probe().digestCache!.keys;
  writeCache([[keys[files[1]!]!, files[2]!, 'f'.repeat(64)]]);
  let f = probe();
  assert.is(shaOf(f, files[2]!), sha('content 2'));
  assert.is(f.digestCache!.hits, 0);
  writeFileSync(join(stateDir, DIGEST_CACHE_NAME), `${keys[files[1]!]}\0${files[1]}\0not-a-digest\0garbage\0\0\0`);
  f = probe();
  assert.is(shaOf(f, files[1]!), sha('content 1'));
  assert.is(f.digestCache!.records, 0);
  rmSync(join(stateDir, DIGEST_CACHE_NAME));
});

// ---- what apply records (pure) ----

const file = (sha256: string): PathFact => ({ exists: true, type: 'file', owner: 'root', group: 'root', uid: 0, gid: 0, mode: '0644', size: 1, sha256 });
const key = (ino: number, ctime: number): string => `=2049:${ino}:1:${ctime}.5:${ctime}.25`;

function facts(records: number, hits: number): Pick<NodeFacts, 'paths' | 'digestCache'> {
  return {
    paths: { '/old': file('1'.repeat(64)), '/new': file('2'.repeat(64)), '/gone': { exists: false } },
    // the probe gives keys only for settled files: '/new' changed under a second before it began
    digestCache: { records, hits, keys: { '/old': key(1, 1000), '/gone': key(3, 900) } },
  };
}

test('what is recorded: each settled regular file with its key and digest, in path order', () => {
  const out = digestCacheContent(facts(0, 0));
  assert.ok(out);
  assert.equal(out.toString().split('\0'), [key(1, 1000), '/old', '1'.repeat(64), '']);
  const both = digestCacheContent({ ...facts(0, 0), digestCache: { records: 0, hits: 0, keys: { '/old': key(1, 1000), '/new': key(2, 1500) } } });
  assert.equal(both!.toString().split('\0').filter((_, i) => i % 3 === 1), ['/new', '/old']);
});

test('a cache that already answered for every settled file is not written again', () => {
  assert.is(digestCacheContent(facts(1, 1)), null);
  // a record that no longer answers (a file changed or left the desired state): rewrite
  assert.ok(digestCacheContent(facts(2, 1)));
  // a settled file the cache did not know: rewrite
  assert.ok(digestCacheContent(facts(0, 0)));
  // no probe record of the cache: nothing to do
  assert.is(digestCacheContent({ paths: {} }), null);
});

test.run();
