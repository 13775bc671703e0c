/**
 * Watches managed files on the nodes while converge runs (and is killed).
 * One long-running sh loop per node, started inside the node's namespaces
 * (no SSH: it also works while the node's link is cut), reports every
 * ~150 ms each watched path's identity (inode, size, mtime, ctime) and, when
 * that changed or is recent, its sha256. Every observed digest must be one
 * the path may hold: the old content (or nothing, when there was nothing) or
 * the new one. A partial write, a file truncated in place, or a file that
 * vanishes during a replace shows up as a digest outside that set.
 * converge's own state files are checked for being whole instead
 * (inventory.json parses, managed-paths is complete lines).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { labPaths } from '../../src/lab/index.js';
import { leaderPid } from '../../src/lab/nodes.js';
import { loadState } from '../../src/lab/state.js';
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
  /** Digests read (an unchanged path that was not modified recently is not read again). */
  hashed: number;
  /** Distinct (node, path, digest) triples seen. */
  distinct: number;
  /** converge state files read whole and checked. */
  stateChecked: number;
  /** Distinct temporary files seen (uploads in flight). */
  tempSeen: number;
  /** Mean and longest time between two samples of one node. */
  meanGapMs: number;
  maxGapMs: number;
  violations: string[];
}

interface Known {
  sig: string;
  hash: string;
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The loop run inside a node: one block per sample, ended by a line `.`. */
function loopScript(paths: string[], intervalMs: number, maxSeconds: number): string {
  return [
    'export LC_ALL=C',
    'set -f',
    "NL='\n'",
    `end=$(( $(date +%s) + ${maxSeconds} ))`,
    'prev=',
    'now=0',
    'while [ "$now" -le "$end" ]; do',
    '  now=$(date +%s)',
    `  out=$(stat -c '%n|%i:%s:%.9Y:%.9Z|%Y' -- ${paths.map(q).join(' ')} 2>/dev/null)`,
    '  h=; b=',
    '  IFS=$NL',
    '  for l in $out; do',
    // Unchanged since the last sample and not modified in the last 3 s: its digest is known already.
    '    case "$NL$prev$NL" in *"$NL$l$NL"*) [ $((now - ${l##*|})) -ge 3 ] && continue ;; esac',
    '    p=${l%%|*}',
    '    case $p in *.json|*/managed-paths) b="$b$p$NL" ;; *) h="$h$p$NL" ;; esac',
    '  done',
    '  echo S',
    '  [ -n "$out" ] && printf \'%s\\n\' "$out"',
    "  echo '#'",
    '  [ -n "$h" ] && sha256sum -- $h 2>/dev/null',
    "  echo '#'",
    // A state file removed between the stat and the read (the suite wipes the nodes between rounds) says nothing; an empty one is reported.
    '  for f in $b; do c=$(base64 -w0 < "$f" 2>/dev/null) && printf \'%s %s\\n\' "$f" "$c"; done',
    "  echo '#'",
    '  unset IFS; set +f',
    `  for f in ${TEMP_GLOBS.join(' ')}; do [ -e "$f" ] && printf '%s\\n' "$f"; done`,
    '  set -f',
    "  echo '.'",
    '  prev=$out',
    `  sleep ${(intervalMs / 1000).toFixed(3)}`,
    'done',
  ].join('\n');
}

export class Sampler {
  private allowed = new Map<string, Map<string, Set<string>>>();
  private readonly known = new Map<string, Map<string, Known>>();
  private readonly last = new Map<string, Map<string, string>>();
  private readonly started = Date.now();
  private running = false;
  private readonly children = new Map<string, ChildProcess>();
  private readonly loops: Promise<void>[] = [];
  private readonly seenDistinct = new Set<string>();
  private readonly temps = new Set<string>();
  private readonly lastSampleAt = new Map<string, number>();
  private gaps = { n: 0, sum: 0 };
  private readonly waiters: { node: string; after: number; resolve: () => void }[] = [];
  readonly events: Observation[] = [];
  readonly figures: SamplerFigures = { samples: 0, hashed: 0, distinct: 0, stateChecked: 0, tempSeen: 0, meanGapMs: 0, maxGapMs: 0, violations: [] };
  /** Temporary files present on each node at its latest sample. */
  readonly tempNow = new Map<string, string[]>();

  constructor(
    private readonly nodes: string[],
    private readonly intervalMs = 150,
  ) {}

  /**
   * What each path on `node` may hold from now on: a set of digests, with
   * ABSENT when having nothing there is allowed. The paths are fixed at start.
   */
  expect(node: string, allowed: Map<string, Set<string>>): void {
    this.allowed.set(node, allowed);
  }

  start(): this {
    this.running = true;
    for (const n of this.nodes) this.loops.push(this.loop(n));
    return this;
  }

  /** ms since the sampler was made */
  now(): number {
    return Date.now() - this.started;
  }

  /** The latest digest seen of a path (ABSENT when it was not there). */
  latest(node: string, path: string): string | undefined {
    return this.last.get(node)?.get(path);
  }

  /** The first time (ms, at or after `after`) that `path` on `node` held a digest in `hashes` (any digest when omitted). */
  firstSeen(node: string, path: string, hashes?: Set<string>, after = 0): number | null {
    const e = this.events.find((o) => o.node === node && o.path === path && o.t >= after && (hashes ? hashes.has(o.hash) : o.hash !== ABSENT));
    return e ? e.t : null;
  }

  /** Resolves after the next complete sample of `node`; rejects when none comes within `timeoutMs`. */
  nextSample(node: string, timeoutMs = 120_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the sampler got nothing from ${node} in ${timeoutMs / 1000} s`)), timeoutMs);
      this.waiters.push({ node, after: this.figures.samples, resolve: () => (clearTimeout(t), resolve()) });
    });
  }

  async stop(): Promise<SamplerFigures> {
    this.running = false;
    for (const c of this.children.values()) {
      c.stdout?.destroy();
      c.kill('SIGTERM');
    }
    await Promise.all(this.loops);
    for (const w of this.waiters.splice(0)) w.resolve();
    this.figures.meanGapMs = this.gaps.n ? Math.round(this.gaps.sum / this.gaps.n) : 0;
    return this.figures;
  }

  private async loop(node: string): Promise<void> {
    while (this.running) {
      let pid: number;
      try {
        const n = loadState(labPaths().state).nodes[node];
        if (!n) throw new Error(`no node ${node}`);
        pid = leaderPid(n);
      } catch {
        // stopped or booting: look again shortly
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      const paths = [...(this.allowed.get(node)?.keys() ?? []), ...STATE_FILES];
      const child = spawn('nsenter', ['-t', String(pid), '-a', '--', '/bin/sh', '-c', loopScript(paths, this.intervalMs, 1800)], {
        stdio: ['ignore', 'pipe', 'ignore'],
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
      });
      this.children.set(node, child);
      let buf = '';
      child.stdout!.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        for (;;) {
          const end = buf.indexOf('\n.\n');
          if (end < 0) break;
          const block = buf.slice(0, end);
          buf = buf.slice(end + 3);
          this.take(node, block);
        }
      });
      child.stdout!.on('error', () => undefined);
      await new Promise<void>((r) => child.on('close', () => r()));
      this.children.delete(node);
      if (this.running) await new Promise((r) => setTimeout(r, 300));
    }
  }

  private take(node: string, block: string): void {
    const lines = block.split('\n');
    const s = lines.indexOf('S');
    if (s < 0) return;
    this.figures.samples++;
    const at = Date.now();
    const prevAt = this.lastSampleAt.get(node);
    if (prevAt !== undefined) {
      this.figures.maxGapMs = Math.max(this.figures.maxGapMs, at - prevAt);
      this.gaps.n++;
      this.gaps.sum += at - prevAt;
    }
    this.lastSampleAt.set(node, at);
    const t = this.now();
    const known = this.known.get(node) ?? new Map<string, Known>();
    this.known.set(node, known);
    const last = this.last.get(node) ?? new Map<string, string>();
    this.last.set(node, last);

    const part: string[][] = [[], [], [], []];
    let section = 0;
    for (const l of lines.slice(s + 1)) {
      if (l === '#') section++;
      else if (l !== '') part[Math.min(section, 3)]!.push(l);
    }
    const [statPart, hashPart, statePart, tempPart] = part as [string[], string[], string[], string[]];
    const sigs = new Map<string, string>();
    for (const l of statPart) {
      const [path, sig] = l.split('|');
      if (path && sig) sigs.set(path, sig);
    }
    const hashes = new Map<string, string>();
    for (const l of hashPart) {
      const m = /^([0-9a-f]{64}) {2}(.*)$/.exec(l);
      if (m) hashes.set(m[2]!, m[1]!);
    }
    for (const l of statePart) {
      const i = l.indexOf(' ');
      if (i > 0) this.checkState(node, l.slice(0, i), l.slice(i + 1));
    }
    this.tempNow.set(node, tempPart);
    for (const f of tempPart) this.temps.add(`${node}:${f}`);
    this.figures.tempSeen = this.temps.size;

    const allowed = this.allowed.get(node);
    for (const path of allowed?.keys() ?? []) {
      const sig = sigs.get(path);
      let hash: string;
      if (sig === undefined) {
        hash = ABSENT;
        known.delete(path);
      } else if (hashes.has(path)) {
        hash = hashes.get(path)!;
        this.figures.hashed++;
        known.set(path, { sig, hash });
      } else {
        const k = known.get(path);
        // Replaced between stat and sha256sum: this sample says nothing about it.
        if (!k || k.sig !== sig) continue;
        hash = k.hash;
      }
      if (last.get(path) !== hash) this.events.push({ t, node, path, hash });
      last.set(path, hash);
      const key = `${node}\0${path}\0${hash}`;
      if (this.seenDistinct.has(key)) continue;
      this.seenDistinct.add(key);
      this.figures.distinct = this.seenDistinct.size;
      const ok = allowed?.get(path);
      if (ok && !ok.has(hash)) {
        this.figures.violations.push(`${node}:${path} held ${hash === ABSENT ? 'nothing' : `sha256 ${hash.slice(0, 12)}…`} at ${t} ms; allowed: ${[...ok].map((h) => (h === ABSENT ? 'absent' : h.slice(0, 12))).join(', ')}`);
      }
    }
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.node === node && this.figures.samples > w.after) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  private checkState(node: string, path: string, b64: string): void {
    const text = Buffer.from(b64, 'base64').toString('utf8');
    this.figures.stateChecked++;
    if (path.endsWith('.json')) {
      try {
        const inv = JSON.parse(text) as { resources?: unknown };
        if (typeof inv.resources !== 'object' || inv.resources === null) throw new Error('no resources');
      } catch (e) {
        this.figures.violations.push(`${node}:${path} was not a whole inventory (${(e as Error).message}; ${text.length} bytes)`);
      }
      return;
    }
    const whole = text === '' || (text.endsWith('\n') && text.slice(0, -1).split('\n').every((l) => Buffer.from(l, 'base64').toString('utf8').startsWith('/')));
    if (!whole) this.figures.violations.push(`${node}:${path} was not a whole list of paths (${text.length} bytes)`);
  }
}

/** What each path may hold during a replace from `before` (path → digest or ABSENT) to `after`. */
export function transition(before: Map<string, string>, after: Map<string, string>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const p of new Set([...before.keys(), ...after.keys()])) out.set(p, new Set([before.get(p) ?? ABSENT, after.get(p) ?? ABSENT]));
  return out;
}
