// `converge watch` as operators run it, against the lab: a real process
// following a branch of the lab's Git server, rolling commits out to a real
// node over SSH. Pushes and webhooks are real; latencies are measured.
// The suite owns node wt-a and the branch watch-<run>; nothing else is touched.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labReset, runOnNode } from '../../src/lab/index.js';
import { signBody } from '../../src/daemon/webhook.js';
import { ensureLab, type TestLab } from '../helpers/lab.js';
import { commitChange, remoteHead } from '../helpers/git.js';
import { endSuite, hook as sendHook, http, startWatcher as launch, status, stopWatcher, until, type Watcher } from '../helpers/watch.js';

const RUN = randomBytes(3).toString('hex');
const BRANCH = `watch-${RUN}`;
const NODE = 'wt-a';
const FILE = '/etc/converge-watch/motd';
const SECRET = randomBytes(18).toString('base64url');
/** The polling watcher's interval; the others poll rarely, so that only webhooks start their passes. */
const INTERVAL_S = 3;
const RARELY_S = 600;

let lab: TestLab;
const figures: string[] = [];

const watchers: Watcher[] = [];

function desiredState(motd: string, extraNodesYaml = ''): (dir: string) => void {
  return (dir) => {
    for (const e of readdirSync(dir)) if (e !== '.git') rmSync(join(dir, e), { recursive: true, force: true });
    writeFileSync(join(dir, 'nodes.yaml'), `apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: ${NODE}\nspec:\n  address: ${lab.node(NODE).address}\n${extraNodesYaml}`);
    writeFileSync(
      join(dir, 'files.yaml'),
      [
        `apiVersion: converge.dev/v1\nkind: Directory\nmetadata:\n  name: watch-dir\nspec:\n  path: /etc/converge-watch\n  mode: "0755"\n`,
        `apiVersion: converge.dev/v1\nkind: File\nmetadata:\n  name: watch-motd\nspec:\n  path: ${FILE}\n  mode: "0644"\n  content: ${JSON.stringify(motd)}\n`,
      ].join('---\n'),
    );
  };
}

const push = (motd: string, message: string, extra = ''): Promise<string> => commitChange(desiredState(motd, extra), message, { branch: BRANCH });

async function onNode(script: string): Promise<string> {
  const r = await runOnNode(NODE, script);
  assert.is(r.code, 0, `${NODE}: ${script}: ${r.stderr}`);
  return r.stdout.trim();
}

const hook = (w: Watcher, ref = `refs/heads/${BRANCH}`, sign = true): ReturnType<typeof sendHook> => sendHook(w, ref, sign ? SECRET : null);

async function startWatcher(mode: 'enforce' | 'report', intervalS: number): Promise<Watcher> {
  const w = await launch(lab, { branch: BRANCH, mode, intervalS, webhookSecret: SECRET });
  watchers.push(w);
  return w;
}

test.before(async () => {
  lab = await ensureLab({ nodes: [NODE] });
  await labReset(NODE);
  await push('first\n', 'watch test: initial');
});

test.after(() => endSuite(lab, BRANCH, watchers, figures));

let w: Watcher;

test('the first pass rolls the branch out; /status shows it applied', async () => {
  const t = Date.now();
  w = await startWatcher('enforce', RARELY_S);
  const head = await remoteHead({ branch: BRANCH });
  await until('the first commit applied', 120_000, async () => (await status(w))['commitApplied'] === head);
  figures.push(`start → first commit applied ${Date.now() - t} ms`);
  assert.is(await onNode(`cat ${FILE}`), 'first');
  assert.is((await http(w.url, 'GET', '/readyz')).status, 200);
});

test('a push with its webhook is rolled out: the pass starts within 1 s of the push', async () => {
  const before = w.lines.length;
  const commit = await push('second\n', 'watch test: webhook');
  const pushed = Date.now();
  const r = await hook(w);
  assert.is(r.status, 202);
  const started = await until('a pass after the webhook', 5_000, () => w.lines.slice(before).find((l) => l.msg === 'pass started' && (l['triggers'] as string[]).includes('webhook')));
  const latency = (started.time as number) - pushed;
  await until('the pushed commit applied', 60_000, async () => (await status(w))['commitApplied'] === commit);
  const applied = Date.now() - pushed;
  figures.push(`push → pass start (webhook) ${latency} ms, → applied ${applied} ms`);
  assert.ok(latency < 1000, `the pass started ${latency} ms after the push`);
  assert.is(await onNode(`cat ${FILE}`), 'second');
});

test('two commits in quick succession → passes at the newest only', async () => {
  const before = w.lines.length;
  const c1 = await push('fourth\n', 'watch test: burst 1');
  const c2 = await push('fifth\n', 'watch test: burst 2');
  await Promise.all([hook(w), hook(w)]);
  await until('the newest commit applied', 60_000, async () => (await status(w))['commitApplied'] === c2);
  const passCommits = w.lines.slice(before).filter((l) => l.msg === 'pass finished' || l.msg === 'pass failed').map((l) => l['commit']);
  assert.not.ok(passCommits.includes(c1.slice(0, 12)), `a pass reconciled the intermediate commit: ${passCommits.join(', ')}`);
  assert.is(await onNode(`cat ${FILE}`), 'fifth');
});

test('invalid YAML: not applied, reported with file:line; the last good commit stays enforced; the next good one applies', async () => {
  const good = (await status(w))['commitApplied'] as string;
  const bad = await commitChange((dir) => writeFileSync(join(dir, 'files.yaml'), 'apiVersion: converge.dev/v1\nkind: File\nmetadata: [unclosed\n'), 'watch test: broken YAML', { branch: BRANCH });
  await hook(w);
  const st = await until('the rejection', 30_000, async () => {
    const s = await status(w);
    return s['rejected']?.commit === bad ? s : undefined;
  });
  assert.is(st['rejected'].kind, 'invalid');
  assert.ok((st['rejected'].diagnostics as string[]).some((d) => /^files\.yaml:\d+:\d+: /.test(d)), JSON.stringify(st['rejected']));
  assert.is(st['commitApplied'], good);
  await until('the rejection logged', 5_000, () => w.lines.some((l) => l.msg === 'commit rejected: the desired state is invalid; nothing applied'));
  // Drift made by hand meanwhile: the next pass (here started by a webhook) enforces the last good commit, not the rejected one.
  await onNode(`echo hand-edit > ${FILE}`);
  await hook(w);
  await until('the last good commit enforced again', 30_000, async () => (await onNode(`cat ${FILE}`)) === 'fifth');
  const fixed = await push('sixth\n', 'watch test: fixed');
  await hook(w);
  await until('the fixed commit applied', 60_000, async () => (await status(w))['commitApplied'] === fixed);
  assert.is((await status(w))['rejected'], null);
  assert.is(await onNode(`cat ${FILE}`), 'sixth');
});

test('webhook abuse against the live process: bad signature 401, no signature 401, huge body 413, other branch ignored', async () => {
  const before = w.lines.filter((l) => l.msg === 'pass started').length;
  assert.is((await hook(w, `refs/heads/${BRANCH}`, false)).status, 401);
  const body = JSON.stringify({ ref: `refs/heads/${BRANCH}` });
  assert.is((await http(w.url, 'POST', '/hooks/git', body, { 'x-hub-signature-256': signBody('wrong', body) })).status, 401);
  assert.is((await http(w.url, 'POST', '/hooks/git', Buffer.alloc(2 * 1024 * 1024, 0x7b), { 'x-hub-signature-256': 'sha256=' + '0'.repeat(64) })).status, 413);
  const other = await hook(w, 'refs/heads/main');
  assert.is(other.status, 202);
  assert.match(other.body, /ignored/);
  await new Promise((r) => setTimeout(r, 300));
  const webhookPasses = w.lines.filter((l) => l.msg === 'pass started').slice(before).filter((l) => (l['triggers'] as string[]).includes('webhook'));
  assert.is(webhookPasses.length, 0);
  const all = w.lines.map((l) => JSON.stringify(l)).join('\n') + JSON.stringify(await status(w)) + (await http(w.url, 'GET', '/metrics')).body;
  assert.not.ok(all.includes(SECRET), 'the webhook secret leaked');
  assert.not.ok(all.includes(lab.git.password), 'the Git password leaked');
});

test('SIGTERM: the watcher finishes and exits 0', async () => {
  assert.is(await stopWatcher(w), 0);
  assert.ok(w.lines.some((l) => l.msg === 'stopped'));
});

test('polling: a push is picked up within the interval, and drift made by hand is corrected within it', async () => {
  const p = await startWatcher('enforce', INTERVAL_S);
  await until('a first pass', 60_000, async () => (await status(p))['lastPass']?.result === 'ok');
  const commit = await push('seventh\n', 'watch test: poll');
  const pushed = Date.now();
  await until('the polled commit applied', (INTERVAL_S * 1.1 + 30) * 1000, async () => (await status(p))['commitApplied'] === commit);
  figures.push(`push → applied by polling ${Date.now() - pushed} ms (interval ${INTERVAL_S} s)`);
  assert.is(await onNode(`cat ${FILE}`), 'seventh');
  const before = p.lines.length;
  await onNode(`echo hand-edit > ${FILE}`);
  const edited = Date.now();
  await until('the hand edit corrected', (INTERVAL_S * 1.1 + 30) * 1000, async () => (await onNode(`cat ${FILE}`)) === 'seventh');
  figures.push(`hand edit → corrected by polling ${Date.now() - edited} ms`);
  // The pass that corrected it said what it found, labelled as the drift report labels it.
  const found = await until('the drift logged', 5_000, () => p.lines.slice(before).find((l) => l.msg === 'drift found'));
  assert.equal(found['items'], ['corrective File/watch-motd content']);
  const fixedBy = await until('the correcting pass', 5_000, () => p.lines.slice(before).find((l) => l.msg === 'pass finished' && (l['changes'] as number) > 0));
  assert.equal(fixedBy['driftBefore'], { corrective: 1, intentional: 0 });
  assert.equal((await status(p))['drift'][NODE].resources, [], 'drift left after the correcting pass');
  assert.is(await stopWatcher(p), 0);
});

test('report mode: drift by hand is reported (status, metrics) and left alone', async () => {
  const r = await startWatcher('report', INTERVAL_S);
  await until('a first report pass', 60_000, async () => (await status(r))['lastPass']?.result === 'ok');
  await onNode(`echo hand-edit > ${FILE}`);
  const st = await until('the drift reported', (INTERVAL_S * 1.1 + 30) * 1000, async () => {
    const s = await status(r);
    return s['lastPass']?.result === 'drift' ? s : undefined;
  });
  assert.equal(st['drift'][NODE].resources, [{ resource: 'File/watch-motd', kind: 'File', label: 'corrective', field: 'content', target: FILE }]);
  const metrics = (await http(r.url, 'GET', '/metrics')).body;
  assert.match(metrics, new RegExp(`converge_drifted_resources\\{node="${NODE}",kind="File"\\} 1`));
  assert.match(metrics, new RegExp(`converge_drift_items\\{node="${NODE}",label="corrective"\\} 1`));
  // Another interval: still not corrected.
  await new Promise((res) => setTimeout(res, INTERVAL_S * 1.2 * 1000));
  assert.is(await onNode(`cat ${FILE}`), 'hand-edit');

  // A commit in report mode is not rolled out: its change is intentional drift, the hand edit still corrective.
  await onNode(`echo seventh > ${FILE}`);
  const commit = await push('eighth\n', 'watch test: report mode commit');
  const st2 = await until('the commit reported as intentional drift', (INTERVAL_S * 1.1 + 30) * 1000, async () => {
    const s = await status(r);
    return s['lastPass']?.commit === commit && s['lastPass']?.result === 'drift' ? s : undefined;
  });
  assert.equal(st2['drift'][NODE].resources, [{ resource: 'File/watch-motd', kind: 'File', label: 'intentional', field: 'content', target: FILE }]);
  assert.match((await http(r.url, 'GET', '/metrics')).body, new RegExp(`converge_drift_items\\{node="${NODE}",label="intentional"\\} 1`));
  assert.is(st2['commitApplied'], null, 'report mode marked a commit applied');
  assert.is(await onNode(`cat ${FILE}`), 'seventh');
  assert.is(await stopWatcher(r), 0);
});

test.run();
