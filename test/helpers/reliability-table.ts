/**
 * README's Reliability table, made from what the suites observed: each lab
 * suite that tries faults or bad input writes .converge/results/<suite>.json
 * (writeResults), and running this file turns every such file into Markdown
 * rows (case, what converge did, whether anything was lost):
 *
 *   node --import tsx test/helpers/reliability-table.ts [--out FILE] [SUITE…]
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectDir } from './lab.js';

export const RESULTS_DIR = join(projectDir, '.converge', 'results');

export interface CaseRecord {
  suite: string;
  /** Stable identifier of the case (a fixture name or a slug). */
  id: string;
  /** The input or fault, as the table shows it. */
  case: string;
  /** What converge did, quoting its message. */
  did: string;
  nothingLost: boolean;
  /** How "nothing lost" was established. */
  lostCheck: string;
  /** Exit code of each command run, by command. */
  exits: Record<string, number | null>;
  ms: number;
  passed: boolean;
}

export interface SuiteResults {
  suite: string;
  title: string;
  generatedAt: string;
  cases: CaseRecord[];
}

/** Write one suite's results (atomically: a reader never sees half a file). */
export function writeResults(suite: string, title: string, cases: CaseRecord[]): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${suite}.json`);
  const body: SuiteResults = { suite, title, generatedAt: new Date().toISOString(), cases };
  writeFileSync(`${file}.tmp`, JSON.stringify(body, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
  return file;
}

export function readResults(suites?: string[]): SuiteResults[] {
  if (!existsSync(RESULTS_DIR)) return [];
  const files = readdirSync(RESULTS_DIR).filter((f) => f.endsWith('.json')).sort();
  return files
    .map((f) => JSON.parse(readFileSync(join(RESULTS_DIR, f), 'utf8')) as Partial<SuiteResults>)
    .filter((r): r is SuiteResults => typeof r.suite === 'string' && typeof r.title === 'string' && Array.isArray(r.cases))
    .filter((r) => !suites || suites.length === 0 || suites.includes(r.suite));
}

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');

function exits(e: Record<string, number | null>): string {
  const parts = Object.entries(e).map(([cmd, c]) => `${cmd} ${c ?? 'killed'}`);
  return parts.length ? ` (exit: ${parts.join(', ')})` : '';
}

/** One Markdown table per suite (files of another shape in the folder are not ours and are skipped). */
export function renderTable(results: SuiteResults[]): string {
  const out: string[] = [];
  for (const r of results) {
    const passed = r.cases.filter((c) => c.passed).length;
    out.push(`### ${r.title}`, '', `${r.cases.length} cases, ${passed} passed; run ${r.generatedAt.slice(0, 16).replace('T', ' ')} UTC.`, '');
    out.push('| # | Case | What converge did | Nothing lost |', '| --- | --- | --- | --- |');
    r.cases.forEach((c, i) => {
      const lost = c.passed && c.nothingLost ? `yes: ${c.lostCheck}` : `**NO** (${c.lostCheck})`;
      out.push(`| ${i + 1} | ${cell(c.case)} | ${cell(c.did + exits(c.exits))} | ${cell(lost)} |`);
    });
    out.push('');
  }
  return out.join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--out');
  const outFile = i >= 0 ? args[i + 1] : undefined;
  const suites = args.filter((_, j) => i < 0 || (j !== i && j !== i + 1));
  const results = readResults(suites);
  if (results.length === 0) {
    process.stderr.write(`no results in ${RESULTS_DIR}: run the lab suites first (npm test)\n`);
    process.exit(1);
  }
  const md = renderTable(results);
  if (outFile) writeFileSync(outFile, md);
  else process.stdout.write(md);
}
