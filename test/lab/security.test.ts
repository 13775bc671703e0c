// Security checks, end to end with the built CLI on nodes this suite shares
// only with badinput (cp-f, and the etcd cluster on bi-a..bi-c):
//  (a) no secret byte (TLS and SSH private keys, the Git password, the
//      webhook secret) appears in the output of any command, in the daemon's
//      logs, /status and /metrics, or in any file converge writes;
//  (b) temporary files on nodes are 0600 while they fill and created
//      exclusively; converge's own state on nodes is root-only;
//  (c) host key checking is strict by default, trust on first use only with
//      --insecure-trust-on-first-use;
//  (d) the daemon listens on 127.0.0.1 by default and bounds requests.
// The desired state lives on a branch of the lab's Git server, so that every
// command also authenticates to Git with the password it must never print.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOnNode } from '../../src/lab/index.js';
import { signBody } from '../../src/daemon/webhook.js';
import { describe, output, runCli, startCli, type CliProcess, type CliResult } from '../helpers/cli.js';
import { commitChange, git, gitEnv } from '../helpers/git.js';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';

const NODE = 'cp-f';
const ETCD_NODES = ['bi-a', 'bi-b', 'bi-c'];
const RUN = randomBytes(3).toString('hex');
const BRANCH = `security-${RUN}`;
const SANDBOX = '/srv/converge-security';
const VICTIM = '/srv/converge-security-victim';

let lab: TestLab;
let work: string;
let webhookSecret: string;
let webhookSecretFile: string;
/** Every secret as the strings that would betray it, by name. */
const needles = new Map<string, string[]>();
let checkedOutputs = 0;

// ---- helpers -------------------------------------------------------------------

async function onNode(node: string, script: string): Promise<string> {
  const r = await runOnNode(node, script);
  if (r.code !== 0) throw new Error(`${node}: ${script}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/**
 * A private key betrays itself by any line of its PEM body (not the header,
 * which every key shares), and by the base64 of its bytes (a JSON field
 * holding the file would show that).
 */
function keyNeedles(pem: string): string[] {
  const body = pem.split('\n').filter((l) => l.length >= 16 && !l.startsWith('-----'));
  const b64 = Buffer.from(pem).toString('base64');
  return [...body, b64.slice(0, 48), b64.slice(Math.floor(b64.length / 2), Math.floor(b64.length / 2) + 48)];
}

function addSecret(name: string, values: string[]): void {
  assert.ok(values.length > 0 && values.every((v) => v.length >= 12), `${name}: distinctive strings to search for`);
  needles.set(name, values);
}

/** No secret in `text`; names the secret and where, never prints it. */
function assertNoSecrets(where: string, text: string): void {
  for (const [name, values] of needles) {
    for (const v of values) assert.not.ok(text.includes(v), `${where}: contains bytes of the secret ${name}`);
  }
  checkedOutputs++;
}

function checkRun(r: CliResult, codes: number[]): CliResult {
  assert.ok(codes.includes(r.code ?? -1), `exit ${r.code}, expected one of ${codes.join('/')}\n${describe(r)}`);
  assertNoSecrets(`converge ${r.args[0]} ${r.args.filter((a) => a.startsWith('--') && !['--repo', '--secrets'].includes(a)).join(' ')}`, output(r));
  return r;
}

/** The project's desired state for bi-a..bi-c, plus cp-f with a secret, a big artifact and a text file. */
function writeDesired(dir: string, extra = ''): void {
  for (const f of readdirSync(dir)) if (f !== '.git') rmSync(join(dir, f), { recursive: true, force: true });
  const src = join(projectDir, 'desired-state');
  for (const f of readdirSync(src)) if (f !== 'README.md') spawnSync('cp', ['-a', join(src, f), dir]);
  const node = (n: string, role: string): string => `apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: ${n}\n  labels:\n    role: ${role}\nspec:\n  address: ${lab.node(n).address}\n`;
  writeFileSync(join(dir, 'nodes.yaml'), [...ETCD_NODES.map((n) => node(n, 'control-plane')), node(NODE, 'security')].join('---\n'));
  const etcd = readFileSync(join(dir, 'etcd.yaml'), 'utf8').replace(/( +)members:\n(?:\1 +- node: .*\n)+/, (_m, ind: string) => `${ind}members:\n${ETCD_NODES.map((m) => `${ind}  - node: ${m}\n`).join('')}`);
  writeFileSync(join(dir, 'etcd.yaml'), etcd);
  const etcdSha = readFileSync(join(dir, 'files.yaml'), 'utf8').match(/name: etcd\n\s+sha256: ([0-9a-f]{64})/)?.[1];
  assert.ok(etcdSha, 'desired-state/files.yaml pins the etcd artifact');
  const doc = (kind: string, name: string, spec: Record<string, unknown>): string =>
    `apiVersion: converge.dev/v1\nkind: ${kind}\nmetadata:\n  name: ${name}\nspec: ${JSON.stringify({ ...spec, nodes: { names: [NODE] } })}\n`;
  writeFileSync(
    join(dir, 'security.yaml'),
    [
      doc('Directory', 'sec-dir', { path: SANDBOX, mode: '0755' }),
      doc('File', 'sec-key', { path: `${SANDBOX}/client-key.pem`, mode: '0600', secret: { name: 'client/etcd-client-key.pem' } }),
      doc('File', 'sec-big', { path: `${SANDBOX}/etcd-copy`, mode: '0644', artifact: { name: 'etcd', sha256: etcdSha } }),
      doc('File', 'sec-text', { path: `${SANDBOX}/notes.txt`, mode: '0644', content: `plain text ${extra}\n` }),
    ].join('---\n'),
  );
}

/** Settings as an operator's config file would hold them: the Git branch, credentials, keys. */
function configFile(): string {
  const f = join(work, 'config.json');
  writeFileSync(
    f,
    JSON.stringify({
      repo: lab.git.url,
      branch: BRANCH,
      gitCredentials: lab.git.credentialsFile,
      secretsDir: lab.secretsDir,
      artifactsDir: lab.artifactsDir,
      sshKey: lab.sshKey,
      knownHosts: lab.knownHosts,
    }),
    { mode: 0o600 },
  );
  return f;
}

const cfg = (): string[] => ['--config', join(work, 'config.json')];

// ---- setup -----------------------------------------------------------------------

test.before(async () => {
  lab = await ensureLab({ nodes: [NODE, ...ETCD_NODES] });
  work = mkdtempSync(join(tmpdir(), 'converge-security-'));
  webhookSecret = `whsec-${randomBytes(20).toString('hex')}`;
  webhookSecretFile = join(work, 'webhook-secret');
  writeFileSync(webhookSecretFile, `${webhookSecret}\n`, { mode: 0o600 });

  for (const f of filesUnder(lab.secretsDir)) {
    const text = readFileSync(f, 'utf8');
    if (text.includes('PRIVATE KEY')) addSecret(f.slice(lab.secretsDir.length + 1), keyNeedles(text));
  }
  addSecret('the lab CA key', keyNeedles(readFileSync(join(lab.labDir, 'ca', 'ca-key.pem'), 'utf8')));
  addSecret('the SSH client key', keyNeedles(readFileSync(lab.sshKey, 'utf8')));
  addSecret('the Git password', [lab.git.password, Buffer.from(`${lab.git.username}:${lab.git.password}`).toString('base64'), encodeURIComponent(lab.git.password)]);
  addSecret('the webhook secret', [webhookSecret]);
  assert.ok(needles.size >= 8, `secrets found: ${[...needles.keys()].join(', ')}`);

  await onNode(NODE, `rm -rf ${SANDBOX} ${VICTIM} /var/lib/converge`);
  await commitChange((dir) => writeDesired(dir), 'security suite desired state', { branch: BRANCH });
  configFile();
});

test.after(async () => {
  const env = gitEnv({ url: lab.git.url, username: lab.git.username, password: lab.git.password });
  const r = spawnSync('git', ['push', '--quiet', lab.git.url, `:refs/heads/${BRANCH}`], { cwd: work, env, encoding: 'utf8' });
  if (r.status !== 0) process.stderr.write(`could not delete the branch ${BRANCH}: ${r.stderr}\n`);
  await onNode(NODE, `rm -rf ${SANDBOX} ${VICTIM}`).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});
