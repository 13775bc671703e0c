// The probe script itself, run for real with this machine's sh against temp
// files: values from the request are data, never code; the text-content and
// batching rules hold; a broken request is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecOptions, ExecResult, Transport } from '../../../src/connect/transport.js';
import { NodeError } from '../../../src/errors/index.js';
import { gatherNodeFacts, probeNode } from '../../../src/facts/gather.js';
import { parseProbeOutput } from '../../../src/facts/parse.js';
import { buildProbe, encodeRequest, MAX_TEXT_BYTES, ProbeRequestError, type ProbeRequest } from '../../../src/facts/probe.js';

const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const root = mkdtempSync(join(tmpdir(), 'converge-test-probe-'));
test.after(() => rmSync(root, { recursive: true, force: true }));

/** Runs scripts with the local sh, as sshd would with the login shell: a real run, not a stand-in. */
class LocalShell implements Transport {
  readonly node = 'local';
  execCount = 0;
  constructor(
    private readonly cwd: string,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}
  async exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    this.execCount++;
    const r = spawnSync('sh', ['-c', script], { input: opts.stdin as Buffer | string | undefined, cwd: this.cwd, env: this.env, maxBuffer: 64 * 1024 * 1024 });
    return { code: r.status ?? 255, stdout: r.stdout, stderr: r.stderr.toString() };
  }
  async close(): Promise<void> {}
}

const request = (over: Partial<ProbeRequest>): ProbeRequest => ({
  node: 'local',
  paths: [],
  textWanted: [],
  users: [],
  groups: [],
  units: [],
  listDirs: [],
  etcdDataDir: null,
  stateDir: join(root, 'state'),
  ...over,
});

test('the script is fixed: no request value ever appears in it', () => {
  const evil = ["/x/$(touch /tmp/pwned)", '/x/`id`', "/x/'; rm -rf / #", '/x/"$HOME"'];
  const p = buildProbe(request({ paths: evil, textWanted: [{ path: evil[0]!, sha256: '0'.repeat(64) }], users: ['$(id)'], units: ['`id`.service'], listDirs: [evil[1]!] }));
  const plain = buildProbe(request({}));
  assert.is(p.script, plain.script);
  for (const v of evil) assert.not.ok(p.script.includes(v));
  const lines = p.stdin.toString('latin1').split('\n');
  assert.is(lines.at(-1), '');
  assert.is(lines.at(-2), '.');
  for (const l of lines.slice(0, -2)) assert.match(l, /^[pwdan] [A-Za-z0-9+/]+={0,2}$/);
});

test('the request refuses what it cannot carry', () => {
  assert.throws(() => encodeRequest(request({ paths: ['relative/path'] })), (e: Error) => e instanceof ProbeRequestError && /not absolute/.test(e.message));
  assert.throws(() => encodeRequest(request({ paths: ['/a\0b'] })), /NUL/);
  assert.throws(() => encodeRequest(request({ users: [''] })), /empty/);
  assert.throws(() => encodeRequest(request({ textWanted: [{ path: '/a', sha256: 'nope' }] })), /not a sha256/);
  assert.throws(() => buildProbe(request({ stateDir: 'var/lib/converge' })), /not absolute/);
});

test('hostile names run nothing: no file is created anywhere, and each is reported literally', async () => {
  const dir = join(root, 'hostile');
  mkdirSync(dir);
  const names = ['$(touch pwned)', '`touch pwned2`', "'; touch pwned3; '", '"; touch pwned4; "', '$HOME', 'a\nb', 'tab\there', '\\back\\slash', '%s%n%d', '-exec touch pwned5 ;', '(', '!', 'é中😀'];
  for (const n of names) writeFileSync(join(dir, n), n);
  const t = new LocalShell(dir);
  const paths = names.map((n) => join(dir, n));
  const facts = await gatherNodeFacts(t, request({ paths, textWanted: paths.map((p) => ({ path: p, sha256: '0'.repeat(64) })), users: names, groups: names, units: [], listDirs: [dir] }));
  assert.is(t.execCount, 1);
  for (const [i, p] of paths.entries()) {
    const f = facts.paths[p];
    assert.ok(f && f.exists && f.type === 'file', JSON.stringify(p));
    if (f && f.exists) {
      assert.is(f.sha256, sha(names[i]!));
      assert.is(f.text, names[i]);
    }
  }
  assert.equal([...facts.dirListings[dir]!].sort(), [...paths].sort());
  assert.equal(Object.keys(facts.users), []);
  assert.equal(readdirSync(dir).sort(), [...names].sort());
  for (const p of ['pwned', 'pwned2', 'pwned3', 'pwned4', 'pwned5']) {
    assert.not.ok(existsSync(join(dir, p)) || existsSync(join('/tmp', p)) || existsSync(join('/', p)), `${p} was created`);
  }
});

test('text content: sent only for changed regular files up to 64 KiB', async () => {
  const dir = join(root, 'text');
  mkdirSync(dir);
  const exact = 'a'.repeat(MAX_TEXT_BYTES - 1) + '\n';
  writeFileSync(join(dir, 'exact'), exact);
  writeFileSync(join(dir, 'over'), `${exact}b`);
  writeFileSync(join(dir, 'same'), 'same\n');
  writeFileSync(join(dir, 'empty'), '');
  const want = (name: string, content: string) => ({ path: join(dir, name), sha256: sha(content) });
  const facts = await gatherNodeFacts(new LocalShell(dir), request({
    paths: ['exact', 'over', 'same', 'empty'].map((n) => join(dir, n)),
    textWanted: [want('exact', 'x'), want('over', 'x'), want('same', 'same\n'), want('empty', 'x')],
  }));
  const text = (n: string) => {
    const f = facts.paths[join(dir, n)];
    return f && f.exists ? f.text : 'missing';
  };
  assert.is(text('exact'), exact);
  assert.is(text('over'), undefined);
  assert.is(text('same'), undefined);
  assert.is(text('empty'), '');
});

test('thousands of paths: xargs batches, one exec, every path answered', async () => {
  const dir = join(root, 'many');
  mkdirSync(dir);
  const paths: string[] = [];
  for (let i = 0; i < 4000; i++) {
    const p = join(dir, `${'long-name-'.repeat(8)}${i}`);
    if (i % 2 === 0) writeFileSync(p, String(i));
    paths.push(p);
  }
  assert.ok(paths.join('').length > 256 * 1024, 'more than one xargs batch');
  const t = new LocalShell(dir);
  const { facts, stats } = await probeNode(t, request({ paths }));
  assert.is(t.execCount, 1);
  assert.is(Object.keys(facts.paths).length, paths.length);
  for (const [i, p] of paths.entries()) {
    const f = facts.paths[p]!;
    if (i % 2 === 0) assert.ok(f.exists && f.sha256 === sha(String(i)), p);
    else assert.equal(f, { exists: false });
  }
  assert.ok(stats.stdinBytes > 0 && stats.stdoutBytes > 0);
});

test('a truncated request is refused by the script, not half-answered', async () => {
  const p = buildProbe(request({ paths: ['/etc/hostname'] }));
  const cut = p.stdin.subarray(0, p.stdin.length - 2);
  const r = await new LocalShell(root).exec(p.script, { stdin: cut });
  assert.is(r.code, 91);
  assert.match(r.stderr, /malformed or truncated request/);
  const junk = await new LocalShell(root).exec(p.script, { stdin: 'p not-base64!\n.\n' });
  assert.is(junk.code, 91);
});

test('gatherNodeFacts turns a failed probe into E_REMOTE naming the node', async () => {
  const broken: Transport = {
    node: 'n9',
    execCount: 0,
    exec: async () => ({ code: 127, stdout: Buffer.alloc(0), stderr: 'sh: 1: find: not found\n' }),
    close: async () => undefined,
  };
  try {
    await gatherNodeFacts(broken, request({ node: 'n9' }));
    assert.unreachable();
  } catch (e) {
    assert.instance(e, NodeError);
    assert.is((e as NodeError).code, 'E_REMOTE');
    assert.is((e as NodeError).message, 'n9: gathering facts failed (exit code 127): sh: 1: find: not found');
  }
});

test('the probe leaves no temporary files behind, also when it fails', async () => {
  const tmp = join(root, 'tmpdir');
  mkdirSync(tmp);
  const t = new LocalShell(root, { ...process.env, TMPDIR: tmp });
  // listing TMPDIR shows the probe its own working directory: it is there while it runs
  const during = await gatherNodeFacts(t, request({ paths: ['/etc/hostname'], users: ['root'], listDirs: [tmp] }));
  assert.is(during.dirListings[tmp]!.filter((p) => /\/converge-probe\.[A-Za-z0-9]{8}$/.test(p)).length, 1);
  const p = buildProbe(request({}));
  assert.is((await t.exec(p.script, { stdin: 'garbage\n' })).code, 91);
  assert.is((await t.exec(p.script, { stdin: p.stdin })).code, 0);
  assert.equal(readdirSync(tmp), []);
});

test('the parse of a local run equals a fresh run: the probe is deterministic', async () => {
  const dir = join(root, 'det');
  mkdirSync(dir);
  writeFileSync(join(dir, 'f'), 'x');
  const req = request({ paths: [join(dir, 'f'), join(dir, 'g')], listDirs: [dir], users: ['root'], groups: ['root'] });
  const t = new LocalShell(dir);
  const a = (await t.exec(buildProbe(req).script, { stdin: buildProbe(req).stdin })).stdout;
  const b = (await t.exec(buildProbe(req).script, { stdin: buildProbe(req).stdin })).stdout;
  // Which files count as settled for the digest cache depends on when the probe ran, by design.
  const bare = (out: Buffer) => {
    const f = parseProbeOutput(req, out);
    assert.ok(f.digestCache);
    return { ...f, digestCache: { ...f.digestCache, keys: {} } };
  };
  assert.equal(bare(a), bare(b));
});

test.run();
