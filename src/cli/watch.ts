/**
 * `converge watch`: settings from flags, CONVERGE_* variables (the systemd
 * unit's environment file) and systemd's directories; the reconcile pass of
 * reconcile/ adapted to what the loop needs; then the service runs until
 * SIGTERM. Logs are JSON lines on stdout; nothing else is printed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { Etcd3, type IOptions } from 'etcd3';
import type { Logger } from 'pino';
import { describeAction } from '../apply/host.js';
import { loadEtcdTls } from '../connect/etcd.js';
import { EtcdLeadership } from '../daemon/leader.js';
import { createLogger } from '../daemon/log.js';
import { loadWebhookSecret } from '../daemon/secret.js';
import { startWatch } from '../daemon/service.js';
import { stopOnSignals } from '../daemon/signals.js';
import type { DriftItem, Mode, NodeSummary, PassSummary, ReconcileFn, RollbackSummary } from '../daemon/types.js';
import { ConfigError, UsageError } from '../errors/index.js';
import type { EtcdFacts } from '../facts/types.js';
import { memorySource, validateDesiredState } from '../model/index.js';
import { driftCount, type DriftReport } from '../plan/drift.js';
import { planHasChanges, planHasErrors } from '../plan/plan.js';
import type { Plan } from '../plan/types.js';
import { computeDrift } from '../reconcile/drift.js';
import { gatherEtcd } from '../reconcile/etcd.js';
import { applyPlan, gather, gatherAndPlan, type ApplyReport } from '../reconcile/pass.js';
import { rollbackNodes } from '../reconcile/rollback.js';
import { openSession, type PassConfig } from '../reconcile/session.js';
import type { SourceAuth } from '../source/auth.js';
import { detectRepo, openSource, type FileSource, type Source } from '../source/git.js';
import { passConfig } from './commands.js';
import { resolveConfig, type Config } from './config.js';
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

/** Drift items for the loop: the drift report's fields (labelled), and etcd membership steps pending. */
function driftNodes(report: DriftReport, plan: Plan | null): NodeSummary[] {
  return report.nodes.map((n) => {
    const drift: DriftItem[] = n.items.map((i) => ({ resource: i.resource, kind: i.kind, label: i.label, field: i.field, target: i.target }));
    for (const a of plan?.etcd ?? []) {
      if (a.node === n.node && MEMBERSHIP.has(a.type)) drift.push({ resource: 'name' in a ? `EtcdMember/${a.name}` : a.resource, kind: 'EtcdMember', field: a.type });
    }
    return { node: n.node, reachable: n.reachable, drift, ...(n.error === undefined ? {} : { error: n.error }) };
  });
}

const MEMBERSHIP: ReadonlySet<string> = new Set(['etcd.bootstrap', 'etcd.member.add', 'etcd.member.promote', 'etcd.member.remove']);

/** After a successful apply only what policy `report` keeps out of the actions still differs. */
function remaining(before: NodeSummary[], verify: Plan): NodeSummary[] {
  return before.map((n) => {
    const kept = new Set(verify.nodes.find((p) => p.node === n.node)?.reported.map((d) => d.resource) ?? []);
    return { ...n, drift: n.drift.filter((d) => d.kind !== 'EtcdMember' && kept.has(d.resource)) };
  });
}

function logDrift(log: Logger, report: DriftReport): void {
  for (const n of report.nodes) {
    if (n.items.length === 0) continue;
    log.info({ node: n.node, appliedCommit: n.appliedCommit?.slice(0, 12) ?? null, items: n.items.map((i) => `${i.label} ${i.resource} ${i.field}`) }, 'drift found');
  }
}

function logApplied(log: Logger, report: ApplyReport): void {
  for (const n of report.nodes) {
    if (n.outcomes.length === 0) continue;
    const fields = { node: n.node, actions: n.performed.map(describeAction), durationMs: n.durationMs };
    if (n.ok) log.info(fields, 'applied');
    else log.error({ ...fields, error: n.error?.message, ...(n.outcomes.find((o) => o.unit)?.unit ?? {}) }, 'apply failed on the node');
  }
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

/**
 * A failed apply is a health gate that halted the rollout when a service did
 * not become active, an etcd step failed (a member that did not come back) or
 * a change was refused as unsafe. Anything else (a lost connection, a full
 * disk) is a failure that is retried.
 */
function haltedBy(report: ApplyReport): { halted: boolean; touched: string[] } {
  const gate = report.nodes.filter((n) => !n.ok && n.outcomes.some((o) => o.status === 'failed' && o.unit !== undefined)).map((n) => n.node);
  const etcdFailed = report.etcd !== null && !report.etcd.ok;
  const member = etcdFailed ? report.etcd?.error?.data['node'] : undefined;
  const unsafe = report.errors.some((e) => e.code === 'E_ETCD_UNSAFE');
  const touched = new Set([...report.nodes.filter((n) => n.performed.length > 0).map((n) => n.node), ...gate, ...(typeof member === 'string' ? [member] : [])]);
  return { halted: unsafe || etcdFailed || gate.length > 0, touched: [...touched].sort() };
}

/**
 * One pass of reconcile/, as the loop wants it: validation errors and
 * refusals thrown, everything else summarised, with the drift report (shared
 * with `converge drift`) per node. When the rollout halts at a health gate
 * and the loop asks for a rollback, the nodes it changed get the last good
 * commit again (reconcile/rollback.ts).
 */
export function reconcileFor(cfg: PassConfig, source: Source, only: string[] | undefined): ReconcileFn {
  const at = (c: string): FileSource => source.files(c);
  return async (job) => {
    const s = await openSession(cfg, { files: job.files, commit: job.commit, at }, only);
    try {
      for (const w of s.warnings) job.log.warn({ file: w.file, line: w.line, message: w.message }, 'desired-state warning');
      const now = new Date();
      const { g, plan } = await gatherAndPlan(s, { signal: job.signal, log: (line) => job.log.info(line), date: () => now });
      const drift = await computeDrift(s, g, now);
      logDrift(job.log, drift);
      const before = driftNodes(drift, plan);
      const base = { nodes: before, etcd: etcdSummary(g.etcd), driftBefore: drift.counts };
      const reported = plan.nodes.some((n) => n.reported.length > 0);
      if (plan.refusals.length > 0) {
        return { ...base, outcome: 'halted', error: plan.refusals.map((r) => `${r.message} (${r.hint})`).join('; ') };
      }
      if (job.mode === 'report' || !planHasChanges(plan)) {
        if (planHasErrors(plan)) return { ...base, outcome: 'failed', error: plan.nodes.filter((n) => !n.reachable).map((n) => `${n.node}: ${n.error ?? 'unreachable'}`).join('; ') || 'the plan has errors' };
        return { ...base, outcome: planHasChanges(plan) || reported || driftCount(drift) > 0 ? 'drift' : 'ok', changes: 0 };
      }
      // A rollout: one node at a time, so that a node failing its health gate stops it before the next.
      const report = await applyPlan(s, plan, g, { signal: job.signal, log: (line) => job.log.info(line), haltAtFirstFailure: true });
      logApplied(job.log, report);
      const changes = report.nodes.reduce((sum, n) => sum + n.performed.length, 0);
      if (report.ok) {
        // The member set and health after the etcd steps, not before them.
        const etcd = plan.etcd.length > 0 ? etcdSummary(await gatherEtcd(s).catch(() => g.etcd)) : base.etcd;
        return { ...base, etcd, nodes: report.verify === null ? before : remaining(before, report.verify), outcome: 'ok', changes };
      }
      const error = report.errors.map((e) => e.message).join('; ');
      if (job.signal.aborted) return { ...base, outcome: 'aborted', changes, error };
      const { halted, touched } = haltedBy(report);
      let rolledBack: RollbackSummary | undefined;
      if (halted && job.rollbackTo !== null && touched.length > 0) {
        job.log.warn({ nodes: touched, toCommit: job.rollbackTo.slice(0, 12) }, 'rollout halted: returning the changed nodes to the last good commit');
        const r = await rollbackNodes(cfg, { files: at(job.rollbackTo), commit: job.rollbackTo, at }, touched, { signal: job.signal, log: (line) => job.log.info({ rollback: true }, line) });
        if (r.report !== null) logApplied(job.log.child({ rollback: true }), r.report);
        rolledBack = { toCommit: r.toCommit, nodes: r.nodes, ok: r.ok, changes: r.changes, durationMs: r.durationMs, ...(r.error === undefined ? {} : { error: r.error }), ...(r.skipped.length ? { skipped: r.skipped } : {}) };
        if (r.ok) job.log.info({ nodes: r.nodes, toCommit: r.toCommit.slice(0, 12), changes: r.changes, durationMs: r.durationMs }, 'rollback complete: the nodes are back on the last good commit');
        else job.log.error({ nodes: r.nodes, toCommit: r.toCommit.slice(0, 12), error: r.error }, 'rollback failed');
      }
      // What the nodes look like now, against this commit (after a rollback: its changes, not rolled out).
      const again = await gather(s).catch(() => null);
      const after = again === null ? before : await computeDrift(s, again, new Date()).then((d) => driftNodes(d, null), () => before);
      return { ...base, etcd: again === null ? base.etcd : etcdSummary(again.etcd), nodes: after, outcome: halted ? 'halted' : 'failed', changes, error, ...(rolledBack === undefined ? {} : { rolledBack }) };
    } finally {
      await s.close();
    }
  };
}

/**
 * The first validation in a process compiles the JSON Schemas, which holds
 * the event loop for a while (seconds on a busy machine). Done here, before
 * campaigning, rather than in the first pass of a new leader, where it would
 * also hold back the lease keepalives that its leadership depends on.
 */
async function warmUp(): Promise<void> {
  await validateDesiredState(memorySource({ 'warm-up.yaml': 'apiVersion: converge.dev/v1\nkind: Node\nmetadata: { name: warm-up }\nspec: { address: 127.0.0.1 }\n' }));
}

/** Watchers of the same repository, branch and folder elect one leader among them. */
function defaultElectionName(source: Source): string {
  const digest = createHash('sha256').update(`${source.display}\0${source.branch}\0${source.path}`).digest('hex').slice(0, 16);
  return `converge-watch-${digest}`;
}

/**
 * The election on the coordination endpoint: etcd client URLs, with the
 * same client TLS as the managed cluster (etcdCa/etcdCert/etcdKey). This
 * client may retry a call on another endpoint, unlike the per-member ones
 * of the rollout: the election only needs some member to answer.
 */
async function electionOn(urls: string, config: Config, o: { name: string; id: string; ttlSeconds: number; log: Logger }): Promise<{ election: EtcdLeadership; close(): void }> {
  const hosts = urls.split(',').map((u) => u.trim()).filter(Boolean);
  const bad = hosts.find((u) => !/^https?:\/\/[^/\s]+\/?$/.test(u));
  if (hosts.length === 0 || bad !== undefined) throw new UsageError(`--coordination takes etcd client URLs separated by commas${bad ? `, not ${JSON.stringify(bad)}` : ''}`, 'e.g. https://10.240.16.10:2379,https://10.240.48.10:2379');
  let credentials: IOptions['credentials'];
  if (hosts.some((u) => u.startsWith('https:'))) {
    if (!config.etcdCa || !config.etcdCert || !config.etcdKey) {
      throw new ConfigError('--coordination over https needs converge\'s etcd client TLS', 'set etcdCa, etcdCert and etcdKey (CONVERGE_ETCD_CA, CONVERGE_ETCD_CERT, CONVERGE_ETCD_KEY)');
    }
    const tls = await loadEtcdTls({ caFile: config.etcdCa, certFile: config.etcdCert, keyFile: config.etcdKey });
    credentials = { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key };
  }
  const client = new Etcd3({
    hosts,
    ...(credentials === undefined ? {} : { credentials }),
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3000 }),
    grpcOptions: { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 },
  });
  return { election: new EtcdLeadership({ client, ...o }), close: () => client.close() };
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

  const rollbackRaw = flags['rollback'] === true ? 'true' : (env['CONVERGE_ROLLBACK'] ?? 'false');
  if (!/^(true|false|1|0|yes|no)$/i.test(rollbackRaw)) throw new UsageError(`CONVERGE_ROLLBACK must be true or false, not ${rollbackRaw}`);
  const rollback = /^(true|1|yes)$/i.test(rollbackRaw);

  const coordination = setting(flags, 'coordination', 'CONVERGE_COORDINATION', env);
  const ttlRaw = setting(flags, 'leaseTtl', 'CONVERGE_LEASE_TTL', env) ?? '10';
  const ttl = Number(ttlRaw);
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 300) throw new UsageError(`--lease-ttl must be a whole number of seconds from 2 to 300, not ${ttlRaw}`);
  const instance = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const root = createLogger({ level: setting(flags, 'logLevel', 'CONVERGE_LOG_LEVEL', env) ?? 'info' });
  const log = coordination === undefined ? root : root.child({ instance });
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
  const electionName = setting(flags, 'electionName', 'CONVERGE_ELECTION_NAME', env) ?? defaultElectionName(source);
  await warmUp();
  const leadership = coordination === undefined ? undefined : await electionOn(coordination, config, { name: electionName, id: instance, ttlSeconds: ttl, log });
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
    rollback,
    ...(leadership === undefined ? {} : { leadership: leadership.election }),
  });
  return new Promise<number>((resolve) =>
    stopOnSignals(service, log, (code) => {
      leadership?.close();
      resolve(code === 0 ? EXIT.ok : EXIT.error);
    }),
  );
}
