/**
 * Parsing the probe's output into NodeFacts. Pure: bytes in, facts out.
 * Anything unexpected (a failed step, a truncated or malformed stream)
 * throws a NodeError: partial facts would make a wrong plan.
 */
import { createHash } from 'node:crypto';
import { NodeError } from '../errors/index.js';
import type { GroupFact, Inventory, InventoryEntry, NodeFacts, PathFact, UnitFact, UserFact } from './types.js';
import { PROBE_FORMAT } from './probe.js';
import type { ProbeRequest } from './probe.js';

const STAT_FIELDS = 9;

class Tokens {
  private i = 0;
  private readonly list: Buffer[] = [];
  /** Bytes after the last NUL: output cut short. */
  readonly trailing: number;
  constructor(buf: Buffer) {
    let start = 0;
    for (let j = buf.indexOf(0); j !== -1; j = buf.indexOf(0, start)) {
      this.list.push(buf.subarray(start, j));
      start = j + 1;
    }
    this.trailing = buf.length - start;
  }
  done(): boolean {
    return this.i >= this.list.length;
  }
  next(): Buffer | undefined {
    return this.list[this.i++];
  }
  text(): string | undefined {
    return this.next()?.toString('utf8');
  }
  peek(): string | undefined {
    return this.list[this.i]?.toString('utf8');
  }
}

function pathType(y: string): 'file' | 'dir' | 'symlink' | 'other' {
  return y === 'f' ? 'file' : y === 'd' ? 'dir' : y === 'l' ? 'symlink' : 'other';
}

const int = (s: string): number | null => (/^\d+$/.test(s) ? Number(s) : null);

function parseInventory(node: string, json: string): Inventory {
  const bad = (why: string) =>
    new NodeError('E_REMOTE', node, `converge's inventory on the node is unreadable: ${why}`, {
      hint: 'inspect /var/lib/converge/inventory.json on the node; remove it to make converge treat every path as adopted (nothing will be pruned), or restore it from its backup',
    });
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('not a JSON object');
  const o = v as Record<string, unknown>;
  if (!(o['commit'] === null || typeof o['commit'] === 'string')) throw bad('"commit" is neither a string nor null');
  if (typeof o['appliedAt'] !== 'string') throw bad('"appliedAt" is missing');
  const res = o['resources'];
  if (typeof res !== 'object' || res === null || Array.isArray(res)) throw bad('"resources" is not an object');
  const kinds = new Set(['Group', 'User', 'Directory', 'File', 'Service']);
  for (const [id, e] of Object.entries(res as Record<string, unknown>)) {
    const r = e as Partial<InventoryEntry> | null;
    if (typeof r !== 'object' || r === null || !kinds.has(r.kind as string) || typeof r.target !== 'string' || typeof r.created !== 'boolean' || typeof r.prune !== 'boolean') {
      throw bad(`entry ${JSON.stringify(id)} is malformed`);
    }
  }
  return v as Inventory;
}

function parsePasswd(text: string, wanted: ReadonlySet<string>, idGroups: ReadonlyMap<string, string[]>): Record<string, UserFact> {
  const users: Record<string, UserFact> = {};
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length !== 7) continue;
    const [name, , uid, gid, , home, shell] = f as [string, string, string, string, string, string, string];
    // getent also answers numeric keys (uid): keep only the names that were asked for
    if (!wanted.has(name)) continue;
    const u = int(uid);
    const g = int(gid);
    if (u === null || g === null) continue;
    const ids = idGroups.get(name) ?? [];
    const primary = ids[0] ?? String(g);
    users[name] = { name, uid: u, gid: g, group: primary, groups: [...new Set(ids.slice(1))].filter((x) => x !== primary).sort(), home, shell };
  }
  return users;
}

function parseGroups(text: string, wanted: ReadonlySet<string>): Record<string, GroupFact> {
  const groups: Record<string, GroupFact> = {};
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4) continue;
    const [name, , gid, members] = f as [string, string, string, string];
    if (!wanted.has(name)) continue;
    const g = int(gid);
    if (g === null) continue;
    groups[name] = { name, gid: g, members: members === '' ? [] : members.split(',').sort() };
  }
  return groups;
}

function parseUnits(node: string, text: string, wanted: readonly string[]): Record<string, UnitFact> {
  const blocks: Record<string, string>[] = [];
  let cur: Record<string, string> = {};
  const flush = () => {
    if (Object.keys(cur).length > 0) blocks.push(cur);
    cur = {};
  };
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (line === '' || eq === -1) {
      if (line === '') flush();
      continue;
    }
    const k = line.slice(0, eq);
    // concatenated outputs of several systemctl runs have no blank line between units
    if (k in cur) flush();
    cur[k] = line.slice(eq + 1);
  }
  flush();
  const units: Record<string, UnitFact> = {};
  for (const unit of wanted) {
    const b = blocks.find((x) => x['Id'] === unit || (x['Names'] ?? '').split(' ').includes(unit));
    if (!b) throw new NodeError('E_REMOTE', node, `systemctl show returned nothing for unit ${unit}`, { hint: 'check the unit name' });
    units[unit] = {
      unit,
      loadState: b['LoadState'] ?? '',
      activeState: b['ActiveState'] ?? '',
      unitFileState: b['UnitFileState'] ?? '',
      needDaemonReload: b['NeedDaemonReload'] === 'yes',
    };
  }
  return units;
}

function utf8Text(buf: Buffer): string | null {
  if (buf.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    return null;
  }
}

function malformed(node: string, why: string): NodeError {
  return new NodeError('E_REMOTE', node, `the facts probe returned malformed output (${why})`, {
    hint: 'the node needs GNU coreutils and findutils, getent, awk and systemd; run again, and report a bug if it persists',
  });
}

/** Turn the probe's stdout into facts about the node that `request` asked about. */
export function parseProbeOutput(request: ProbeRequest, stdout: Buffer): NodeFacts {
  const node = request.node;
  const t = new Tokens(stdout);
  if (t.text() !== PROBE_FORMAT) throw malformed(node, 'missing header');

  const stat = new Map<string, PathFact & { exists: true }>();
  const hashes = new Map<string, string>();
  const managed: string[] = [];
  const listings = new Map<string, string[]>();
  const texts = new Map<string, Buffer>();
  const idGroups = new Map<string, string[]>();
  let passwd = '';
  let group = '';
  let unitText: string | null = null;
  let inventory: Inventory | null = null;
  const keys: Record<string, string> = {};
  let cache = null as { records: number; hits: number } | null;
  let ended = false;

  const need = (what: string): string => {
    const x = t.text();
    if (x === undefined) throw malformed(node, `${what} cut short`);
    return x;
  };
  const failed = (): never => {
    const step = t.text() ?? '?';
    const code = t.text() ?? '?';
    const err = (t.text() ?? '').trim();
    throw new NodeError('E_REMOTE', node, `gathering facts failed at ${step} (exit code ${code})${err ? `: ${err.split('\n').slice(-3).join(' | ')}` : ''}`, {
      hint: step === 'systemctl' ? 'systemd must be running on the node (systemctl show must work)' : 'fix the cause on the node and run again',
    });
  };
  // Tokens inside a section start with "/" (paths), "=" or "~" (file keys), "#" (the cache record) or a hex digit (digests), so "@." and "X" are unambiguous.
  const section = (name: string, each: () => void) => {
    for (;;) {
      const p = t.peek();
      if (p === undefined) throw malformed(node, `section ${name} not closed`);
      if (p === '@.') {
        t.next();
        return;
      }
      if (p === 'X') {
        t.next();
        failed();
      }
      each();
    }
  };
  const statRecord = (): void => {
    const f: string[] = [];
    for (let i = 0; i < STAT_FIELDS; i++) {
      const x = t.text();
      if (x === undefined) throw malformed(node, 'stat record cut short');
      f.push(x);
    }
    const [path, y, user, grp, uid, gid, mode, size, target] = f as [string, string, string, string, string, string, string, string, string];
    const u = int(uid);
    const g = int(gid);
    const s = int(size);
    if (!path.startsWith('/') || u === null || g === null || s === null || !/^[0-7]{1,4}$/.test(mode)) throw malformed(node, `bad stat record for ${JSON.stringify(path)}`);
    const type = pathType(y);
    stat.set(path, {
      exists: true,
      type,
      owner: user,
      group: grp,
      uid: u,
      gid: g,
      mode: mode.padStart(4, '0'),
      size: s,
      ...(type === 'symlink' ? { target } : {}),
    });
  };

  while (!t.done() && !ended) {
    const tag = t.text();
    switch (tag) {
      case '@M':
        section('M', () => managed.push(t.text()!));
        break;
      case '@L':
        section('L', () => {
          const dir = t.text()!;
          const entry = t.peek();
          if (entry === undefined) throw malformed(node, 'listing cut short');
          statRecord();
          const list = listings.get(dir) ?? [];
          list.push(entry);
          listings.set(dir, list);
        });
        break;
      case '@S':
        section('S', () => {
          const head = t.peek()!;
          if (head.startsWith('/')) return statRecord();
          if (head.startsWith('=') || head.startsWith('~')) {
            const key = need('file key');
            const path = need('file key');
            // "~": changed too shortly before the probe began (probe.ts SETTLE_MS), not yet safe to record
            if (key.startsWith('=')) keys[path] = key;
            return;
          }
          if (head.startsWith('#')) {
            const m = /^#(\d+) (\d+)$/.exec(need('digest cache record'));
            if (!m) throw malformed(node, 'bad digest cache record');
            cache = { records: Number(m[1]), hits: Number(m[2]) };
            return;
          }
          const m = /^([0-9a-f]{64}) [ *](.*)$/s.exec(t.text()!);
          if (!m) throw malformed(node, 'bad sha256sum record');
          hashes.set(m[2]!, m[1]!);
        });
        break;
      case 'V':
        inventory = parseInventory(node, need('inventory'));
        break;
      case 'T': {
        const path = need('text record');
        texts.set(path, Buffer.from(need('text record'), 'base64'));
        break;
      }
      case 'P':
        passwd += need('passwd');
        break;
      case 'G':
        group += need('group');
        break;
      case 'I': {
        const user = need('id record');
        idGroups.set(user, need('id record').trim().split(/\s+/).filter((x) => x !== ''));
        break;
      }
      case 'U':
        unitText = need('unit states');
        break;
      case 'X':
        failed();
        break;
      case 'Z':
        ended = true;
        break;
      default:
        throw malformed(node, `unexpected token ${JSON.stringify(tag)}`);
    }
  }
  if (!ended || !t.done() || t.trailing !== 0) throw malformed(node, 'output cut short');

  const paths: Record<string, PathFact> = {};
  const want = new Set([...request.paths, ...managed]);
  const dataDirs = request.etcdDataDir === null ? [] : [request.etcdDataDir, `${request.etcdDataDir.replace(/\/+$/, '')}/member`];
  for (const p of dataDirs) want.add(p);
  for (const p of [...stat.keys(), ...want].sort()) {
    const s = stat.get(p);
    if (!s) {
      paths[p] = { exists: false };
      continue;
    }
    const sha = s.type === 'file' ? hashes.get(p) : undefined;
    if (s.type === 'file' && want.has(p) && sha === undefined) throw malformed(node, `no sha256 for regular file ${JSON.stringify(p)}`);
    paths[p] = sha === undefined ? s : { ...s, sha256: sha };
  }
  for (const { path, sha256 } of request.textWanted) {
    const f = paths[path];
    const content = texts.get(path);
    if (!f || !f.exists || content === undefined || f.sha256 === sha256) continue;
    // the file may have changed between hashing and reading: only keep content that matches the digest
    if (createHash('sha256').update(content).digest('hex') !== f.sha256) continue;
    const text = utf8Text(content);
    if (text !== null) f.text = text;
  }

  const dirListings: Record<string, string[]> = {};
  const requested = new Set(request.paths);
  const isDir = (p: string): boolean => {
    const f = paths[p];
    return f !== undefined && f.exists && f.type === 'dir';
  };
  // a directory converge managed and no longer wants: pruning it needs to know what else it holds
  const pruneCandidates = managed.filter((p) => !requested.has(p) && isDir(p));
  for (const d of [...new Set([...request.listDirs, ...pruneCandidates])].sort()) dirListings[d] = [...(listings.get(d) ?? [])].sort();

  if (request.units.length > 0 && unitText === null) throw malformed(node, 'no unit states');

  const facts: NodeFacts = {
    node,
    paths,
    users: parsePasswd(passwd, new Set(request.users), idGroups),
    groups: parseGroups(group, new Set(request.groups)),
    units: request.units.length > 0 ? parseUnits(node, unitText ?? '', [...request.units].sort()) : {},
    dirListings,
    inventory,
  };
  if (cache) facts.digestCache = { ...cache, keys: Object.fromEntries(Object.entries(keys).filter(([p]) => hashes.has(p)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) };
  if (request.etcdDataDir !== null) {
    const d = paths[dataDirs[0]!];
    const member = paths[dataDirs[1]!];
    facts.etcdDataDir = { path: request.etcdDataDir, exists: d?.exists === true, empty: !(d?.exists === true && member?.exists === true && member.type === 'dir') };
  }
  return facts;
}
