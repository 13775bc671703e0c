/**
 * `npm run bench:noop`: the wall time of a no-op `converge plan` of
 * desired-state/ on 3 lab nodes, and the SSH round trips it makes per node
 * (goal: 2, the connection and one exec).
 *
 *   node --import tsx test/bench/noop.ts [--runs 5] [--keep-nodes]
 *
 * It runs on the bench's own lab nodes (cp-h, cp-i, cp-j, named so in a copy
 * of desired-state/), brought to the desired state first by `converge apply`,
 * host resources only (--skip-etcd: etcd is not bootstrapped on them).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labRemoveNode, labUp } from '../../src/lab/index.js';
import { projectDir } from '../helpers/lab.js';
import { median, mib, seconds } from './lib/stats.js';
import { convergeExecs, freezeBuild, tools } from './lib/tools.js';
import { makeWorkspace } from './lib/workspace.js';

const NODES = ['cp-h', 'cp-i', 'cp-j'];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const runsAt = argv.indexOf('--runs');
  const runs = runsAt >= 0 ? Math.max(1, Number.parseInt(argv[runsAt + 1] ?? '5', 10)) : 5;
  const keep = argv.includes('--keep-nodes');
  const root = mkdtempSync(join(tmpdir(), 'converge-bench-noop-'));
  try {
    const lab = await labUp({ projectDir, nodes: NODES, log: (l) => process.stderr.write(`  [lab] ${l}\n`) });
    const nodes = NODES.map((n) => lab.nodes.find((x) => x.name === n)!);
    const ws = makeWorkspace(root, lab, nodes, 0);
    const t = tools(freezeBuild(root), lab, join(root, 'cp'));
    const prep = await t.converge(ws, 'apply', 10 * 60_000);
    if (prep.code !== 0) throw new Error(`converge apply failed (exit ${prep.code}):\n${prep.stdout.slice(-2000)}${prep.stderr.slice(-2000)}`);
    const walls: number[] = [];
    const inside: number[] = [];
    const rss: number[] = [];
    let perNode: Record<string, number> = {};
    for (let i = 0; i < runs; i++) {
      const r = await t.converge(ws, 'plan', 5 * 60_000);
      if (r.code !== 0) throw new Error(`converge plan exited ${r.code} on converged nodes:\n${r.stdout.slice(-2000)}${r.stderr.slice(-1000)}`);
      walls.push(r.ms);
      rss.push(r.maxRssKb);
      inside.push(Number(/^stats: total (\d+) ms$/m.exec(r.stderr)?.[1] ?? Number.NaN));
      perNode = convergeExecs(r.stderr);
      process.stdout.write(`run ${i + 1}: ${seconds(r.ms)} wall (loading the desired state to the plan: ${seconds(inside[i]!)}), ${mib(r.maxRssKb)} peak RSS\n`);
    }
    process.stdout.write(`\nno-op converge plan, ${NODES.length} nodes, ${runs} runs: median ${seconds(median(walls))} wall, ` + `${seconds(median(inside))} from loading the desired state to the plan, peak RSS ${mib(Math.max(...rss))}\n`);
    for (const n of NODES) {
      const execs = perNode[n];
      process.stdout.write(`  ${n}: SSH round trips: 1 connect + ${execs ?? '?'} exec = ${execs === undefined ? '?' : 1 + execs}\n`);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
    if (!keep) for (const n of NODES) await labRemoveNode(n).catch(() => undefined);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:noop failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
