// The probe's output parser against real recorded outputs (see
// test/fixtures/facts/record.ts): every case folder is one test, and the
// hostile cases are checked field by field as well.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NodeError } from '../../../src/errors/index.js';
import { parseProbeOutput } from '../../../src/facts/parse.js';
import type { ProbeRequest } from '../../../src/facts/probe.js';
import type { NodeFacts, PathFact } from '../../../src/facts/types.js';

const createSha = (s: string): string => createHash('sha256').update(s).digest('hex');
const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/facts');

interface Case {
  name: string;
  request: ProbeRequest;
  stdout: Buffer;
  facts?: NodeFacts;
  error?: { code: string; message: string };
}

function load(name: string): Case {
  const dir = join(fixtures, name);
  const json = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8'));
  return {
    name,
    request: json('request.json'),
    stdout: readFileSync(join(dir, 'stdout.bin')),
    ...(existsSync(join(dir, 'facts.json')) ? { facts: json('facts.json') } : {}),
    ...(existsSync(join(dir, 'error.json')) ? { error: json('error.json') } : {}),
  };
}

const cases = readdirSync(fixtures, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => load(d.name));

test('the fixtures are there', () => {
  assert.ok(cases.length >= 5);
  assert.ok(cases.some((c) => c.name.startsWith('lab-')), 'at least one output recorded on a lab node');
});

function parseError(c: Case, stdout = c.stdout): NodeError {
  try {
    parseProbeOutput(c.request, stdout);
  } catch (e) {
    assert.instance(e, NodeError);
    return e as NodeError;
  }
  throw new Error(`${c.name}: no error`);
}

for (const c of cases) {
  test(`fixture ${c.name}`, () => {
    if (c.error) {
      const e = parseError(c);
      assert.is(e.code, c.error.code);
      assert.is(e.message, c.error.message);
      assert.is(e.node, c.request.node);
    } else {
      assert.equal(parseProbeOutput(c.request, c.stdout), c.facts);
    }
  });
}

const file = (f: PathFact | undefined) => {
  assert.ok(f && f.exists, 'exists');
  return f as Extract<PathFact, { exists: true }>;
};

for (const name of ['local-hostile', 'lab-cp-a']) {
  test(`${name}: hostile names are reported literally, with their content digest`, () => {
    const c = load(name);
    const facts = parseProbeOutput(c.request, c.stdout);
    const hostile = c.request.paths.filter((p) => /[ '"$`;&|*\n\u00e9]|^-rf$/.test(p.slice(p.lastIndexOf('/') + 1)));
    assert.ok(hostile.length >= 9, `${hostile.length} hostile names`);
    for (const p of hostile) {
      const f = file(facts.paths[p]);
      assert.is(f.type, 'file', p);
      const base = p.slice(p.lastIndexOf('/') + 1);
      assert.is(f.sha256, createSha(`content of ${base}\n`), p);
      assert.is(f.size, Buffer.byteLength(`content of ${base}\n`), p);
    }
    const dir = c.request.listDirs[0]!;
    for (const p of hostile) assert.ok(facts.dirListings[dir]!.includes(p), `listing has ${JSON.stringify(p)}`);
  });
}

test('local-hostile: lstat semantics, modes, unnamed owners, text content rules', () => {
  const c = load('local-hostile');
  const f = parseProbeOutput(c.request, c.stdout);
  const R = '/tmp/converge-test-fixture';
  const link = file(f.paths[`${R}/etc/link-to-dir`]);
  assert.equal([link.type, link.target, link.sha256], ['symlink', '/etc', undefined]);
  const orphan = file(f.paths[`${R}/etc/orphan`]);
  assert.equal([orphan.owner, orphan.group, orphan.uid, orphan.gid, orphan.mode], ['12345', '12346', 12345, 12346, '4750']);
  assert.is(file(f.paths[`${R}/etc/sticky`]).mode, '1777');
  assert.is(file(f.paths[`${R}/etc/app/pipe`]).type, 'other');
  assert.equal(f.paths[`${R}/etc/missing`], { exists: false });
  // text: differs and small → sent; equal → not sent; too big, not UTF-8, symlink → never
  assert.is(file(f.paths[`${R}/etc/app/a b.conf`]).text, 'content of a b.conf\n');
  assert.is(file(f.paths[`${R}/etc/app/é中😀.txt`]).text, 'content of é中😀.txt\n');
  assert.is(file(f.paths[`${R}/etc/app/it's "quoted".conf`]).text, undefined);
  assert.is(file(f.paths[`${R}/etc/over64k.txt`]).text, undefined);
  assert.is(file(f.paths[`${R}/etc/over64k.txt`]).size, 65537);
  assert.is(file(f.paths[`${R}/etc/binary.bin`]).text, undefined);
  assert.is(file(f.paths[`${R}/etc/app/link`]).text, undefined);
});

test('local-hostile: managed paths from the node are stat-ed; junk lines in managed-paths are ignored', () => {
  const c = load('local-hostile');
  const f = parseProbeOutput(c.request, c.stdout);
  const R = '/tmp/converge-test-fixture';
  assert.ok(!c.request.paths.includes(`${R}/etc/old.conf`));
  assert.is(file(f.paths[`${R}/etc/old.conf`]).sha256, createSha('managed before\n'));
  assert.equal(f.paths[`${R}/etc/gone.conf`], { exists: false });
  assert.is(file(f.paths[`${R}/etc/app/new\nline`]).type, 'file');
  assert.not.ok(Object.keys(f.paths).some((p) => !p.startsWith('/')));
  // a managed directory no longer requested is listed (its whole tree); a requested one is not
  assert.equal(f.dirListings[`${R}/etc/olddir`], [`${R}/etc/olddir/nested`, `${R}/etc/olddir/nested/leftover`]);
  assert.is(file(f.paths[`${R}/etc/olddir/nested`]).type, 'dir');
  assert.not.ok(`${R}/etc/sticky` in f.dirListings);
  assert.is(f.inventory?.commit, '0123456789abcdef0123456789abcdef01234567');
  assert.equal(Object.keys(f.inventory?.resources ?? {}), ['File/old', 'File/gone', 'Service/x']);
});

test('local-hostile: accounts are the requested names only, with supplementary groups', () => {
  const c = load('local-hostile');
  const f = parseProbeOutput(c.request, c.stdout);
  // "0" is answered by getent as uid 0 (root): it must not become a user named "0"
  assert.equal(Object.keys(f.users).sort(), ['nobody', 'postgres', 'root']);
  assert.equal(Object.keys(f.groups).sort(), ['nogroup', 'root', 'ssl-cert']);
  assert.equal(f.users['nobody'], { name: 'nobody', uid: 65534, gid: 65534, group: 'nogroup', groups: [], home: '/nonexistent', shell: '/usr/sbin/nologin' });
  assert.equal(f.users['postgres']?.groups, ['ssl-cert']);
  assert.equal(f.groups['ssl-cert']?.members, ['postgres']);
  assert.equal(f.etcdDataDir, { path: `/tmp/converge-test-fixture/var/lib/etcd`, exists: true, empty: false });
  assert.equal(f.dirListings['/tmp/converge-test-fixture/etc/nolist'], []);
});

test('lab-cp-a: units, including an alias and a unit that does not exist', () => {
  const c = load('lab-cp-a');
  const f = parseProbeOutput(c.request, c.stdout);
  assert.equal(f.units['ssh.service'], { unit: 'ssh.service', loadState: 'loaded', activeState: 'active', unitFileState: 'enabled', needDaemonReload: false });
  assert.is(f.units['sshd.service']?.loadState, 'loaded');
  assert.equal(f.units['no-such-thing.service'], { unit: 'no-such-thing.service', loadState: 'not-found', activeState: 'inactive', unitFileState: '', needDaemonReload: false });
  assert.equal(Object.keys(f.units).sort(), [...c.request.units].sort());
  assert.is(file(f.paths['/tmp/converge-test-fixture-lab/dir']).mode, '2750');
  assert.is(file(f.paths['/tmp/converge-test-fixture-lab/dir']).group, 'nogroup');
});

test('lab-applied: the inventory and managed-paths that apply wrote are read back; no content for secrets', () => {
  const c = load('lab-applied');
  const f = parseProbeOutput(c.request, c.stdout);
  assert.ok(f.inventory && Object.keys(f.inventory.resources).length > 0);
  const targets = Object.values(f.inventory.resources).filter((e) => e.kind === 'File' || e.kind === 'Directory').map((e) => e.target);
  for (const p of targets) assert.ok(p in f.paths, p);
  const textPaths = new Set(c.request.textWanted.map((t) => t.path));
  for (const [p, fact] of Object.entries(f.paths)) if (fact.exists && fact.text !== undefined) assert.ok(textPaths.has(p), `text only for text files: ${p}`);
  assert.ok(textPaths.size > 0 && [...textPaths].every((p) => !p.endsWith('-key.pem')));
});

test('output cut short anywhere is refused, never half-parsed', () => {
  for (const c of cases.filter((x) => x.facts)) {
    const stdout = c.stdout;
    const cuts = new Set<number>([0, 1, stdout.length - 1, stdout.length - 2]);
    for (let i = stdout.indexOf(0); i !== -1; i = stdout.indexOf(0, i + 1)) {
      cuts.add(i);
      cuts.add(i + 1);
    }
    for (const n of cuts) {
      if (n >= stdout.length) continue;
      const e = parseError(c, stdout.subarray(0, n));
      assert.is(e.code, 'E_REMOTE', `${c.name} cut at ${n}`);
    }
  }
});

test('garbage, a wrong header and trailing bytes are refused', () => {
  const c = load('local-empty');
  assert.match(parseError(c, Buffer.from('hello')).message, /missing header/);
  assert.match(parseError(c, Buffer.from('converge-probe 0\0Z\0')).message, /missing header/);
  assert.match(parseError(c, Buffer.concat([c.stdout, Buffer.from('x')])).message, /cut short/);
  assert.match(parseError(c, Buffer.concat([c.stdout.subarray(0, c.stdout.length - 2), Buffer.from('Q\0Z\0')])).message, /unexpected token "Q"/);
});

test('a failed step reports the step, the exit code and the node', () => {
  const c = load('local-no-systemd');
  const e = parseError(c);
  assert.match(e.message, /^local: gathering facts failed at systemctl \(exit code \d+\): .*systemd/);
  assert.match(e.hint ?? '', /systemd must be running/);
});

test.run();
