// Several `converge watch` processes (the built CLI) against one local Git
// repository, elected through a real etcd on 127.0.0.1 with TLS: exactly one
// leads and reconciles; kill -9 it and another takes over within the lease
// TTL; a leader frozen past its lease (SIGSTOP) stops leading the moment it
// runs again, before it starts anything; and across all of it no two passes
// ever overlap. The desired state has no nodes: this suite is about who
// reconciles and when, so passes are quick and many.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliProcess } from '../helpers/cli.js';
import { makeRepo, type TestRepo } from '../unit/source/_repo.js';
import { singleEtcd, type SingleEtcd } from '../unit/daemon/_etcd.js';
import { until } from '../helpers/watch.js';

const TTL_S = 3;
const INTERVAL_S = 0.3;

let etcd: SingleEtcd;
let repo: TestRepo;
let work: string;
const figures: string[] = [];

interface Line {
  msg?: string;
  time: number;
  pass?: string;
  instance?: string;
  result?: string;
  listen?: string;
  [k: string]: unknown;
}

interface Watcher {
  name: string;
  cli: CliProcess;
  url: string;
  /** When the test killed it (kill -9), for passes it never finished. */
  killedAt: number | null;
  lines(): Line[];
}
const watchers: Watcher[] = [];

function parse(out: string): Line[] {
  return out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);
}


function status(w: Watcher): Promise<Record<string, any> | null> {
  return new Promise((resolve) => {
    const req = request(`${w.url}/status`, { agent: false, timeout: 1000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(parts).toString()) as Record<string, any>));
    });
    req.on('error', () => resolve(null));
    req.on('timeout', () => {
      req.destroy();
      resolve(null);
    });
    req.end();
  });
}

async function start(name: string): Promise<Watcher> {
  const cli = startCli(
    ['watch', '--repo', repo.dir, '--branch', 'main', '--coordination', etcd.url, '--lease-ttl', String(TTL_S), '--interval', String(INTERVAL_S), '--listen', '127.0.0.1:0', '--state-dir', join(work, name), '--ssh-key', join(work, 'id_ed25519')],
    { env: { CONVERGE_ETCD_CA: etcd.files.ca, CONVERGE_ETCD_CERT: etcd.files.cert, CONVERGE_ETCD_KEY: etcd.files.key }, timeoutMs: 600_000 },
  );
  const lines = (): Line[] => parse(cli.stdout());
  const listen = await until(`${name} to listen (stderr: ${cli.stderr()})`, 90_000, () => lines().find((l) => l.msg === 'HTTP listening')?.listen);
  const w: Watcher = { name, cli, url: `http://${listen}`, killedAt: null, lines };
  watchers.push(w);
  return w;
}

const leaders = async (ws: Watcher[]): Promise<Watcher[]> => {
  const st = await Promise.all(ws.map(status));
  return ws.filter((_, i) => st[i]?.['leader'] === true);
};

/** Every pass of every watcher as [start, end] with its instance; a pass cut by kill -9 ends at the kill. */
function passes(): { who: string; id: string; start: number; end: number }[] {
  const out: { who: string; id: string; start: number; end: number }[] = [];
  for (const w of watchers) {
    const ls = w.lines();
    for (const s of ls.filter((l) => l.msg === 'pass started')) {
      const end = ls.find((l) => l.pass === s.pass && l.result !== undefined && l.durationMs !== undefined);
      out.push({ who: w.name, id: s.pass!, start: s.time, end: end?.time ?? w.killedAt ?? Number.POSITIVE_INFINITY });
    }
  }
  return out.sort((a, b) => a.start - b.start);
}

/**
 * SIGSTOP between two passes. A process frozen in the middle of a pass would
 * finish that pass when thawed, overlapping the next leader's passes: that is
 * the step in flight that no lease can fence, not what this suite tests.
 */
async function freezeBetweenPasses(w: Watcher): Promise<number> {
  const ends = (): number => w.lines().filter((l) => l.msg === 'pass finished').length;
  for (let attempt = 0; attempt < 20; attempt++) {
    const n = ends();
    await until('a pass to finish', 5_000, () => ends() > n, 2);
    w.cli.child.kill('SIGSTOP');
    const at = Date.now();
    // Whatever it wrote before it stopped arrives meanwhile.
    await new Promise((r) => setTimeout(r, 200));
    const last = w.lines().filter((l) => l.msg === 'pass started' || (l.result !== undefined && l.durationMs !== undefined)).at(-1);
    if (last?.msg !== 'pass started') return at;
    w.cli.child.kill('SIGCONT');
  }
  throw new Error('could not freeze the leader between two passes');
}

function assertNoOverlap(): number {
  const all = passes();
  for (let i = 1; i < all.length; i++) {
    const prev = all[i - 1]!;
    const cur = all[i]!;
    assert.ok(cur.start >= prev.end, `pass ${cur.id} of ${cur.who} started at ${cur.start} while pass ${prev.id} of ${prev.who} ran until ${prev.end}`);
  }
  return all.length;
}

test.before(async () => {
  etcd = await singleEtcd(26300);
  repo = makeRepo();
  repo.commit({ 'nodes.yaml': '# no nodes: this repository only exercises the election\n' }, 'initial');
  work = mkdtempSync(join(tmpdir(), 'converge-ha-'));
  // openSession wants a key even when no node is declared; it is never used.
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'id_ed25519')]);
});

test.after(async () => {
  for (const w of watchers) {
    w.cli.child.kill('SIGCONT');
    w.cli.child.kill('SIGKILL');
  }
  await etcd.close();
  repo.remove();
  rmSync(work, { recursive: true, force: true });
  if (figures.length) console.log(`\n  figures: ${figures.join('; ')}`);
});

let a: Watcher;
let b: Watcher;

test('two watchers: exactly one leads and reconciles, the other stands by', async () => {
  const t = Date.now();
  [a, b] = await Promise.all([start('a'), start('b')]);
  const first = await until('a leader', 60_000, async () => ((await leaders([a, b])).length > 0 ? leaders([a, b]) : undefined));
  figures.push(`start → first leader ${Date.now() - t} ms`);
  assert.is(first.length, 1);
  // Sampled for a while: never two leaders, never none once there is one.
  for (let i = 0; i < 15; i++) {
    const now = await leaders([a, b]);
    assert.is(now.length, 1, `leaders at sample ${i}: ${now.map((w) => w.name).join(', ') || 'none'}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const leader = first[0]!;
  const standby = leader === a ? b : a;
  const commit = repo.commit({ 'nodes.yaml': '# second commit\n' });
  await until('the leader to reconcile the new commit', 30_000, async () => (await status(leader))?.['commitApplied'] === commit);
  assert.ok(leader.lines().some((l) => l.msg === 'pass started' && l.instance !== undefined), 'pass lines carry the instance id');
  assert.is(standby.lines().filter((l) => l.msg === 'pass started').length, 0, 'the standby ran a pass');
  const st = await status(standby);
  assert.is(st?.['leader'], false);
  assert.is(st?.['election']?.leaderId, (await status(leader))?.['election']?.id);
  assertNoOverlap();
});

test('kill -9 the leader: the other takes over within the lease TTL, and reconciles', async () => {
  const [leader] = await leaders([a, b]);
  const standby = leader === a ? b : a;
  await until('a few passes', 5_000, () => leader!.lines().filter((l) => l.msg === 'pass started').length > 1, 5);
  leader!.cli.child.kill('SIGKILL');
  leader!.killedAt = Date.now();
  const took = (await until('the standby to lead', (TTL_S + 5) * 1000, async () => ((await status(standby))?.['leader'] === true ? Date.now() : undefined), 20)) - leader!.killedAt;
  figures.push(`kill -9 leader → standby leads ${took} ms (lease TTL ${TTL_S} s)`);
  // The lease runs out at most TTL after the last keepalive; the rest is etcd's expiry check, a watch event and a read on a loaded machine.
  assert.ok(took <= TTL_S * 1000 + 2000, `takeover took ${took} ms with a ${TTL_S} s lease`);
  const commit = repo.commit({ 'nodes.yaml': '# after the takeover\n' });
  await until('the new leader to reconcile', 30_000, async () => (await status(standby))?.['commitApplied'] === commit);
  assertNoOverlap();
});

test('a leader frozen past its lease (SIGSTOP) is replaced, and when it runs again it leads nothing and runs no pass', async () => {
  const leader = (await leaders(watchers.filter((w) => w.killedAt === null)))[0]!;
  const c = await start('c');
  await until('c to stand by', 30_000, async () => (await status(c))?.['election']?.leaderId === (await status(leader))?.['election']?.id);
  const frozen = await freezeBetweenPasses(leader);
  await until('c to lead', (TTL_S + 5) * 1000, async () => (await status(c))?.['leader'] === true, 20);
  figures.push(`SIGSTOP leader → standby leads ${Date.now() - frozen} ms`);
  const passesBefore = leader.lines().filter((l) => l.msg === 'pass started').length;
  leader.cli.child.kill('SIGCONT');
  const thawed = Date.now();
  const st = await until('the thawed process to answer', 5_000, () => status(leader).then((s) => s ?? undefined));
  assert.is(st['leader'], false, 'the thawed process still says it leads');
  figures.push(`thawed → answers leader:false in ${Date.now() - thawed} ms`);
  await new Promise((r) => setTimeout(r, 2000));
  assert.is(leader.lines().filter((l) => l.msg === 'pass started').length, passesBefore, 'the thawed process ran a pass');
  assert.ok(leader.lines().some((l) => l.msg === 'leadership lost' || l.msg === 'not campaigning: will try again'), 'the thawed process did not notice it lost');
  assert.is((await leaders(watchers.filter((w) => w.killedAt === null))).length, 1);
  const count = assertNoOverlap();
  figures.push(`${count} passes by 3 processes, none overlapping`);
});

test('SIGTERM the leader: it resigns after its pass and another leads at once; all exit 0', async () => {
  const live = watchers.filter((w) => w.killedAt === null);
  const leader = (await leaders(live))[0]!;
  const other = live.find((w) => w !== leader)!;
  const t = Date.now();
  const r = await leader.cli.stop();
  assert.is(r.code, 0, r.stderr);
  const took = (await until('the other to lead', 5_000, async () => ((await status(other))?.['leader'] === true ? Date.now() : undefined), 20)) - t;
  figures.push(`SIGTERM leader → other leads ${took} ms`);
  assert.ok(took < 2000, `handover after a clean stop took ${took} ms`);
  assert.ok(leader.lines().some((l) => l.msg === 'resigned the leadership'));
  for (const w of live.filter((x) => x !== leader)) assert.is((await w.cli.stop()).code, 0);
  assertNoOverlap();
});

test.run();
