/**
 * `converge watch`: settings from flags, CONVERGE_* variables (the systemd
 * unit's environment file) and systemd's directories; the reconcile pass of
 * reconcile/ adapted to what the loop needs; then the service runs until
 * SIGTERM. Logs are JSON lines on stdout; nothing else is printed.
 */
import { readFile } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { ConfigError, UsageError } from '../errors/index.js';
import { createLogger } from '../daemon/log.js';
import { startWatch } from '../daemon/service.js';
import { loadWebhookSecret } from '../daemon/secret.js';
import { stopOnSignals } from '../daemon/signals.js';
import type { DriftItem, Mode, PassSummary, ReconcileFn } from '../daemon/types.js';
import type { EtcdFacts } from '../facts/types.js';
import { planHasChanges, planHasErrors } from '../plan/plan.js';
import type { Plan } from '../plan/types.js';
import { applyPlan, computePlan, gather } from '../reconcile/pass.js';
import { openSession, type PassConfig } from '../reconcile/session.js';
import { detectRepo, openSource, type Source } from '../source/git.js';
import type { SourceAuth } from '../source/auth.js';
import { passConfig } from './commands.js';
import { resolveConfig } from './config.js';
import { EXIT } from './exit.js';

type Flags = Record<string, unknown>;

/** A flag, else its CONVERGE_* variable, else undefined. */
function setting(flags: Flags, flag: string, envVar: string, env: NodeJS.ProcessEnv): string | undefined {
  const f = flags[flag];
  if (typeof f === 'string' && f !== '') return f;
  if (typeof f === 'number') return String(f);
  const e = env[envVar];
  return e === undefined || e === '' ? undefined : e;
}

async function gitAuth(credentialsFile: string | null, tokenFile: string | undefined): Promise<SourceAuth> {
  const auth: SourceAuth = {};
  if (tokenFile !== undefined) auth.tokenFile = tokenFile;
  if (credentialsFile === null) return auth;
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(await readFile(credentialsFile, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`cannot read the Git credentials file ${credentialsFile} (${(e as NodeJS.ErrnoException).code ?? 'not JSON'})`, 'it must hold {"username": "...", "password": "..."} or {"token": "..."}');
  }
  for (const k of ['username', 'password', 'token'] as const) if (typeof data[k] === 'string') auth[k] = data[k];
  return auth;
}

const kindOf = (resource: string): string => resource.split('/')[0] ?? resource;

function nodeSummaries(plan: Plan): PassSummary['nodes'] {
  return plan.nodes.map((n) => {
    const drift: DriftItem[] = [
      ...n.actions.map((a) => ({ resource: a.resource, kind: kindOf(a.resource), field: a.type })),
      ...n.reported.map((d) => ({ resource: d.resource, kind: kindOf(d.resource), field: d.field })),
    ];
    for (const a of plan.etcd) if (a.node === n.node) drift.push({ resource: a.resource, kind: 'EtcdMember', field: a.type });
    return { node: n.node, reachable: n.reachable, drift, ...(n.error === undefined ? {} : { error: n.error }) };
  });
}

function etcdSummary(e: EtcdFacts | null): PassSummary['etcd'] {
  if (e === null) return null;
  return {
    reachable: e.reachable,
    members: e.members.map((m) => ({
      name: m.name || m.id,
      state: m.isLearner ? 'learner' : m.name === '' ? 'unstarted' : e.status[m.id]?.healthy ? 'started' : 'unhealthy',
    })),
  };
}

/** One pass of reconcile/, as the loop wants it: validation errors and refusals thrown, everything else summarised. */
export function reconcileFor(cfg: PassConfig, source: Source, only: string[] | undefined): ReconcileFn {
  return async (job) => {
    const s = await openSession(cfg, { files: job.files, commit: job.commit, at: (c) => source.files(c) }, only);
    try {
      for (const w of s.warnings) job.log.warn({ file: w.file, line: w.line, message: w.message }, 'desired-state warning');
      const g = await gather(s);
      const plan = computePlan(s, g, new Date());
      const base = { nodes: nodeSummaries(plan), etcd: etcdSummary(g.etcd) };
      const reported = plan.nodes.some((n) => n.reported.length > 0);
      if (plan.refusals.length > 0) {
        return { ...base, outcome: 'halted', error: plan.refusals.map((r) => `${r.message} (${r.hint})`).join('; ') };
      }
      if (job.mode === 'report' || !planHasChanges(plan)) {
        if (planHasErrors(plan)) return { ...base, outcome: 'failed', error: plan.nodes.filter((n) => !n.reachable).map((n) => `${n.node}: ${n.error ?? 'unreachable'}`).join('; ') || 'the plan has errors' };
        return { ...base, outcome: planHasChanges(plan) || reported ? 'drift' : 'ok', changes: 0 };
      }
      const report = await applyPlan(s, plan, g, { signal: job.signal, log: (line) => job.log.info(line) });
      const changes = report.nodes.reduce((sum, n) => sum + n.performed.length, 0);
      const after = report.verify === null ? base : { nodes: nodeSummaries(report.verify), etcd: base.etcd };
      if (report.ok) return { ...after, outcome: 'ok', changes };
      const error = report.errors.map((e) => e.message).join('; ');
      if (job.signal.aborted) return { ...after, outcome: 'aborted', changes, error };
      // A failed etcd step is a health gate: the rollout stops there until an operator or a newer commit.
      const halted = report.errors.some((e) => e.code === 'E_ETCD_UNSAFE') || (report.etcd !== null && !report.etcd.ok);
      return { ...after, outcome: halted ? 'halted' : 'failed', changes, error };
    } finally {
      await s.close();
    }
  };
}

export async function watchCommand(flags: Flags, _out: (s: string) => void, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { config } = resolveConfig(flags, env);
  if (config.repo === null) throw new UsageError('converge watch follows a Git repository: give --repo (a local repository or an https:// URL)');
  const kind = await detectRepo(config.repo);
  if (kind === 'missing') throw new ConfigError(`the desired-state repository ${config.repo} does not exist`, 'check --repo');
  if (kind === 'dir') throw new UsageError(`${config.repo} is a plain folder, not a Git repository`, 'converge watch rolls out commits: point --repo at a Git repository');

  const modeRaw = setting(flags, 'mode', 'CONVERGE_MODE', env) ?? 'enforce';
  if (modeRaw !== 'enforce' && modeRaw !== 'report') throw new UsageError(`--mode must be enforce or report, not ${modeRaw}`);
  const mode: Mode = modeRaw;
  const intervalRaw = setting(flags, 'interval', 'CONVERGE_INTERVAL', env) ?? '60';
  const interval = Number(intervalRaw);
  if (!Number.isFinite(interval) || interval < 0) throw new UsageError(`--interval must be a number of seconds (0: no polling), not ${intervalRaw}`);
  // systemd's StateDirectory=/CacheDirectory= export these; outside systemd, .converge/ beside the project.
  const stateDir = resolvePath(setting(flags, 'stateDir', 'CONVERGE_STATE_DIR', env) ?? env['STATE_DIRECTORY'] ?? '.converge');
  const cacheDir = resolvePath(setting(flags, 'cache', 'CONVERGE_CACHE_DIR', env) ?? env['CACHE_DIRECTORY'] ?? join(stateDir, 'cache'));
  await mkdir(stateDir, { recursive: true, mode: 0o700 });

  const log = createLogger({ level: setting(flags, 'logLevel', 'CONVERGE_LOG_LEVEL', env) ?? 'info' });
  const source = await openSource({
    repo: config.repo,
    branch: config.branch,
    path: config.path,
    cacheDir,
    auth: await gitAuth(config.gitCredentials, setting(flags, 'gitTokenFile', 'CONVERGE_GIT_TOKEN_FILE', env)),
    env,
  });
  const only = typeof flags['nodes'] === 'string' && flags['nodes'] !== '' ? flags['nodes'].split(',').map((s) => s.trim()).filter(Boolean) : undefined;
  const webhookListen = setting(flags, 'webhookListen', 'CONVERGE_WEBHOOK_LISTEN', env);
  const service = await startWatch({
    source,
    reconcile: reconcileFor(passConfig(config, flags), source, only),
    log,
    mode,
    intervalMs: interval * 1000,
    stateFile: join(stateDir, 'watch-state.json'),
    listen: setting(flags, 'listen', 'CONVERGE_LISTEN', env) ?? '127.0.0.1:9479',
    ...(webhookListen === undefined ? {} : { webhookListen }),
    webhookSecret: await loadWebhookSecret(setting(flags, 'webhookSecretFile', 'CONVERGE_WEBHOOK_SECRET_FILE', env), env),
  });
  return new Promise<number>((resolve) => stopOnSignals(service, log, () => resolve(EXIT.ok)));
}
