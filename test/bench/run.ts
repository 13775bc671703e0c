/**
 * `npm run bench`: converge against Ansible on the same lab nodes, same key,
 * same known_hosts, same files. Each comparison runs the two tools
 * alternately (the order flips every run) and reports medians and their
 * ratio from the same run. Figures are whatever was measured.
 *
 *   node --import tsx test/bench/run.ts [--only noop-check,noop-apply,full,scale-nodes,scale-files,latency]
 *        [--ops noop-check,noop-apply,full]
 *        [--runs 5] [--budget-min 20] [--run-timeout-min 20] [--files 10,100,1000] [--rtt-ms 20] [--keep-nodes]
 *
 * --ops keeps only those operations in every comparison (e.g. the 10-node
 * scale row for the no-op check alone). --budget-min bounds each comparison: once it is spent, no new run starts
 * (the runs done are reported, at least one of each tool). --run-timeout-min
 * kills a single run that takes longer (reported as failed).
 *
 * The bench uses lab nodes of its own (cp-h … cp-q), never cp-a … cp-c,
 * and removes them at the end (unless --keep-nodes).
 */
import { mkdtempSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labInfo, labReset, labRemoveNode, labUp, type LabInfo, type LabNode } from '../../src/lab/index.js';
import { projectDir } from '../helpers/lab.js';
import { addLatency, removeRules, type Latency } from './latency/latency.js';
import { load, machine, median, mib, seconds, type Machine } from './lib/stats.js';
import { ansibleChanged, convergeExecs, dropControlMasters, freezeBuild, killRunning, tools, type RunResult, type Tools } from './lib/tools.js';
import { makeWorkspace, type Workspace } from './lib/workspace.js';

const COMPARISONS = ['noop-check', 'noop-apply', 'full', 'scale-nodes', 'scale-files', 'latency'] as const;
type Comparison = (typeof COMPARISONS)[number];
type Op = 'noop-check' | 'noop-apply' | 'full';

export const NODES_3 = ['cp-h', 'cp-i', 'cp-j'];
export const NODES_10 = ['cp-h', 'cp-i', 'cp-j', 'cp-k', 'cp-l', 'cp-m', 'cp-n', 'cp-o', 'cp-p', 'cp-q'];

const OPS = ['noop-check', 'noop-apply', 'full'] as const;

interface Args {
  only: Comparison[];
  ops: Op[];
  runs: number;
  budgetMs: number;
  files: number[];
  rttMs: number;
  keepNodes: boolean;
  runTimeoutMs: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { only: [...COMPARISONS], ops: [...OPS], runs: 5, budgetMs: 20 * 60_000, files: [10, 100, 1000], rttMs: 20, keepNodes: false, runTimeoutMs: 20 * 60_000 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--only') {
      const names = v().split(',').map((s) => s.trim()).filter(Boolean);
      for (const n of names) if (!(COMPARISONS as readonly string[]).includes(n)) throw new Error(`unknown comparison ${n} (known: ${COMPARISONS.join(', ')})`);
      a.only = names as Comparison[];
    } else if (k === '--ops') {
      const names = v().split(',').map((s) => s.trim()).filter(Boolean);
      for (const n of names) if (!(OPS as readonly string[]).includes(n)) throw new Error(`unknown operation ${n} (known: ${OPS.join(', ')})`);
      a.ops = names as Op[];
    } else if (k === '--runs') a.runs = Math.max(1, Number.parseInt(v(), 10));
    else if (k === '--budget-min') a.budgetMs = Number.parseFloat(v()) * 60_000;
    else if (k === '--files') a.files = v().split(',').map((s) => Number.parseInt(s, 10));
    else if (k === '--rtt-ms') a.rttMs = Number.parseFloat(v());
    else if (k === '--run-timeout-min') a.runTimeoutMs = Number.parseFloat(v()) * 60_000;
    else if (k === '--keep-nodes') a.keepNodes = true;
    else throw new Error(`unknown option ${k}`);
  }
  return a;
}

interface ToolStats {
  samples: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
  medianCpuMs: number;
  /** Peak RSS over the runs (Ansible: its largest single process), KiB. */
  peakRssKb: number;
  /** converge: exec round trips per node (median over runs and nodes). */
  execsPerNode?: number;
  failures: string[];
}

interface Row {
  comparison: Comparison;
  op: Op;
  nodes: number;
  files: number;
  rttMs: number;
  runs: number;
  converge: ToolStats;
  ansible: ToolStats;
  /** Ansible's median / converge's median. */
  ratio: number;
  /** Cross-checks: the other tool found nothing to change after each tool's apply. */
  equivalent: boolean | null;
  loadBefore: number;
  loadAfter: number;
  notes: string[];
}

function stats(results: RunResult[], failures: string[], execs?: number[]): ToolStats {
  const ms = results.map((r) => Math.round(r.ms));
  return {
    samples: ms,
    medianMs: median(ms),
    minMs: Math.min(...ms),
    maxMs: Math.max(...ms),
    medianCpuMs: median(results.map((r) => r.cpuMs)),
    peakRssKb: Math.max(0, ...results.map((r) => r.maxRssKb)),
    ...(execs && execs.length ? { execsPerNode: median(execs) } : {}),
    failures,
  };
}

const log = (s: string): void => void process.stderr.write(`${s}\n`);

class Bench {
  lab!: LabInfo;
  t!: Tools;
  latency: Latency | null = null;
  readonly root: string;
  readonly controlDir: string;
  readonly rows: Row[] = [];
  readonly started = new Date();
  m!: Machine;
  command = 'npm run bench';

  /** Results so far to test/bench/results/<start time>.{json,md}: a run cut short still leaves its figures. */
  save(final: boolean): void {
    const md = markdown(this.m, this.rows, this.command, this.started);
    const dir = join(projectDir, 'test', 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const stamp = this.started.toISOString().replace(/:/g, '-').slice(0, 19);
    writeFileSync(join(dir, `${stamp}.json`), JSON.stringify({ started: this.started.toISOString(), complete: final, machine: this.m, command: this.command, args: this.args, rows: this.rows }, null, 2) + '\n');
    writeFileSync(join(dir, `${stamp}.md`), md);
    if (final) process.stdout.write(`\n${md}\nwritten: test/bench/results/${stamp}.json and .md\n`);
  }

  constructor(readonly args: Args) {
    this.root = mkdtempSync(join(tmpdir(), 'converge-bench-'));
    this.controlDir = join(this.root, 'cp');
    mkdirSync(this.controlDir);
  }

  async ensureNodes(names: string[]): Promise<LabNode[]> {
    this.lab = await labUp({ projectDir, nodes: names, log: (l) => log(`  [lab] ${l}`) });
    return names.map((n) => {
      const x = this.lab.nodes.find((y) => y.name === n);
      if (!x || !x.running) throw new Error(`lab node ${n} is not running after lab up`);
      return x;
    });
  }


  /** The workspace's nodes are still the very containers it was made with, running. */
  sameNodes(ws: Workspace): boolean {
    const now = labInfo({ projectDir }).nodes;
    return ws.nodes.every((n) => now.some((x) => x.name === n.name && x.running && x.pid === n.pid));
  }

  async revive(ws: Workspace, names: string[], op: Op, notes: string[], when: string): Promise<void> {
    log(`   lab nodes were stopped by someone else (${when}): bringing them back`);
    notes.push(`${when}: the lab nodes were restarted by another lab user; the run was repeated`);
    ws.nodes = await this.ensureNodes(names);
    if (op !== 'full') await this.converge(ws);
  }

  async resetNodes(ws: Workspace): Promise<void> {
    for (const n of ws.nodes) await labReset(n.name);
    ws.nodes = ws.nodes.map((n) => labInfo({ projectDir }).nodes.find((x) => x.name === n.name) ?? n);
    dropControlMasters(this.controlDir);
  }

  /** Bring the nodes to the desired state with converge, and check that Ansible agrees there is nothing to do. */
  async converge(ws: Workspace): Promise<string[]> {
    const notes: string[] = [];
    const r = await this.t.converge(ws, 'apply', this.args.runTimeoutMs);
    if (r.code !== 0) throw new Error(`converge apply (to prepare ${ws.dir}) failed with ${r.code}:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
    const a = await this.t.ansible(ws, 'check', this.args.runTimeoutMs);
    const c = ansibleChanged(a.stdout);
    if (a.code !== 0 || !c || c.changed !== 0) notes.push(`NOT EQUIVALENT: after converge apply, ansible --check reports ${c ? `changed=${c.changed} failed=${c.failed}` : `exit ${a.code}`}`);
    return notes;
  }

  /**
   * One measured run of `tool`: for `full`, on freshly reset nodes, and with
   * `crossCheck` followed (untimed) by the other tool, which must find
   * nothing to change.
   */
  async runOnce(ws: Workspace, op: Op, tool: 'converge' | 'ansible', crossCheck: boolean): Promise<{ r: RunResult; failure: string | null; crossOk: boolean | null; execs: number[] }> {
    if (op === 'full') await this.resetNodes(ws);
    const r =
      tool === 'converge'
        ? await this.t.converge(ws, op === 'noop-check' ? 'plan' : 'apply', this.args.runTimeoutMs)
        : await this.t.ansible(ws, op === 'noop-check' ? 'check' : 'apply', this.args.runTimeoutMs);
    let failure: string | null = null;
    const execs = tool === 'converge' ? Object.values(convergeExecs(r.stderr)) : [];
    if (r.timedOut) failure = `timed out after ${seconds(this.args.runTimeoutMs)}`;
    else if (tool === 'converge') {
      if (r.code !== 0) failure = `exit ${r.code}: ${(r.stdout + r.stderr).trim().split('\n').slice(-4).join(' | ')}`;
      else if (op !== 'full' && !/No changes/.test(r.stdout)) failure = 'a no-op run found changes';
    } else {
      const c = ansibleChanged(r.stdout);
      if (r.code !== 0 || !c || c.failed) failure = `exit ${r.code}: ${r.stdout.trim().split('\n').slice(-6).join(' | ')}`;
      else if (op !== 'full' && c.changed !== 0) failure = `a no-op run reported changed=${c.changed}`;
    }
    let crossOk: boolean | null = null;
    if (op === 'full' && crossCheck && !failure) {
      if (tool === 'converge') {
        const a = await this.t.ansible(ws, 'check', this.args.runTimeoutMs);
        const c = ansibleChanged(a.stdout);
        crossOk = a.code === 0 && c !== null && c.changed === 0;
      } else {
        const p = await this.t.converge(ws, 'plan', this.args.runTimeoutMs);
        crossOk = p.code === 0;
      }
    }
    return { r, failure, crossOk, execs };
  }

  async compare(comparison: Comparison, names: string[], files: number, op: Op): Promise<Row | null> {
    if (!this.args.ops.includes(op)) return null;
    const nodes = await this.ensureNodes(names);
    const ws = makeWorkspace(join(this.root, `ws-${Date.now()}`), this.lab, nodes, files);
    const rtt = this.latency?.rttMs ?? 0;
    const label = `${comparison}: ${op}, ${names.length} nodes, ${files} extra files${rtt ? `, ${rtt} ms RTT` : ''}`;
    log(`\n== ${label}`);
    const notes: string[] = [];
    const loadBefore = load();
    if (op !== 'full') notes.push(...(await this.converge(ws)));
    const res = { converge: [] as RunResult[], ansible: [] as RunResult[] };
    const fail = { converge: [] as string[], ansible: [] as string[] };
    const execs: number[] = [];
    let equivalent: boolean | null = op === 'full' ? true : notes.length === 0;
    const t0 = Date.now();
    let runs = 0;
    for (let i = 0; i < this.args.runs; i++) {
      const order: ('converge' | 'ansible')[] = i % 2 === 0 ? ['converge', 'ansible'] : ['ansible', 'converge'];
      for (const tool of order) {
        if (!this.sameNodes(ws)) await this.revive(ws, names, op, notes, `before run ${i + 1} ${tool}`);
        let o = await this.runOnce(ws, op, tool, i === 0);
        if (o.failure && !this.sameNodes(ws)) {
          // Another lab user restarted the lab under us: bring the nodes back and run again.
          log(`   ${tool}: ${o.failure}`);
          await this.revive(ws, names, op, notes, `run ${i + 1} ${tool}`);
          o = await this.runOnce(ws, op, tool, i === 0);
        }
        if (o.failure) fail[tool].push(`run ${i + 1}: ${o.failure}`);
        else res[tool].push(o.r);
        execs.push(...o.execs);
        if (o.crossOk === false) {
          equivalent = false;
          notes.push(`run ${i + 1}: after ${tool}'s apply the other tool still found changes`);
        }
        log(`   run ${i + 1} ${tool.padEnd(8)} ${seconds(o.r.ms).padStart(8)}  cpu ${seconds(o.r.cpuMs).padStart(8)}  rss ${mib(o.r.maxRssKb).padStart(8)}${o.failure ? `  FAILED ${o.failure}` : ''}${o.crossOk === null ? '' : o.crossOk ? '  (cross-check ok)' : '  (CROSS-CHECK FAILED)'}`);
      }
      runs++;
      if (Date.now() - t0 > this.args.budgetMs && runs < this.args.runs) {
        notes.push(`cut to ${runs} run(s) by the ${seconds(this.args.budgetMs)} budget`);
        break;
      }
    }
    const row: Row = {
      comparison,
      op,
      nodes: names.length,
      files,
      rttMs: rtt,
      runs,
      converge: stats(res.converge, fail.converge, execs),
      ansible: stats(res.ansible, fail.ansible),
      ratio: Number.NaN,
      equivalent,
      loadBefore,
      loadAfter: load(),
      notes,
    };
    row.ratio = row.ansible.medianMs / row.converge.medianMs;
    log(`   median converge ${seconds(row.converge.medianMs)}, ansible ${seconds(row.ansible.medianMs)}: ${row.ratio.toFixed(1)}x`);
    this.rows.push(row);
    this.save(false);
    return row;
  }

  async withLatency<T>(names: string[], fn: () => Promise<T>): Promise<T> {
    const nodes = await this.ensureNodes(names);
    this.latency = await addLatency(nodes.map((n) => n.address), this.args.rttMs);
    try {
      return await fn();
    } finally {
      await this.latency.stop();
      this.latency = null;
    }
  }

  async cleanup(): Promise<void> {
    killRunning();
    if (this.latency) await this.latency.stop();
    removeRules();
    dropControlMasters(this.controlDir);
    if (!this.args.keepNodes) {
      for (const n of NODES_10) await labRemoveNode(n).catch(() => undefined);
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

function ansibleVersion(): string {
  const r = spawnSync('ansible-playbook', ['--version'], { encoding: 'utf8' });
  if (r.error) throw new Error('ansible-playbook is not installed: apt-get install ansible-core');
  return r.stdout.split('\n')[0]?.trim() ?? 'unknown';
}

function checkBuild(): void {
  const dist = join(projectDir, 'dist', 'cli', 'main.js');
  let built: number;
  try {
    built = statSync(dist).mtimeMs;
  } catch {
    throw new Error('dist/cli/main.js is missing: run `npm run build` first');
  }
  if (statSync(join(projectDir, 'src', 'cli', 'main.ts')).mtimeMs > built) log('warning: src/cli/main.ts is newer than dist/: run `npm run build` for current figures');
}

const OP_NAME: Record<Op, string> = {
  'noop-check': 'no-op check (`converge plan` vs `ansible-playbook --check --diff`)',
  'noop-apply': 'no-op apply (`converge apply` vs `ansible-playbook`)',
  full: 'full converge from fresh nodes (`converge apply` vs `ansible-playbook`)',
};

function rowLine(r: Row): string[] {
  const ok = (s: ToolStats): string => (s.failures.length ? ` (${s.failures.length} failed)` : '');
  return [
    OP_NAME[r.op].split(' (')[0]!,
    String(r.nodes),
    String(r.files),
    r.rttMs ? `${r.rttMs} ms` : 'lab',
    seconds(r.converge.medianMs) + ok(r.converge),
    seconds(r.ansible.medianMs) + ok(r.ansible),
    Number.isFinite(r.ratio) ? `${r.ratio.toFixed(1)}×` : '-',
    `${seconds(r.converge.medianCpuMs)} / ${seconds(r.ansible.medianCpuMs)}`,
    mib(r.converge.peakRssKb),
    r.converge.execsPerNode === undefined ? '-' : String(r.converge.execsPerNode),
    String(r.runs),
    r.equivalent === null ? '-' : r.equivalent ? 'yes' : 'NO',
  ];
}

const HEAD = ['operation', 'nodes', 'extra files', 'RTT', 'converge (median)', 'Ansible (median)', 'Ansible ÷ converge', 'CPU converge / Ansible', 'converge peak RSS', 'converge execs/node', 'runs', 'same result'];

function growth(rows: Row[]): string[] {
  const lines: string[] = [];
  const find = (op: Op, nodes: number, files: number, rtt: number): Row | undefined => rows.find((r) => r.op === op && r.nodes === nodes && r.files === files && r.rttMs === rtt);
  for (const op of ['noop-check', 'noop-apply', 'full'] as Op[]) {
    for (const rtt of [...new Set(rows.map((r) => r.rttMs))]) {
      const a = find(op, 3, 0, rtt);
      const b = find(op, 10, 0, rtt);
      if (a && b) lines.push(`- ${op}${rtt ? ` at ${rtt} ms` : ''}, 3 → 10 nodes: converge ×${(b.converge.medianMs / a.converge.medianMs).toFixed(2)}, Ansible ×${(b.ansible.medianMs / a.ansible.medianMs).toFixed(2)}`);
      const f = rows.filter((r) => r.op === op && r.nodes === 3 && r.rttMs === rtt).sort((x, y) => x.files - y.files);
      if (f.length > 1) lines.push(`- ${op}${rtt ? ` at ${rtt} ms` : ''}, extra files ${f.map((r) => r.files).join(' → ')}: converge ${f.map((r) => seconds(r.converge.medianMs)).join(' → ')}; Ansible ${f.map((r) => seconds(r.ansible.medianMs)).join(' → ')}`);
    }
  }
  return lines;
}

function markdown(m: Machine, rows: Row[], command: string, started: Date): string {
  const table = [HEAD, HEAD.map(() => '---'), ...rows.map(rowLine)].map((r) => `| ${r.join(' | ')} |`).join('\n');
  const notes = rows.flatMap((r) => r.notes.map((n) => `- ${r.op}, ${r.nodes} nodes, ${r.files} files${r.rttMs ? `, ${r.rttMs} ms` : ''}: ${n}`));
  const fails = rows.flatMap((r) => [...r.converge.failures.map((f) => `converge ${f}`), ...r.ansible.failures.map((f) => `Ansible ${f}`)].map((f) => `- ${r.op}, ${r.nodes} nodes, ${r.files} files: ${f}`));
  const loads = rows.map((r) => `${r.loadBefore}→${r.loadAfter}`).join(', ');
  return `### Measured ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC

Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, Linux ${m.kernel} (${m.os}); Node ${m.node}; ${m.ansible}.
Lab nodes are systemd-nspawn containers on the same machine (they share its cores). 1-minute load average per comparison (before→after): ${loads}.

${table}

Times are wall-clock medians of each tool as an operator runs it (the CLI, \`node dist/cli/main.js\`, vs \`ansible-playbook\`), alternating the order every run.
"CPU" is user+system time of the tool's processes on this machine (Ansible's includes its ssh and worker processes). Peak RSS is converge's \`Maximum resident set size\`.
"same result": after each tool's first run, the other one found nothing to change (files byte-identical, same owners and modes).

${growth(rows).join('\n')}
${notes.length ? `\nNotes:\n${notes.join('\n')}\n` : ''}${fails.length ? `\nFailed runs (not in the medians):\n${fails.join('\n')}\n` : ''}
Reproduce: \`${command}\` (needs root, the lab, \`apt-get install ansible-core iptables\`).
`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the bench drives the lab and needs root');
  checkBuild();
  const m = machine(ansibleVersion());
  const bench = new Bench(args);
  const onSignal = (sig: NodeJS.Signals): void => {
    log(`\n${sig}: cleaning up`);
    void bench.cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  bench.m = m;
  bench.command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim().replace(/ --$/, '');
  const cli = freezeBuild(bench.root);
  bench.t = tools(cli, (bench.lab = await labUp({ projectDir, nodes: NODES_3, log: (l) => log(`  [lab] ${l}`) })), bench.controlDir);
  const want = (c: Comparison): boolean => args.only.includes(c);
  try {
    if (want('noop-check') || want('scale-nodes')) await bench.compare('noop-check', NODES_3, 0, 'noop-check');
    if (want('noop-apply') || want('scale-nodes')) await bench.compare('noop-apply', NODES_3, 0, 'noop-apply');
    if (want('full')) await bench.compare('full', NODES_3, 0, 'full');
    if (want('scale-nodes')) {
      await bench.compare('scale-nodes', NODES_10, 0, 'noop-check');
      await bench.compare('scale-nodes', NODES_10, 0, 'noop-apply');
    }
    if (want('latency')) {
      await bench.withLatency(NODES_3, async () => {
        await bench.compare('latency', NODES_3, 0, 'noop-check');
        await bench.compare('latency', NODES_3, 0, 'noop-apply');
        await bench.compare('latency', NODES_3, 0, 'full');
      });
    }
    if (want('scale-files')) {
      for (const f of args.files) await bench.compare('scale-files', NODES_3, f, 'noop-check');
      for (const f of args.files) await bench.compare('scale-files', NODES_3, f, 'full');
    }
  } finally {
    await bench.cleanup();
  }
  bench.save(true);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
