// Halt and roll back, as `converge watch --rollback` does it on the lab: a
// commit whose config makes a service fail its start check (ExecStartPre)
// halts the rollout at the health gate on the first node, before the second
// is touched; that node is returned to the last good commit and its service
// is healthy again; /status, the metrics and the
// logs say what happened; the failed commit is not retried until an
// operator asks (POST /retry) or a newer commit arrives.
// The suite owns nodes wt-b and wt-c and the branch rollback-<run>.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labReset, runOnNode } from '../../src/lab/index.js';
import { ensureLab, type TestLab } from '../helpers/lab.js';
import { commitChange } from '../helpers/git.js';
import { endSuite, hook, http, startWatcher, status, stopWatcher, until, type Watcher } from '../helpers/watch.js';

const RUN = randomBytes(3).toString('hex');
const BRANCH = `rollback-${RUN}`;
const NODE = 'wt-b';
/** After NODE in the rollout: never reached by a commit that fails on NODE. */
const NEXT = 'wt-c';
const CONF = '/etc/converge-demo/demo.conf';
const UNIT = 'converge-demo.service';
const SECRET = randomBytes(18).toString('base64url');

let lab: TestLab;
let w: Watcher | null = null;
const figures: string[] = [];

/** A service that refuses to start unless its config says valid=yes, as `nginx -t` in ExecStartPre would. */
function desiredState(conf: string): (dir: string) => void {
  const unit = ['[Unit]', 'Description=converge rollback test service', '', '[Service]', `ExecStartPre=/bin/grep -qx valid=yes ${CONF}`, 'ExecStart=/bin/sleep infinity', '', '[Install]', 'WantedBy=multi-user.target', ''].join('\n');
  return (dir) => {
    for (const e of readdirSync(dir)) if (e !== '.git') rmSync(join(dir, e), { recursive: true, force: true });
    writeFileSync(join(dir, 'nodes.yaml'), [NODE, NEXT].map((n) => `apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: ${n}\nspec:\n  address: ${lab.node(n).address}\n`).join('---\n'));
    writeFileSync(
      join(dir, 'demo.yaml'),
      [
        `apiVersion: converge.dev/v1\nkind: Directory\nmetadata:\n  name: demo-dir\nspec:\n  path: /etc/converge-demo\n`,
        `apiVersion: converge.dev/v1\nkind: File\nmetadata:\n  name: demo-conf\nspec:\n  path: ${CONF}\n  content: ${JSON.stringify(conf)}\n  restarts: [demo]\n`,
        `apiVersion: converge.dev/v1\nkind: File\nmetadata:\n  name: demo-unit\nspec:\n  path: /etc/systemd/system/${UNIT}\n  content: ${JSON.stringify(unit)}\n  restarts: [demo]\n`,
        `apiVersion: converge.dev/v1\nkind: Service\nmetadata:\n  name: demo\nspec:\n  unit: ${UNIT}\n`,
      ].join('---\n'),
    );
  };
}

const push = (conf: string, message: string): Promise<string> => commitChange(desiredState(conf), message, { branch: BRANCH });

async function onNode(script: string, node = NODE): Promise<string> {
  const r = await runOnNode(node, script);
  return r.stdout.trim();
}

async function metric(name: string): Promise<number> {
  const text = (await http(w!.url, 'GET', '/metrics')).body;
  const m = new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

let good: string;

test.before(async () => {
  lab = await ensureLab({ nodes: [NODE, NEXT] });
  await Promise.all([labReset(NODE), labReset(NEXT)]);
  good = await push('valid=yes\n', 'rollback test: a healthy service');
});

test.after(() => endSuite(lab, BRANCH, [w], figures));

test('the good commit is rolled out and its service runs on both nodes', async () => {
  w = await startWatcher(lab, { branch: BRANCH, mode: 'enforce', intervalS: 600, webhookSecret: SECRET, env: { CONVERGE_ROLLBACK: 'true' } });
  await until('the good commit applied', 120_000, async () => (await status(w!))['commitApplied'] === good);
  assert.is(await onNode(`systemctl is-active ${UNIT}`), 'active');
  assert.is(await onNode(`systemctl is-active ${UNIT}`, NEXT), 'active');
  assert.is((await status(w!))['rollback'], true);
});

test('a commit that breaks the service: the rollout halts at the health gate on the first node, the next node is not touched, the node is rolled back and healthy, /status says so', async () => {
  const untouched = await onNode(`stat -c %Y.%i ${CONF}`, NEXT);
  const bad = await push('valid=no\n', 'rollback test: a config the service refuses');
  const pushed = Date.now();
  assert.is((await hook(w!, `refs/heads/${BRANCH}`, SECRET)).status, 202);
  const st = await until('the halt and the rollback', 60_000, async () => {
    const s = await status(w!);
    return s['rejected']?.commit === bad && s['lastRollback'] ? s : undefined;
  });
  figures.push(`push → halted and rolled back ${Date.now() - pushed} ms`);
  assert.is(st['rejected'].kind, 'halted');
  assert.match(st['rejected'].error, new RegExp(`${NODE}: restart ${UNIT}: .*did not become active`));
  assert.match(st['rejected'].error, new RegExp(`rollout halted: 1 node\\(s\\) not started: ${NEXT}`));
  assert.equal(st['rejected'].rolledBack.nodes, [NODE]);
  assert.is(st['rejected'].rolledBack.toCommit, good);
  assert.is(st['rejected'].rolledBack.ok, true, JSON.stringify(st['rejected'].rolledBack));
  assert.is(st['lastRollback'].fromCommit, bad);
  assert.is(st['lastPass'].result, 'halted');
  assert.is(st['commitApplied'], good);
  assert.is(st['lastGood'], good);
  // The node is on the last good commit: the change of the rejected commit is "intentional" drift (in Git, not rolled out).
  for (const n of [NODE, NEXT]) assert.equal(st['drift'][n].resources, [{ resource: 'File/demo-conf', kind: 'File', label: 'intentional', field: 'content', target: CONF }], n);
  assert.is(await onNode(`cat ${CONF}`), 'valid=yes');
  assert.is(await onNode(`systemctl is-active ${UNIT}`), 'active');
  // The next node was never reached: its config is the same file, unchanged, and its service ran throughout.
  assert.is(await onNode(`stat -c %Y.%i ${CONF}`, NEXT), untouched);
  assert.is(await onNode(`cat ${CONF}`, NEXT), 'valid=yes');
  assert.is(await onNode(`systemctl is-active ${UNIT}`, NEXT), 'active');
  assert.not.ok(w!.lines.some((l) => l['node'] === NEXT && (l.msg === 'applied' || l.msg === 'apply failed on the node') && (l.time ?? 0) >= pushed), `${NEXT} was touched`);
  assert.is(await metric('converge_rollbacks_total{result="ok"}'), 1);
  const halted = await until('the halt logged', 5_000, () => w!.lines.find((l) => l.msg === 'rollout halted'));
  assert.is((halted['rolledBack'] as { toCommit: string }).toCommit, good);
  assert.ok(w!.lines.some((l) => l.msg === 'rollback complete: the nodes are back on the last good commit'));
});

test('the failed commit is not retried: later passes enforce the last good commit', async () => {
  const before = w!.lines.filter((l) => l.msg === 'pass started').length;
  await hook(w!, `refs/heads/${BRANCH}`, SECRET);
  const st = await until('another pass', 30_000, async () => {
    const s = await status(w!);
    return w!.lines.filter((l) => l.msg === 'pass started').length > before && s['current'] === null ? s : undefined;
  });
  assert.is(st['lastPass'].commit, good);
  assert.is(st['lastPass'].role, 'last-good');
  assert.is(st['lastPass'].result, 'ok');
  assert.is(await metric('converge_rollbacks_total{result="ok"}'), 1, 'rolled back again without being asked');
});

test('POST /retry tries the commit again (it halts and rolls back again); a newer good commit then applies', async () => {
  const r = await http(w!.url, 'POST', '/retry');
  assert.is(r.status, 200);
  await until('the second rollback', 60_000, async () => (await metric('converge_rollbacks_total{result="ok"}')) === 2);
  assert.is(await onNode(`systemctl is-active ${UNIT}`), 'active');
  const fixed = await push('valid=yes\n# fixed\n', 'rollback test: fixed');
  await hook(w!, `refs/heads/${BRANCH}`, SECRET);
  await until('the fixed commit applied', 60_000, async () => (await status(w!))['commitApplied'] === fixed);
  const st = await status(w!);
  assert.is(st['rejected'], null);
  assert.is(await onNode(`systemctl is-active ${UNIT}`), 'active');
  for (const n of [NODE, NEXT]) {
    assert.is(await onNode(`tail -n 1 ${CONF}`, n), '# fixed', n);
    assert.is(await onNode(`systemctl is-active ${UNIT}`, n), 'active', n);
  }
  assert.is(await stopWatcher(w!), 0);
});

test.run();
