/**
 * The host planner: desired resources of one node + the facts gathered there
 * → the ordered actions that make the node match, each with a reason. Pure:
 * no I/O and no clock, so that a dry-run is exactly what apply will do.
 *
 * Order: groups → users → directories → files → enable/disable →
 * daemon-reload → stop/start → restarts → removals. Enabling reads only the
 * unit file on disk, so it comes before the reload, which then serves both
 * (apply runs it with --no-reload: one reload instead of two). Removals come last and
 * in reverse dependency order (services stopped before their files go, files
 * before their directories, users before their groups), ending with a
 * daemon-reload when a unit file was removed.
 */
import type { ContentRef, DesiredDirectory, DesiredFile, DesiredGroup, DesiredService, DesiredUser, ResolvedEtcd, ResolvedNode, ResourceBase } from '../model/types.js';
import type { InventoryEntry, NodeFacts, PathFact } from '../facts/types.js';
import type { Drift, HostAction, NodePlan, NodeRefusal } from './types.js';
import {
  ancestorsOf,
  byString,
  groupMatches,
  isEnabled,
  isRunning,
  isUnder,
  isUnitFilePath,
  normalizeMode,
  ownerMatches,
  supplementaryGroups,
  unitOrNotFound,
} from './compare.js';

/** Text larger than this is shown by digest only, never as a diff. */
export const MAX_DIFF_TEXT_BYTES = 64 * 1024;

export interface HostPlanContext {
  etcd: ResolvedEtcd | null;
}

type Phase = 'group' | 'user' | 'dir' | 'file' | 'service' | 'restart' | 'rmService' | 'rmFile' | 'rmDir' | 'rmUser' | 'rmGroup';
type Unplaced<T> = T extends unknown ? Omit<T, 'node'> : never;
type Step = [Phase, Unplaced<HostAction>];
type ExistingPath = Extract<PathFact, { exists: true }>;

export function planNode(desired: ResolvedNode, facts: NodeFacts, ctx: HostPlanContext): NodePlan {
  return new NodePlanner(desired, facts, ctx).plan();
}

function pathKind(fact: ExistingPath): string {
  return fact.type === 'symlink' ? `a symlink${fact.target ? ` (→ ${fact.target})` : ''}` : fact.type === 'dir' ? 'a directory' : fact.type === 'file' ? 'a regular file' : 'a special file';
}

function where(r: ResourceBase): string {
  return `${r.id} at ${r.at.file}:${r.at.line}`;
}

class NodePlanner {
  private readonly buckets = new Map<Phase, HostAction[]>();
  private readonly reported: Drift[] = [];
  private readonly refusals: NodeRefusal[] = [];
  /** Declared files that get an action in this plan, for restarts. */
  private readonly changedFiles = new Map<string, DesiredFile>();
  /** Unit files written (reload before the services) and removed (reload at the end). */
  private readonly unitFilesWritten: string[] = [];
  private readonly unitFilesRemoved: string[] = [];
  private readonly removedPaths = new Set<string>();
  /** Managed directories that exist as something else: nothing is written below them. */
  private readonly blockedDirs = new Set<string>();
  private readonly node: string;

  constructor(
    private readonly desired: ResolvedNode,
    private readonly facts: NodeFacts,
    private readonly ctx: HostPlanContext,
  ) {
    this.node = desired.name;
  }

  plan(): NodePlan {
    const d = this.desired;
    for (const g of [...d.groups].sort(byString((x) => x.name))) this.group(g);
    for (const u of [...d.users].sort(byString((x) => x.name))) this.user(u);
    for (const dir of [...d.directories].sort(byString((x) => x.path))) this.directory(dir);
    for (const f of [...d.files].sort(byString((x) => x.path))) this.file(f);
    for (const s of [...d.services].sort(byString((x) => x.unit))) this.service(s);
    const etcdRestartBecause = this.restarts();
    this.prune();
    for (const dir of [...d.directories].sort(byString((x) => x.path))) this.purge(dir);
    return this.assemble(etcdRestartBecause);
  }

  // ---- routing -------------------------------------------------------------

  private drift(r: ResourceBase, field: string, want: string, have: string): Drift {
    return { node: this.node, resource: r.id, field, want, have };
  }

  /** Policy decides whether the differences become actions or are only reported. */
  private route(r: ResourceBase, diffs: Drift[], steps: Step[]): boolean {
    if (r.policy === 'report') {
      this.reported.push(...diffs);
      return false;
    }
    for (const [phase, action] of steps) this.push(phase, action);
    return steps.length > 0;
  }

  private push(phase: Phase, action: Unplaced<HostAction>): void {
    const list = this.buckets.get(phase) ?? [];
    list.push({ node: this.node, ...action } as HostAction);
    this.buckets.set(phase, list);
  }

  private refuse(r: ResourceBase, path: string, message: string, hint: string, diff: Drift): void {
    if (r.policy === 'report') {
      this.reported.push(diff);
      return;
    }
    this.refusals.push({ resource: r.id, path, message: `${this.node}: ${path}: ${message}`, hint });
  }

  private pathFact(path: string): PathFact {
    return this.facts.paths[path] ?? { exists: false };
  }

  /** A managed ancestor directory that is not a directory on the node. */
  private blockedAncestor(path: string): string | undefined {
    return this.blockedDirs.size === 0 ? undefined : ancestorsOf(path).find((a) => this.blockedDirs.has(a));
  }

  private refuseBelowBlocked(r: ResourceBase, path: string, blocker: string): void {
    const fact = this.pathFact(blocker);
    const kind = fact.exists ? pathKind(fact) : 'not a directory';
    this.refuse(
      r,
      path,
      `its directory ${blocker} is ${kind}; converge does not write through it (${where(r)})`,
      `replace ${blocker} on ${this.node} with a real directory, or change the path in the desired state`,
      this.drift(r, 'type', 'dir', `${blocker} is ${kind}`),
    );
  }

  // ---- accounts ------------------------------------------------------------

  private group(g: DesiredGroup): void {
    const have = this.facts.groups[g.name];
    if (g.ensure === 'absent') {
      if (have) this.route(g, [this.drift(g, 'exists', 'absent', 'present')], [['rmGroup', { type: 'group.remove', resource: g.id, name: g.name, reason: 'ensure: absent' }]]);
      return;
    }
    if (!have) {
      this.route(g, [this.drift(g, 'exists', 'present', 'absent')], [
        ['group', { type: 'group.create', resource: g.id, name: g.name, system: g.system, ...(g.gid !== undefined ? { gid: g.gid } : {}), reason: 'missing' }],
      ]);
      return;
    }
    // There is no action that renumbers a group (files would keep the old gid): report it.
    if (g.gid !== undefined && have.gid !== g.gid) this.reported.push(this.drift(g, 'gid', String(g.gid), String(have.gid)));
  }

  private user(u: DesiredUser): void {
    const have = this.facts.users[u.name];
    if (u.ensure === 'absent') {
      if (have) this.route(u, [this.drift(u, 'exists', 'absent', 'present')], [['rmUser', { type: 'user.remove', resource: u.id, name: u.name, reason: 'ensure: absent' }]]);
      return;
    }
    if (!have) {
      this.route(u, [this.drift(u, 'exists', 'present', 'absent')], [
        [
          'user',
          {
            type: 'user.create',
            resource: u.id,
            name: u.name,
            ...(u.uid !== undefined ? { uid: u.uid } : {}),
            group: u.group,
            groups: supplementaryGroups(u.groups, u.group),
            home: u.home,
            shell: u.shell,
            system: u.system,
            ...(u.comment !== undefined ? { comment: u.comment } : {}),
            reason: 'missing',
          },
        ],
      ]);
      return;
    }
    const changes: { field: 'group' | 'groups' | 'home' | 'shell' | 'uid'; from: string; to: string }[] = [];
    if (have.group !== u.group && String(have.gid) !== u.group) changes.push({ field: 'group', from: have.group, to: u.group });
    const haveGroups = supplementaryGroups(have.groups, have.group).join(',');
    const wantGroups = supplementaryGroups(u.groups, u.group).join(',');
    if (haveGroups !== wantGroups) changes.push({ field: 'groups', from: haveGroups, to: wantGroups });
    if (have.home !== u.home) changes.push({ field: 'home', from: have.home, to: u.home });
    if (have.shell !== u.shell) changes.push({ field: 'shell', from: have.shell, to: u.shell });
    if (u.uid !== undefined && have.uid !== u.uid) changes.push({ field: 'uid', from: String(have.uid), to: String(u.uid) });
    if (changes.length === 0) return;
    this.route(
      u,
      changes.map((c) => this.drift(u, c.field, c.to, c.from)),
      [
        [
          'user',
          {
            type: 'user.modify',
            resource: u.id,
            name: u.name,
            changes,
            group: u.group,
            groups: supplementaryGroups(u.groups, u.group),
            home: u.home,
            shell: u.shell,
            ...(u.uid !== undefined ? { uid: u.uid } : {}),
            reason: `${changes.map((c) => c.field).join(', ')} ${changes.length === 1 ? 'differs' : 'differ'}`,
          },
        ],
      ],
    );
  }

  // ---- paths ---------------------------------------------------------------

  /** chown/chmod steps and their differences for an existing path. */
  private ownership(r: ResourceBase & { path: string; owner: string; group: string; mode: string }, fact: ExistingPath, phase: Phase): { diffs: Drift[]; steps: Step[] } {
    const diffs: Drift[] = [];
    const steps: Step[] = [];
    const ownerOk = ownerMatches(fact, r.owner);
    const groupOk = groupMatches(fact, r.group);
    if (!ownerOk) diffs.push(this.drift(r, 'owner', r.owner, fact.owner));
    if (!groupOk) diffs.push(this.drift(r, 'group', r.group, fact.group));
    if (!ownerOk || !groupOk) {
      steps.push([
        phase,
        {
          type: 'path.chown',
          resource: r.id,
          path: r.path,
          owner: r.owner,
          group: r.group,
          from: { owner: fact.owner, group: fact.group },
          reason: `owner ${fact.owner}:${fact.group}, want ${r.owner}:${r.group}`,
        },
      ]);
    }
    const want = normalizeMode(r.mode);
    const have = normalizeMode(fact.mode);
    if (want !== have) {
      diffs.push(this.drift(r, 'mode', want, have));
      steps.push([phase, { type: 'path.chmod', resource: r.id, path: r.path, mode: want, from: have, reason: `mode ${have}, want ${want}` }]);
    }
    return { diffs, steps };
  }

  private directory(dir: DesiredDirectory): void {
    const blocker = this.blockedAncestor(dir.path);
    if (blocker) {
      this.blockedDirs.add(dir.path);
      this.refuseBelowBlocked(dir, dir.path, blocker);
      return;
    }
    const fact = this.pathFact(dir.path);
    if (dir.ensure === 'absent') {
      if (!fact.exists) return;
      if (fact.type !== 'dir') {
        this.refuse(dir, dir.path, `is ${pathKind(fact)}, not the directory declared absent (${where(dir)}); converge leaves it alone`, `remove it on ${this.node} by hand if it should go`, this.drift(dir, 'type', 'absent', fact.type));
        return;
      }
      if (this.route(dir, [this.drift(dir, 'exists', 'absent', 'present')], [['rmDir', { type: 'path.remove', resource: dir.id, path: dir.path, pathType: 'dir', reason: 'ensure: absent' }]])) {
        this.removedPaths.add(dir.path);
      }
      return;
    }
    if (!fact.exists) {
      this.route(dir, [this.drift(dir, 'exists', 'present', 'absent')], [
        ['dir', { type: 'dir.create', resource: dir.id, path: dir.path, owner: dir.owner, group: dir.group, mode: normalizeMode(dir.mode), reason: 'missing' }],
      ]);
      return;
    }
    if (fact.type !== 'dir') {
      this.blockedDirs.add(dir.path);
      this.refuse(
        dir,
        dir.path,
        `is ${pathKind(fact)} where a directory is declared (${where(dir)}); converge does not replace it`,
        `move ${dir.path} aside on ${this.node} (or fix the path in the desired state) and run again`,
        this.drift(dir, 'type', 'dir', fact.type),
      );
      return;
    }
    const { diffs, steps } = this.ownership(dir, fact, 'dir');
    this.route(dir, diffs, steps);
  }

  private file(f: DesiredFile): void {
    const blocker = this.blockedAncestor(f.path);
    if (blocker) {
      this.refuseBelowBlocked(f, f.path, blocker);
      return;
    }
    const fact = this.pathFact(f.path);
    if (f.ensure === 'absent') {
      if (!fact.exists) return;
      if (fact.type !== 'file') {
        this.refuse(f, f.path, `is ${pathKind(fact)}, not the file declared absent (${where(f)}); converge leaves it alone`, `remove it on ${this.node} by hand if it should go`, this.drift(f, 'type', 'absent', fact.type));
        return;
      }
      if (this.route(f, [this.drift(f, 'exists', 'absent', 'present')], [['rmFile', { type: 'path.remove', resource: f.id, path: f.path, pathType: 'file', reason: 'ensure: absent' }]])) {
        this.removedPaths.add(f.path);
        if (isUnitFilePath(f.path)) this.unitFilesRemoved.push(f.path);
      }
      return;
    }
    const content = f.content;
    if (!content) {
      this.refuse(f, f.path, `declares no content (${where(f)})`, 'give the File a content source (inline, source, template, artifact or secret)', this.drift(f, 'content', 'declared', 'none'));
      return;
    }
    if (content.kind === 'secret' && content.sha256 === null) {
      this.refuse(
        f,
        f.path,
        `the secret ${content.name} could not be read on this machine, so whether it changed is unknown (${where(f)})`,
        `make ${content.localPath} readable by converge and run again`,
        this.drift(f, 'content', '(secret)', '(secret unknown)'),
      );
      return;
    }
    const sha256 = content.sha256 as string;
    if (fact.exists && fact.type !== 'file') {
      this.refuse(
        f,
        f.path,
        `is ${pathKind(fact)} where a file is declared (${where(f)}); converge never writes through or replaces it`,
        `remove or rename ${f.path} on ${this.node} (or fix the path in the desired state) and run again`,
        this.drift(f, 'type', 'file', fact.type),
      );
      return;
    }
    if (!fact.exists || fact.sha256 !== sha256) {
      // The write sets owner, group and mode too; the differences are kept for policy report.
      const diffs = fact.exists ? [this.drift(f, 'content', ...contentDriftValues(content, fact)), ...this.ownership(f, fact, 'file').diffs] : [this.drift(f, 'exists', 'present', 'absent')];
      const write: Unplaced<HostAction> = {
        type: 'file.write',
        resource: f.id,
        path: f.path,
        owner: f.owner,
        group: f.group,
        mode: normalizeMode(f.mode),
        contentKind: content.kind,
        sha256,
        size: content.size,
        oldSha256: fact.exists ? (fact.sha256 ?? null) : null,
        ...diffTexts(content, fact.exists ? fact : null),
        reason: !fact.exists ? 'missing' : fact.sha256 === undefined ? 'content could not be read' : 'content differs',
      };
      if (this.route(f, diffs, [['file', write]])) {
        this.changedFiles.set(f.path, f);
        if (isUnitFilePath(f.path)) this.unitFilesWritten.push(f.path);
      }
      return;
    }
    const { diffs, steps } = this.ownership(f, fact, 'file');
    if (this.route(f, diffs, steps)) this.changedFiles.set(f.path, f);
  }

  // ---- services ------------------------------------------------------------

  /** Runtime state of the etcd unit (start, stop, restart) belongs to the etcd planner. */
  private isEtcdUnit(unit: string): boolean {
    return this.ctx.etcd !== null && this.ctx.etcd.unit === unit;
  }

  private isEtcdMember(): boolean {
    return this.ctx.etcd !== null && this.ctx.etcd.members.some((m) => m.node === this.node);
  }

  private unitFileDeclared(unit: string): boolean {
    return this.desired.files.some((f) => f.ensure === 'present' && isUnitFilePath(f.path) && f.path.endsWith(`/${unit}`));
  }

  private service(s: DesiredService): void {
    const u = unitOrNotFound(this.facts.units, s.unit);
    const etcd = this.isEtcdUnit(s.unit);
    if (s.ensure === 'absent') {
      const diffs: Drift[] = [];
      const steps: Step[] = [];
      if (isRunning(u)) {
        diffs.push(this.drift(s, 'running', 'inactive', u.activeState));
        if (!etcd) steps.push(['rmService', { type: 'service.stop', resource: s.id, unit: s.unit, reason: 'ensure: absent' }]);
      }
      if (isEnabled(u)) {
        diffs.push(this.drift(s, 'enabled', 'disabled', u.unitFileState));
        steps.push(['rmService', { type: 'service.disable', resource: s.id, unit: s.unit, reason: 'ensure: absent' }]);
      }
      this.route(s, diffs, steps);
      return;
    }
    if (this.facts.units[s.unit]?.loadState === 'not-found' && !this.unitFileDeclared(s.unit)) {
      this.refuse(
        s,
        s.unit,
        `unit ${s.unit} does not exist on the node and no File declares it (${where(s)})`,
        `declare the unit file as a File (e.g. /etc/systemd/system/${s.unit}) or install what provides it`,
        this.drift(s, 'exists', 'present', 'not-found'),
      );
      return;
    }
    const diffs: Drift[] = [];
    const steps: Step[] = [];
    if (!s.running && isRunning(u)) {
      diffs.push(this.drift(s, 'running', 'inactive', u.activeState));
      if (!etcd) steps.push(['service', { type: 'service.stop', resource: s.id, unit: s.unit, reason: `${u.activeState}, want stopped` }]);
    }
    if (s.enabled && !isEnabled(u)) {
      if (u.unitFileState === 'static') {
        // A static unit has no [Install] section: enabling it is impossible, so say so instead of failing on apply.
        this.reported.push(this.drift(s, 'enabled', 'enabled', 'static (no [Install] section)'));
      } else {
        diffs.push(this.drift(s, 'enabled', 'enabled', u.unitFileState || 'absent'));
        steps.push(['service', { type: 'service.enable', resource: s.id, unit: s.unit, reason: `unit file state ${u.unitFileState || '(none)'}, want enabled` }]);
      }
    }
    if (!s.enabled && isEnabled(u)) {
      diffs.push(this.drift(s, 'enabled', 'disabled', u.unitFileState));
      steps.push(['service', { type: 'service.disable', resource: s.id, unit: s.unit, reason: 'enabled, want disabled' }]);
    }
    if (s.running && !isRunning(u)) {
      diffs.push(this.drift(s, 'running', 'active', u.activeState));
      if (!etcd) steps.push(['service', { type: 'service.start', resource: s.id, unit: s.unit, reason: `${u.activeState}, want running` }]);
    }
    this.route(s, diffs, steps);
  }

  /** Returns the restart causes of the etcd unit on a member node. */
  private restarts(): string[] | undefined {
    const causes = new Map<string, string[]>();
    for (const [path, f] of this.changedFiles) {
      for (const unit of f.restarts) causes.set(unit, [...(causes.get(unit) ?? []), path]);
    }
    const started = new Set((this.buckets.get('service') ?? []).flatMap((a) => (a.type === 'service.start' ? [a.unit] : [])));
    let etcdBecause: string[] | undefined;
    for (const unit of [...causes.keys()].sort()) {
      const because = [...(causes.get(unit) ?? [])].sort();
      if (this.isEtcdUnit(unit)) {
        if (this.isEtcdMember()) etcdBecause = because;
        continue;
      }
      const svc = this.desired.services.find((s) => s.unit === unit);
      if (svc) {
        if (svc.ensure === 'absent' || svc.policy === 'report' || !svc.running || started.has(unit)) continue;
      } else {
        // Not declared here: restart only what is running, as try-restart would.
        const u = this.facts.units[unit];
        if (!u || !isRunning(u)) continue;
      }
      this.push('restart', {
        type: 'service.restart',
        resource: svc?.id ?? `Service/${unit}`,
        unit,
        because,
        reason: `${because.join(', ')} changed`,
      });
    }
    return etcdBecause;
  }

  // ---- removals ------------------------------------------------------------

  private managedCache: { paths: Set<string>; ancestors: Set<string> } | undefined;

  /** Declared paths, and every directory above one of them (which must stay). */
  private managed(): { paths: Set<string>; ancestors: Set<string> } {
    if (!this.managedCache) {
      const paths = new Set([...this.desired.files.filter((f) => f.ensure === 'present').map((f) => f.path), ...this.desired.directories.filter((d) => d.ensure === 'present').map((d) => d.path)]);
      this.managedCache = { paths, ancestors: new Set([...paths].flatMap(ancestorsOf)) };
    }
    return this.managedCache;
  }

  private declaredTargets: Map<InventoryEntry['kind'], Set<string>> | null = null;

  /** Whether the desired state still declares the entry's target (a File and a Directory share the paths). */
  private stillDeclared(e: InventoryEntry): boolean {
    // One set per kind, made once: scanning every resource for each inventory entry was quadratic in the number of files.
    if (this.declaredTargets === null) {
      const d = this.desired;
      const paths = new Set([...d.files.map((f) => f.path), ...d.directories.map((x) => x.path)]);
      this.declaredTargets = new Map<InventoryEntry['kind'], Set<string>>([
        ['File', paths],
        ['Directory', paths],
        ['Service', new Set(d.services.map((x) => x.unit))],
        ['User', new Set(d.users.map((u) => u.name))],
        ['Group', new Set(d.groups.map((g) => g.name))],
      ]);
    }
    return this.declaredTargets.get(e.kind)?.has(e.target) ?? false;
  }

  private keep(id: string, why: string): void {
    this.reported.push({ node: this.node, resource: id, field: 'managed', want: 'no longer declared', have: `left in place: ${why}` });
  }

  private prune(): void {
    const inv = this.facts.inventory;
    if (!inv) return;
    const reason = `no longer in the desired state (created by converge${inv.commit ? ` at ${inv.commit.slice(0, 12)}` : ''})`;
    const managed = this.managed();
    // Files first, then directories deepest first: a directory whose only
    // entries are removed in this same plan is removed in this plan too.
    const rank = (e: InventoryEntry): string => (e.kind === 'File' ? '0' : e.kind === 'Directory' ? `1${String(999 - e.target.split('/').length).padStart(3, '0')}` : '2');
    const entries = Object.entries(inv.resources).sort(byString(([k, e]) => `${rank(e)}\0${k}`));
    for (const [id, e] of entries) {
      if (this.stillDeclared(e) || !this.stillThere(e)) continue;
      if (!e.created) {
        this.keep(id, `${e.target} existed before converge managed it`);
        continue;
      }
      if (!e.prune) {
        this.keep(id, `${e.target} has prune: false`);
        continue;
      }
      switch (e.kind) {
        case 'File': {
          const fact = this.facts.paths[e.target];
          if (fact?.exists && fact.type !== 'file') {
            this.keep(id, `${e.target} is now ${pathKind(fact)}`);
            break;
          }
          this.removePath(id, e.target, 'file', reason);
          break;
        }
        case 'Directory': {
          const fact = this.facts.paths[e.target];
          if (fact?.exists && fact.type !== 'dir') {
            this.keep(id, `${e.target} is now ${pathKind(fact)}`);
            break;
          }
          if (managed.ancestors.has(e.target)) {
            this.keep(id, `${e.target} holds paths that are still declared`);
            break;
          }
          const others = (this.facts.dirListings[e.target] ?? []).map((x) => absolute(e.target, x)).filter((p) => !this.removedPaths.has(p));
          if (others.length > 0) {
            this.keep(id, `${e.target} holds ${others.length} entr${others.length === 1 ? 'y' : 'ies'} converge does not manage`);
            break;
          }
          this.removePath(id, e.target, 'dir', reason);
          break;
        }
        case 'Service': {
          const u = this.facts.units[e.target];
          if (!u || isRunning(u)) {
            if (!this.isEtcdUnit(e.target)) this.push('rmService', { type: 'service.stop', resource: id, unit: e.target, reason });
          }
          if (!u || isEnabled(u)) this.push('rmService', { type: 'service.disable', resource: id, unit: e.target, reason });
          break;
        }
        case 'User':
          this.push('rmUser', { type: 'user.remove', resource: id, name: e.target, reason });
          break;
        case 'Group':
          this.push('rmGroup', { type: 'group.remove', resource: id, name: e.target, reason });
          break;
      }
    }
  }

  /** false when the facts show the resource is already gone (unknown counts as there). */
  private stillThere(e: InventoryEntry): boolean {
    switch (e.kind) {
      case 'File':
      case 'Directory':
        return this.facts.paths[e.target]?.exists ?? true;
      case 'Service': {
        const u = this.facts.units[e.target];
        return !u || isRunning(u) || isEnabled(u);
      }
      case 'User':
        return e.target in this.facts.users;
      case 'Group':
        return e.target in this.facts.groups;
    }
  }

  private removePath(resource: string, path: string, pathType: 'file' | 'dir', reason: string): void {
    if (this.removedPaths.has(path)) return;
    this.removedPaths.add(path);
    this.push(pathType === 'dir' ? 'rmDir' : 'rmFile', { type: 'path.remove', resource, path, pathType, reason });
    if (pathType === 'file' && isUnitFilePath(path)) this.unitFilesRemoved.push(path);
  }

  private purge(dir: DesiredDirectory): void {
    if (!dir.purge || dir.ensure !== 'present' || this.blockedDirs.has(dir.path) || this.blockedAncestor(dir.path)) return;
    const managed = this.managed();
    const entries = (this.facts.dirListings[dir.path] ?? []).map((x) => absolute(dir.path, x)).filter((p) => isUnder(p, dir.path));
    for (const p of [...new Set(entries)].sort()) {
      if (managed.paths.has(p) || managed.ancestors.has(p) || this.removedPaths.has(p)) continue;
      const fact = this.facts.paths[p];
      const pathType = fact?.exists && fact.type === 'dir' ? 'dir' : 'file';
      if (dir.policy === 'report') {
        this.reported.push({ node: this.node, resource: dir.id, field: 'exists', want: `${p} absent (purge: true)`, have: 'present' });
        continue;
      }
      this.removePath(dir.id, p, pathType, 'not managed, purge: true');
    }
  }

  // ---- assembly ------------------------------------------------------------

  private assemble(etcdRestartBecause: string[] | undefined): NodePlan {
    const take = (p: Phase): HostAction[] => this.buckets.get(p) ?? [];
    const byPath = byString((a: HostAction) => ('path' in a ? a.path : ''));
    const byName = byString((a: HostAction) => ('name' in a ? a.name : ''));
    const byUnit = byString((a: HostAction) => ('unit' in a ? a.unit : ''));
    const deepestFirst = (a: HostAction, b: HostAction): number => -byPath(a, b);

    const enablement = (a: HostAction): boolean => a.type === 'service.enable' || a.type === 'service.disable';
    const services = take('service');
    const actions: HostAction[] = [
      ...take('group').sort(byName),
      ...take('user').sort(byName),
      ...take('dir').sort(byPath),
      ...take('file').sort(byPath),
      ...services.filter(enablement),
    ];
    const loadCauses = this.unitFilesWritten.map((p) => `${p} changed`);
    const needReload = Object.values(this.facts.units)
      .filter((u) => u.needDaemonReload)
      .map((u) => u.unit)
      .sort();
    if (loadCauses.length > 0 || needReload.length > 0) {
      const reason = [...loadCauses, ...needReload.map((u) => `systemd reports ${u} changed on disk`)].join(', ');
      actions.push({ node: this.node, resource: `Node/${this.node}`, type: 'systemd.daemon-reload', reason });
    }
    actions.push(...services.filter((a) => !enablement(a)), ...take('restart').sort(byUnit));

    const removals: HostAction[] = [
      ...take('rmService').sort(byUnit),
      ...take('rmFile').sort(deepestFirst),
      ...take('rmDir').sort(deepestFirst),
      ...take('rmUser').sort(byName),
      ...take('rmGroup').sort(byName),
    ];
    if (this.unitFilesRemoved.length > 0) {
      removals.push({ node: this.node, resource: `Node/${this.node}`, type: 'systemd.daemon-reload', reason: this.unitFilesRemoved.map((p) => `${p} removed`).join(', ') });
    }

    const plan: NodePlan = { node: this.node, reachable: true, actions: [...actions, ...removals], reported: this.reported };
    if (removals.length > 0) plan.firstRemoval = actions.length;
    if (this.refusals.length > 0) {
      plan.refusals = this.refusals;
      plan.error = this.refusals.map((r) => r.message).join('\n');
    }
    if (etcdRestartBecause && etcdRestartBecause.length > 0) plan.etcdRestartBecause = etcdRestartBecause;
    return plan;
  }
}

function absolute(dir: string, entry: string): string {
  if (entry.startsWith('/')) return entry.replace(/\/+$/, '');
  return `${dir.replace(/\/+$/, '')}/${entry.replace(/\/+$/, '')}`;
}

/** Secrets are never described by digest, only by the fact that they differ. */
function contentDriftValues(content: ContentRef, fact: ExistingPath): [string, string] {
  if (content.kind === 'secret') return ['(secret)', '(secret changed)'];
  return [content.sha256, fact.sha256 ?? 'unreadable'];
}

function diffTexts(content: ContentRef, fact: ExistingPath | null): { oldText?: string; newText?: string } {
  if (content.kind !== 'text' || content.size > MAX_DIFF_TEXT_BYTES) return {};
  const out: { oldText?: string; newText?: string } = { newText: content.text };
  if (fact && fact.text !== undefined && fact.size <= MAX_DIFF_TEXT_BYTES) out.oldText = fact.text;
  return out;
}
