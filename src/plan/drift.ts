/**
 * Drift: where a node differs from what converge last applied there, and why.
 *
 * Three views of every managed resource are compared field by field:
 *   applied  what the last applied commit (the node's inventory commit) wanted,
 *   desired  what the current commit wants,
 *   actual   what the facts show.
 * actual ≠ applied  → `corrective`: the node changed under us.
 * actual = applied ≠ desired → `intentional`: Git changed, not rolled out yet.
 * A node never applied (no inventory) has only intentional drift.
 *
 * Pure. Secrets are compared by digest but described only by placeholders.
 */
import type { ResolvedNode } from '../model/types.js';
import type { Inventory, NodeFacts } from '../facts/types.js';
import { byString, isEnabled, isRunning, normalizeMode, supplementaryGroups } from './compare.js';

export type DriftLabel = 'corrective' | 'intentional';
export type DriftField = 'exists' | 'type' | 'content' | 'owner' | 'group' | 'mode' | 'enabled' | 'running' | 'uid' | 'gid' | 'primaryGroup' | 'groups' | 'home' | 'shell';
export type DriftKind = 'Group' | 'User' | 'Directory' | 'File' | 'Service';

export interface DriftItem {
  node: string;
  /** `Kind/name`. */
  resource: string;
  kind: DriftKind;
  /** Path, unit or account name. */
  target: string;
  field: DriftField;
  label: DriftLabel;
  /** What the last applied commit wanted; null when it did not manage this. */
  applied: string | null;
  /** What the current commit wants; null when it no longer declares this. */
  desired: string | null;
  /** What is on the node. */
  actual: string;
  /** Content of a secret: the values above are placeholders, never digests. */
  secret?: true;
  /**
   * Content of a text file (never a secret), when both sides are known: what
   * the node has and what this item's side wants, for a unified diff.
   */
  text?: { have: string; want: string };
}

export interface NodeDrift {
  node: string;
  reachable: boolean;
  error?: string;
  /** The node's inventory: which commit converge last applied there, and when. */
  appliedCommit: string | null;
  appliedAt: string | null;
  items: DriftItem[];
}

export interface DriftReport {
  /** The current commit. */
  commit: string | null;
  createdAt: string;
  nodes: NodeDrift[];
  counts: { corrective: number; intentional: number };
}

export interface DriftNodeInput {
  node: string;
  /** Desired state of this node at its inventory's commit; null when unknown or unreadable. */
  applied: ResolvedNode | null;
  /** Desired state of this node at the current commit; null when the node is no longer declared. */
  current: ResolvedNode | null;
  facts: NodeFacts | { error: string };
}

const FIELD_ORDER: DriftField[] = ['exists', 'type', 'content', 'owner', 'group', 'mode', 'primaryGroup', 'groups', 'home', 'shell', 'uid', 'gid', 'enabled', 'running'];

/** One resource as one side wants it. Only the fields that side cares about are set. */
interface View {
  id: string;
  kind: DriftKind;
  target: string;
  fields: Partial<Record<DriftField, string>>;
  secret: boolean;
  /** From the inventory: would the planner remove it once no longer declared. */
  prunable?: boolean;
}

/** What the node has, with the alternative spelling (uid/gid) an owner may match by. */
interface Actual {
  fields: Partial<Record<DriftField, string>>;
  alt: Partial<Record<DriftField, string>>;
}

const key = (kind: string, target: string): string => `${kind}\u0000${target}`;

function viewsOf(node: ResolvedNode | null): Map<string, View> {
  const out = new Map<string, View>();
  if (!node) return out;
  const put = (v: View): void => void out.set(key(v.kind, v.target), v);
  for (const g of node.groups) {
    put({ id: g.id, kind: 'Group', target: g.name, secret: false, fields: g.ensure === 'absent' ? { exists: 'absent' } : { exists: 'present', ...(g.gid !== undefined ? { gid: String(g.gid) } : {}) } });
  }
  for (const u of node.users) {
    put({
      id: u.id,
      kind: 'User',
      target: u.name,
      secret: false,
      fields:
        u.ensure === 'absent'
          ? { exists: 'absent' }
          : { exists: 'present', primaryGroup: u.group, groups: supplementaryGroups(u.groups, u.group).join(','), home: u.home, shell: u.shell, ...(u.uid !== undefined ? { uid: String(u.uid) } : {}) },
    });
  }
  for (const d of node.directories) {
    put({ id: d.id, kind: 'Directory', target: d.path, secret: false, fields: d.ensure === 'absent' ? { exists: 'absent' } : { exists: 'present', type: 'dir', owner: d.owner, group: d.group, mode: normalizeMode(d.mode) } });
  }
  for (const f of node.files) {
    const sha = f.content?.sha256 ?? null;
    put({
      id: f.id,
      kind: 'File',
      target: f.path,
      secret: f.content?.kind === 'secret',
      fields: f.ensure === 'absent' ? { exists: 'absent' } : { exists: 'present', type: 'file', ...(sha !== null ? { content: sha } : {}), owner: f.owner, group: f.group, mode: normalizeMode(f.mode) },
    });
  }
  for (const s of node.services) {
    put({
      id: s.id,
      kind: 'Service',
      target: s.unit,
      secret: false,
      fields: s.ensure === 'absent' ? { enabled: 'disabled', running: 'inactive' } : { enabled: s.enabled ? 'enabled' : 'disabled', running: s.running ? 'active' : 'inactive' },
    });
  }
  return out;
}

/**
 * Without the applied commit's desired state, the inventory still tells what
 * was managed and the file attributes last applied; other fields are taken to
 * be unchanged in Git.
 */
function viewsFromInventory(inv: Inventory, current: Map<string, View>): Map<string, View> {
  const out = new Map<string, View>();
  for (const [id, e] of Object.entries(inv.resources)) {
    const k = key(e.kind, e.target);
    const cur = current.get(k);
    const fields: Partial<Record<DriftField, string>> = { ...(cur?.fields ?? {}) };
    if (e.kind === 'File' || e.kind === 'Directory') {
      fields.exists = 'present';
      fields.type = e.kind === 'File' ? 'file' : 'dir';
      if (e.sha256 !== undefined) fields.content = e.sha256;
      if (e.owner !== undefined) fields.owner = e.owner;
      if (e.group !== undefined) fields.group = e.group;
      if (e.mode !== undefined) fields.mode = normalizeMode(e.mode);
    } else if (e.kind !== 'Service') {
      fields.exists = 'present';
    }
    out.set(k, { id, kind: e.kind, target: e.target, fields, secret: cur?.secret ?? false });
  }
  return out;
}

function actualOf(kind: DriftKind, target: string, facts: NodeFacts): Actual {
  switch (kind) {
    case 'Group': {
      const g = facts.groups[target];
      return { fields: g ? { exists: 'present', gid: String(g.gid) } : { exists: 'absent' }, alt: {} };
    }
    case 'User': {
      const u = facts.users[target];
      if (!u) return { fields: { exists: 'absent' }, alt: {} };
      return {
        fields: { exists: 'present', primaryGroup: u.group, groups: supplementaryGroups(u.groups, u.group).join(','), home: u.home, shell: u.shell, uid: String(u.uid) },
        alt: { primaryGroup: String(u.gid) },
      };
    }
    case 'Directory':
    case 'File': {
      const p = facts.paths[target] ?? { exists: false as const };
      if (!p.exists) return { fields: { exists: 'absent' }, alt: {} };
      return {
        fields: { exists: 'present', type: p.type, ...(p.sha256 !== undefined ? { content: p.sha256 } : {}), owner: p.owner, group: p.group, mode: normalizeMode(p.mode) },
        alt: { owner: String(p.uid), group: String(p.gid) },
      };
    }
    case 'Service': {
      const u = facts.units[target];
      if (!u) return { fields: { enabled: 'not-found', running: 'inactive' }, alt: {} };
      return { fields: { enabled: isEnabled(u) ? 'enabled' : u.unitFileState || 'not-found', running: isRunning(u) ? 'active' : u.activeState }, alt: {} };
    }
  }
}

function matches(field: DriftField, want: string, actual: Actual): boolean {
  const have = actual.fields[field];
  if (field === 'enabled') return want === 'enabled' ? have === 'enabled' : have !== 'enabled';
  if (field === 'running') return want === 'active' ? have === 'active' : have !== 'active';
  return have === want || actual.alt[field] === want;
}

/** The fields worth comparing: none beyond existence when absent, none beyond type when the type is wrong. */
function comparable(field: DriftField, wanted: View, actual: Actual): boolean {
  if (wanted.kind === 'Service') return true;
  if (field === 'exists') return true;
  if (actual.fields.exists !== 'present' || wanted.fields.exists !== 'present') return false;
  if (field === 'type') return true;
  return wanted.fields.type === undefined || actual.fields.type === wanted.fields.type;
}

export function nodeDrift(input: DriftNodeInput): NodeDrift {
  const facts = input.facts;
  if (!('paths' in facts)) return { node: input.node, reachable: false, error: facts.error, appliedCommit: null, appliedAt: null, items: [] };
  const inv = facts.inventory;
  const current = viewsOf(input.current);
  const applied = input.applied ? viewsOf(input.applied) : inv ? viewsFromInventory(inv, current) : new Map<string, View>();
  if (inv) {
    for (const e of Object.values(inv.resources)) {
      const v = applied.get(key(e.kind, e.target));
      if (v) v.prunable = e.created && e.prune;
    }
  }

  const items: DriftItem[] = [];
  for (const k of [...new Set([...applied.keys(), ...current.keys()])].sort()) {
    const a = applied.get(k);
    const c = current.get(k);
    const base = (c ?? a) as View;
    const actual = actualOf(base.kind, base.target, facts);
    const secret = Boolean(a?.secret || c?.secret);
    for (const field of FIELD_ORDER) {
      const av = a?.fields[field];
      const cv = c?.fields[field];
      if (av === undefined && cv === undefined) continue;
      const item = (label: DriftLabel): DriftItem => {
        const d = describe({ node: input.node, resource: base.id, kind: base.kind, target: base.target, field, label, applied: av ?? null, desired: cv ?? null, actual: actual.fields[field] ?? 'unknown' }, secret);
        const text = field === 'content' && !secret ? contentTexts(label === 'corrective' ? (input.applied ?? input.current) : input.current, base.target, facts) : null;
        return text ? { ...d, text } : d;
      };
      if (av !== undefined && a && comparable(field, a, actual) && !matches(field, av, actual)) {
        items.push(item('corrective'));
        continue;
      }
      if (cv === av) continue;
      if (c && cv !== undefined) {
        if (comparable(field, c, actual) && !matches(field, cv, actual)) items.push(item('intentional'));
      } else if (!c && a?.prunable && field === 'exists' && actual.fields.exists === 'present') {
        items.push(item('intentional'));
      }
    }
  }
  return { node: input.node, reachable: true, appliedCommit: inv?.commit ?? null, appliedAt: inv?.appliedAt ?? null, items };
}

/** Both texts of a drifted text file, when the facts carry the node's (small, changed text files only). */
function contentTexts(side: ResolvedNode | null, path: string, facts: NodeFacts): { have: string; want: string } | null {
  const p = facts.paths[path];
  const want = side?.files.find((f) => f.path === path)?.content;
  if (!p?.exists || p.text === undefined || want?.kind !== 'text') return null;
  return { have: p.text, want: want.text };
}

/** Replaces the digests of secrets with placeholders that say only what changed. */
function describe(i: DriftItem, secret: boolean): DriftItem {
  if (!secret || i.field !== 'content') return i;
  const gitChanged = i.applied !== null && i.desired !== null && i.applied !== i.desired;
  const actual = i.actual === i.desired ? '(secret as desired)' : i.actual === i.applied ? '(secret as last applied)' : '(secret changed on the node)';
  return {
    ...i,
    applied: i.applied === null ? null : '(secret)',
    desired: i.desired === null ? null : gitChanged ? '(secret changed in Git)' : '(secret)',
    actual,
    secret: true,
  };
}

export function buildDriftReport(input: { commit: string | null; now: string; nodes: DriftNodeInput[] }): DriftReport {
  const nodes = [...input.nodes].sort(byString((n) => n.node)).map(nodeDrift);
  const all = nodes.flatMap((n) => n.items);
  return {
    commit: input.commit,
    createdAt: input.now,
    nodes,
    counts: { corrective: all.filter((i) => i.label === 'corrective').length, intentional: all.filter((i) => i.label === 'intentional').length },
  };
}

export function driftCount(report: DriftReport): number {
  return report.counts.corrective + report.counts.intentional;
}
