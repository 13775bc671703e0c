/**
 * Executing the etcd planner's steps, one at a time, each behind a health
 * gate on live facts: the plan was computed earlier, so every step looks at
 * the cluster again before it acts and refuses rather than improvises.
 *
 * - before any stop, the other voters must be a healthy quorum;
 * - after any start, the member must be healthy (a linearizable read through
 *   it) and caught up (raft index close to the leader's) within the rollout's
 *   health timeout, or the rollout halts with the unit's journal lines;
 * - membership changes are never retried blindly: after an add or a remove
 *   whose answer was lost, the member list is read again.
 * The first failing step ends the run: the cluster keeps its quorum and the
 * next pass starts from the facts as they are.
 */
import type { Etcd3 } from 'etcd3';
import { deadline, etcdErrorText, withMemberClients, type EtcdTls, type MemberClients } from '../connect/etcd.js';
import { shellQuote, type Transport } from '../connect/transport.js';
import { ConvergeError, EtcdError, EtcdUnsafeError } from '../errors/index.js';
import { gatherEtcdFacts, gatherEtcdFactsSettled, gatherEtcdNodeFacts, unitJournal } from '../facts/etcd.js';
import type { EtcdFacts, EtcdMemberFact } from '../facts/types.js';
import type { EtcdMemberSpec, ResolvedEtcd } from '../model/types.js';
import { CAUGHT_UP_LAG, LEARNER_READY_RATIO, initialClusterString, initialEnvText, quorum, sha256Hex, bootstrapInitialCluster } from '../plan/etcd.js';
import type { EtcdAction } from '../plan/types.js';

export interface EtcdApplyContext {
  spec: ResolvedEtcd;
  tls: EtcdTls;
  /** The connected transport of a node, or undefined when it cannot be reached. */
  transport: (node: string) => Transport | undefined;
  /** Progress, one line at a time. */
  log?: (line: string) => void;
  signal?: AbortSignal;
  now?: () => Date;
  /** How often live facts are read while waiting. Default 500 ms. */
  pollMs?: number;
}

export interface EtcdStepReport {
  action: EtcdAction;
  ok: boolean;
  ms: number;
  /** What was done and observed, for the report ("leadership moved in 140 ms"). */
  detail: string[];
  /** Measured durations of the step's phases, in ms (for benchmarks and notes). */
  timings: Record<string, number>;
}

export interface EtcdApplyResult {
  ok: boolean;
  /** One line per step taken. */
  log: string[];
  steps: EtcdStepReport[];
  error?: ConvergeError;
}

/** A step that failed; `journal` carries the unit's last lines when a member did not come back. */
export class EtcdStepError extends EtcdError {
  constructor(message: string, hint: string, data: { node?: string; journal?: string[] } = {}) {
    super(message, { hint, data });
  }
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

function voters(f: EtcdFacts): EtcdMemberFact[] {
  return f.members.filter((m) => !m.isLearner);
}

function healthyVoters(f: EtcdFacts): EtcdMemberFact[] {
  return voters(f).filter((m) => f.status[m.id]?.healthy);
}

/** The leader all reachable voters agree on, or null. */
export function agreedLeader(f: EtcdFacts): string | null {
  const seen = new Set(voters(f).flatMap((m) => (f.status[m.id]?.reachable && f.status[m.id]?.leader ? [f.status[m.id]!.leader!] : [])));
  if (seen.size !== 1) return null;
  const l = [...seen][0]!;
  return f.members.some((m) => m.id === l && !m.isLearner) ? l : null;
}

/** Why the cluster is not fully healthy with one leader, or null when it is. */
export function clusterProblem(f: EtcdFacts): string | null {
  if (f.members.length === 0) return f.error ?? 'no member answers';
  const sick = voters(f).filter((m) => !f.status[m.id]?.healthy);
  if (sick.length > 0) return sick.map((m) => `${m.name || m.id}: ${f.status[m.id]?.error ?? 'not healthy'}`).join('; ');
  if (!agreedLeader(f)) return 'no agreed leader';
  if (f.alarms.length > 0) return `alarm ${f.alarms.map((a) => a.alarm).join(', ')}`;
  return null;
}

/**
 * Why learner `id` cannot be promoted yet, or null. It must answer itself
 * (3.4 can promote a learner that never started, during a leader change) and
 * hold at least the share of the leader's log that etcd itself demands.
 */
export function learnerNotReady(f: EtcdFacts, id: string): string | null {
  const m = f.members.find((x) => x.id === id);
  const s = f.status[id];
  if (!m?.name || !s?.reachable) return `not started yet (${s?.error ?? 'no answer'})`;
  const leader = agreedLeader(f);
  if (!leader) return 'no agreed leader';
  const li = Number(f.status[leader]?.raftIndex ?? '0');
  const mi = Number(s.raftIndex ?? '0');
  return mi >= li * LEARNER_READY_RATIO ? null : `catching up (raft index ${mi} of ${li})`;
}

/** Why member `id` is not healthy and caught up with the leader, or null when it is. */
export function memberProblem(f: EtcdFacts, id: string): string | null {
  const s = f.status[id];
  if (!s?.reachable) return s?.error ?? 'not answering';
  if (!s.healthy) return s.error ?? 'not healthy';
  const leader = agreedLeader(f);
  if (!leader) return 'no agreed leader';
  const li = BigInt(f.status[leader]?.raftIndex ?? '0');
  const mi = BigInt(s.raftIndex ?? '0');
  if (li - mi > BigInt(CAUGHT_UP_LAG)) return `behind the leader (raft index ${mi} of ${li})`;
  return null;
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** What prepareDataDir found: an etcd of converge's already starting there, or the dir ready (leftovers moved to `aside`). */
type PreparedDataDir = { running: true } | { running: false; aside: string | null };

class EtcdRun {
  private readonly spec: ResolvedEtcd;
  private readonly pollMs: number;
  private readonly now: () => Date;
  readonly log: string[] = [];

  constructor(
    private readonly ctx: EtcdApplyContext,
    private readonly clients: MemberClients,
  ) {
    this.spec = ctx.spec;
    this.pollMs = ctx.pollMs ?? 500;
    this.now = ctx.now ?? (() => new Date());
  }

  say(line: string): void {
    this.log.push(line);
    this.ctx.log?.(line);
  }

  private get healthMs(): number {
    return this.spec.rollout.healthTimeoutSeconds * 1000;
  }

  private get learnerMs(): number {
    return this.spec.rollout.learnerTimeoutSeconds * 1000;
  }

  facts(): Promise<EtcdFacts> {
    return gatherEtcdFacts(this.spec, this.ctx.tls, { timeoutMs: 2000 });
  }

  /** Facts a step decides on: a time-out is asked again with more time before it counts (polls use facts()). */
  settled(): Promise<EtcdFacts> {
    return gatherEtcdFactsSettled(this.spec, this.ctx.tls, { timeoutMs: 2000 });
  }

  /**
   * Polls live facts until `check` says nothing is wrong (returns null), or
   * the time is up: then throws with the last reason.
   */
  async waitFor(what: string, timeoutMs: number, check: (f: EtcdFacts) => string | null): Promise<EtcdFacts> {
    const end = Date.now() + timeoutMs;
    let last = 'no answer yet';
    for (;;) {
      if (this.ctx.signal?.aborted) throw new EtcdStepError(`${what}: interrupted`, 'run converge again to finish the rollout');
      const f = await this.facts();
      const why = check(f);
      if (why === null) return f;
      last = why;
      if (Date.now() >= end) throw new WaitTimeout(`${what}: not reached within ${Math.round(timeoutMs / 1000)} s (${last})`);
      await sleep(this.pollMs, this.ctx.signal);
    }
  }

  private desired(name: string): EtcdMemberSpec {
    const d = this.spec.members.find((m) => m.name === name);
    if (!d) throw new EtcdStepError(`member ${name} is not in the desired member set any more`, 'the plan is stale: run converge plan again');
    return d;
  }

  private byPeer(f: EtcdFacts, peerUrl: string): EtcdMemberFact | undefined {
    return f.members.find((m) => m.peerUrls.includes(peerUrl));
  }

  private nameOf(f: EtcdFacts, id: string): string {
    const m = f.members.find((x) => x.id === id);
    return m?.name || this.spec.members.find((d) => m?.peerUrls.includes(d.peerUrl))?.name || id;
  }

  /** A client of a healthy member, the leader when possible: membership changes go there. */
  private clusterClient(f: EtcdFacts, exclude?: string): Etcd3 {
    const leader = agreedLeader(f);
    const pick = [leader ? f.members.find((m) => m.id === leader) : undefined, ...healthyVoters(f)].find((m) => m && m.id !== exclude && m.clientUrls.length > 0);
    if (!pick) throw new EtcdStepError('no healthy etcd member to send the change to', 'check `converge status`');
    return this.clients.get(pick.clientUrls[0]!);
  }

  private node(name: string): Transport {
    const t = this.ctx.transport(name);
    if (!t) throw new EtcdStepError(`${name}: no connection to the node`, `bring ${name} back and run converge again`, { node: name });
    return t;
  }

  private async sh(node: string, script: string, stdin?: string, timeoutMs = 120_000): Promise<string> {
    const t = this.node(node);
    const r = await t.exec(script, stdin === undefined ? { timeoutMs } : { stdin, timeoutMs });
    if (r.code !== 0) {
      const why = r.stderr.trim().split('\n').slice(-3).join(' / ') || `exit ${r.code}`;
      throw new EtcdStepError(`${node}: ${why}`, 'see the node\'s error above and run converge again', { node });
    }
    return r.stdout.toString('utf8');
  }

  private async journal(node: string): Promise<string[]> {
    const t = this.ctx.transport(node);
    if (!t) return [];
    try {
      return await unitJournal(t, this.spec.unit, 20);
    } catch {
      return [];
    }
  }

  // ---- node operations --------------------------------------------------------

  private unit(): string {
    return shellQuote(this.spec.unit);
  }

  private async writeInitialEnv(node: string, text: string): Promise<void> {
    const f = shellQuote(this.spec.initialEnvFile);
    await this.sh(
      node,
      [
        'set -eu',
        `f=${f}; dir=$(dirname "$f")`,
        'mkdir -p "$dir"',
        'tmp=$(mktemp "$dir/.converge-initial.XXXXXX")',
        'trap \'rm -f "$tmp"\' EXIT',
        'cat > "$tmp"',
        'chmod 0644 "$tmp"',
        'sync "$tmp" 2>/dev/null || true',
        'mv -f "$tmp" "$f"',
        'trap - EXIT',
      ].join('\n'),
      text,
    );
  }

  private async removeInitialEnv(node: string): Promise<void> {
    await this.sh(node, `rm -f ${shellQuote(this.spec.initialEnvFile)}`);
  }

  /**
   * Makes the data dir fit for a new member: never touches a write-ahead log
   * (that is a member's state, and the planner said there was none); moves
   * the leftovers of a start that never wrote its log aside, keeping the
   * dir's owner and mode. An etcd that already runs there with one of
   * `ownEnvs` (the initial env this step writes, or the bootstrap's) was
   * started by converge, by a step that was interrupted: it is left to
   * finish its start ('running'), and its data dir is never moved from under
   * it. Any other etcd there is stopped first (which also cancels a pending
   * automatic restart), so that none starts on the leftovers while they move.
   */
  private async prepareDataDir(node: string, ownEnvs: string[]): Promise<PreparedDataDir> {
    const d = shellQuote(this.spec.dataDir);
    const out = await this.sh(
      node,
      [
        'set -eu',
        `d=${d}; a="$d.removed-${timestamp(this.now())}"; u=${this.unit()}; f=${shellQuote(this.spec.initialEnvFile)}`,
        'pid=$(systemctl show -p MainPID -- "$u" 2>/dev/null | sed -n "s/^MainPID=//p")',
        `if [ "\${pid:-0}" != 0 ] && [ -f "$f" ]; then case "$(sha256sum < "$f" | cut -d" " -f1)" in ${ownEnvs.map(sha256Hex).join('|')}) echo running; exit 0 ;; esac; fi`,
        'systemctl stop "$u" 2>/dev/null || true',
        'if ls "$d"/member/wal/*.wal >/dev/null 2>&1; then echo wal; exit 0; fi',
        'if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then mv "$d" "$a"; mkdir "$d"; chown --reference="$a" "$d"; chmod --reference="$a" "$d"; echo "aside $a"; else echo clean; fi',
      ].join('\n'),
    );
    if (out.startsWith('wal')) {
      throw new EtcdUnsafeError(`${node}: ${this.spec.dataDir} holds an etcd write-ahead log; converge never starts a new member on existing data`, `check what it holds, move it aside (mv ${this.spec.dataDir} ${this.spec.dataDir}.old) and run converge again`, { node });
    }
    if (out.startsWith('running')) return { running: true };
    return { running: false, aside: out.startsWith('aside ') ? out.slice(6).trim() : null };
  }

  private noteDataDir(node: string, p: PreparedDataDir, r: EtcdStepReport): void {
    if (p.running) r.detail.push(`${node}: etcd is already starting with converge's initial env (an interrupted pass started it): left to finish`);
    else if (p.aside) r.detail.push(`${node}: leftovers of an earlier start moved to ${p.aside}`);
  }

  /** Stop and disable etcd on a node that left the cluster, and move its data dir aside. */
  private async retire(node: string): Promise<string | null> {
    const d = shellQuote(this.spec.dataDir);
    const out = await this.sh(
      node,
      [
        'set -u',
        `systemctl stop ${this.unit()} 2>/dev/null || true`,
        `systemctl disable ${this.unit()} 2>/dev/null || true`,
        `rm -f ${shellQuote(this.spec.initialEnvFile)}`,
        `d=${d}; a="$d.removed-${timestamp(this.now())}"`,
        'if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then mv "$d" "$a" && mkdir "$d" && chown --reference="$a" "$d" && chmod --reference="$a" "$d" && echo "aside $a"; else echo clean; fi',
      ].join('\n'),
    );
    const line = out.trim().split('\n').pop() ?? '';
    return line.startsWith('aside ') ? line.slice(6) : null;
  }

  private async start(node: string, restart: boolean): Promise<void> {
    await this.sh(node, `systemctl reset-failed ${this.unit()} 2>/dev/null || true\nsystemctl ${restart ? 'restart' : 'start'} --no-block ${this.unit()}`);
  }

  private async stop(node: string): Promise<void> {
    await this.sh(node, `systemctl stop ${this.unit()}`);
  }

  /** A member that did not come back: the rollout halts with its journal lines. */
  private async notBack(node: string, name: string, e: unknown, f: EtcdFacts | null): Promise<never> {
    const journal = await this.journal(node);
    const live = f ?? (await this.facts().catch(() => null));
    const kept = live ? `${healthyVoters(live).length} of ${voters(live).length} voters healthy` : 'cluster state unknown';
    throw new EtcdStepError(
      `${name} did not come back healthy: ${e instanceof Error ? e.message : String(e)}; the rollout stopped here (${kept})`,
      `see ${this.spec.unit}'s journal on ${node} (below), fix the cause and run converge again: the next pass finishes the rollout`,
      { node, journal },
    );
  }

  // ---- the gates ------------------------------------------------------------------

  private requireHealthy(f: EtcdFacts, what: string, except?: string): void {
    const sick = voters(f).filter((m) => m.id !== except && !f.status[m.id]?.healthy);
    if (sick.length > 0 || !agreedLeader(f)) {
      const why = sick.length > 0 ? sick.map((m) => `${this.nameOf(f, m.id)}: ${f.status[m.id]?.error ?? 'not healthy'}`).join('; ') : 'no agreed leader';
      throw new EtcdUnsafeError(`${what}: the cluster is not healthy (${why})`, 'converge changes the cluster only while every voter is healthy; see `converge status`');
    }
  }

  /** Before a member stops: the others must still be a quorum. */
  private requireQuorumWithout(f: EtcdFacts, id: string, what: string): void {
    const v = voters(f);
    const others = v.filter((m) => m.id !== id && f.status[m.id]?.healthy).length;
    if (others < quorum(v.length)) {
      throw new EtcdUnsafeError(
        `${what}: only ${others} other voter${others === 1 ? '' : 's'} of ${v.length} healthy, ${quorum(v.length)} needed while it is down`,
        'bring the down members back first, then run converge again',
      );
    }
  }

  // ---- leadership -----------------------------------------------------------------

  /** Hands leadership to `to` and waits until every reachable voter sees it. Returns the time taken. */
  private async moveLeadership(f: EtcdFacts, to: string): Promise<number> {
    const leader = agreedLeader(f);
    if (!leader) throw new EtcdUnsafeError('cannot move leadership: no agreed leader', 'wait for the election to settle and run converge again');
    if (leader === to) return 0;
    const target = f.members.find((m) => m.id === to);
    if (!target || target.isLearner || !f.status[to]?.healthy) throw new EtcdUnsafeError(`cannot move leadership to ${this.nameOf(f, to)}: it is not a healthy voter`, 'see `converge status`');
    const lm = f.members.find((m) => m.id === leader)!;
    const started = Date.now();
    try {
      await this.clients.get(lm.clientUrls[0]!).maintenance.moveLeader({ targetID: to }, deadline(10_000));
    } catch (e) {
      throw new EtcdStepError(`moving leadership from ${this.nameOf(f, leader)} to ${this.nameOf(f, to)} failed: ${etcdErrorText(e)}`, 'run converge again; nothing else was changed');
    }
    await this.waitFor(`leadership on ${this.nameOf(f, to)}`, this.healthMs, (g) => {
      const seen = voters(g).filter((m) => g.status[m.id]?.reachable);
      const wrong = seen.filter((m) => g.status[m.id]?.leader !== to);
      return wrong.length === 0 ? null : `${wrong.map((m) => this.nameOf(g, m.id)).join(', ')} still see${wrong.length === 1 ? 's' : ''} another leader`;
    });
    return Date.now() - started;
  }

  /** A healthy voter other than `id`, preferring the most advanced one. */
  private successor(f: EtcdFacts, id: string): string | null {
    const c = healthyVoters(f).filter((m) => m.id !== id);
    c.sort((a, b) => (BigInt(f.status[b.id]?.raftIndex ?? '0') > BigInt(f.status[a.id]?.raftIndex ?? '0') ? 1 : -1));
    return c[0]?.id ?? null;
  }

  // ---- steps ------------------------------------------------------------------------

  async leaderMove(a: Extract<EtcdAction, { type: 'etcd.leader.move' }>, r: EtcdStepReport): Promise<void> {
    const f = await this.settled();
    const leader = agreedLeader(f);
    if (leader === a.toMemberId) {
      r.detail.push(`${this.nameOf(f, a.toMemberId)} already leads`);
      return;
    }
    if (leader && leader !== a.fromMemberId) r.detail.push(`leadership had moved to ${this.nameOf(f, leader)} meanwhile`);
    const ms = await this.moveLeadership(f, a.toMemberId);
    r.timings.leaderMove = ms;
    r.detail.push(`leadership moved from ${this.nameOf(f, leader ?? a.fromMemberId)} to ${this.nameOf(f, a.toMemberId)} in ${ms} ms`);
  }

  async restart(a: Extract<EtcdAction, { type: 'etcd.member.restart' }>, r: EtcdStepReport): Promise<void> {
    const d = this.desired(a.name);
    let f = await this.settled();
    const m = this.byPeer(f, d.peerUrl);
    if (!m || m.isLearner) throw new EtcdStepError(`${a.name} is not a voting member of the cluster`, 'the plan is stale: run converge plan again');
    const wasHealthy = f.status[m.id]?.healthy === true;
    if (wasHealthy) {
      this.requireQuorumWithout(f, m.id, `restarting ${a.name}`);
      if (agreedLeader(f) === m.id) {
        const to = this.successor(f, m.id);
        if (!to) throw new EtcdUnsafeError(`cannot restart ${a.name}: it leads and no other voter is healthy`, 'bring the other members back first');
        const ms = await this.moveLeadership(f, to);
        r.timings.leaderMove = ms;
        r.detail.push(`${a.name} led: leadership moved to ${this.nameOf(f, to)} in ${ms} ms first`);
        f = await this.settled();
        this.requireQuorumWithout(f, m.id, `restarting ${a.name}`);
      }
      this.say(`etcd: ${a.name}: stopping (${healthyVoters(f).length - 1} other voters healthy)`);
      const t0 = Date.now();
      await this.stop(d.node);
      r.timings.stop = Date.now() - t0;
      await this.start(d.node, false);
    } else {
      this.say(`etcd: ${a.name}: down, starting it`);
      await this.start(d.node, true);
    }
    const t1 = Date.now();
    try {
      await this.waitFor(`${a.name} healthy and caught up`, this.healthMs, (g) => memberProblem(g, m.id));
    } catch (e) {
      if (e instanceof WaitTimeout) await this.notBack(d.node, a.name, e, null);
      throw e;
    }
    r.timings.backHealthy = Date.now() - t1;
    r.detail.push(`${a.name} ${wasHealthy ? 'restarted' : 'started'} (${a.because.join(', ')}); healthy and caught up after ${r.timings.backHealthy} ms`);
  }

  async bootstrap(a: Extract<EtcdAction, { type: 'etcd.bootstrap' }>, r: EtcdStepReport): Promise<void> {
    const f0 = await this.settled();
    const want = this.spec.members;
    if (f0.members.length > 0) {
      const same = f0.members.length === want.length && want.every((d) => this.byPeer(f0, d.peerUrl));
      if (!same || clusterProblem(f0) !== null) {
        throw new EtcdUnsafeError('refusing to bootstrap: an etcd cluster already answers', 'the plan is stale: run converge plan again');
      }
      r.detail.push('the cluster was bootstrapped already');
    } else {
      const initialCluster = bootstrapInitialCluster(this.spec);
      if (initialCluster !== a.initialCluster) throw new EtcdStepError('the desired member set changed since the plan was made', 'run converge plan again');
      const text = initialEnvText(initialCluster, 'new');
      const sha = sha256Hex(text);
      await Promise.all(
        want.map(async (d) => {
          const nf = await gatherEtcdNodeFacts(this.node(d.node), this.spec);
          const env = nf.paths[this.spec.initialEnvFile];
          if (!nf.etcdDataDir?.empty && !(env?.exists && env.sha256 === sha)) {
            throw new EtcdUnsafeError(`refusing to bootstrap: ${d.node} holds etcd data in ${this.spec.dataDir} that this bootstrap did not create`, 'the plan is stale or the node was changed by hand: run converge plan again');
          }
          if (nf.etcdDataDir?.empty) this.noteDataDir(d.node, await this.prepareDataDir(d.node, [text]), r);
          await this.writeInitialEnv(d.node, text);
        }),
      );
      this.say(`etcd: bootstrap: starting ${want.map((d) => d.name).join(', ')} together`);
      const t0 = Date.now();
      await Promise.all(want.map((d) => this.start(d.node, false)));
      try {
        await this.waitFor(`the new cluster of ${want.length} healthy`, this.healthMs, (g) => {
          if (g.members.length !== want.length) return g.error ?? `${g.members.length} of ${want.length} members listed`;
          const unstarted = g.members.filter((m) => !m.name || m.clientUrls.length === 0);
          if (unstarted.length > 0) return `${unstarted.length} member(s) not started yet`;
          return clusterProblem(g);
        });
      } catch (e) {
        if (!(e instanceof WaitTimeout)) throw e;
        const g = await this.facts().catch(() => null);
        const bad = want.filter((d) => {
          const m = g && this.byPeer(g, d.peerUrl);
          return !m || !g?.status[m.id]?.healthy;
        });
        const journal = (await Promise.all(bad.map(async (d) => (await this.journal(d.node)).map((l) => `${d.node}: ${l}`)))).flat();
        throw new EtcdStepError(`the bootstrap did not become healthy: ${e.message}`, `see the journal of ${bad.map((d) => d.node).join(', ') || 'the members'} below, fix the cause and run converge again (the bootstrap is finished by the next pass)`, { journal });
      }
      r.timings.healthy = Date.now() - t0;
      r.detail.push(`${want.length} members started, healthy with one leader after ${r.timings.healthy} ms`);
    }
    await Promise.all(want.map((d) => this.removeInitialEnv(d.node)));
  }

  async add(a: Extract<EtcdAction, { type: 'etcd.member.add' }>, r: EtcdStepReport): Promise<void> {
    const d = this.desired(a.name);
    let f = await this.settled();
    let m = this.byPeer(f, a.peerUrl);
    this.requireHealthy(f, `adding ${a.name}`, m?.id);
    const otherLearner = f.members.find((x) => x.isLearner && x.id !== m?.id);
    if (otherLearner) throw new EtcdUnsafeError(`adding ${a.name}: learner ${this.nameOf(f, otherLearner.id)} is still in the cluster`, 'run converge again: it finishes or removes that learner first');

    const t0 = Date.now();
    if (!m) {
      m = await this.memberAdd(f, a);
      r.detail.push(`${a.name} added as learner ${m.id}`);
      f = await this.settled();
    } else {
      r.detail.push(`${a.name} is member ${m.id} already (${m.isLearner ? 'learner' : 'voter'}): not added again`);
    }
    const id = m.id;

    const nf = await gatherEtcdNodeFacts(this.node(d.node), this.spec);
    if (nf.etcdDataDir?.empty) {
      const live = f.members.map((x) => ({ name: x.id === id ? a.name : x.name || this.nameOf(f, x.id), peerUrls: x.peerUrls }));
      if (live.some((x) => !x.name)) throw new EtcdStepError(`adding ${a.name}: another member has not started yet`, 'run converge again');
      const text = initialEnvText(initialClusterString(live), 'existing');
      // A member of the bootstrap that had not started when the others formed the cluster is finished as an add.
      const prepared = await this.prepareDataDir(d.node, [text, initialEnvText(bootstrapInitialCluster(this.spec), 'new')]);
      this.noteDataDir(d.node, prepared, r);
      await this.writeInitialEnv(d.node, text);
      this.say(`etcd: ${a.name}: ${prepared.running ? 'already starting' : 'starting'} as ${m.isLearner ? 'learner' : 'member'} ${id}`);
      await this.start(d.node, !prepared.running);
    } else if (m.name !== '') {
      await this.start(d.node, false);
    } else {
      throw new EtcdUnsafeError(`adding ${a.name}: ${d.node} holds an etcd write-ahead log but member ${id} never started`, `check what ${this.spec.dataDir} on ${d.node} holds and move it aside; converge then finishes the add`, { node: d.node });
    }

    if (m.isLearner) await this.promoteWhenReady(d, id, a.name, r);
    try {
      await this.waitFor(`${a.name} healthy`, this.healthMs, (g) => memberProblem(g, id));
    } catch (e) {
      if (e instanceof WaitTimeout) await this.notBack(d.node, a.name, e, null);
      throw e;
    }
    r.timings.addToHealthy = Date.now() - t0;
    r.detail.push(`${a.name} is a healthy voter ${r.timings.addToHealthy} ms after the add`);
    await this.removeInitialEnv(d.node);
  }

  /**
   * memberAdd as a learner. An answer that was lost is settled by listing the
   * members again; a refusal that changed nothing ("unhealthy cluster": etcd
   * wants every voter connected for the last 5 s, which a member restarted a
   * moment ago is not) is tried again until the health timeout.
   */
  private async memberAdd(f: EtcdFacts, a: Extract<EtcdAction, { type: 'etcd.member.add' }>): Promise<EtcdMemberFact> {
    const end = Date.now() + this.healthMs;
    for (;;) {
      try {
        const res = await this.clusterClient(f).cluster.memberAdd({ peerURLs: [a.peerUrl], isLearner: true }, deadline(10_000));
        return { id: String(res.member.ID), name: '', peerUrls: [a.peerUrl], clientUrls: [], isLearner: true };
      } catch (e) {
        const text = etcdErrorText(e);
        const again = await this.waitFor('the member list', 10_000, (g) => (g.members.length > 0 ? null : (g.error ?? 'no member list'))).catch(() => null);
        const found = again && this.byPeer(again, a.peerUrl);
        if (found) return found;
        const retry = /unhealthy cluster|timed out|connection refused|cannot connect|unavailable|leader changed|no leader|too many requests/i.test(text);
        if (!retry || Date.now() > end) throw new EtcdStepError(`adding ${a.name} failed: ${text}`, 'see `converge status`, fix the cause and run converge again');
        if (again) f = again;
        await sleep(1000, this.ctx.signal);
      }
    }
  }

  /**
   * Waits until the learner runs and has caught up, then promotes it. 3.4
   * can promote a learner that never started during a leader change, so
   * converge checks itself that it answers and is close to the leader first.
   * A learner stuck past the timeout is removed again (it is not a voter, so
   * quorum is not at stake) and the step fails with its journal.
   */
  private async promoteWhenReady(d: EtcdMemberSpec, id: string, name: string, r: EtcdStepReport): Promise<void> {
    const t0 = Date.now();
    let why = 'no answer yet';
    for (;;) {
      if (this.ctx.signal?.aborted) throw new EtcdStepError(`promoting ${name}: interrupted`, 'run converge again to finish the add');
      const g = await this.facts();
      const m = g.members.find((x) => x.id === id);
      if (!m) throw new EtcdStepError(`learner ${name} (${id}) is no longer in the member list`, 'run converge again');
      if (!m.isLearner) break;
      const notReady = learnerNotReady(g, id);
      if (notReady === null) {
        try {
          await this.clusterClient(g).cluster.memberPromote({ ID: id }, deadline(10_000));
          break;
        } catch (e) {
          why = etcdErrorText(e);
          if (!/in sync|not ready|timed out|unavailable|leader/i.test(why)) throw new EtcdStepError(`promoting ${name} failed: ${why}`, 'see `converge status` and run converge again');
        }
      } else why = notReady;
      if (Date.now() - t0 > this.learnerMs) await this.undoLearner(d, id, name, g, why);
      await sleep(this.pollMs, this.ctx.signal);
    }
    r.timings.promote = Date.now() - t0;
    r.detail.push(`${name} caught up and was promoted after ${r.timings.promote} ms`);
  }

  private async undoLearner(d: EtcdMemberSpec, id: string, name: string, g: EtcdFacts, why: string): Promise<never> {
    const journal = await this.journal(d.node);
    try {
      await this.clusterClient(g, id).cluster.memberRemove({ ID: id }, deadline(10_000));
    } catch (e) {
      const again = await this.settled();
      if (again.members.some((x) => x.id === id)) {
        throw new EtcdStepError(`learner ${name} did not catch up within ${this.spec.rollout.learnerTimeoutSeconds} s, and removing it failed: ${etcdErrorText(e)}`, 'run converge again: it removes the stuck learner first', { node: d.node, journal });
      }
    }
    await this.sh(d.node, `systemctl stop ${this.unit()} 2>/dev/null || true\nrm -f ${shellQuote(this.spec.initialEnvFile)}`);
    await this.prepareDataDirAfterUndo(d.node);
    throw new EtcdStepError(
      `learner ${name} did not catch up within ${this.spec.rollout.learnerTimeoutSeconds} s (${why}): it was removed again and its data dir moved aside`,
      `see ${this.spec.unit}'s journal on ${d.node} (below); fix the cause (network, certificates, disk) and run converge again to add it anew`,
      { node: d.node, journal },
    );
  }

  /** After undoing an add, the learner's half-written data must not be mistaken for a member's. */
  private async prepareDataDirAfterUndo(node: string): Promise<void> {
    const d = shellQuote(this.spec.dataDir);
    await this.sh(node, `d=${d}; a="$d.removed-${timestamp(this.now())}"\nif [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then mv "$d" "$a" && mkdir "$d" && chown --reference="$a" "$d" && chmod --reference="$a" "$d"; fi`);
  }

  async promote(a: Extract<EtcdAction, { type: 'etcd.member.promote' }>, r: EtcdStepReport): Promise<void> {
    const d = this.desired(a.name);
    const f = await this.settled();
    const m = f.members.find((x) => x.id === a.memberId);
    if (!m) throw new EtcdStepError(`learner ${a.name} (${a.memberId}) is no longer in the cluster`, 'the plan is stale: run converge plan again');
    if (m.isLearner) await this.promoteWhenReady(d, m.id, a.name, r);
    else r.detail.push(`${a.name} is a voter already`);
    try {
      await this.waitFor(`${a.name} healthy`, this.healthMs, (g) => memberProblem(g, m.id));
    } catch (e) {
      if (e instanceof WaitTimeout) await this.notBack(d.node, a.name, e, null);
      throw e;
    }
    await this.removeInitialEnv(d.node);
  }

  async remove(a: Extract<EtcdAction, { type: 'etcd.member.remove' }>, r: EtcdStepReport): Promise<void> {
    let f = await this.settled();
    const m = f.members.find((x) => x.id === a.memberId);
    if (!m) {
      r.detail.push(`${a.name} (${a.memberId}) was removed already`);
    } else {
      if (!m.isLearner) {
        const v = voters(f);
        const healthy = v.filter((x) => f.status[x.id]?.healthy).length;
        const after = v.filter((x) => x.id !== m.id && f.status[x.id]?.healthy).length;
        if (healthy < quorum(v.length) || after < quorum(v.length - 1)) {
          throw new EtcdUnsafeError(`refusing to remove ${a.name}: ${after} healthy voters would remain of ${v.length - 1}, ${quorum(v.length - 1)} needed`, 'bring the down members back first; nothing was changed');
        }
        if (agreedLeader(f) === m.id) {
          const to = this.successor(f, m.id);
          if (!to) throw new EtcdUnsafeError(`cannot remove ${a.name}: it leads and no other voter is healthy`, 'bring the other members back first');
          const ms = await this.moveLeadership(f, to);
          r.timings.leaderMove = ms;
          r.detail.push(`${a.name} led: leadership moved to ${this.nameOf(f, to)} in ${ms} ms first`);
          f = await this.settled();
        }
      }
      const t0 = Date.now();
      try {
        await this.clusterClient(f, m.id).cluster.memberRemove({ ID: m.id }, deadline(10_000));
      } catch (e) {
        const again = await this.settled();
        if (again.members.some((x) => x.id === m.id)) throw new EtcdStepError(`removing ${a.name} failed: ${etcdErrorText(e)}`, 'see `converge status` and run converge again');
      }
      await this.waitFor(`${a.name} gone from the member list`, this.healthMs, (g) => (g.members.length === 0 ? (g.error ?? 'no member list') : g.members.some((x) => x.id === m.id) ? 'still listed' : null));
      r.timings.remove = Date.now() - t0;
      r.detail.push(`${a.name} (${m.id}) removed from the cluster in ${r.timings.remove} ms`);
    }
    if (a.moveDataDirAside) {
      const aside = await this.retire(a.node);
      r.detail.push(`${a.node}: ${this.spec.unit} stopped and disabled${aside ? `, data dir moved to ${aside}` : ''}`);
    }
    await this.waitFor('the remaining members healthy', this.healthMs, (g) => {
      const sick = voters(g).filter((x) => !g.status[x.id]?.healthy && this.spec.members.some((d) => x.peerUrls.includes(d.peerUrl) && this.ctx.transport(d.node)));
      return sick.length > 0 ? sick.map((x) => `${this.nameOf(g, x.id)}: ${g.status[x.id]?.error ?? 'not healthy'}`).join('; ') : agreedLeader(g) ? null : 'no agreed leader';
    });
  }
}

/** A wait that ran out of time (as opposed to a step that failed outright). */
class WaitTimeout extends Error {}

export function describeEtcdAction(a: EtcdAction): string {
  switch (a.type) {
    case 'etcd.bootstrap':
      return `bootstrap ${a.members.join(', ')}`;
    case 'etcd.member.add':
      return `${a.memberId ? 'finish adding' : 'add'} ${a.name} (${a.peerUrl})`;
    case 'etcd.member.promote':
      return `promote ${a.name}`;
    case 'etcd.member.remove':
      return `remove ${a.name}${a.moveDataDirAside ? ' (stop etcd, data dir aside)' : ''}`;
    case 'etcd.leader.move':
      return `move leadership ${a.fromMemberId} → ${a.toMemberId}`;
    case 'etcd.member.restart':
      return `restart ${a.name}: ${a.because.join(', ')}`;
  }
}

/**
 * Carries out the etcd steps in order; the first that fails stops the run.
 * Never throws for a failed step: the result says what was done and why it
 * stopped (with the journal of a member that did not come back).
 */
export async function applyEtcdActions(actions: readonly EtcdAction[], ctx: EtcdApplyContext): Promise<EtcdApplyResult> {
  return withMemberClients(ctx.tls, 2000, async (clients) => {
    const run = new EtcdRun(ctx, clients);
    const steps: EtcdStepReport[] = [];
    for (const [i, a] of actions.entries()) {
      const report: EtcdStepReport = { action: a, ok: false, ms: 0, detail: [], timings: {} };
      steps.push(report);
      const started = Date.now();
      run.say(`etcd: step ${i + 1}/${actions.length}: ${describeEtcdAction(a)} — ${a.reason}`);
      try {
        if (ctx.signal?.aborted) throw new EtcdStepError('interrupted before this step', 'run converge again to finish');
        switch (a.type) {
          case 'etcd.bootstrap':
            await run.bootstrap(a, report);
            break;
          case 'etcd.member.add':
            await run.add(a, report);
            break;
          case 'etcd.member.promote':
            await run.promote(a, report);
            break;
          case 'etcd.member.remove':
            await run.remove(a, report);
            break;
          case 'etcd.leader.move':
            await run.leaderMove(a, report);
            break;
          case 'etcd.member.restart':
            await run.restart(a, report);
            break;
        }
        report.ok = true;
      } catch (e) {
        report.ms = Date.now() - started;
        const error = e instanceof ConvergeError ? e : new EtcdError(`${describeEtcdAction(a)}: ${e instanceof Error ? e.message : String(e)}`, { hint: 'see `converge status` and run converge again', cause: e });
        run.say(`etcd: step ${i + 1} failed: ${error.message}`);
        return { ok: false, log: run.log, steps, error };
      }
      report.ms = Date.now() - started;
      for (const d of report.detail) run.say(`etcd:   ${d}`);
    }
    return { ok: true, log: run.log, steps };
  });
}

