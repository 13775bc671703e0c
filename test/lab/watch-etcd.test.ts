// The etcd case of halt and roll back, through `converge watch --rollback`
// on the lab: the first commit bootstraps a 3-member TLS cluster (desired-
// state/ moved onto this suite's nodes ha-a, ha-b, ha-c); a commit with a
// broken etcd flag halts the rolling restart on the first member with quorum
// kept throughout; the rollback returns the members to the last good commit
// and the cluster is healthy again, with every key written before still there.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { labReset, runOnNode } from '../../src/lab/index.js';
import { loadEtcdTls, type EtcdTls } from '../../src/connect/etcd.js';
import { loadDesiredState, fsSource } from '../../src/model/index.js';
import type { ResolvedEtcd } from '../../src/model/types.js';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';
import { writeDesired } from '../helpers/desired.js';
import { commitChange } from '../helpers/git.js';
import { endSuite, hook, startWatcher, status, stopWatcher, until, type Watcher } from '../helpers/watch.js';
import { assertKeys, quorumWatch, writeKeys } from '../unit/etcd/helpers/load.js';

const RUN = randomBytes(3).toString('hex');
const BRANCH = `etcd-rollback-${RUN}`;
const NODES = ['ha-a', 'ha-b', 'ha-c'];
const SECRET = randomBytes(18).toString('base64url');
const BROKEN = 'ETCD_SNAPSHOT_COUNT=not-a-number';

let lab: TestLab;
let w: Watcher | null = null;
let spec: ResolvedEtcd;
let tls: EtcdTls;
const figures: string[] = [];

/** desired-state/ on ha-a..c, with a short health timeout so that a member that does not come back halts quickly. */
function desiredState(envExtra: string[]): (dir: string) => void {
  return (dir) => {
    for (const e of readdirSync(dir)) if (e !== '.git') rmSync(join(dir, e), { recursive: true, force: true });
    const chapter = ['cp-a', 'cp-b', 'cp-c'];
    const env = readFileSync(join(projectDir, 'desired-state', 'templates', 'etcd.env'), 'utf8');
    writeDesired(
      {
        nodes: Object.fromEntries(chapter.map((c, i) => [c, { name: NODES[i]!, address: lab.node(NODES[i]!).address }])),
        edit: (d) => (d.kind === 'EtcdCluster' ? { ...d, spec: { ...d.spec, rollout: { healthTimeoutSeconds: 10, learnerTimeoutSeconds: 60 } } } : d),
        files: { 'templates/etcd.env': env + envExtra.map((l) => `${l}\n`).join('') },
      },
      dir,
    );
  };
}

const push = (envExtra: string[], message: string): Promise<string> => commitChange(desiredState(envExtra), message, { branch: BRANCH });

const memberStates = (st: Record<string, any>): string[] => ((st['etcd']?.members ?? []) as { name: string; state: string }[]).map((m) => `${m.name}=${m.state}`).sort();

let good: string;

test.before(async () => {
  lab = await ensureLab({ nodes: NODES });
  await Promise.all(NODES.map((n) => labReset(n)));
  good = await push([], 'etcd rollback test: the cluster');
  const dir = writeDesired({ nodes: Object.fromEntries(['cp-a', 'cp-b', 'cp-c'].map((c, i) => [c, { name: NODES[i]!, address: lab.node(NODES[i]!).address }])) });
  spec = (await loadDesiredState(fsSource(dir), { commit: 'x', secretsDir: lab.secretsDir, artifactsDir: lab.artifactsDir })).state.etcd!;
  rmSync(dir, { recursive: true, force: true });
  tls = await loadEtcdTls(spec.client);
});

test.after(() => endSuite(lab, BRANCH, [w], figures));

test('the first commit bootstraps the cluster through the watcher', async () => {
  const t = Date.now();
  w = await startWatcher(lab, { branch: BRANCH, mode: 'enforce', intervalS: 600, webhookSecret: SECRET, env: { CONVERGE_ROLLBACK: 'true' } });
  const st = await until('the cluster bootstrapped', 240_000, async () => {
    const s = await status(w!);
    return s['commitApplied'] === good ? s : undefined;
  }, 250);
  figures.push(`watch start → 3-member cluster bootstrapped ${Date.now() - t} ms`);
  assert.equal(memberStates(st), NODES.map((n) => `${n}=started`));
  await writeKeys(tls, spec.members[0]!.clientUrl, 200);
});

test('a broken etcd flag: the rollout halts on the first member with quorum kept; the rollback brings it back on the last good commit', async () => {
  const q = quorumWatch(spec, tls);
  const bad = await push([BROKEN], 'etcd rollback test: a flag etcd refuses');
  const pushed = Date.now();
  await hook(w!, `refs/heads/${BRANCH}`, SECRET);
  const st = await until('the halt and the rollback', 300_000, async () => {
    const s = await status(w!);
    return s['rejected']?.commit === bad && s['lastRollback'] ? s : undefined;
  }, 250);
  const seen = await q.stop();
  figures.push(`push → halted and rolled back ${Date.now() - pushed} ms; healthy voters never below ${seen.minHealthy} of ${seen.voters} (${seen.samples} samples)`);
  assert.ok(seen.minHealthy >= 2, `quorum lost: ${seen.minHealthy} healthy`);
  assert.is(st['rejected'].kind, 'halted');
  assert.match(st['rejected'].error, /did not come back healthy/);
  // Exactly one member was restarted on the broken flag: the rollout stopped there.
  const halted = await until('the halt logged', 5_000, () => w!.lines.find((l) => l.msg === 'rollout halted'));
  const restarts = w!.lines.filter((l) => typeof l.msg === 'string' && /etcd: step \d+\/\d+: restart/.test(l.msg) && l['rollback'] === undefined && (l.time ?? 0) >= pushed && (l.time ?? 0) <= (halted.time ?? 0));
  assert.is(restarts.length, 1, restarts.map((l) => l.msg).join('\n'));
  const rb = st['rejected'].rolledBack;
  assert.is(rb.ok, true, JSON.stringify(rb));
  assert.is(rb.toCommit, good);
  assert.equal(memberStates(st), NODES.map((n) => `${n}=started`));
  for (const n of NODES) {
    assert.is((await runOnNode(n, 'systemctl is-active etcd.service')).stdout.trim(), 'active', n);
    assert.is((await runOnNode(n, `grep -c '^${BROKEN}' /etc/etcd/etcd.env || true`)).stdout.trim(), '0', `${n} still has the broken flag`);
  }
  await assertKeys(tls, spec.members[0]!.clientUrl, 200);
  assert.is(st['commitApplied'], good);
  assert.is(await stopWatcher(w!), 0);
});

test.run();
