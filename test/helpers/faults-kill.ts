/**
 * Fault 1: converge killed with SIGKILL at seeded random moments of real
 * applies, each followed by one ordinary pass that must converge.
 *
 * Two kinds of rounds. "fresh": the three nodes are put back to fresh (no
 * account, binaries, config, etcd data or converge state) and a full apply
 * is killed, half of the time inside the window where the etcd bootstrap ran
 * in the calibration apply. "change": with 1,000 keys in etcd, the desired
 * state flips between two versions that differ in the etcd binary (20 MiB on
 * every member) and one etcd flag (a rolling restart), and that apply is
 * killed. Both kinds are calibrated by one apply that is not killed, so that
 * the moments land inside an apply on this machine, however loaded.
 *
 * All the while a sampler reads the managed files on the nodes: every digest
 * observed must be the old content (or nothing, when there was nothing) or
 * the new one.
 */
import { labReset } from '../../src/lab/index.js';
import { bootstrapInitialCluster, initialClusterString, initialEnvText, sha256Hex } from '../../src/plan/etcd.js';
import type { CliResult } from './cli.js';
import {
  ALL,
  THREE,
  bootstrapEnvSha,
  converged,
  desired,
  desiredHashes,
  errorLines,
  apply,
  keysIntact,
  leftovers,
  nodeState,
  prng,
  resolved,
  runningEtcd,
  secs,
  sh,
  sleep,
  startApply,
  until,
  tempFiles,
  wipe,
  writeKeys,
  type FaultLab,
  type Shape,
} from './faults.js';
import { ABSENT, Sampler, transition, type SamplerFigures } from './faults-sampler.js';
import type { ResolvedState } from '../../src/model/types.js';

const INITIAL_ENV = '/etc/etcd/etcd-initial.env';
const FLAG = 'ETCD_SNAPSHOT_COUNT=20001';

export interface KillRound {
  n: number;
  kind: 'fresh' | 'change';
  /** Where the moment was drawn from. */
  window: string;
  /** Attempts whose apply had finished before its moment came (the round was run again). */
  missed: number;
  delayMs: number;
  /** What the kill left on the nodes, one line per node. */
  left: string[];
  tempAfterKill: number;
  recovery: { code: number | null; ms: number; problem: string | null; errors: string[] };
  /** The first pass did not converge: how a second one did. */
  extraPass: { code: number | null; problem: string | null } | null;
  /** Temporary files or an initial env file left after the recovery pass. */
  leftovers: string[];
  /** change rounds: members running the wanted binary and flag; keys intact. */
  running?: string;
  keys?: number;
}

export interface StagedCase {
  what: string;
  code: number | null;
  ms: number;
  problem: string | null;
  leftovers: string[];
}

export interface KillReport {
  /** The version the nodes run at the end. */
  last: 'A' | 'B';
  seed: number;
  calibration: { freshMs: number; bootstrapFrom: number; bootstrapTo: number; changeMs: number };
  rounds: KillRound[];
  staged: StagedCase[];
  sampler: SamplerFigures;
  keysAtEnd: number;
  statusAtEnd: string | null;
  ms: number;
}

export interface KillOptions {
  seed: number;
  fresh: number;
  change: number;
  log: (line: string) => void;
}

type Version = 'A' | 'B';
export const shapeOf = (v: Version): Shape => (v === 'A' ? { binary: 'A' } : { binary: 'B', env: [FLAG] });

export async function killRounds(f: FaultLab, o: KillOptions): Promise<KillReport> {
  const t0 = Date.now();
  const rng = prng(o.seed);
  const dirs = { A: desired(f, shapeOf('A')), B: desired(f, shapeOf('B')) };
  const states = { A: await resolved(f, dirs.A), B: await resolved(f, dirs.B) };
  const want = (v: Version, node: string): Map<string, string> => desiredHashes(states[v], node);
  const bootSha = bootstrapEnvSha(states.A);
  const urls = states.A.etcd!.members.map((m) => m.clientUrl);

  o.log('fault 1: fresh nodes (lab reset)');
  // The fourth node too: a member left there by an earlier run's scale-out would join the new cluster (same token, same peer URLs, same member IDs).
  await Promise.all(ALL.map((n) => labReset(n)));
  const sampler = new Sampler(THREE);
  // From fresh nodes to version A; the initial env file absent, the bootstrap's, or one of `extraEnv`.
  const freshExpect = (extraEnv: readonly string[] = []): void => {
    for (const n of THREE) {
      const m = transition(new Map(), want('A', n));
      m.set(INITIAL_ENV, new Set([ABSENT, bootSha, ...extraEnv]));
      sampler.expect(n, m);
    }
  };
  freshExpect();
  sampler.start();
  try {
    return await runAll(f, o, sampler, { t0, rng, dirs, states, want, bootSha, urls, freshExpect });
  } finally {
    await sampler.stop();
  }
}

interface Context {
  t0: number;
  rng: () => number;
  dirs: Record<Version, string>;
  states: Record<Version, ResolvedState>;
  want: (v: Version, node: string) => Map<string, string>;
  bootSha: string;
  urls: string[];
  freshExpect: (extraEnv?: readonly string[]) => void;
}

async function runAll(f: FaultLab, o: KillOptions, sampler: Sampler, ctx: Context): Promise<KillReport> {
  const { t0, rng, dirs, states, want, bootSha, urls, freshExpect } = ctx;
  await Promise.all(THREE.map((n) => sampler.nextSample(n)));

  // Calibration: a full apply from fresh nodes, not killed.
  const at = sampler.now();
  const calib = await apply(f, dirs.A);
  const problem = converged(calib);
  if (problem) throw new Error(`the calibration apply from fresh nodes did not converge (${problem}):\n${calib.stdout}\n${calib.stderr}`);
  const envSeen = THREE.map((n) => sampler.firstSeen(n, INITIAL_ENV, new Set([bootSha]), at)).filter((x): x is number => x !== null);
  const envGone = THREE.map((n) => sampler.firstSeen(n, INITIAL_ENV, new Set([ABSENT]), Math.max(...envSeen, at))).filter((x): x is number => x !== null);
  const freshMs = calib.ms;
  // The bootstrap window, relative to the start of the apply, widened by a sampling interval on each side.
  const bootstrapFrom = envSeen.length ? Math.max(0, Math.min(...envSeen) - at - 300) : Math.round(freshMs * 0.7);
  const bootstrapTo = envGone.length ? Math.min(freshMs, Math.max(...envGone) - at + 300) : freshMs;
  o.log(`fault 1: calibration: full apply from fresh nodes ${secs(freshMs)}, bootstrap from ${secs(bootstrapFrom)} to ${secs(bootstrapTo)}`);

  const rounds: KillRound[] = [];
  let changeMs = 0;
  let target: Version = 'A';

  /**
   * One round: prepare, start the apply, wait for `armed` (when given: a
   * moment of the apply, e.g. the bootstrap beginning), then `draw()` ms
   * more, and kill it. An apply that finishes before its moment is run again
   * (prepared afresh) with a moment drawn within what it took.
   */
  const runRound = async (n: number, kind: KillRound['kind'], dir: string, window: string, draw: (typical: number) => number, prepare: (again: boolean) => Promise<void>, armed?: () => Promise<void>): Promise<KillRound> => {
    let missed = 0;
    let delayMs = 0;
    let typical = kind === 'fresh' ? freshMs : changeMs;
    let after = '';
    // An armed apply that ended before its moment bounds the next moment: the time it ran after being armed.
    let cap = Number.POSITIVE_INFINITY;
    for (;;) {
      await prepare(missed > 0);
      const p = startApply(f, dir);
      const spawned = Date.now();
      const exited = p.exited.then(() => 'exit' as const);
      let armedAt = spawned;
      if (armed) {
        if ((await Promise.race([exited, armed().then(() => 'armed' as const)])) === 'exit') {
          missed++;
          if (missed >= 3) throw new Error(`round ${n}: three applies finished before their kill moment`);
          continue;
        }
        armedAt = Date.now();
      }
      const d = Math.round(draw(typical) % cap);
      if ((await Promise.race([exited, sleep(d).then(() => 'kill' as const)])) === 'kill') {
        p.child.kill('SIGKILL');
        await p.exited;
        delayMs = Date.now() - spawned;
        if (armed) after = ` (${secs(Date.now() - armedAt)} after the bootstrap began)`;
        break;
      }
      missed++;
      typical = (await p.exited).ms;
      if (armed) cap = Math.max(1, (Date.now() - armedAt) * 0.9);
      if (missed >= 3) throw new Error(`round ${n}: three applies finished before their kill moment`);
    }
    const left = await Promise.all(THREE.map((node) => nodeState(node, want(kind === 'fresh' ? 'A' : target, node))));
    const tempAfterKill = (await Promise.all(THREE.map(tempFiles))).flat().length;
    const r: CliResult = await apply(f, dir);
    const first = { code: r.code, ms: r.ms, problem: converged(r), errors: errorLines(r) };
    let extraPass: KillRound['extraPass'] = null;
    if (first.problem) {
      o.log(`fault 1: round ${n}: the pass after the kill did not converge (${first.problem}):\n${r.stdout}\n${r.stderr}`);
      const again = await apply(f, dir);
      extraPass = { code: again.code, problem: converged(again) };
    }
    const round: KillRound = { n, kind, window: `${window}${after}`, missed, delayMs, left, tempAfterKill, recovery: first, extraPass, leftovers: (await Promise.all(THREE.map(leftovers))).flat() };
    rounds.push(round);
    if (round.leftovers.length > 0 && !first.problem) o.log(`fault 1: round ${n}: the pass after the kill converged but left ${round.leftovers.join(', ')}:\n${r.stdout}\n${r.stderr}`);
    o.log(`fault 1: round ${n} (${round.window}): killed at ${secs(delayMs)} [${left.join('; ')}]; next pass ${first.problem ? `FAILED: ${first.problem}` : 'converged'} in ${secs(first.ms)}${round.leftovers.length ? `; left: ${round.leftovers.join(', ')}` : ''}`);
    return round;
  };

  const bootstrapBegan = async (): Promise<void> => {
    await until('the bootstrap to begin', 600_000, () => THREE.some((n) => sampler.latest(n, INITIAL_ENV) === bootSha), 50);
  };
  for (let i = 1; i <= o.fresh; i++) {
    const inBootstrap = i % 2 === 1;
    await runRound(
      i,
      'fresh',
      dirs.A,
      inBootstrap ? 'during the bootstrap' : 'anywhere in the apply',
      (typical) => (inBootstrap ? rng() * (bootstrapTo - bootstrapFrom) : rng() * typical * 0.95),
      async () => {
        await Promise.all(THREE.map(wipe));
        // The sampler has seen the nodes fresh before the apply starts.
        await Promise.all(THREE.map((n) => sampler.nextSample(n)));
        await Promise.all(THREE.map((n) => sampler.nextSample(n)));
      },
      inBootstrap ? bootstrapBegan : undefined,
    );
  }

  // Two moments too short to hit by chance, staged exactly as a kill there leaves them.
  const staged: StagedCase[] = [];
  const stage = async (what: string, setup: () => Promise<void>, check?: () => Promise<string | null>): Promise<void> => {
    await setup();
    const r = await apply(f, dirs.A);
    // The check runs whatever the pass did: it also undoes what the setup changed beyond a kill.
    const checked = check ? await check() : null;
    const c: StagedCase = { what, code: r.code, ms: r.ms, problem: converged(r) ?? checked, leftovers: (await Promise.all(THREE.map(leftovers))).flat() };
    staged.push(c);
    o.log(`fault 1: staged: ${what}: next pass ${c.problem ? `FAILED: ${c.problem}\n${r.stdout}\n${r.stderr}` : 'converged'} in ${secs(c.ms)}${c.leftovers.length ? `; left: ${c.leftovers.join(', ')}` : ''}`);
  };
  const bootEnv = initialEnvText(bootstrapInitialCluster(states.A.etcd!), 'new');
  const putEnv = (n: string): Promise<string> => sh(n, `umask 022; cat > ${INITIAL_ENV}.staged <<'EOF'\n${bootEnv}EOF\nmv ${INITIAL_ENV}.staged ${INITIAL_ENV}`);
  const mainPids = (): Promise<string[]> => Promise.all(THREE.map((n) => sh(n, 'systemctl show -p MainPID --value etcd.service')));
  await stage(`killed between the members' starts: the host part done, the initial env files written, etcd started on ${THREE[0]} only`, async () => {
    await Promise.all(THREE.map(wipe));
    const host = await apply(f, dirs.A, ['--skip-etcd']);
    if (host.code !== 0) throw new Error(`host part: exit ${host.code}:\n${host.stdout}\n${host.stderr}`);
    await Promise.all(THREE.map(putEnv));
    await sh(THREE[0]!, 'systemctl start --no-block etcd.service');
  });
  // A kill just after a member's etcd started, before it wrote its log, lasts milliseconds: a unit
  // drop-in that waits before it runs etcd holds that moment, with the start's leftovers in the data dir.
  const slowStart = '/etc/systemd/system/etcd.service.d/converge-faults-slow-start.conf';
  const holdStart = async (node: string, seconds: number): Promise<void> => {
    await sh(
      node,
      [
        'install -d -o etcd -g etcd -m 0700 /var/lib/etcd/member /var/lib/etcd/member/snap',
        'mkdir -p /etc/systemd/system/etcd.service.d',
        `printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c "sleep ${seconds}; exec /usr/local/bin/etcd"\\n' > ${slowStart}`,
        'systemctl daemon-reload',
        'systemctl start --no-block etcd.service',
        'i=0; while [ "$(systemctl show -p MainPID --value etcd.service)" = 0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
      ].join('\n'),
    );
  };
  const notMovedUnder = async (node: string): Promise<string | null> => {
    const moved = await sh(node, `rm -f ${slowStart}; systemctl daemon-reload; ls -d /var/lib/etcd.removed-* 2>/dev/null; true`);
    return moved ? `the data dir of ${node}, whose etcd was starting, was moved aside under it: ${moved.split('\n').join(', ')}` : null;
  };
  const hostPartWithEnv = async (): Promise<void> => {
    await Promise.all(THREE.map(wipe));
    const host = await apply(f, dirs.A, ['--skip-etcd']);
    if (host.code !== 0) throw new Error(`host part: exit ${host.code}:\n${host.stdout}\n${host.stderr}`);
    await Promise.all(THREE.map(putEnv));
  };
  await stage(
    `killed just after etcd started on ${THREE[0]}, before it wrote its log, the other members not started: the start's leftovers in its data dir, the process still starting`,
    async () => {
      await hostPartWithEnv();
      await holdStart(THREE[0]!, 8);
    },
    () => notMovedUnder(THREE[0]!),
  );
  // Finished as an add, the late member gets an add's initial env: the cluster's members in etcd's
  // list order, which the setup does not choose, so any order of the three is a whole, valid content.
  const members = states.A.etcd!.members.map((m) => ({ name: m.name, peerUrls: [m.peerUrl] }));
  const addEnvShas = permutations(members).map((ms) => sha256Hex(initialEnvText(initialClusterString(ms), 'existing')));
  await stage(
    `killed while the members started: ${THREE[1]} and ${THREE[2]} formed the cluster, ${THREE[0]}'s etcd still starting, before it wrote its log (finished as an add)`,
    async () => {
      freshExpect(addEnvShas);
      await hostPartWithEnv();
      await holdStart(THREE[0]!, 15);
      await Promise.all(THREE.slice(1).map((n) => sh(n, 'systemctl start etcd.service')));
    },
    async () => {
      const problem = await notMovedUnder(THREE[0]!);
      freshExpect();
      return problem;
    },
  );
  let pids: string[] = [];
  await stage(
    'killed after the bootstrapped cluster became healthy, before its initial env files were removed',
    async () => {
      await Promise.all(THREE.map(putEnv));
      pids = await mainPids();
    },
    async () => {
      const now = await mainPids();
      return now.join() === pids.join() ? null : `etcd was restarted (MainPID ${pids.join(',')} → ${now.join(',')})`;
    },
  );

  o.log('fault 1: 1,000 keys written');
  await writeKeys(f.tls, urls[0]!);

  // A change uploads one binary where a fresh apply uploads two, and restarts three members where
  // it bootstraps them: its moments are drawn within the fresh apply's duration. A change that
  // finished before its moment is run again with a moment within what it took.
  let current: Version = 'A';
  changeMs = Math.round(freshMs * 0.85);

  for (let j = 1; j <= o.change; j++) {
    target = current === 'A' ? 'B' : 'A';
    for (const n of THREE) sampler.expect(n, withEnv(transition(want(current, n), want(target, n))));
    const v = target;
    const from = current;
    const round = await runRound(o.fresh + j, 'change', dirs[v], `change to ${v}`, (typical) => rng() * typical * 0.95, async (again) => {
      // An apply that finished before its moment: put the nodes back before the next try.
      if (again) assertConverged(await apply(f, dirs[from]), `back to ${from}`);
    });
    const run = await Promise.all(THREE.map((n) => runningEtcd(n, FLAG)));
    const good = run.filter((x) => x.exeSha === f.binaries[v].sha256 && x.hasFlag === (v === 'B')).length;
    round.running = `${good}/3 members run version ${v}`;
    round.keys = await keysIntact(f.tls, urls);
    current = target;
  }

  const sampled = await sampler.stop();
  const keysAtEnd = await keysIntact(f.tls, urls);
  const st = await apply(f, dirs[current]);
  return {
    last: current,
    seed: o.seed,
    calibration: { freshMs, bootstrapFrom, bootstrapTo, changeMs },
    rounds,
    staged,
    sampler: sampled,
    keysAtEnd,
    statusAtEnd: converged(st),
    ms: Date.now() - t0,
  };
}

function assertConverged(r: CliResult, what: string): void {
  const problem = converged(r);
  if (problem) throw new Error(`${what}: ${problem}:\n${r.stdout}\n${r.stderr}`);
}

/** During a change no bootstrap happens: the initial env file must stay absent. */
function withEnv(m: Map<string, Set<string>>): Map<string, Set<string>> {
  m.set(INITIAL_ENV, new Set([ABSENT]));
  return m;
}

function permutations<T>(xs: readonly T[]): T[][] {
  if (xs.length <= 1) return [[...xs]];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest]));
}
