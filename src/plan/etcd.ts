/**
 * The etcd planner: pure. From the desired member set, the cluster's facts
 * (member list, per-member status) and each member node's facts (etcd unit,
 * data dir, initial env file), the ordered list of cluster steps that reaches
 * the desired set one safe step at a time — or refusals saying why not.
 *
 * Order (ETCD.md): start members that are merely stopped → finish or undo
 * half-done adds (learners, members never started) → remove dead members →
 * add → remove → rolling restarts (followers first, the leader last after
 * moving leadership away). Every step is checked against a simulation of the
 * voters it leaves: no step may leave fewer healthy voters than a quorum.
 * Apply checks the same conditions again on live facts before each step.
 */
import { createHash } from 'node:crypto';
import type { EtcdDataDirFact, EtcdFacts, EtcdMemberFact, EtcdMemberStatus, NodeFacts, UnitFact } from '../facts/types.js';
import type { EtcdMemberSpec, ResolvedEtcd } from '../model/types.js';
import type { EtcdAction, NodePlan, PlanRefusal } from './types.js';

/** What the etcd planner reads of a node's facts. NodeFacts fits. */
export type EtcdNodeView = Pick<NodeFacts, 'node' | 'units' | 'paths' | 'etcdDataDir' | 'etcdRestartPending'>;

export type EtcdRefusal = PlanRefusal;

export interface EtcdPlan {
  actions: EtcdAction[];
  /** Non-empty: nothing is done (actions is empty); each says why and what to do. */
  refusals: EtcdRefusal[];
  /** Work that waits for a node to come back; not unsafe, only not possible now. */
  deferred: string[];
}

export interface PlanEtcdOptions {
  /** Every node of the desired state, to find the node of a member that is leaving. */
  nodes?: ReadonlyArray<{ name: string; address: string }>;
}

export const quorum = (voters: number): number => Math.floor(voters / 2) + 1;

/** etcd promotes a learner whose log matches 90% of the leader's. */
export const LEARNER_READY_RATIO = 0.9;

/** A restarted member is caught up when its raft index is this close to the leader's. */
export const CAUGHT_UP_LAG = 100;

/** `name=peerUrl,...` as ETCD_INITIAL_CLUSTER wants it (a member with several peer URLs appears once per URL). */
export function initialClusterString(members: ReadonlyArray<{ name: string; peerUrls: readonly string[] }>): string {
  return members.flatMap((m) => m.peerUrls.map((u) => `${m.name}=${u}`)).join(',');
}

/** The text converge writes to the initial env file (no secrets in it). */
export function initialEnvText(initialCluster: string, state: 'new' | 'existing'): string {
  const what = state === 'new' ? 'bootstrapped' : 'added';
  return `# Written by converge when this member was ${what}; read by etcd only while its data dir is empty.\nETCD_INITIAL_CLUSTER=${initialCluster}\nETCD_INITIAL_CLUSTER_STATE=${state}\n`;
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The full initial cluster of a first bootstrap, in the desired order. */
export function bootstrapInitialCluster(spec: ResolvedEtcd): string {
  return initialClusterString(spec.members.map((m) => ({ name: m.name, peerUrls: [m.peerUrl] })));
}

function hostOf(url: string): string {
  try {
    return new URL(url).hostname;
  } catch {
    return '';
  }
}

const isActive = (u: UnitFact | undefined): boolean => u !== undefined && (u.activeState === 'active' || u.activeState === 'activating' || u.activeState === 'reloading');

/** A member as the planner sees it, with its node and what is known of it. */
interface Member {
  fact: EtcdMemberFact;
  id: string;
  name: string;
  desired: EtcdMemberSpec | undefined;
  node: string | undefined;
  status: EtcdMemberStatus | undefined;
  healthy: boolean;
  started: boolean;
}

type DataState = 'empty' | 'data' | 'unknown';

/** The simulated cluster while the steps are laid out. */
interface Sim {
  /** voter id → healthy */
  voters: Map<string, boolean>;
  leader: string | null;
}

class EtcdPlanner {
  private readonly actions: EtcdAction[] = [];
  private readonly refusals: EtcdRefusal[] = [];
  private readonly deferred: string[] = [];
  private readonly resource: string;

  constructor(
    private readonly spec: ResolvedEtcd,
    private readonly etcd: EtcdFacts,
    private readonly nodes: Readonly<Record<string, EtcdNodeView>>,
    private readonly restarts: ReadonlyMap<string, string[]>,
    private readonly opts: PlanEtcdOptions,
  ) {
    this.resource = spec.id;
  }

  run(): EtcdPlan {
    if (this.etcd.members.length === 0) this.noCluster();
    else this.existing();
    if (this.refusals.length > 0) return { actions: [], refusals: this.refusals, deferred: this.deferred };
    return { actions: this.actions, refusals: [], deferred: this.deferred };
  }

  private refuse(message: string, hint: string, starting: string[] = []): void {
    this.refusals.push({ message, hint, ...(starting.length > 0 ? { starting: [...new Set(starting)].sort() } : {}) });
  }

  // ---- node facts ----------------------------------------------------------

  private reachable(node: string | undefined): node is string {
    return node !== undefined && this.nodes[node] !== undefined;
  }

  private unit(node: string): UnitFact | undefined {
    return this.nodes[node]?.units[this.spec.unit];
  }

  private dataDir(node: string): EtcdDataDirFact | undefined {
    return this.nodes[node]?.etcdDataDir;
  }

  private data(node: string): DataState {
    const d = this.dataDir(node);
    if (!d) return 'unknown';
    return d.empty ? 'empty' : 'data';
  }

  private initialEnvSha(node: string): string | null {
    const p = this.nodes[node]?.paths[this.spec.initialEnvFile];
    return p && p.exists ? (p.sha256 ?? null) : null;
  }

  /**
   * etcd on the node of a member that does not answer is on its way up: the
   * unit is activating, or active (after a start, etcd replays its log and
   * waits for a leader before it serves, and publishes its name only then).
   */
  private starting(node: string | undefined): boolean {
    return this.activating(node) || (this.reachable(node) && this.unit(node)?.activeState === 'active');
  }

  /**
   * Only this counts as starting where an active etcd would not be on its way
   * up: with Type=notify an etcd is active once it has joined its cluster, so
   * one that is active without a quorum, or that no cluster answers for, waits
   * for others.
   */
  private activating(node: string | undefined): boolean {
    return this.reachable(node) && this.unit(node)?.activeState === 'activating';
  }

  private unitState(node: string): string {
    const u = this.unit(node);
    if (!u || u.loadState === 'not-found') return 'not installed';
    return u.activeState;
  }

  /** Restart causes of a member node: files changed in this plan, and restarts still owed from earlier passes. */
  private causes(node: string): string[] {
    const all = [...(this.restarts.get(node) ?? []), ...(this.nodes[node]?.etcdRestartPending ?? [])];
    return [...new Set(all)].sort();
  }

  // ---- no cluster yet -------------------------------------------------------

  private noCluster(): void {
    if (this.etcd.reachable) {
      this.refuse(`etcd answers but its member list could not be read: ${this.etcd.error ?? 'no answer'}`, 'check `converge status` and the members\' journals (journalctl -u ' + this.spec.unit + '), then run converge again');
      return;
    }
    const nodes = this.spec.members.map((m) => m.node);
    const unreachable = nodes.filter((n) => !this.reachable(n));
    if (unreachable.length > 0) {
      this.refuse(
        `no etcd member answers and ${unreachable.join(', ')} cannot be reached: converge cannot tell whether a cluster exists there`,
        `bring ${unreachable.length === 1 ? 'that node' : 'those nodes'} back and run converge again; a first bootstrap starts all members together`,
      );
      return;
    }
    const unknown = nodes.filter((n) => this.data(n) === 'unknown');
    if (unknown.length > 0) {
      this.refuse(`the etcd data dir on ${unknown.join(', ')} was not inspected`, 'this is a bug in how facts were gathered; report it');
      return;
    }
    const withData = nodes.filter((n) => this.data(n) === 'data');
    const initialCluster = bootstrapInitialCluster(this.spec);
    if (withData.length === 0) {
      this.actions.push({
        type: 'etcd.bootstrap',
        node: '',
        resource: this.resource,
        members: [...nodes],
        initialCluster,
        reason: `no etcd member exists and the data dirs of ${nodes.join(', ')} are empty: bootstrap a new cluster of ${nodes.length}`,
      });
      return;
    }
    // A bootstrap that was interrupted after some members started: every
    // member still has the bootstrap's initial env file (it is removed only
    // once the cluster is healthy), so finishing it cannot join a stranger.
    const bootstrapSha = sha256Hex(initialEnvText(initialCluster, 'new'));
    if (nodes.every((n) => this.initialEnvSha(n) === bootstrapSha)) {
      this.actions.push({
        type: 'etcd.bootstrap',
        node: '',
        resource: this.resource,
        members: [...nodes],
        initialCluster,
        reason: `finish the bootstrap begun earlier: ${withData.join(', ')} started and wait${withData.length === 1 ? 's' : ''} for a quorum`,
      });
      return;
    }
    const running = withData.filter((n) => this.unitState(n) === 'active');
    const why = this.etcd.error ? ` (${this.etcd.error})` : '';
    const tls = /certificate|TLS|SSL|handshake|self[- ]signed/i.test(this.etcd.error ?? '');
    if (running.length > 0 && tls) {
      // etcd runs there and the connection failed in TLS: the fault is on converge's side
      // (CA, client certificate, key), and advice to restore from a snapshot would be harmful.
      this.refuse(
        `no etcd member answers converge${why}, although etcd is active on ${running.join(', ')}, which hold${running.length === 1 ? 's' : ''} etcd data in ${this.spec.dataDir}`,
        'check the TLS files converge uses to reach etcd (the EtcdCluster\'s client CA, certificate and key, or etcdCa/etcdCert/etcdKey): the CA must be the cluster\'s and the certificate valid and signed by it; converge never bootstraps over existing data',
      );
      return;
    }
    const down = withData.map((n) => `${n} (etcd ${this.unitState(n)})`);
    this.refuse(
      `no etcd member answers, but ${down.join(', ')} hold${withData.length === 1 ? 's' : ''} etcd data in ${this.spec.dataDir}: the cluster is down, not new${why}`,
      `start etcd on the members that hold data (systemctl start ${this.spec.unit}) or restore the cluster from a snapshot; converge never bootstraps over existing data`,
      withData.filter((n) => this.activating(n)),
    );
  }

  // ---- an existing cluster -----------------------------------------------------

  private nodeOf(m: EtcdMemberFact, desired: EtcdMemberSpec | undefined): string | undefined {
    if (desired) return desired.node;
    const all = this.opts.nodes ?? [];
    const byName = all.find((n) => n.name === m.name) ?? (m.name && this.nodes[m.name] ? { name: m.name } : undefined);
    if (byName) return byName.name;
    const hosts = new Set(m.peerUrls.map(hostOf));
    return all.find((n) => hosts.has(n.address))?.name;
  }

  private existing(): void {
    const spec = this.spec;
    if (this.etcd.foreign && this.etcd.foreign.length > 0) {
      for (const f of this.etcd.foreign) {
        const d = spec.members.find((m) => m.clientUrl === f.url);
        const who = d ? d.node : f.url;
        const what = f.clusterId === this.etcd.clusterId ? `member ${f.memberId}, which is not in the member list (removed earlier?)` : `member ${f.memberId} of another etcd cluster (${f.clusterId}), not of this one (${this.etcd.clusterId ?? '?'})`;
        this.refuse(
          `${who} answers as ${what}`,
          `etcd on ${who} started on an empty data dir without converge's initial env and bootstrapped a cluster of its own; stop etcd there and move ${spec.dataDir} aside (converge then replaces the member), after checking it holds nothing you need`,
        );
      }
      return;
    }

    const members = this.etcd.members.map((fact) => this.member(fact));
    const byId = new Map(members.map((m) => [m.id, m]));
    const voters = members.filter((m) => !m.fact.isLearner);
    const learners = members.filter((m) => m.fact.isLearner);
    const healthyVoters = voters.filter((m) => m.healthy);

    // Quorum lost: recovery is the operator's decision.
    if (healthyVoters.length < quorum(voters.length)) {
      const unhealthy = voters.filter((m) => !m.healthy);
      const down = unhealthy.map((m) => this.describeDown(m));
      this.refuse(
        `etcd has lost quorum: ${healthyVoters.length} of ${voters.length} voters healthy, ${quorum(voters.length)} needed (${down.join('; ')})`,
        'bring the stopped members back (a node up, etcd started on it); if their data is lost, restoring from a snapshot is an operator\'s decision and converge never does it',
        unhealthy.filter((m) => this.activating(m.node)).map((m) => m.name),
      );
      return;
    }

    const leaders = new Set(voters.flatMap((m) => (m.status?.reachable && m.status.leader ? [m.status.leader] : [])));
    const leader = leaders.size === 1 ? [...leaders][0]! : null;
    const sim: Sim = { voters: new Map(voters.map((m) => [m.id, m.healthy])), leader: leader && byId.has(leader) ? leader : null };
    const blockers: string[] = [];
    // Members whose etcd is still starting, among the blockers: those may be gone in seconds.
    const starting: string[] = [];
    if (this.etcd.alarms.length > 0) blockers.push(`alarm${this.etcd.alarms.length > 1 ? 's' : ''} raised: ${this.etcd.alarms.map((a) => `${a.alarm} on ${byId.get(a.memberId)?.name ?? a.memberId}`).join(', ')}`);
    if (sim.leader === null) {
      blockers.push(leaders.size > 1 ? `members disagree on the leader (${[...leaders].map((l) => byId.get(l)?.name ?? l).join(', ')})` : 'no leader is elected');
      starting.push(...voters.filter((m) => !m.healthy && this.starting(m.node)).map((m) => m.name));
    }

    const touched = new Set<string>();
    const removedIds = new Set<string>();

    // 1. Members that are merely stopped: start them (no quorum is at stake).
    for (const m of voters) {
      if (m.healthy || !m.desired || !m.started || !this.reachable(m.node)) continue;
      const data = this.data(m.node);
      const active = isActive(this.unit(m.node));
      if (data !== 'data') continue;
      const causes = this.causes(m.node);
      if (active && causes.length === 0) {
        blockers.push(`${m.name}: etcd is ${this.unitState(m.node)} but not healthy (${m.status?.error ?? 'no answer'})`);
        if (this.starting(m.node)) starting.push(m.name);
        continue;
      }
      const because = active ? causes : [`${spec.unit} is ${this.unitState(m.node)}`, ...causes];
      this.actions.push({ type: 'etcd.member.restart', node: m.node, resource: this.resource, name: m.name, unit: spec.unit, because, reason: `${m.name} is down with its data intact: ${because.join(', ')}` });
      sim.voters.set(m.id, true);
      touched.add(m.id);
    }

    // 2. Half-done adds: learners, and members that never started.
    for (const m of learners) {
      touched.add(m.id);
      if (!m.desired) {
        this.removeMember(m, sim, removedIds, `learner ${m.name} is not in the desired member set: undo the half-finished add`, this.reachable(m.node));
        continue;
      }
      if (!this.reachable(m.node)) {
        this.removeMember(m, sim, removedIds, `learner ${m.name} is on ${m.node}, which cannot be reached: undo the half-finished add (it is added again when the node is back)`, false);
        continue;
      }
      if (m.started && m.status?.reachable) {
        this.actions.push({ type: 'etcd.member.promote', node: m.node, resource: this.resource, name: m.name, memberId: m.id, reason: `learner ${m.name} (left by an interrupted add) runs: promote it once it has caught up` });
      } else {
        this.addMember(m.desired, sim, members, removedIds, `finish adding ${m.name}: learner ${m.id} is in the cluster but ${m.started ? 'not answering' : 'never started'}`, m.id);
        continue;
      }
      sim.voters.set(m.id, true);
    }
    for (const m of voters) {
      if (m.started || touched.has(m.id) || !m.desired) continue;
      touched.add(m.id);
      if (!this.reachable(m.node)) {
        this.deferred.push(`${m.node}: member ${m.name} never started; it is started when the node can be reached`);
        continue;
      }
      const data = this.data(m.node);
      if (data === 'unknown') {
        blockers.push(`${m.node}: the etcd data dir was not inspected`);
        continue;
      }
      if (data === 'data') {
        if (isActive(this.unit(m.node))) {
          blockers.push(`${m.name} never finished starting (etcd ${this.unitState(m.node)}, ${m.status?.error ?? 'no answer'})`);
          if (this.starting(m.node)) starting.push(m.name);
          continue;
        }
        const because = [`${spec.unit} is ${this.unitState(m.node)}`];
        this.actions.push({ type: 'etcd.member.restart', node: m.node, resource: this.resource, name: m.name, unit: spec.unit, because, reason: `${m.name} never finished starting: ${because.join(', ')}` });
      } else {
        this.addMember(m.desired, sim, members, removedIds, `finish adding ${m.name}: member ${m.id} is in the cluster but never started`, m.id);
      }
      sim.voters.set(m.id, true);
    }

    // 3. Dead members: a started voter whose node came back with an empty data dir, or a down member that is leaving anyway.
    const replace: EtcdMemberSpec[] = [];
    for (const m of voters) {
      if (touched.has(m.id) || m.healthy) continue;
      if (m.desired && this.reachable(m.node) && this.data(m.node) === 'empty') {
        touched.add(m.id);
        this.removeMember(m, sim, removedIds, `${m.name}'s node ${m.node} has an empty data dir (${spec.dataDir}): remove the old member, then add it again`, false);
        replace.push(m.desired);
      } else if (!m.desired) {
        touched.add(m.id);
        this.removeMember(m, sim, removedIds, `${m.name} is down and not in the desired member set: remove it`, this.reachable(m.node));
      } else if (!this.reachable(m.node)) {
        this.deferred.push(`${m.node ?? m.name}: member ${m.name} is down (node unreachable)`);
        blockers.push(`${m.name} is down (node unreachable)`);
      } else if (this.data(m.node) === 'unknown') {
        blockers.push(`${m.node}: the etcd data dir was not inspected`);
      }
    }

    // 4. Add the desired members that are not in the cluster, one at a time.
    const present = new Set(members.filter((m) => m.desired && !removedIds.has(m.id)).map((m) => m.desired!.peerUrl));
    for (const d of spec.members) {
      if (present.has(d.peerUrl)) continue;
      const isReplace = replace.includes(d);
      if (!this.reachable(d.node)) {
        this.deferred.push(`${d.node}: member ${d.name} is added when the node can be reached`);
        continue;
      }
      const data = this.data(d.node);
      if (data === 'data') {
        this.refuse(
          `cannot add ${d.name}: ${d.node} already holds etcd data in ${spec.dataDir} (from another cluster or an earlier membership)`,
          `check that it holds nothing you need, then move it aside on ${d.node} (mv ${spec.dataDir} ${spec.dataDir}.old); converge never starts a new member on old data`,
        );
        continue;
      }
      if (data === 'unknown') {
        blockers.push(`${d.node}: the etcd data dir was not inspected`);
        continue;
      }
      this.addMember(d, sim, members, removedIds, isReplace ? `add ${d.name} again with an empty data dir (replace)` : `${d.name} is in the desired member set but not in the cluster: add it as a learner, start it, promote it when caught up`);
    }

    // 5. Remove the members that left the desired set, each only if still safe.
    const leaving = voters.filter((m) => !m.desired && !touched.has(m.id));
    const finalVoters = spec.members.length;
    if (leaving.length > 0 && voters.length >= 3 && finalVoters < 2) {
      this.refuse(
        `refusing to shrink the etcd cluster from ${voters.length} to ${finalVoters} member${finalVoters === 1 ? '' : 's'}: removing ${leaving.map((m) => m.name).join(', ')} passes through 2 members, which tolerate no failure at all`,
        'keep at least 3 members (or shrink in separate commits, accepting a 2-member cluster in between); nothing was changed',
      );
      return;
    }
    for (const m of leaving) {
      touched.add(m.id);
      this.removeMember(m, sim, removedIds, `${m.name} is not in the desired member set: remove it, stop etcd on ${m.node ?? 'its node'} and move its data dir aside`, this.reachable(m.node));
      if (!this.reachable(m.node)) this.deferred.push(`${m.node ?? m.name}: etcd is not stopped there and its data dir not moved aside (node unreachable); do it before the node is reused`);
    }

    // 6. Rolling restarts: followers first, the leader last after handing leadership over.
    const toRestart = voters.filter((m) => m.desired && m.healthy && !touched.has(m.id) && this.reachable(m.node) && this.causes(m.node!).length > 0);
    const ordered = [...toRestart.filter((m) => m.id !== sim.leader), ...toRestart.filter((m) => m.id === sim.leader)];
    const restarted: string[] = [...this.actions.flatMap((a) => (a.type === 'etcd.member.restart' ? [members.find((m) => m.name === a.name)?.id ?? ''] : []))];
    for (const m of ordered) {
      if (m.id === sim.leader) {
        const to = this.leaderTarget(sim, members, new Set([m.id]), restarted);
        if (!to) {
          this.refuse(`cannot restart ${m.name}: it leads and no other voter is healthy to take over`, 'bring the other members back first');
          return;
        }
        this.moveLeader(m, to, sim, `${m.name} leads and is restarted last: hand leadership to ${to.name} first`);
      }
      const others = [...sim.voters].filter(([id, ok]) => id !== m.id && ok).length;
      if (others < quorum(sim.voters.size)) {
        this.refuse(
          `cannot restart ${m.name} (${this.causes(m.node!).join(', ')} changed): while it restarts only ${others} of ${sim.voters.size} voters would be healthy, ${quorum(sim.voters.size)} needed`,
          `bring the down members back first (${this.downNames(sim, byId).join(', ') || 'none'}), then run converge again`,
        );
        return;
      }
      const because = this.causes(m.node!);
      this.actions.push({ type: 'etcd.member.restart', node: m.node!, resource: this.resource, name: m.name, unit: spec.unit, because, reason: `${because.join(', ')} changed` });
      restarted.push(m.id);
    }

    this.finishLeftovers(members, touched);

    if (blockers.length > 0 && this.actions.length > 0) {
      this.refuse(
        `etcd changes are waiting but the cluster is not ready for them: ${blockers.join('; ')}`,
        'converge changes the cluster only when every voter is started and healthy, one leader is agreed and no alarm is raised; fix the above (see `converge status`) and run converge again',
        starting,
      );
    }
  }

  /**
   * 7. A bootstrap or an add interrupted (converge killed, connection lost)
   * after its member started but before the initial env file was removed:
   * the member runs, and the file must not stay, since it says "this data
   * dir is being bootstrapped or added" to every later pass. Finishing the
   * interrupted step removes it; nothing is restarted.
   */
  private finishLeftovers(members: Member[], touched: Set<string>): void {
    // A started, healthy member holds data whatever its node's probe said: the probe may have run
    // before etcd wrote its first log, while the etcd facts, gathered alongside, waited out the
    // first election. Only a data dir that was not inspected at all holds the finishing back.
    const left = members.filter((m) => m.desired && m.started && m.healthy && !m.fact.isLearner && !touched.has(m.id) && this.reachable(m.node) && this.data(m.node) !== 'unknown' && this.initialEnvSha(m.node) !== null);
    if (left.length === 0) return;
    const bootstrapSha = sha256Hex(initialEnvText(bootstrapInitialCluster(this.spec), 'new'));
    const asDesired = members.length === this.spec.members.length && this.spec.members.every((d) => members.some((m) => m.desired === d && m.started && !m.fact.isLearner));
    if (asDesired && left.every((m) => this.initialEnvSha(m.node!) === bootstrapSha)) {
      this.actions.push({
        type: 'etcd.bootstrap',
        node: '',
        resource: this.resource,
        members: this.spec.members.map((d) => d.node),
        initialCluster: bootstrapInitialCluster(this.spec),
        reason: `finish the bootstrap begun earlier: the cluster runs, but ${left.map((m) => m.node).join(', ')} still hold${left.length === 1 ? 's' : ''} its initial env file (${this.spec.initialEnvFile}): remove it`,
      });
      return;
    }
    for (const m of left) {
      this.actions.push({
        type: 'etcd.member.add',
        node: m.node!,
        resource: this.resource,
        name: m.desired!.name,
        peerUrl: m.desired!.peerUrl,
        initialCluster: initialClusterString(members.filter((x) => x.started).map((x) => ({ name: x.name, peerUrls: x.fact.peerUrls }))),
        memberId: m.id,
        reason: `finish adding ${m.name}: it runs as a voter, but ${m.node} still holds the initial env file of its add (${this.spec.initialEnvFile}): remove it`,
      });
    }
  }

  private describeDown(m: Member): string {
    if (!this.reachable(m.node)) return `${m.name}: node ${m.node ?? '?'} unreachable`;
    return `${m.name}: etcd ${this.unitState(m.node)}${m.status?.error ? `, ${m.status.error}` : ''}`;
  }

  private downNames(sim: Sim, byId: Map<string, Member>): string[] {
    return [...sim.voters].filter(([, ok]) => !ok).map(([id]) => byId.get(id)?.name ?? id);
  }

  /** The voter to hand leadership to: healthy, staying, preferably already restarted, else first in the desired order. */
  private leaderTarget(sim: Sim, members: Member[], exclude: Set<string>, restarted: string[]): Member | undefined {
    const candidates = members.filter((m) => sim.voters.get(m.id) === true && !exclude.has(m.id) && m.desired);
    const order = (m: Member): number => this.spec.members.indexOf(m.desired!);
    candidates.sort((a, b) => order(a) - order(b));
    return candidates.find((m) => restarted.includes(m.id)) ?? candidates.find((m) => !this.reachable(m.node) || this.causes(m.node).length === 0) ?? candidates[0];
  }

  private moveLeader(from: Member, to: Member, sim: Sim, reason: string): void {
    this.actions.push({ type: 'etcd.leader.move', node: from.node ?? '', resource: this.resource, fromMemberId: from.id, toMemberId: to.id, reason });
    sim.leader = to.id;
  }

  private removeMember(m: Member, sim: Sim, removedIds: Set<string>, reason: string, moveDataDirAside: boolean): void {
    const isVoter = sim.voters.has(m.id);
    if (isVoter) {
      const healthy = [...sim.voters].filter(([, ok]) => ok).length;
      const after = [...sim.voters].filter(([id, ok]) => id !== m.id && ok).length;
      const need = quorum(sim.voters.size - 1);
      if (healthy < quorum(sim.voters.size) || after < need) {
        this.refuse(
          `refusing to remove ${m.name}: ${after} healthy voter${after === 1 ? '' : 's'} would remain of ${sim.voters.size - 1}, ${need} needed for quorum`,
          'bring the down members back first, or change the member set one member per commit; nothing was changed',
        );
        return;
      }
      if (sim.leader === m.id) {
        const to = this.leaderTarget(sim, this.etcd.members.map((f) => this.member(f)), new Set([m.id]), []);
        if (!to) {
          this.refuse(`refusing to remove ${m.name}: it leads and no other voter is healthy to take over`, 'bring the other members back first');
          return;
        }
        this.moveLeader(m, to, sim, `${m.name} leads and is about to be removed: hand leadership to ${to.name} first`);
      }
      sim.voters.delete(m.id);
    }
    removedIds.add(m.id);
    this.actions.push({ type: 'etcd.member.remove', node: m.node ?? '', resource: this.resource, name: m.name, memberId: m.id, moveDataDirAside, reason });
  }

  private member(fact: EtcdMemberFact): Member {
    const desired = this.spec.members.find((d) => fact.peerUrls.includes(d.peerUrl));
    const status = this.etcd.status[fact.id];
    const node = this.nodeOf(fact, desired);
    return {
      fact,
      id: fact.id,
      name: fact.name || desired?.name || node || fact.peerUrls[0] || fact.id,
      desired,
      node,
      status,
      healthy: status?.healthy === true,
      started: fact.name !== '' && fact.clientUrls.length > 0,
    };
  }

  private addMember(d: EtcdMemberSpec, sim: Sim, members: Member[], removedIds: Set<string>, reason: string, existingId?: string): void {
    const down = [...sim.voters].filter(([id, ok]) => !ok && id !== existingId);
    if (down.length > 0) {
      const names = down.map(([id]) => members.find((m) => m.id === id)?.name ?? id);
      this.refuse(
        `cannot add ${d.name}: ${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} down, and the member set changes only while every voter is healthy`,
        `bring ${names.join(', ')} back first (or remove ${names.length === 1 ? 'it' : 'them'} from the desired member set), then run converge again`,
      );
      return;
    }
    const inCluster = members
      .filter((m) => !removedIds.has(m.id) && m.id !== existingId && (sim.voters.has(m.id) || m.fact.isLearner))
      .map((m) => ({ name: m.fact.name || m.desired?.name || m.id, peerUrls: m.fact.peerUrls }));
    const added = this.actions.flatMap((a) => (a.type === 'etcd.member.add' && !a.memberId ? [{ name: a.name, peerUrls: [a.peerUrl] }] : []));
    const initialCluster = initialClusterString([...inCluster, ...added, { name: d.name, peerUrls: [d.peerUrl] }]);
    const action: EtcdAction = { type: 'etcd.member.add', node: d.node, resource: this.resource, name: d.name, peerUrl: d.peerUrl, initialCluster, reason };
    if (existingId) action.memberId = existingId;
    this.actions.push(action);
    sim.voters.set(existingId ?? `new:${d.peerUrl}`, true);
  }
}

/**
 * Plan the etcd cluster steps. `nodeFacts` holds the facts of every member
 * node that could be reached (a missing entry is an unreachable node);
 * `hostPlans` give the restart causes found by the host planner.
 */
export function planEtcd(
  spec: ResolvedEtcd,
  etcd: EtcdFacts,
  nodeFacts: Readonly<Record<string, EtcdNodeView>>,
  hostPlans: ReadonlyArray<Pick<NodePlan, 'node' | 'etcdRestartBecause'>>,
  opts: PlanEtcdOptions = {},
): EtcdPlan {
  const restarts = new Map<string, string[]>();
  for (const p of hostPlans) if (p.etcdRestartBecause && p.etcdRestartBecause.length > 0) restarts.set(p.node, [...p.etcdRestartBecause]);
  return new EtcdPlanner(spec, etcd, nodeFacts, restarts, opts).run();
}
