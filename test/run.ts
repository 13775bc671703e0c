// The whole suite, as `npm test` and CI run it: the pure unit tests first
// (milliseconds), then the lab suites against real nodes, one process each so
// that a crash in one is reported and the others still run. The lab suites
// never skip: when the lab cannot run they fail and say why.
import { spawnSync } from 'node:child_process';
import { readdirSync, existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isConvergeError } from '../src/errors/index.js';
import { ensureHostPackages, ensureInotifyLimits, requireRoot } from '../src/lab/prereq.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const uvu = join(root, 'node_modules/uvu/bin.js');

/** Lab suites in the order they build on each other; `lab` (which ends with lab down) runs last. */
const labOrder = ['facts', 'apply', 'reconcile', 'etcd', 'watch', 'faults', 'badinput', 'security', 'lab'];

function suites(dir: string): string[] {
  if (!existsSync(join(root, dir))) return [];
  return readdirSync(join(root, dir)).filter((f) => f.endsWith('.test.ts')).sort();
}

function labRank(file: string): number {
  const i = labOrder.findIndex((p) => file.startsWith(p));
  return i === -1 ? labOrder.length - 1.5 : i;
}

const SUITE_TIMEOUT_MS = 25 * 60_000;

let passed = 0;
let failed = 0;
const failures: string[] = [];

function run(label: string, args: string[]): void {
  const started = Date.now();
  process.stdout.write(`\n=== ${label}\n`);
  // A suite that hangs fails after SUITE_TIMEOUT_MS instead of eating CI's whole budget.
  const r = spawnSync(process.execPath, ['--import', 'tsx', uvu, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FORCE_COLOR: '0' }, maxBuffer: 256 * 1024 * 1024, timeout: SUITE_TIMEOUT_MS, killSignal: 'SIGKILL' });
  if (r.error) process.stdout.write(`${label}: ${r.error.message} (limit ${SUITE_TIMEOUT_MS / 60000} min)\n`);
  const out = r.stdout?.toString() ?? '';
  process.stdout.write(out);
  const p = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const t = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const f = Math.max(t - p, r.status === 0 ? 0 : 1);
  passed += p;
  failed += f;
  if (f > 0 || r.status !== 0) failures.push(`${label} (exit ${r.status ?? r.signal})`);
  process.stdout.write(`--- ${label}: ${p} passed, ${f} failed in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

const only = process.argv[2];

// The host first: two unit suites run a real etcd on 127.0.0.1 (Debian's
// etcd-server), which on a fresh machine only the lab would otherwise install,
// after the unit tests; and a lab left up by an earlier run holds inotify
// instances that the unit suites' file watches need. When this fails, the
// suites that need it fail too, each saying why.
try {
  requireRoot();
  const log = (l: string): void => void process.stdout.write(`[host] ${l}\n`);
  await ensureHostPackages(log);
  ensureInotifyLimits(log);
} catch (e) {
  const why = isConvergeError(e) ? `${e.message}${e.hint ? ` (${e.hint})` : ''}` : String(e);
  process.stdout.write(`[host] the host packages could not be installed: ${why}\n`);
}
if (!only || only === 'unit') run('unit tests', ['test/unit', '\\.test\\.ts$']);
if (!only || only === 'lab') {
  for (const file of suites('test/lab').sort((a, b) => labRank(a) - labRank(b))) run(`lab: ${file}`, ['test/lab', `^${file.replace(/\./g, '\\.')}$`]);
}

if (failures.length) process.stdout.write(`\nFailed: ${failures.join(', ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exit(failed > 0 ? 1 : 0);
