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
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
  return (hit ?? lines.find((l) => l.trim() !== '') ?? '').trim();
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
  await onNode(NODE, `rm -rf ${SANDBOX} ${VICTIM} /tmp/pwned /var/lib/converge`).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

// ---- 1. refused while loading: validate, plan and apply all say where -------

for (const fixture of readdirSync(FIXTURES).filter((f) => !f.startsWith('_') && existsSync(join(FIXTURES, f, 'case.json'))).sort()) {
  const spec = JSON.parse(readFileSync(join(FIXTURES, fixture, 'case.json'), 'utf8')) as { title: string; expect: string };
  badCase(fixture, spec.title, async () => {
    const dir = desired(fixture);
    await mark(NODE);
    const v = await runCli(['validate', '--repo', dir]);
    const p = await runCli(['plan', ...conn(dir)]);
    const a = await runCli(['apply', ...conn(dir)]);
    const msg = expectRefusal(v, 1, spec.expect);
    expectRefusal(p, 1, spec.expect);
    expectRefusal(a, 1, spec.expect);
    assert.ok(v.ms < 60_000, `validate answered in ${v.ms} ms`);
    const lost = await assertUntouched(NODE);
    return { did: `refused at load, ${v.ms} ms: ${code(msg)}`, lost, exits: { validate: v.code, plan: p.code, apply: a.code } };
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
  const msg = expectRefusal(v, 1, /files\.yaml:\d+:\d+: File\/passwd: .*files\/passwd/);
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
  const needle = `${NODE}: host key of ${addr}:22 is unknown`;
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
  const needle = `${NODE}: host key of ${addr}:22 has CHANGED`;
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
  const msg = expectRefusal(a, 1, `${NODE}: host key of ${lab.node(NODE).address}:22 has CHANGED: pinned`);
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


test.run();
