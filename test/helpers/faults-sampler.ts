/**
 * Watches managed files on the nodes while converge runs (and is killed):
 * every ~150 ms, on every node, one script run inside the node (no SSH, so it
 * also works while a link is cut) reports each watched path's identity (inode,
 * size, mtime, ctime) and, when that changed or is recent, its sha256. Every
 * observed digest must be one the path may hold: the old content (or
 * nothing, when there was nothing) or the new one. A partial write, a file
 * truncated in place or a file that vanishes during a replace shows up as a
 * digest outside that set. converge's own state files are checked for being
 * whole instead (inventory.json parses, managed-paths is complete lines).
 */
import { runOnNode } from '../../src/lab/index.js';
import { TEMP_GLOBS } from './faults.js';

export const ABSENT = '-';
const STATE_FILES = ['/var/lib/converge/inventory.json', '/var/lib/converge/managed-paths'];

export interface Observation {
  /** ms since the sampler started */
  t: number;
  node: string;
  path: string;
  /** sha256, or ABSENT */
  hash: string;
}

export interface SamplerFigures {
  samples: number;
  /** Digests read (a path whose identity did not change and is not recent is not read again). */
  hashed: number;
  /** Distinct (node, path, digest) triples seen. */
  distinct: number;
  /** converge state files read whole and checked. */
  stateChecked: number;
  /** Distinct temporary upload files seen in flight. */
  tempSeen: number;
  /** Longest time between two samples of one node. */
  maxGapMs: number;
  violations: string[];
}

interface Known {
  sig: string;
  hash: string;
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export class Sampler {
  private allowed = new Map<string, Map<string, Set<string>>>();
  private known = new Map<string, Map<string, Known>>();
  private last = new Map<string, Map<string, string>>();
  private readonly started = Date.now();
  private running = true;
  private loops: Promise<void>[] = [];
  private readonly seenDistinct = new Set<string>();
  private readonly temps = new Set<string>();
  private readonly lastSampleAt = new Map<string, number>();
  readonly events: Observation[] = [];
  readonly figures: SamplerFigures = { samples: 0, hashed: 0, distinct: 0, stateChecked: 0, tempSeen: 0, maxGapMs: 0, violations: [] };
  /** Latest etcd unit state per node. */
  readonly unit = new Map<string, string>();

  constructor(
    private readonly nodes: string[],
    private readonly intervalMs = 150,
  ) {}

  /** What each path on `node` may hold from now on: a set of digests, ABSENT included when nothing is allowed. */
  expect(node: string, allowed: Map<string, Set<string>>): void {
    this.allowed.set(node, allowed);
  }

  start(): this {
    this.loops = this.nodes.map((n) => this.loop(n));
    return this;
  }

  /** ms since start */
  now(): number {
    return Date.now() - this.started;
  }

  /** The latest digest seen of a path (ABSENT when it was not there). */
  latest(node: string, path: string): string | undefined {
    return this.last.get(node)?.get(path);
  }

  /** The first time `path` on `node` was seen holding a digest in `hashes` (or any digest but ABSENT when omitted). */
  firstSeen(node: string, path: string, hashes?: Set<string>, after = 0): number | null {
    const e = this.events.find((o) => o.node === node && o.path === path && o.t >= after && (hashes ? hashes.has(o.hash) : o.hash !== ABSENT));
    return e ? e.t : null;
  }

  async stop(): Promise<SamplerFigures> {
    this.running = false;
    await Promise.all(this.loops);
    return this.figures;
  }

  private script(node: string): string {
    const paths = [...(this.allowed.get(node)?.keys() ?? [])];
    const known = this.known.get(node) ?? new Map<string, Known>();
    const lines = [
      'export LC_ALL=C',
      'now=$(date +%s)',
      // A path whose identity is unchanged and that was not modified in the last 3 s is not read again.
      `c() { s=$(stat -c '%i:%s:%.9Y:%.9Z' -- "$1" 2>/dev/null) || { printf 'P\\t%s\\t-\\n' "$1"; return 0; }
  m=\${s#*:*:}; m=\${m%%.*}
  if [ "$s" = "$2" ] && [ $((now - m)) -ge 3 ]; then printf 'P\\t%s\\t=\\t%s\\n' "$1" "$s"; return 0; fi
  if [ "$3" = b ]; then b=$(base64 -w0 < "$1" 2>/dev/null) || b=-; printf 'B\\t%s\\t%s\\t%s\\n' "$1" "$s" "$b"; return 0; fi
  h=$(sha256sum < "$1" 2>/dev/null | cut -c1-64); [ -n "$h" ] || h=-
  printf 'P\\t%s\\t%s\\t%s\\n' "$1" "$h" "$s"; }`,
      ...paths.map((p) => `c ${q(p)} ${q(known.get(p)?.sig ?? '')} h`),
      ...STATE_FILES.map((p) => `c ${q(p)} ${q(known.get(p)?.sig ?? '')} b`),
      `for f in ${TEMP_GLOBS.join(' ')}; do [ -e "$f" ] && printf 'T\\t%s\\n' "$f"; done`,
      `printf 'U\\t%s\\n' "$(systemctl is-active etcd.service 2>/dev/null)"`,
      'true',
    ];
    return lines.join('\n');
  }

  private async loop(node: string): Promise<void> {
    while (this.running) {
      const t0 = Date.now();
      try {
        const r = await runOnNode(node, this.script(node), { timeoutMs: 20_000 });
        if (r.code === 0) this.take(node, r.stdout);
      } catch {
        // the node is stopped or rebooting: nothing to observe there
      }
      const prev = this.lastSampleAt.get(node);
      const at = Date.now();
      if (prev !== undefined) this.figures.maxGapMs = Math.max(this.figures.maxGapMs, at - prev);
      this.lastSampleAt.set(node, at);
      const wait = this.intervalMs - (Date.now() - t0);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  private take(node: string, stdout: string): void {
    this.figures.samples++;
    const t = this.now();
    const known = this.known.get(node) ?? new Map<string, Known>();
    this.known.set(node, known);
    const last = this.last.get(node) ?? new Map<string, string>();
    this.last.set(node, last);
    const allowed = this.allowed.get(node);
    for (const line of stdout.split('\n')) {
      const f = line.split('\t');
      if (f[0] === 'T' && f[1]) {
        this.temps.add(`${node}:${f[1]}`);
        this.figures.tempSeen = this.temps.size;
      } else if (f[0] === 'U') {
        this.unit.set(node, f[1] ?? '');
      } else if (f[0] === 'B' && f[1]) {
        this.checkState(node, f[1], f[3] ?? '-');
        known.set(f[1], { sig: f[2] ?? '', hash: '' });
      } else if (f[0] === 'P' && f[1]) {
        const path = f[1];
        let hash: string;
        if (f[2] === '-') {
          hash = ABSENT;
          known.delete(path);
        } else if (f[2] === '=') {
          hash = known.get(path)?.hash ?? ABSENT;
        } else {
          hash = f[2] ?? ABSENT;
          this.figures.hashed++;
          if (hash !== ABSENT) known.set(path, { sig: f[3] ?? '', hash });
        }
        if (STATE_FILES.includes(path)) continue;
        if (last.get(path) !== hash) this.events.push({ t, node, path, hash });
        last.set(path, hash);
        const k = `${node}\0${path}\0${hash}`;
        if (!this.seenDistinct.has(k)) {
          this.seenDistinct.add(k);
          this.figures.distinct = this.seenDistinct.size;
          const ok = allowed?.get(path);
          if (ok && !ok.has(hash)) this.figures.violations.push(`${node}:${path} held ${hash === ABSENT ? 'nothing' : `sha256 ${hash.slice(0, 12)}…`} at ${t} ms, allowed: ${[...ok].map((h) => (h === ABSENT ? 'absent' : h.slice(0, 12))).join(', ')}`);
        }
      }
    }
  }

  private checkState(node: string, path: string, b64: string): void {
    if (b64 === '-') return;
    const text = Buffer.from(b64, 'base64').toString('utf8');
    this.figures.stateChecked++;
    if (path.endsWith('.json')) {
      try {
        const inv = JSON.parse(text) as { resources?: unknown };
        if (typeof inv.resources !== 'object') throw new Error('no resources');
      } catch (e) {
        this.figures.violations.push(`${node}:${path} was not a whole inventory (${(e as Error).message}; ${text.length} bytes)`);
      }
      return;
    }
    const whole = text === '' || (text.endsWith('\n') && text.slice(0, -1).split('\n').every((l) => Buffer.from(l, 'base64').toString('utf8').startsWith('/')));
    if (!whole) this.figures.violations.push(`${node}:${path} was not a whole list of paths (${text.length} bytes)`);
  }
}

/** The allowed-digest map for a replace from `before` (path → digest or ABSENT) to `after`. */
export function transition(before: Map<string, string>, after: Map<string, string>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const p of new Set([...before.keys(), ...after.keys()])) out.set(p, new Set([before.get(p) ?? ABSENT, after.get(p) ?? ABSENT]));
  return out;
}
