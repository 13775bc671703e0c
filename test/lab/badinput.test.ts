// Bad input, end to end: the built CLI against nodes this suite creates for
// itself (cp-f for host cases; bi-a, bi-b, bi-c for a three-member etcd
// cluster that converge bootstraps), never the shared cp-a..cp-e. Every case
// checks a clear message naming the file:line or the node, the documented
// exit code (validate 0/1, plan 0/2/1, apply 0/1), and that nothing was
// applied: no file anywhere on the node's disk changed (find -newer a marker),
// no /tmp/pwned on the node or here, the etcd member list unchanged. Each
// case's outcome goes to .converge/results/badinput.json, from which
// test/helpers/reliability-table.ts makes README's Reliability rows.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runArgvOnNode, runOnNode } from '../../src/lab/index.js';
import { signBody } from '../../src/daemon/webhook.js';
import { describe, output, runCli, startCli, type CliProcess, type CliResult } from '../helpers/cli.js';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';
import { writeResults, type CaseRecord } from '../helpers/reliability-table.js';

const NODE = 'cp-f';
const ETCD_NODES = ['bi-a', 'bi-b', 'bi-c'];
const SANDBOX = '/srv/converge-badinput';
const FIXTURES = join(projectDir, 'test', 'fixtures', 'badinput');
const MARKER = '/run/converge-badinput.marker';

let lab: TestLab;
let work: string;
const records: CaseRecord[] = [];

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

// ---- the nodes -------------------------------------------------------------

/** Run a script in a lab node (nsenter, no SSH: independent of converge and of its keys). */
async function onNode(node: string, script: string): Promise<string> {
  const r = await runOnNode(node, script);
  if (r.code !== 0) throw new Error(`${node}: ${script}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Remember "now" on the node: changedSince() lists every file modified after it. */
async function mark(node: string): Promise<void> {
  await onNode(node, `touch ${MARKER}`);
}

/**
 * Every path on the node's disk (and its /tmp) whose content or inode changed
 * since mark(): the strongest "nothing was applied" there is. journald's own
 * files are left out: it writes them whenever it likes.
 */
async function changedSince(node: string): Promise<string[]> {
  const out = await onNode(
    node,
    `find / /tmp -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /var/log/journal \\) -prune -o \\( -newer ${MARKER} -o -cnewer ${MARKER} \\) -print`,
  );
  // The facts probe works in a private mktemp -d under /tmp, which touches /tmp itself (not what is in it).
  return out.split('\n').filter((p) => p !== '' && p !== '/tmp').sort();
}

const VICTIM = '/srv/converge-badinput-victim';

/** Each node case starts from an empty sandbox, whatever an earlier (failed) case left. */
async function freshSandbox(): Promise<void> {
  await onNode(NODE, `rm -rf ${SANDBOX} ${VICTIM} /tmp/pwned /var/lib/converge; mkdir -p ${SANDBOX}`);
}

async function pwnedOn(node: string): Promise<boolean> {
  return (await onNode(node, 'if [ -e /tmp/pwned ]; then echo yes; else echo no; fi')).trim() === 'yes';
}

/** Nothing changed on `node` and no injected command ran, there or here. */
async function assertUntouched(node: string): Promise<string> {
  const changed = await changedSince(node);
  assert.equal(changed, [], `${node}: files changed although nothing may be applied:\n${changed.join('\n')}`);
  assert.not.ok(await pwnedOn(node), `${node}: /tmp/pwned exists: an injected command ran on the node`);
  assert.not.ok(existsSync('/tmp/pwned'), '/tmp/pwned exists here: an injected command ran on this machine');
  return `${node} unchanged (no file on its disk modified), no injected command ran`;
}

// ---- the desired state -------------------------------------------------------

/** A desired-state folder: _base/ (cp-f and a canary), then the case's own files, with cp-f's address filled in. */
function desired(fixture: string | null, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(work, `${fixture ?? 'case'}-`));
  cpSync(join(FIXTURES, '_base'), dir, { recursive: true });
  if (fixture) {
    for (const f of readdirSync(join(FIXTURES, fixture))) if (f !== 'case.json') cpSync(join(FIXTURES, fixture, f), join(dir, f), { recursive: true });
  }
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  const nodes = join(dir, 'nodes.yaml');
  writeFileSync(nodes, readFileSync(nodes, 'utf8').replace('@ADDRESS@', lab.node(NODE).address));
  return dir;
}

/** A desired state holding only `files` (and cp-f), no canary. */
function bare(files: Record<string, string>): string {
  const dir = desired(null, files);
  rmSync(join(dir, 'canary.yaml'));
  return dir;
}

/** A YAML document; JSON.stringify quotes every string so that any byte of a path survives. */
function doc(kind: string, name: string, spec: Record<string, unknown>): string {
  return `apiVersion: converge.dev/v1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec: ${JSON.stringify(spec)}\n---\n`;
}

interface ConnOptions {
  knownHosts?: string;
  sshKey?: string;
  extra?: string[];
}

/** Every setting as a flag: nothing comes from a config file or the environment. */
function conn(dir: string, o: ConnOptions = {}): string[] {
  return [
    '--repo', dir,
    '--secrets', lab.secretsDir,
    '--artifacts', lab.artifactsDir,
    '--ssh-key', o.sshKey ?? lab.sshKey,
    '--known-hosts', o.knownHosts ?? lab.knownHosts,
    '--skip-etcd',
    ...(o.extra ?? []),
  ];
}

// ---- checking the CLI's answers ------------------------------------------

function firstLine(r: CliResult, needle: string | RegExp): string {
  const lines = output(r).split('\n');
  const hit = lines.find((l) => (typeof needle === 'string' ? l.includes(needle) : needle.test(l)));
  return (hit ?? lines.find((l) => l.trim() !== '') ?? '').trim().replace(/^(! |error: |converge: )/, '');
}

/** Exit code as documented, the message present, no stack trace. */
function expectRefusal(r: CliResult, code: number, needle: string | RegExp): string {
  assert.is(r.code, code, describe(r));
  const text = output(r);
  const found = typeof needle === 'string' ? text.includes(needle) : needle.test(text);
  assert.ok(found, `the output must contain ${String(needle)}\n${describe(r)}`);
  assert.not.ok(/internal error|\n\s+at .+:\d+:\d+\)?\n/.test(text), `a user error must not print a stack trace\n${describe(r)}`);
  assert.not.ok(text.includes('\x1b'), `no raw escape sequence may reach the terminal\n${describe(r)}`);
  return firstLine(r, needle);
}

const clip = (s: string, n = 220): string => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const code = (s: string): string => `\`${clip(s).replace(/`/g, "'")}\``;

interface Outcome {
  did: string;
  lost: string;
  exits: Record<string, number | null>;
}

/** A test that records its case for the Reliability table, passed or not. */
function badCase(id: string, title: string, fn: () => Promise<Outcome>): void {
  test(title, async () => {
    const started = Date.now();
    try {
      const o = await fn();
      records.push({ suite: 'badinput', id, case: title, did: o.did, nothingLost: true, lostCheck: o.lost, exits: o.exits, ms: Date.now() - started, passed: true });
    } catch (e) {
      records.push({ suite: 'badinput', id, case: title, did: `FAILED: ${clip((e as Error).message.split('\n')[0] ?? '')}`, nothingLost: false, lostCheck: 'not established', exits: {}, ms: Date.now() - started, passed: false });
      throw e;
    }
  });
}

// ---- setup -----------------------------------------------------------------

test.before(async () => {
  lab = await ensureLab({ nodes: [NODE, ...ETCD_NODES] });
  work = mkdtempSync(join(tmpdir(), 'converge-badinput-'));
  rmSync('/tmp/pwned', { force: true });
  await onNode(NODE, `rm -rf ${SANDBOX} /tmp/pwned /var/lib/converge; mkdir -p ${SANDBOX}`);
});

test.after(async () => {
  writeResults('badinput', 'Bad input', records);
  if (daemon) await daemon.proc.stop();
  await onNode(NODE, `rm -rf ${SANDBOX} ${VICTIM} /tmp/pwned /var/lib/converge`).catch(() => undefined);
  // Absent when the before hook failed early: its error is the one to read, not one from here.
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

// ---- 1. refused while loading: validate, plan and apply all say where -------

/** The fixtures in the order the Reliability table lists them (the issue's order). */
const FIXTURE_ORDER = [
  'malformed-yaml', 'alias-bomb', 'deep-nesting', 'wrong-type', 'unknown-field', 'missing-required', 'unknown-kind',
  'duplicate-resource', 'conflicting-paths', 'relative-path', 'dotdot-path', 'control-char-path',
  'unit-name-metachar', 'user-name-metachar', 'owner-metachar', 'secret-escapes-dir', 'source-escapes-repo',
];

test('every bad-input fixture is run, in the table\'s order', () => {
  const present = readdirSync(FIXTURES).filter((f) => !f.startsWith('_') && existsSync(join(FIXTURES, f, 'case.json'))).sort();
  assert.equal(present, [...FIXTURE_ORDER].sort());
});

for (const fixture of FIXTURE_ORDER) {
  const spec = JSON.parse(readFileSync(join(FIXTURES, fixture, 'case.json'), 'utf8')) as { title: string; expect: string };
  badCase(fixture, spec.title, async () => {
    const dir = desired(fixture);
    await mark(NODE);
    // All three stop while loading, before any connection: run together, they cannot disturb each other.
    const [v, p, a] = await Promise.all([runCli(['validate', '--repo', dir]), runCli(['plan', ...conn(dir)]), runCli(['apply', ...conn(dir)])]);
    const msg = expectRefusal(v, 1, spec.expect);
    expectRefusal(p, 1, spec.expect);
    expectRefusal(a, 1, spec.expect);
    assert.ok(v.ms < 60_000, `validate answered in ${v.ms} ms`);
    const lost = await assertUntouched(NODE);
    return { did: `refused at load: ${code(msg)}`, lost, exits: { validate: v.code, plan: p.code, apply: a.code } };
  });
}

badCase('huge-file', 'A YAML file over 1 MiB', async () => {
  const big = `# ${'x'.repeat(100)}\n`.repeat(11_000);
  const dir = desired(null, { 'big.yaml': `${big}${doc('File', 'big', { path: `${SANDBOX}/big`, content: 'x' })}` });
  await mark(NODE);
  const v = await runCli(['validate', '--repo', dir]);
  const a = await runCli(['apply', ...conn(dir)]);
  const msg = expectRefusal(v, 1, /big\.yaml:\d+:\d+: .*(1 MiB|1048576|too large|larger)/i);
  expectRefusal(a, 1, 'big.yaml');
  const lost = await assertUntouched(NODE);
  return { did: `refused at load: ${code(msg)}`, lost, exits: { validate: v.code, apply: a.code } };
});

badCase('symlinked-source', 'A source file that is a symlink in the repository (→ /etc/passwd of the bastion)', async () => {
  const dir = desired(null, { 'files.yaml': doc('File', 'passwd', { path: `${SANDBOX}/passwd`, source: 'files/passwd' }) });
  mkdirSync(join(dir, 'files'));
  symlinkSync('/etc/passwd', join(dir, 'files', 'passwd'));
  await mark(NODE);
  const v = await runCli(['validate', '--repo', dir]);
  const a = await runCli(['apply', ...conn(dir)]);
  const msg = expectRefusal(v, 1, /files\.yaml:\d+:\d+: File\/passwd: .*files\/passwd .*symbolic links are never followed/);
  expectRefusal(a, 1, 'File/passwd');
  assert.not.ok(output(a).includes('root:x:0:0'), 'the bastion file must not be read into the output');
  const lost = await assertUntouched(NODE);
  return { did: `refused at load: ${code(msg)}`, lost, exits: { validate: v.code, apply: a.code } };
});

badCase('artifact-mismatch', 'An artifact whose bytes do not match its pinned sha256', async () => {
  const artifacts = mkdtempSync(join(work, 'artifacts-'));
  writeFileSync(join(artifacts, 'tool'), 'not the pinned build\n');
  const dir = desired(null, { 'files.yaml': doc('File', 'tool', { path: `${SANDBOX}/tool`, mode: '0755', artifact: { name: 'tool', sha256: sha('the pinned build\n') } }) });
  await mark(NODE);
  const a = await runCli(['apply', ...conn(dir), '--artifacts', artifacts]);
  const msg = expectRefusal(a, 1, /files\.yaml:\d+:\d+: File\/tool: artifact "tool" has sha256 [0-9a-f]{64}, not the pinned/);
  const lost = await assertUntouched(NODE);
  return { did: `refused at load: ${code(msg)}`, lost, exits: { apply: a.code } };
});

badCase('unknown-node-flag', 'A --nodes name the desired state does not declare', async () => {
  const dir = desired(null);
  await mark(NODE);
  const a = await runCli(['apply', ...conn(dir), '--nodes', 'cp-zz']);
  const msg = expectRefusal(a, 1, 'unknown node(s) in --nodes: cp-zz');
  const lost = await assertUntouched(NODE);
  return { did: `refused before connecting: ${code(msg)}`, lost, exits: { apply: a.code } };
});

// ---- 2. what the node holds -------------------------------------------------

badCase('shell-metachar-path', 'Shell metacharacters in paths ($(…), backticks, quotes, ;, *, spaces): written literally', async () => {
  await freshSandbox();
  // '/' cannot be in a name, so the first is two nested directories (converge makes the outer one);
  // the second spells /tmp without a slash: ${HOME%root} is '/'.
  const dirPath = `${SANDBOX}/a b'c"$(touch /tmp/pwned)`;
  const filePath = `${dirPath}/\`cd \${HOME%root}tmp;touch pwned\`;x \${HOME} *?[z] 'q' é`;
  const content = `literal ${randomBytes(4).toString('hex')}\n`;
  const dir = bare({
    'files.yaml': doc('Directory', 'hostile-dir', { path: dirPath, mode: '0750' }) + doc('File', 'hostile', { path: filePath, content, mode: '0640' }),
  });
  const a = await runCli(['apply', ...conn(dir)]);
  assert.is(a.code, 0, describe(a));
  const p = await runCli(['plan', ...conn(dir)]);
  assert.is(p.code, 0, `a second plan has nothing to do\n${describe(p)}`);
  const st = await runArgvOnNode(NODE, ['stat', '-c', '%a %U:%G %s', '--', filePath]);
  assert.is(st.stdout.trim(), `640 root:root ${Buffer.byteLength(content)}`, st.stderr);
  const body = await runArgvOnNode(NODE, ['cat', '--', filePath]);
  assert.is(body.stdout, content);
  const listing = await runArgvOnNode(NODE, ['find', SANDBOX, '-mindepth', '1', '-printf', '%y %P\\n']);
  const parts = dirPath.slice(SANDBOX.length + 1).split('/');
  const expected = [...parts.map((_, i) => `d ${parts.slice(0, i + 1).join('/')}`), `f ${filePath.slice(SANDBOX.length + 1)}`];
  assert.equal(listing.stdout.trim().split('\n').sort(), expected.sort(), 'exactly these entries, named literally');
  assert.not.ok(await pwnedOn(NODE), '/tmp/pwned must never appear on the node');
  assert.not.ok(existsSync('/tmp/pwned'), '/tmp/pwned must never appear here');
  return {
    did: 'applied: directory and file created with those exact names (stat, cat and ls checked), a second plan found nothing to do',
    lost: 'nothing to lose; /tmp/pwned never appeared on the node or here',
    exits: { apply: a.code, plan: p.code },
  };
});

badCase('symlink-at-path', 'A managed file path that is a symlink on the node (→ a file outside the sandbox)', async () => {
  await freshSandbox();
  const victim = VICTIM;
  await onNode(NODE, `mkdir -p ${victim} && printf 'original\\n' > ${victim}/secret.conf && ln -sfn ${victim}/secret.conf ${SANDBOX}/app.conf`);
  const dir = bare({ 'files.yaml': doc('File', 'app-conf', { path: `${SANDBOX}/app.conf`, content: 'written through the link\n' }) });
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir)]);
  const a = await runCli(['apply', ...conn(dir)]);
  const needle = `${NODE}: ${SANDBOX}/app.conf: is a symlink`;
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(a, 1, needle);
  assert.is((await onNode(NODE, `cat ${victim}/secret.conf; readlink ${SANDBOX}/app.conf`)).trim(), `original\n${victim}/secret.conf`);
  const lost = await assertUntouched(NODE);
  return { did: `refused that path: ${code(msg)}`, lost: `${lost}; the link's target kept its content`, exits: { plan: p.code, apply: a.code } };
});

badCase('symlink-at-dir', 'A managed directory that is a symlink on the node (files declared below it)', async () => {
  await freshSandbox();
  const victim = VICTIM;
  await onNode(NODE, `mkdir -p ${victim} && ln -sfn ${victim} ${SANDBOX}/conf.d`);
  const dir = bare({
    'files.yaml': doc('Directory', 'conf-d', { path: `${SANDBOX}/conf.d` }) + doc('File', 'conf-d-main', { path: `${SANDBOX}/conf.d/main.conf`, content: 'x\n' }),
  });
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir)]);
  const a = await runCli(['apply', ...conn(dir)]);
  const msg = expectRefusal(p, 1, `${NODE}: ${SANDBOX}/conf.d: is a symlink`);
  expectRefusal(p, 1, `${NODE}: ${SANDBOX}/conf.d/main.conf: its directory ${SANDBOX}/conf.d is a symlink`);
  expectRefusal(a, 1, `${SANDBOX}/conf.d/main.conf`);
  assert.is((await onNode(NODE, `ls -A ${victim} | wc -l`)).trim(), '0', 'nothing was written into the link target');
  const lost = await assertUntouched(NODE);
  return { did: `refused the directory and everything below it: ${code(msg)}`, lost: `${lost}; the link target stayed empty`, exits: { plan: p.code, apply: a.code } };
});

badCase('dir-where-file', 'A directory on the node where a file is declared', async () => {
  await freshSandbox();
  await onNode(NODE, `mkdir -p ${SANDBOX}/settings && printf 'keep\\n' > ${SANDBOX}/settings/inner`);
  const dir = bare({ 'files.yaml': doc('File', 'settings', { path: `${SANDBOX}/settings`, content: 'a file\n' }) });
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir)]);
  const a = await runCli(['apply', ...conn(dir)]);
  const needle = `${NODE}: ${SANDBOX}/settings: is a directory where a file is declared`;
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(a, 1, needle);
  assert.is((await onNode(NODE, `cat ${SANDBOX}/settings/inner`)).trim(), 'keep');
  const lost = await assertUntouched(NODE);
  return { did: `refused that path: ${code(msg)}`, lost: `${lost}; the directory and its file kept`, exits: { plan: p.code, apply: a.code } };
});

// ---- 3. who the node is, who we are ---------------------------------------------

/** A line that names the node first, then says `text`. */
function nodeLine(text: string): RegExp {
  return new RegExp(`^(error: )?${NODE}: (unreachable: )?${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 'm');
}

function knownHostsWithout(address: string): string {
  const f = join(work, `known_hosts-${randomBytes(3).toString('hex')}`);
  const lines = readFileSync(lab.knownHosts, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.split(/\s+/)[0]!.split(',').some((h) => h === address || h === `[${address}]:22`));
  writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

function newKeyPair(): { key: string; pub: string } {
  const key = join(work, `id-${randomBytes(3).toString('hex')}`);
  const r = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'badinput', '-f', key]);
  if (r.status !== 0) throw new Error(`ssh-keygen: ${r.stderr.toString()}`);
  return { key, pub: readFileSync(`${key}.pub`, 'utf8').trim() };
}

badCase('unknown-host-key', 'An unknown host key (the node is not in known_hosts)', async () => {
  const addr = lab.node(NODE).address;
  const kh = knownHostsWithout(addr);
  const dir = desired(null);
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir, { knownHosts: kh })]);
  const a = await runCli(['apply', ...conn(dir, { knownHosts: kh })]);
  const needle = nodeLine(`host key of ${addr}:22 is unknown`);
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(a, 1, needle);
  assert.not.ok(readFileSync(kh, 'utf8').includes(addr), 'strict checking never records the key by itself');
  const lost = await assertUntouched(NODE);
  return { did: `refused to connect: ${code(msg)}`, lost, exits: { plan: p.code, apply: a.code } };
});

badCase('changed-host-key', 'A changed host key (known_hosts holds another key for the node)', async () => {
  const addr = lab.node(NODE).address;
  const kh = knownHostsWithout(addr);
  const impostor = newKeyPair();
  writeFileSync(kh, `${readFileSync(kh, 'utf8')}${addr} ${impostor.pub.split(' ').slice(0, 2).join(' ')}\n`);
  const dir = desired(null);
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir, { knownHosts: kh })]);
  const tofu = await runCli(['apply', ...conn(dir, { knownHosts: kh, extra: ['--insecure-trust-on-first-use'] })]);
  const needle = nodeLine(`host key of ${addr}:22 has CHANGED`);
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(tofu, 1, needle);
  const lost = await assertUntouched(NODE);
  return { did: `refused to connect, even with --insecure-trust-on-first-use: ${code(msg)}`, lost, exits: { plan: p.code, 'apply --insecure-trust-on-first-use': tofu.code } };
});

badCase('pinned-host-key-mismatch', 'A Node pinning a host key (ssh.hostKey) that the node does not have', async () => {
  const impostor = newKeyPair();
  const dir = desired(null);
  const nodes = join(dir, 'nodes.yaml');
  writeFileSync(nodes, readFileSync(nodes, 'utf8').replace(/spec:\n/, `spec:\n  ssh:\n    hostKey: "${impostor.pub.split(' ').slice(0, 2).join(' ')}"\n`));
  await mark(NODE);
  const a = await runCli(['apply', ...conn(dir)]);
  const msg = expectRefusal(a, 1, nodeLine(`host key of ${lab.node(NODE).address}:22 has CHANGED: pinned`));
  const lost = await assertUntouched(NODE);
  return { did: `refused to connect: ${code(msg)}`, lost, exits: { apply: a.code } };
});

badCase('wrong-client-key', 'A wrong SSH client key (not authorized on the node)', async () => {
  const stranger = newKeyPair();
  const dir = desired(null);
  await mark(NODE);
  const p = await runCli(['plan', ...conn(dir, { sshKey: stranger.key })]);
  const a = await runCli(['apply', ...conn(dir, { sshKey: stranger.key })]);
  const msg = expectRefusal(p, 1, new RegExp(`${NODE}: .*(authenticat|permission denied)`, 'i'));
  expectRefusal(a, 1, new RegExp(`${NODE}: .*(authenticat|permission denied)`, 'i'));
  const keyLine = readFileSync(stranger.key, 'utf8').split('\n')[2] ?? '';
  assert.ok(keyLine.length > 20);
  assert.not.ok(output(p).includes(keyLine) || output(a).includes(keyLine), 'the private key never appears');
  const lost = await assertUntouched(NODE);
  return { did: `refused by the node, reported: ${code(msg)}`, lost, exits: { plan: p.code, apply: a.code } };
});

// ---- 4. the Git source --------------------------------------------------------

badCase('git-url-missing', 'A Git URL that does not exist (lab Git server, no such repository)', async () => {
  const url = lab.git.url.replace(/[^/]+$/, 'no-such-repository.git');
  await mark(NODE);
  const p = await runCli(['plan', ...conn(url)], { env: { CONVERGE_GIT_CREDENTIALS: lab.git.credentialsFile } });
  const msg = expectRefusal(p, 1, /no-such-repository\.git/);
  assert.match(output(p), /not found|does not exist|404/i);
  const lost = await assertUntouched(NODE);
  return { did: `refused: ${code(msg)}`, lost, exits: { plan: p.code } };
});

badCase('git-server-down', 'A Git URL where nothing listens', async () => {
  const url = 'http://127.0.0.1:9/desired-state.git';
  await mark(NODE);
  const p = await runCli(['plan', ...conn(url)]);
  const msg = expectRefusal(p, 1, /127\.0\.0\.1(:9)?/);
  const lost = await assertUntouched(NODE);
  return { did: `refused: ${code(msg)}`, lost, exits: { plan: p.code } };
});

badCase('git-token-wrong', 'A wrong Git token (lab Git server answers 401)', async () => {
  const token = `wrong-${randomBytes(12).toString('hex')}`;
  await mark(NODE);
  const p = await runCli(['plan', ...conn(lab.git.url)], { env: { CONVERGE_GIT_USERNAME: lab.git.username, CONVERGE_GIT_TOKEN: token } });
  const msg = expectRefusal(p, 1, /401|authenticat|credentials|denied/i);
  assert.not.ok(output(p).includes(token), 'the token never appears in the output');
  const lost = await assertUntouched(NODE);
  return { did: `refused: ${code(msg)}`, lost: `${lost}; the token is not in the output`, exits: { plan: p.code } };
});


// ---- 5. etcd: a cluster of three that converge bootstrapped --------------------------

const ETCDCTL = 'ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.pem --cert=/etc/etcd/pki/etcd-client.pem --key=/etc/etcd/pki/etcd-client-key.pem';
const CANARY_KEY = '/converge-badinput/canary';
let canaryValue = '';
let etcdReady = false;

/** The project's desired state (the etcd chapter) on bi-a..bi-c: `nodes` declared, `members` in the cluster. */
function etcdDesired(members: string[], nodes: string[] = members): string {
  const dir = mkdtempSync(join(work, 'etcd-'));
  cpSync(join(projectDir, 'desired-state'), dir, { recursive: true });
  rmSync(join(dir, 'README.md'), { force: true });
  writeFileSync(
    join(dir, 'nodes.yaml'),
    nodes.map((n) => `apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: ${n}\n  labels:\n    role: control-plane\nspec:\n  address: ${lab.node(n).address}\n`).join('---\n'),
  );
  const etcdYaml = readFileSync(join(dir, 'etcd.yaml'), 'utf8');
  const replaced = etcdYaml.replace(/( +)members:\n(?:\1 +- node: .*\n)+/, (_m, ind: string) => `${ind}members:\n${members.map((m) => `${ind}  - node: ${m}\n`).join('')}`);
  assert.ok(replaced !== etcdYaml, 'desired-state/etcd.yaml lists its members as "- node: NAME" lines');
  writeFileSync(join(dir, 'etcd.yaml'), replaced);
  return dir;
}

function etcdConn(dir: string): string[] {
  return ['--repo', dir, '--secrets', lab.secretsDir, '--artifacts', lab.artifactsDir, '--ssh-key', lab.sshKey, '--known-hosts', lab.knownHosts];
}

/** The member list as etcdctl on bi-a sees it (ids, names, URLs, learner flags), and the canary key. */
async function etcdState(): Promise<{ members: string; canary: string }> {
  const members = (await onNode(ETCD_NODES[0]!, `${ETCDCTL} member list`)).trim().split('\n').sort().join('\n');
  const canary = (await onNode(ETCD_NODES[0]!, `${ETCDCTL} get --print-value-only ${CANARY_KEY}`)).trim();
  return { members, canary };
}

/** converge bootstraps the cluster (or finds it converged), then a canary key goes in. */
async function ensureEtcd(): Promise<void> {
  if (etcdReady) return;
  const a = await runCli(['apply', ...etcdConn(etcdDesired(ETCD_NODES))], { timeoutMs: 600_000 });
  assert.is(a.code, 0, `converge bootstraps etcd on ${ETCD_NODES.join(', ')}\n${describe(a)}`);
  canaryValue = randomBytes(8).toString('hex');
  await onNode(ETCD_NODES[0]!, `${ETCDCTL} put ${CANARY_KEY} ${canaryValue} >/dev/null`);
  etcdReady = true;
}

/** Nothing changed on the etcd nodes (their data dirs aside: raft writes there on its own) and the cluster is as it was. */
async function assertEtcdUntouched(before: { members: string; canary: string }): Promise<string> {
  for (const n of ETCD_NODES) {
    const changed = (await changedSince(n)).filter((p) => !p.startsWith('/var/lib/etcd'));
    assert.equal(changed, [], `${n}: files changed although nothing may be applied:\n${changed.join('\n')}`);
  }
  const after = await etcdState();
  assert.is(after.members, before.members, 'the member list is unchanged');
  assert.is(after.canary, canaryValue, 'the canary key is intact');
  return `${ETCD_NODES.join(', ')} unchanged; member list (${before.members.split('\n').length} started voters) and the canary key intact`;
}

async function markEtcd(): Promise<{ members: string; canary: string }> {
  await ensureEtcd();
  for (const n of ETCD_NODES) await mark(n);
  return etcdState();
}

function openssl(args: string[], what: string): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${what}: ${r.stderr}`);
}

/** A CA that has nothing to do with the cluster's. */
function strangerCa(): { cert: string; key: string } {
  const dir = mkdtempSync(join(work, 'stranger-ca-'));
  const cert = join(dir, 'ca.pem');
  const key = join(dir, 'ca-key.pem');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=not the etcd CA'], 'making a stranger CA');
  return { cert, key };
}

/**
 * A client certificate for CN=converge from `ca`, valid between the given
 * dates. `openssl x509 -req` (3.0) has no explicit dates, `openssl ca` does:
 * a throwaway CA database in a temporary folder.
 */
function clientCert(ca: { cert: string; key: string }, startdate: string, enddate: string): { cert: string; key: string } {
  const dir = mkdtempSync(join(work, 'client-cert-'));
  const key = join(dir, 'client-key.pem');
  const csr = join(dir, 'client.csr');
  const cert = join(dir, 'client.pem');
  const cnf = join(dir, 'ca.cnf');
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), `${randomBytes(8).toString('hex').replace(/^[89a-f]/, '7')}\n`);
  writeFileSync(
    cnf,
    [
      '[ca]', 'default_ca = throwaway',
      '[throwaway]', `database = ${dir}/index.txt`, `new_certs_dir = ${dir}`, `serial = ${dir}/serial`, 'default_md = sha256', 'policy = any', 'x509_extensions = client', 'unique_subject = no',
      '[any]', 'commonName = supplied',
      '[client]', 'basicConstraints = critical,CA:FALSE', 'keyUsage = critical,digitalSignature,keyEncipherment', 'extendedKeyUsage = clientAuth',
      '',
    ].join('\n'),
  );
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], 'making a client key');
  openssl(['req', '-new', '-key', key, '-subj', '/CN=converge', '-out', csr], 'making a client request');
  openssl(['ca', '-batch', '-notext', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', cert, '-startdate', startdate, '-enddate', enddate], 'signing a client certificate');
  chmodSync(key, 0o600);
  return { cert, key };
}

const labCa = (): { cert: string; key: string } => ({ cert: lab.caFile, key: join(lab.labDir, 'ca', 'ca-key.pem') });

/** Run plan, apply and status with converge's etcd client TLS replaced by these files. */
async function etcdTlsCase(tls: { ca: string; cert: string; key: string }, needle: string | RegExp): Promise<Outcome> {
  const before = await markEtcd();
  const dir = etcdDesired(ETCD_NODES);
  const env = { CONVERGE_ETCD_CA: tls.ca, CONVERGE_ETCD_CERT: tls.cert, CONVERGE_ETCD_KEY: tls.key };
  const p = await runCli(['plan', ...etcdConn(dir)], { env });
  const a = await runCli(['apply', ...etcdConn(dir)], { env });
  const s = await runCli(['status', ...etcdConn(dir)], { env });
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(a, 1, needle);
  expectRefusal(s, 1, needle);
  const lost = await assertEtcdUntouched(before);
  return { did: `refused: ${code(msg)}`, lost, exits: { plan: p.code, apply: a.code, status: s.code } };
}

badCase('etcd-wrong-ca', 'A wrong etcd CA (converge given a CA that did not sign the members)', async () => {
  const other = strangerCa();
  return etcdTlsCase({ ca: other.cert, cert: lab.clientCert, key: lab.clientKey }, "TLS: the member's certificate is not signed by the etcd CA converge was given");
});

badCase('etcd-expired-client-cert', 'An expired etcd client certificate (signed by the lab CA, valid January 2020)', async () => {
  const expired = clientCert(labCa(), '20200101000000Z', '20200201000000Z');
  return etcdTlsCase({ ca: lab.caFile, cert: expired.cert, key: expired.key }, `the etcd client certificate ${expired.cert} expired on 2020-02-01`);
});

badCase('etcd-foreign-client-cert', 'An etcd client certificate from another CA (valid, but not the cluster\'s)', async () => {
  const foreign = clientCert(strangerCa(), '20200101000000Z', '20991231000000Z');
  return etcdTlsCase({ ca: lab.caFile, cert: foreign.cert, key: foreign.key }, "TLS: the member refused converge's client certificate");
});

badCase('etcd-wrong-client-key', 'An etcd client key that belongs to another certificate', async () => {
  const other = clientCert(labCa(), '20200101000000Z', '20991231000000Z');
  return etcdTlsCase({ ca: lab.caFile, cert: lab.clientCert, key: other.key }, `the etcd client key ${other.key} does not belong to the certificate ${lab.clientCert}`);
});

badCase('etcd-quorum-3-to-1', 'A member set change that loses fault tolerance: 3 → 1 (remove two of three members)', async () => {
  const before = await markEtcd();
  const dir = etcdDesired([ETCD_NODES[0]!]);
  const p = await runCli(['plan', ...etcdConn(dir)]);
  const a = await runCli(['apply', ...etcdConn(dir)]);
  const needle = `refusing to shrink the etcd cluster from 3 to 1 member: removing ${ETCD_NODES[1]}, ${ETCD_NODES[2]}`;
  const msg = expectRefusal(p, 1, needle);
  expectRefusal(a, 1, needle);
  const lost = await assertEtcdUntouched(before);
  return { did: `refused: ${code(msg)}`, lost, exits: { plan: p.code, apply: a.code } };
});

// ---- 6. the daemon's webhook -------------------------------------------------------------

interface Daemon {
  proc: CliProcess;
  url: string;
  secret: string;
}

let daemon: Daemon | null = null;

/** A Git repository (branch main) holding `dir` as its one commit. */
function gitRepoOf(dir: string): string {
  const env = { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@converge.invalid', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@converge.invalid' };
  for (const args of [['init', '-q', '-b', 'main'], ['add', '-A'], ['commit', '-q', '-m', 'desired state']]) {
    const r = spawnSync('git', args, { cwd: dir, env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`git ${args[0]}: ${r.stderr}`);
  }
  return dir;
}

/** `converge watch` in report mode on cp-f's desired state, webhook on, no polling; waits for its first pass. */
async function startDaemon(): Promise<Daemon> {
  if (daemon) return daemon;
  const secret = randomBytes(24).toString('hex');
  const secretFile = join(work, 'webhook-secret');
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  const repo = gitRepoOf(desired(null));
  const proc = startCli(['watch', ...conn(repo), '--mode', 'report', '--interval', '0', '--listen', '127.0.0.1:0', '--webhook-secret-file', secretFile], {
    env: { CONVERGE_STATE_DIR: mkdtempSync(join(work, 'state-')) },
    timeoutMs: 1_800_000,
  });
  const until = Date.now() + 120_000;
  let url: string | null = null;
  while (Date.now() < until && url === null) {
    const m = /"listen":"([^"]+)"/.exec(proc.stdout());
    if (m) url = `http://${m[1]}`;
    else if (proc.child.exitCode !== null) break;
    else await new Promise((r) => setTimeout(r, 200));
  }
  if (url === null) throw new Error(`converge watch did not start listening:\n${describe(await proc.stop())}`);
  daemon = { proc, url, secret };
  await waitPasses(1);
  return daemon;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const r = await fetch(url);
  return { status: r.status, body: await r.text() };
}

/** converge_passes_total summed over results. */
async function passes(): Promise<number> {
  const { body } = await get(`${daemon!.url}/metrics`);
  return [...body.matchAll(/^converge_passes_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0);
}

async function waitPasses(n: number, ms = 120_000): Promise<number> {
  const until = Date.now() + ms;
  for (;;) {
    const now = await passes();
    const st = JSON.parse((await get(`${daemon!.url}/status`)).body) as { current: unknown };
    if (now >= n && st.current === null) return now;
    if (Date.now() > until) throw new Error(`the daemon ran ${now} passes, expected ${n}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface Raw {
  status: number;
  body: string;
  ms: number;
}

/** One HTTP request with full control over headers and body. */
function post(path: string, body: Buffer, headers: Record<string, string>): Promise<Raw> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = request(`${daemon!.url}${path}`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), ms: Date.now() - started }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const pushBody = (): Buffer => Buffer.from(JSON.stringify({ ref: 'refs/heads/main', after: 'a'.repeat(40) }));

/** No pass followed the request (the control test shows that one would have been seen). */
async function noPassSince(before: number): Promise<string> {
  await new Promise((res) => setTimeout(res, 3000));
  const after = await passes();
  assert.is(after, before, 'no reconcile pass was triggered');
  assert.not.ok(await pwnedOn(NODE));
  return `no pass triggered (converge_passes_total stayed ${before}); no injected command ran on ${NODE}`;
}

test('webhook control: a correctly signed push is accepted and triggers a pass', async () => {
  await startDaemon();
  const before = await passes();
  const body = pushBody();
  const r = await post('/hooks/git', body, { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': signBody(daemon!.secret, body) });
  assert.is(r.status, 202, r.body);
  assert.ok(JSON.parse(r.body).accepted);
  await waitPasses(before + 1);
});

badCase('webhook-bad-signature', 'Webhook with a bad signature (signed with another secret)', async () => {
  await startDaemon();
  const before = await passes();
  const body = pushBody();
  const r = await post('/hooks/git', body, { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': signBody('not-the-secret', body) });
  assert.is(r.status, 401, r.body);
  const lost = await noPassSince(before);
  assert.match(daemon!.proc.stdout(), /webhook refused: bad signature/);
  return { did: `refused: HTTP 401 ${code((JSON.parse(r.body) as { error: string }).error)}, logged "webhook refused: bad signature"`, lost, exits: {} };
});

badCase('webhook-no-signature', 'Webhook with no signature', async () => {
  await startDaemon();
  const before = await passes();
  const r = await post('/hooks/git', pushBody(), { 'content-type': 'application/json', 'x-github-event': 'push' });
  assert.is(r.status, 401, r.body);
  const lost = await noPassSince(before);
  return { did: `refused: HTTP 401 ${code((JSON.parse(r.body) as { error: string }).error)}`, lost, exits: {} };
});

/**
 * Send a request over a raw socket, as much of the body as the daemon takes,
 * and return what it answered: an HTTP client library would stop at the
 * first write error and lose the answer.
 */
function rawRequest(head: string, body: Buffer, chunked: boolean): Promise<{ status: number; reply: string }> {
  const { hostname, port } = new URL(daemon!.url);
  return new Promise((resolve) => {
    const sock = connect({ host: hostname, port: Number(port) });
    let reply = '';
    sock.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    sock.on('error', () => undefined);
    sock.on('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(reply)?.[1] ?? 0), reply }));
    sock.on('connect', async () => {
      sock.write(head);
      for (let i = 0; i < body.length && !sock.destroyed && reply === ''; i += 64 * 1024) {
        const part = body.subarray(i, i + 64 * 1024);
        const ok = sock.write(chunked ? Buffer.concat([Buffer.from(`${part.length.toString(16)}\r\n`), part, Buffer.from('\r\n')]) : part);
        if (!ok) await new Promise((r) => setTimeout(r, 20));
      }
      if (chunked && !sock.destroyed && reply === '') sock.write('0\r\n\r\n');
      setTimeout(() => sock.destroy(), 10_000).unref();
    });
  });
}

badCase('webhook-oversized', 'Webhook with an oversized body (8 MiB, declared and chunked)', async () => {
  await startDaemon();
  const before = await passes();
  const big = Buffer.alloc(8 * 1024 * 1024, 0x61);
  const sig = signBody(daemon!.secret, big);
  // Declared: the headers alone must be enough for a refusal (a body sent after it would only reset the connection).
  const declared = await rawRequest(`POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: ${sig}\r\nContent-Length: ${big.length}\r\n\r\n`, Buffer.alloc(0), false);
  const chunked = await rawRequest(`POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: ${sig}\r\nTransfer-Encoding: chunked\r\n\r\n`, big, true);
  assert.is(declared.status, 413, `declared length: ${declared.reply.slice(0, 200)}`);
  // Chunked: the daemon reads up to its limit, answers 413 and closes; closing with unread data
  // makes the kernel reset the connection, which can overtake the answer.
  assert.ok(chunked.status === 413 || chunked.status === 0, `chunked: ${chunked.reply.slice(0, 200)}`);
  const lost = await noPassSince(before);
  const health = await get(`${daemon!.url}/healthz`);
  assert.is(health.status, 200, 'the daemon still answers');
  const said = (JSON.parse(/\{[\s\S]*\}/.exec(declared.reply)?.[0] ?? '{}') as { error?: string }).error ?? '';
  return {
    did: `refused: HTTP 413 ${code(said)} on the declared length, before any body; chunked, ${chunked.status === 413 ? 'HTTP 413' : 'connection closed'} at the limit; still healthy`,
    lost,
    exits: {},
  };
});

badCase('webhook-slow-client', 'Webhook from a slow client that never finishes its request', async () => {
  await startDaemon();
  const before = await passes();
  const { hostname, port } = new URL(daemon!.url);
  const started = Date.now();
  const closed = await new Promise<{ ms: number; reply: string }>((resolve) => {
    const sock = connect({ host: hostname, port: Number(port) });
    let reply = '';
    sock.on('data', (d: Buffer) => (reply += d.toString('utf8')));
    sock.on('close', () => resolve({ ms: Date.now() - started, reply }));
    sock.on('error', () => undefined);
    sock.write(`POST /hooks/git HTTP/1.1\r\nHost: ${hostname}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ref":`);
    const drip = setInterval(() => sock.write(' '), 1000);
    sock.on('close', () => clearInterval(drip));
    setTimeout(() => sock.destroy(), 60_000);
  });
  assert.ok(closed.ms < 30_000, `the daemon hung up after ${closed.ms} ms (bound: the request timeout, 10 s)`);
  const health = await get(`${daemon!.url}/healthz`);
  assert.is(health.status, 200, 'the daemon still answers');
  const lost = await noPassSince(before);
  const status = /^HTTP\/1\.1 (\d+)/.exec(closed.reply)?.[1];
  return { did: `hung up after ${(closed.ms / 1000).toFixed(1)} s${status ? ` with HTTP ${status}` : ''} (a byte a second never finishes the body); still healthy`, lost, exits: {} };
});

test.run();
