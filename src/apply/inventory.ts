/**
 * converge's record, on each node, of what it manages there: the inventory
 * (by resource id, with whether converge created it or only adopted it) and
 * the list of managed paths that the facts probe stats on the next pass, so
 * that a resource deleted from the desired state can still be found and
 * pruned. nextInventory() is pure; writeInventory() writes both files
 * atomically (temp file, fsync, rename) as root-only files.
 */
import { createHash } from 'node:crypto';
import { shellQuote, type Transport } from '../connect/transport.js';
import { NodeError } from '../errors/index.js';
import { DIGEST_CACHE_NAME } from '../facts/digest-cache.js';
import type { Inventory, InventoryEntry, NodeFacts } from '../facts/types.js';
import type { ResolvedNode } from '../model/types.js';
import type { HostAction, NodePlan } from '../plan/types.js';
import { STATE_DIR, STATE_DIR_PRELUDE, bare, reasonOf, writeFilesScript, type PutArgs } from './script.js';

export const INVENTORY_PATH = `${STATE_DIR}/inventory.json`;
/** One base64-encoded absolute path per line: every File and Directory target in the inventory. */
export const MANAGED_PATHS_PATH = `${STATE_DIR}/managed-paths`;
export const DIGEST_CACHE_PATH = `${STATE_DIR}/${DIGEST_CACHE_NAME}`;

type Kind = InventoryEntry['kind'];

interface Present {
  id: string;
  kind: Kind;
  target: string;
  prune: boolean;
  enforce: boolean;
  /** Desired owner/group/mode/sha256 for files and directories. */
  values: Pick<InventoryEntry, 'sha256' | 'owner' | 'group' | 'mode'>;
}

function presentResources(node: ResolvedNode): Present[] {
  const out: Present[] = [];
  const add = (r: { id: string; kind: Kind; ensure: string; prune: boolean; policy: string }, target: string, values: Present['values'] = {}): void => {
    if (r.ensure === 'present') out.push({ id: r.id, kind: r.kind, target, prune: r.prune, enforce: r.policy === 'enforce', values });
  };
  for (const g of node.groups) add(g, g.name);
  for (const u of node.users) add(u, u.name);
  for (const d of node.directories) add(d, d.path, { owner: d.owner, group: d.group, mode: d.mode });
  for (const f of node.files) {
    const values: Present['values'] = { owner: f.owner, group: f.group, mode: f.mode };
    if (f.content?.sha256) values.sha256 = f.content.sha256;
    add(f, f.path, values);
  }
  for (const s of node.services) add(s, s.unit);
  return out;
}

const ACTIVE = new Set(['active', 'activating', 'reloading']);

/** Whether the thing existed before this pass (unknown counts as existing: never claim what is not known to be ours). */
function existedBefore(kind: Kind, target: string, facts: NodeFacts): boolean {
  switch (kind) {
    case 'File':
    case 'Directory': {
      const f = facts.paths[target];
      return f === undefined || f.exists;
    }
    case 'Group':
      return target in facts.groups;
    case 'User':
      return target in facts.users;
    case 'Service': {
      const u = facts.units[target];
      if (u === undefined) return true;
      return u.loadState !== 'not-found' && (u.unitFileState === 'enabled' || ACTIVE.has(u.activeState));
    }
  }
}

/** Whether a no-longer-desired entry still exists on the node after the performed actions. */
function stillThere(e: InventoryEntry, facts: NodeFacts, performed: readonly HostAction[]): boolean {
  const did = (pred: (a: HostAction) => boolean): boolean => performed.some(pred);
  switch (e.kind) {
    case 'File':
    case 'Directory': {
      if (did((a) => a.type === 'path.remove' && a.path === e.target)) return false;
      const f = facts.paths[e.target];
      return f === undefined || f.exists;
    }
    case 'Group':
      return !did((a) => a.type === 'group.remove' && a.name === e.target) && e.target in facts.groups;
    case 'User':
      return !did((a) => a.type === 'user.remove' && a.name === e.target) && e.target in facts.users;
    case 'Service': {
      const u = facts.units[e.target];
      const enabled = !did((a) => a.type === 'service.disable' && a.unit === e.target) && (u === undefined || u.unitFileState === 'enabled');
      const active = !did((a) => a.type === 'service.stop' && a.unit === e.target) && (u === undefined || ACTIVE.has(u.activeState));
      return enabled || active;
    }
  }
}

const actionKey = (a: HostAction): string => JSON.stringify(a);

/** What a resource claims on the node: a path (whether File or Directory), or a named account or unit. */
const claimKey = (kind: Kind, target: string): string => (kind === 'File' || kind === 'Directory' ? `path\0${target}` : `${kind}\0${target}`);

/**
 * The inventory after a pass. `performed` are the plan's actions that
 * succeeded (all of them by default); with fewer, the pass was partial:
 * the commit stays the last fully applied one, and resources whose actions
 * did not all succeed keep their previous recorded values.
 *
 * `created` is carried over from the previous inventory for the same kind and
 * target (so a renamed resource keeps it); otherwise it is true exactly when
 * the thing did not exist before this pass. It is recorded even before the
 * creating action succeeds (an intent record): a pass killed after creating
 * something must not make the next pass take it for adopted.
 *
 * Entries no longer desired stay only while converge still has to prune them
 * (created, prune, and still on the node); adopted ones and `prune: false`
 * ones are dropped, left in place.
 */
export function nextInventory(
  old: Inventory | null,
  node: ResolvedNode,
  facts: NodeFacts,
  plan: NodePlan,
  commit: string | null,
  now: Date,
  performed: readonly HostAction[] = plan.actions,
): Inventory {
  const done = new Set(performed.map(actionKey));
  // A refused resource has no actions, so "all its actions done" would hold vacuously: it is not applied.
  const refused = new Set((plan.refusals ?? []).map((r) => r.resource));
  const complete = refused.size === 0 && plan.actions.every((a) => done.has(actionKey(a)));
  const oldEntries = Object.entries(old?.resources ?? {});
  const resources: Record<string, InventoryEntry> = {};
  const claimed = new Set<string>();

  for (const r of presentResources(node)) {
    claimed.add(claimKey(r.kind, r.target));
    const same = (e: InventoryEntry): boolean => e.kind === r.kind && e.target === r.target;
    const byId = old?.resources[r.id];
    const prev = byId && same(byId) ? byId : oldEntries.find(([, e]) => same(e))?.[1];
    const entry: InventoryEntry = { kind: r.kind, target: r.target, created: prev ? prev.created : !existedBefore(r.kind, r.target, facts), prune: r.prune };
    const mine = plan.actions.filter((a) => a.resource === r.id);
    const applied = r.enforce && !refused.has(r.id) && mine.every((a) => done.has(actionKey(a)));
    const write = mine.find((a) => a.type === 'file.write');
    const values = applied ? { ...r.values, ...(write?.type === 'file.write' ? { sha256: write.sha256 } : {}) } : prev ? { sha256: prev.sha256, owner: prev.owner, group: prev.group, mode: prev.mode } : {};
    for (const k of ['sha256', 'owner', 'group', 'mode'] as const) {
      const v = values[k];
      if (v !== undefined) entry[k] = v;
    }
    resources[r.id] = entry;
  }

  for (const [id, e] of oldEntries) {
    if (id in resources || claimed.has(claimKey(e.kind, e.target))) continue;
    if (e.created && e.prune && stillThere(e, facts, performed)) resources[id] = e;
  }

  const sorted: Record<string, InventoryEntry> = {};
  for (const id of Object.keys(resources).sort()) sorted[id] = resources[id] as InventoryEntry;
  return { commit: complete ? commit : (old?.commit ?? null), appliedAt: now.toISOString(), resources: sorted };
}

/** Whether two inventories record the same things (the time of writing aside). */
export function sameInventory(a: Inventory | null, b: Inventory | null): boolean {
  if (a === null || b === null) return a === b;
  return JSON.stringify({ c: a.commit, r: a.resources }) === JSON.stringify({ c: b.commit, r: b.resources });
}

export function encodeManagedPaths(inv: Inventory): string {
  const paths = new Set<string>();
  for (const e of Object.values(inv.resources)) if (e.kind === 'File' || e.kind === 'Directory') paths.add(e.target);
  return [...paths].sort().map((p) => `${Buffer.from(p, 'utf8').toString('base64')}\n`).join('');
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * The inventory's two files as atomic writes of the next bytes of stdin:
 * the managed paths first, so that they always cover what the inventory
 * names; root-only (0600 in a 0700 directory). Also carried by the first or
 * last exec of an apply (host.ts), saving a round trip each.
 */
export function inventoryWrites(inv: Inventory): { puts: PutArgs[]; data: Buffer } {
  const json = Buffer.from(`${JSON.stringify(inv, null, 2)}\n`, 'utf8');
  const paths = Buffer.from(encodeManagedPaths(inv), 'utf8');
  const file = (path: string, b: Buffer): PutArgs => ({ path, owner: 'root', group: 'root', mode: '0600', sha256: sha256(b), backup: false, source: b.length });
  return { puts: [file(MANAGED_PATHS_PATH, paths), file(INVENTORY_PATH, json)], data: Buffer.concat([paths, json]) };
}

/**
 * Write the inventory and the managed-paths list in one exec, each
 * atomically, root-only (0600 in a 0700 directory). The managed paths go
 * first so that they always cover what the inventory names.
 */
export async function writeInventory(t: Transport, inv: Inventory): Promise<void> {
  const { puts, data } = inventoryWrites(inv);
  await writeStateFiles(t, `the inventory ${INVENTORY_PATH}`, puts, data, 'check free space and permissions under /var/lib/converge on the node; the next pass writes it again');
}

/** Write the digest cache (facts/digest-cache.ts) atomically, root-only. */
export async function writeDigestCache(t: Transport, content: Buffer): Promise<void> {
  const put: PutArgs = { path: DIGEST_CACHE_PATH, owner: 'root', group: 'root', mode: '0600', sha256: sha256(content), backup: false, source: 'stdin' };
  await writeStateFiles(t, `the digest cache ${DIGEST_CACHE_PATH}`, [put], content);
}

/** One exec that writes converge's own files in its state folder, each atomically; `what` names them in errors. */
async function writeStateFiles(t: Transport, what: string, puts: PutArgs[], data: Buffer, hint?: string): Promise<void> {
  const script = writeFilesScript(puts, STATE_DIR_PRELUDE);
  let r;
  try {
    r = await t.exec(script, { stdin: data, timeoutMs: 60_000 });
  } catch (e) {
    throw new NodeError('E_APPLY', t.node, `writing ${what} failed: ${bare(e, t.node)}`, { cause: e });
  }
  if (r.code !== 0 || !/^ok$/m.test(r.stdout.toString('utf8'))) {
    throw new NodeError('E_APPLY', t.node, `writing ${what} failed: ${reasonOf(r.stderr) || `exit code ${r.code}`}`, hint ? { hint } : {});
  }
}
