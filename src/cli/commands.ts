/**
 * The commands behind the CLI: each turns flags into settings, runs its part
 * of a pass and prints it, and returns the exit code DESIGN.md documents.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { ConfigError, ConvergeError, UsageError, formatDiagnostic } from '../errors/index.js';
import { fsSource } from '../model/index.js';
import { detectRepo } from '../source/detect.js';
import { openSession, type DesiredSource, type PassConfig, type Session } from '../reconcile/session.js';
import { gatherAndPlan, applyPlan, checkNotStale, type ApplyReport } from '../reconcile/pass.js';
import { renderPlanText, useColor } from '../report/plan-text.js';
import { planToJson } from '../report/plan-json.js';
import { planHasChanges, planHasErrors } from '../plan/plan.js';
import type { Plan } from '../plan/types.js';
import type { TransportTimings } from '../connect/transport.js';
import { resolveConfig, configCommand, type Config } from './config.js';
import { validateCommand } from './validate.js';
import { labCommand, type LabSubcommand } from './lab.js';
import { EXIT } from './exit.js';
import { Progress } from './progress.js';

type Flags = Record<string, unknown>;
type Out = (s: string) => void;

/** A line for the operator while a command runs, beside its output (stdout stays the plan or report). */
const note = (line: string): void => {
  process.stderr.write(line + '\n');
};

export function passConfig(c: Config, flags: Flags): PassConfig {
  return {
    ...(c.sshKey ? { sshKey: c.sshKey } : {}),
    ...(c.knownHosts ? { knownHosts: c.knownHosts } : {}),
    ...(flags['insecureTrustOnFirstUse'] === true ? { insecureTrustOnFirstUse: true } : {}),
    parallel: c.parallel,
    connectTimeoutMs: c.connectTimeoutMs,
    commandTimeoutMs: c.commandTimeoutMs,
    ...(c.secretsDir ? { secretsDir: c.secretsDir } : {}),
    ...(c.artifactsDir ? { artifactsDir: c.artifactsDir } : {}),
    cacheDir: resolvePath('.converge', 'cache'),
    ...(flags['skipEtcd'] === true ? { skipEtcd: true } : {}),
    ...(c.etcdCa && c.etcdCert && c.etcdKey ? { etcdTls: { caFile: c.etcdCa, certFile: c.etcdCert, keyFile: c.etcdKey } } : {}),
  };
}

/** The desired state to use: a Git repository at its branch's newest commit, or a plain folder. */
export async function openDesired(c: Config): Promise<DesiredSource> {
  if (c.repo) {
    const kind = await detectRepo(c.repo);
    if (kind === 'missing') throw new ConfigError(`the desired-state repository ${c.repo} does not exist`, 'check --repo');
    if (kind === 'dir') return { files: fsSource(c.path === '.' ? c.repo : join(c.repo, c.path)), commit: null };
    // Loaded only for a Git repository: the Git library costs a plain folder about 0.2 s.
    const { openSource } = await import('../source/git.js');
    const src = await openSource({
      repo: c.repo,
      branch: c.branch,
      path: c.path,
      cacheDir: resolvePath('.converge', 'cache'),
      ...(c.gitCredentials ? { auth: await readGitCredentials(c.gitCredentials) } : {}),
    });
    const commit = await src.resolve();
    return { files: src.files(commit), commit, at: (c) => src.files(c) };
  }
  return { files: fsSource(c.desiredState), commit: null };
}

/** The Git credentials file: JSON {"username", "password"} (or {"token"}), never printed. */
async function readGitCredentials(file: string): Promise<{ username?: string; password?: string; token?: string }> {
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read the Git credentials file ${file} (${(e as NodeJS.ErrnoException).code ?? 'not JSON'})`, 'it must hold {"username": "...", "password": "..."} or {"token": "..."}');
  }
  const o = (data ?? {}) as Record<string, unknown>;
  const pick = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const out: { username?: string; password?: string; token?: string } = {};
  for (const k of ['username', 'password', 'token'] as const) {
    const v = pick(k);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function nodesFlag(flags: Flags): string[] | undefined {
  const v = flags['nodes'];
  if (typeof v !== 'string' || v === '') return undefined;
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

/** "connect 0.41+0.12 s; exec 0.55+0.30 (2.1 kB in), 0.86+1.20 (21.5 MB in) s": when each began (seconds since the process started) and how long it took. */
function timeline(t: TransportTimings): string {
  const s = (ms: number): string => (ms / 1000).toFixed(2);
  const bytes = (n: number): string => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`);
  const execs = t.execs.map((e) => `${s(e.at)}+${s(e.ms)}${e.stdinBytes > 0 ? ` (${bytes(e.stdinBytes)} in)` : ''}`);
  return `connect ${s(t.connect.at)}+${s(t.connect.ms)} s; exec ${execs.join(', ')} s`;
}

async function withSession<T>(flags: Flags, fn: (s: Session, c: Config) => Promise<T>): Promise<T> {
  const { config } = resolveConfig(flags);
  const desired = await openDesired(config);
  const started = performance.now();
  const s = await openSession(passConfig(config, flags), desired, nodesFlag(flags));
  try {
    return await fn(s, config);
  } finally {
    if (flags['stats'] === true) {
      for (const n of s.nodes) {
        const t = s.transports.get(n.name);
        process.stderr.write(t ? `stats: ${n.name}: 1 connection, ${t.execCount} exec round trips\n` : `stats: ${n.name}: not connected\n`);
        if (t?.timings) process.stderr.write(`stats: ${n.name}: ${timeline(t.timings)}\n`);
      }
      process.stderr.write(`stats: total ${(performance.now() - started).toFixed(0)} ms\n`);
    }
    await s.close();
  }
}

export async function validate(flags: Flags, out: Out): Promise<number> {
  const { config } = resolveConfig(flags);
  const json = flags['json'] === true;
  if (config.repo) {
    const d = await openDesired(config);
    return validateCommand({ root: d.files, commit: d.commit, json, out });
  }
  return validateCommand({ root: config.desiredState, json, out });
}

export async function plan(flags: Flags, out: Out): Promise<number> {
  return withSession(flags, async (s) => {
    for (const w of s.warnings) process.stderr.write(formatDiagnostic(w) + '\n');
    const { plan: p } = await gatherAndPlan(s, { log: note });
    if (typeof flags['out'] === 'string') await writeFile(flags['out'], planToJson(p) + '\n', { mode: 0o600 });
    out(flags['json'] ? planToJson(p) + '\n' : renderPlanText(p, { color: useColor(process.stdout, process.env) }));
    if (planHasErrors(p)) return EXIT.error;
    return planHasChanges(p) ? EXIT.changes : EXIT.ok;
  });
}

async function readPlan(file: string): Promise<Plan> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the plan file ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, 'save one with `converge plan --out FILE`');
  }
  try {
    const p = JSON.parse(text) as Plan;
    if (p.format !== 1 || !Array.isArray(p.nodes)) throw new Error('not a converge plan');
    return p;
  } catch (e) {
    throw new UsageError(`${file} is not a converge plan: ${(e as Error).message}`, 'save one with `converge plan --out FILE`');
  }
}

export function renderApplyReport(r: ApplyReport): string {
  const lines: string[] = [];
  for (const n of r.nodes) {
    if (n.outcomes.length === 0 && n.ok) continue;
    const ok = n.outcomes.filter((o) => o.status === 'ok').length;
    lines.push(`${n.node}: ${n.ok ? 'ok' : 'FAILED'} — ${ok}/${n.outcomes.length} steps in ${(n.durationMs / 1000).toFixed(1)} s (${n.execs} round trips)`);
    for (const o of n.outcomes) {
      if (o.status === 'failed') {
        lines.push(`  ✗ ${o.error ?? ''}`);
        if (o.unit) {
          lines.push(`    ${o.unit.unit}: ${o.unit.state}`);
          for (const j of o.unit.journal) lines.push(`    | ${j}`);
        }
      }
    }
  }
  if (r.etcd) lines.push(...r.etcd.log);
  if (r.verify && planHasChanges(r.verify)) {
    lines.push('left to do after apply:');
    lines.push(renderPlanText(r.verify));
  }
  for (const e of r.errors) lines.push(`error: ${e.message}${e.hint ? `\n  what to do: ${e.hint}` : ''}`);
  lines.push(r.ok ? `Apply complete: the nodes match ${r.plan.commit ?? 'the desired state'}.` : 'Apply FAILED.');
  return lines.join('\n') + '\n';
}

export async function apply(flags: Flags, planFile: string | undefined, out: Out): Promise<number> {
  const saved = planFile ? await readPlan(planFile) : null;
  return withSession(flags, async (s) => {
    for (const w of s.warnings) process.stderr.write(formatDiagnostic(w) + '\n');
    const { g, plan: current } = await gatherAndPlan(s, { log: note });
    if (saved) checkNotStale(saved, current);
    const p = saved ?? current;
    if (!flags['json']) out(renderPlanText(p));
    const progress = new Progress(process.stderr);
    const report = await applyPlan(s, p, g, { onProgress: (ev) => progress.update(ev) });
    progress.done();
    if (flags['json']) out(JSON.stringify({ ok: report.ok, commit: p.commit, nodes: report.nodes.map((n) => ({ node: n.node, ok: n.ok, performed: n.performed.length, error: n.error?.message })), etcd: report.etcd?.log ?? [], errors: report.errors.map((e) => ({ code: e.code, message: e.message, hint: e.hint })) }, null, 2) + '\n');
    else out(renderApplyReport(report));
    // The chapter's validation closes every apply: a cluster that is not
    // healthy with one leader afterwards is a failed apply.
    if (report.ok && s.state.etcd && !s.cfg.skipEtcd && !flags['json']) {
      const { statusCommand } = await import('./status.js');
      out('\n');
      return statusCommand({ session: s, json: false, out });
    }
    return report.ok ? EXIT.ok : EXIT.error;
  });
}

export async function drift(flags: Flags, out: Out): Promise<number> {
  const { driftCommand } = await import('./drift.js');
  return withSession(flags, (s) => driftCommand(s, { json: flags['json'] === true, markdown: flags['markdown'] === true, out }));
}

export async function status(flags: Flags, out: Out): Promise<number> {
  const { statusCommand } = await import('./status.js');
  return withSession(flags, (s) => statusCommand({ session: s, json: flags['json'] === true, out }));
}

export async function watch(flags: Flags, out: Out): Promise<number> {
  const { watchCommand } = await import('./watch.js');
  return watchCommand(flags, out);
}

export async function config(flags: Flags, out: Out): Promise<number> {
  return configCommand(flags, out);
}

export async function lab(sub: LabSubcommand, flags: Flags, positional: string[], out: Out): Promise<number> {
  return labCommand(sub, flags, positional, out);
}

export async function demo(flags: Flags, out: Out): Promise<number> {
  const { demoCommand } = await import('./demo.js');
  return demoCommand(flags, out);
}

export { ConvergeError };
