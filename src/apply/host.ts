/**
 * Applying one node's host actions, in plan order, over its Transport.
 * A large file write is one exec (its content streamed on stdin, with
 * progress); each run of the other actions, small writes included (their
 * contents one after the other on stdin), is one exec too. Every exec
 * reports each step, so a failure is always pinned to the action that
 * failed. The first failure stops the node: the rest is skipped and
 * reported as such.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { Transport } from '../connect/transport.js';
import { ConvergeError, NodeError } from '../errors/index.js';
import type { Inventory, NodeFacts } from '../facts/types.js';
import type { ResolvedNode } from '../model/types.js';
import type { HostAction, NodePlan } from '../plan/types.js';
import { INVENTORY_PATH, inventoryWrites, nextInventory, sameInventory, writeInventory } from './inventory.js';
import { BACKUP_DIR, ScriptValueError, ancestorsOf, bare, parseBatchOutput, parseWriteOutput, reasonOf, stepBytes, stepsScript, writeFileScript, type BatchAction, type PutArgs, type ScriptStep } from './script.js';

export type FileWriteAction = Extract<HostAction, { type: 'file.write' }>;

/**
 * The bytes of a file.write: text from the resolved desired state, artifacts
 * and secrets read on the bastion from their local path. `size` is their
 * length, for progress.
 */
export type ContentResolver = (action: FileWriteAction) => Promise<{ stream: Readable; size: number }>;

export interface ApplyProgress {
  node: string;
  /** 0-based position of the action in the node's plan. */
  index: number;
  total: number;
  action: HostAction;
  /** Uploads: bytes sent so far and in all. */
  bytesSent?: number;
  bytesTotal?: number;
}

export interface ApplyOptions {
  commit: string | null;
  onProgress?: (ev: ApplyProgress) => void;
  /** Aborting stops before the next step; an upload in flight is cut short and its temporary file removed. */
  signal?: AbortSignal;
  /**
   * Keep converge's inventory on the node: an intent record before the
   * actions when they create something new (so a pass killed half-way still
   * knows what it created), and the final record after them, also after a
   * failure (recording the part that succeeded). Unchanged records are not
   * written again.
   */
  inventory?: { node: ResolvedNode; facts: NodeFacts; now?: () => Date };
}

export type ActionStatus = 'ok' | 'failed' | 'skipped';

export interface ActionOutcome {
  index: number;
  action: HostAction;
  status: ActionStatus;
  /** failed: what went wrong, naming the node and the path/account/unit; skipped: which step stopped it. */
  error?: string;
  hint?: string;
  /** Wall time of the exec that carried this action (shared by a batch). */
  durationMs: number;
  /** file.write: digest of the replaced content, kept on the node under BACKUP_DIR; null when nothing was replaced. */
  backupSha256?: string | null;
  /** file.write: bytes uploaded. */
  bytes?: number;
  /** dir.create: missing parent directories that were created (root, 0755). */
  createdParents?: string[];
  /** A service.start/restart that failed: the unit's state and its last journal lines. */
  unit?: { unit: string; state: string; journal: string[] };
}

export interface NodeApplyResult {
  node: string;
  /** Every action succeeded (and the inventory, when asked for, was written). */
  ok: boolean;
  outcomes: ActionOutcome[];
  /** The actions that were carried out, in order: equals plan.actions when ok. */
  performed: HostAction[];
  /** The first failure. */
  error?: NodeError;
  /** Round trips (execs) this apply made on the node. */
  execs: number;
  /** The inventory now recorded on the node, when options.inventory was given and it could be written. */
  inventory?: Inventory;
  durationMs: number;
}

/** Short description of an action, for messages: `write /etc/etcd/etcd.env`. */
export function describeAction(a: HostAction): string {
  switch (a.type) {
    case 'group.create':
      return `create group ${a.name}`;
    case 'group.remove':
      return `remove group ${a.name}`;
    case 'user.create':
      return `create user ${a.name}`;
    case 'user.modify':
      return `modify user ${a.name}`;
    case 'user.remove':
      return `remove user ${a.name}`;
    case 'dir.create':
      return `create directory ${a.path}`;
    case 'file.write':
      return `write ${a.path}`;
    case 'path.chown':
      return `chown ${a.path}`;
    case 'path.chmod':
      return `chmod ${a.path}`;
    case 'path.remove':
      return `remove ${a.path}`;
    case 'systemd.daemon-reload':
      return 'systemctl daemon-reload';
    default:
      return `${a.type.slice('service.'.length)} ${a.unit}`;
  }
}

function hintFor(a: HostAction, reason: string): string {
  if (/No space left|Disk quota/i.test(reason)) return 'free space on the node (the old content is intact), then apply again';
  if (/symlink/.test(reason)) return 'a symlink stands where converge manages a real file or directory: remove it on the node, or change the desired path';
  if (/Read-only file system/i.test(reason)) return 'the filesystem is mounted read-only on the node';
  if (a.type === 'service.start' || a.type === 'service.restart') return `see the unit's state and journal lines; fix the unit or its configuration and apply again`;
  if (/sha256/.test(reason)) return 'the content changed on the bastion or the upload was cut short: run converge plan again';
  return 'fix the cause on the node or in the desired state and apply again; the next pass starts from what is there';
}

function batchTimeoutMs(actions: BatchAction[]): number {
  const slow = actions.filter((a) => a.type === 'service.start' || a.type === 'service.restart' || a.type === 'service.stop').length;
  return 60_000 + slow * 200_000;
}

function uploadTimeoutMs(size: number): number {
  return 120_000 + Math.ceil(size / (256 * 1024)) * 1000;
}

/** A write of at most this many bytes goes with its neighbouring steps in one exec; a larger one streams alone, with progress. */
export const SMALL_WRITE_BYTES = 256 * 1024;
/** Bounds of one exec of steps: the bytes on its stdin, and the writes in it. */
const STEPS_EXEC_BYTES = 1024 * 1024;
const STEPS_EXEC_WRITES = 100;
/** And the size of its script, which travels as one argument of the remote shell: the transport's limit (MAX_SCRIPT_BYTES) less room for the shared functions. */
const STEPS_EXEC_SCRIPT_BYTES = 96 * 1024;

type ExecGroup = { kind: 'write' | 'steps'; start: number; actions: HostAction[] };

const isLargeWrite = (a: HostAction): boolean => a.type === 'file.write' && (a.size === null || a.size > SMALL_WRITE_BYTES);

/** Groups the plan into execs: each large file.write alone, each run of other actions together, within the bounds above. */
export function execGroups(actions: HostAction[]): ExecGroup[] {
  const groups: ExecGroup[] = [];
  let bytes = 0;
  let writes = 0;
  let script = 0;
  actions.forEach((a, i) => {
    if (isLargeWrite(a)) {
      groups.push({ kind: 'write', start: i, actions: [a] });
      return;
    }
    const size = a.type === 'file.write' ? (a.size ?? 0) : 0;
    const more = stepBytes(a.type === 'file.write' ? { index: i, put: putArgs(a, size) } : { index: i, action: a });
    const isWrite = a.type === 'file.write' ? 1 : 0;
    const last = groups[groups.length - 1];
    if (last?.kind === 'steps' && writes + isWrite <= STEPS_EXEC_WRITES && bytes + size <= STEPS_EXEC_BYTES && script + more <= STEPS_EXEC_SCRIPT_BYTES) {
      last.actions.push(a);
      bytes += size;
      writes += isWrite;
      script += more;
    } else {
      groups.push({ kind: 'steps', start: i, actions: [a] });
      bytes = size;
      writes = isWrite;
      script = more;
    }
  });
  return groups;
}

/**
 * Execute a node's plan in order. Never throws for a failure on the node:
 * the result says what was done, what failed and what was skipped.
 */
export async function applyNodePlan(t: Transport, plan: NodePlan, content: ContentResolver, opts: ApplyOptions): Promise<NodeApplyResult> {
  const started = Date.now();
  const execsBefore = t.execCount;
  const node = plan.node;
  const total = plan.actions.length;
  const outcomes: ActionOutcome[] = [];
  const performed: HostAction[] = [];
  let error: NodeError | undefined;

  const finish = (inventory?: Inventory): NodeApplyResult => ({
    node,
    ok: error === undefined,
    outcomes,
    performed,
    ...(error ? { error } : {}),
    execs: t.execCount - execsBefore,
    ...(inventory ? { inventory } : {}),
    durationMs: Date.now() - started,
  });
  const fail = (index: number, message: string, extra: Partial<ActionOutcome> & { durationMs: number }, cause?: unknown): void => {
    const action = plan.actions[index] as HostAction;
    const hint = extra.hint ?? hintFor(action, message);
    const err = new NodeError('E_APPLY', node, `${describeAction(action)}: ${message}`, { hint, data: { index, action: action.type }, ...(cause ? { cause } : {}) });
    error ??= err;
    outcomes.push({ ...extra, index, action, status: 'failed', error: err.message, hint });
  };
  const skipRest = (from: number, why: string): void => {
    for (let i = from; i < total; i++) outcomes.push({ index: i, action: plan.actions[i] as HostAction, status: 'skipped', error: why, durationMs: 0 });
  };

  if (!plan.reachable) {
    error = new NodeError('E_CONNECT', node, plan.error ?? 'facts could not be gathered', { hint: 'nothing was changed on this node; fix the connection and apply again' });
    skipRest(0, `${node}: skipped: the node was not reachable`);
    return finish();
  }

  const inv = opts.inventory;
  const now = inv?.now ?? (() => new Date());
  let recorded: Inventory | null = inv?.facts.inventory ?? null;
  const groups = execGroups(plan.actions);
  // Record what this pass is about to create before creating it: in the first exec when that is a run of steps, else on its own.
  let intent: Inventory | null = null;
  if (inv && total > 0) {
    const next = nextInventory(recorded, inv.node, inv.facts, plan, opts.commit, now(), []);
    if (Object.entries(next.resources).some(([id, e]) => e.created && !recorded?.resources[id]?.created)) intent = next;
  }
  const recordFailed = (e: unknown): NodeApplyResult => {
    error = e instanceof NodeError ? e : new NodeError('E_APPLY', node, (e as Error).message, { cause: e });
    skipRest(0, `${node}: skipped: converge's inventory could not be recorded before the changes`);
    return finish();
  };
  if (intent && groups[0]?.kind !== 'steps') {
    try {
      await writeInventory(t, intent);
    } catch (e) {
      return recordFailed(e);
    }
    recorded = intent;
    intent = null;
  }

  const run: NodeRun = { t, total, content, opts, outcomes, fail };
  let finalRecorded = false;
  for (const [g, group] of groups.entries()) {
    if (opts.signal?.aborted) {
      error ??= new NodeError('E_APPLY', node, `interrupted before step ${group.start + 1} of ${total}`, { hint: 'apply again: the next pass starts from what is there' });
      skipRest(group.start, `${node}: skipped: the apply was interrupted`);
      break;
    }
    let ok: boolean;
    if (group.kind === 'write') ok = await runWrite(run, group.start, group.actions[0] as FileWriteAction);
    else {
      // The last exec also carries the final record, as it will be when every step succeeds: one round trip less.
      const base = intent ?? recorded;
      const final = inv && g === groups.length - 1 && !(plan.refusals?.length ?? 0) ? nextInventory(base, inv.node, inv.facts, plan, opts.commit, now(), plan.actions) : null;
      const records: Records = {
        ...(g === 0 && intent ? { intent: inventoryWrites(intent) } : {}),
        ...(final && !sameInventory(final, base) ? { final: inventoryWrites(final) } : {}),
      };
      const r = await runSteps(run, group.start, group.actions, records);
      if (r.recordError !== undefined) {
        return recordFailed(new NodeError('E_APPLY', node, `writing the inventory ${INVENTORY_PATH} failed: ${r.recordError}`, { hint: 'check free space and permissions under /var/lib/converge on the node; the next pass writes it again' }));
      }
      if (r.recorded.intent && intent) recorded = intent;
      if (r.recorded.final && final) {
        recorded = final;
        finalRecorded = true;
      }
      ok = r.ok;
    }
    for (let i = group.start; i < group.start + group.actions.length; i++) {
      const o = outcomes.find((x) => x.index === i);
      if (o?.status === 'ok') performed.push(o.action);
    }
    if (!ok) {
      const stop = outcomes.find((o) => o.status === 'failed')?.index ?? group.start;
      skipRest(stop + 1, `${node}: skipped: step ${stop + 1} (${describeAction(plan.actions[stop] as HostAction)}) failed`);
      break;
    }
  }
  outcomes.sort((a, b) => a.index - b.index);

  if (!inv) return finish();
  if (finalRecorded && error === undefined) return finish(recorded ?? undefined);
  // A node whose plan was refused and that had nothing done is left exactly as it was, bookkeeping included.
  if (performed.length === 0 && (plan.refusals?.length ?? 0) > 0) return finish(recorded ?? undefined);
  const final = nextInventory(recorded, inv.node, inv.facts, plan, opts.commit, now(), performed);
  if (sameInventory(final, recorded)) return finish(recorded ?? undefined);
  try {
    await writeInventory(t, final);
    return finish(final);
  } catch (e) {
    error ??= e instanceof NodeError ? e : new NodeError('E_APPLY', node, (e as Error).message, { cause: e });
    return finish(recorded ?? undefined);
  }
}

type FailFn = (index: number, message: string, extra: Partial<ActionOutcome> & { durationMs: number }, cause?: unknown) => void;

/** Inventory records a steps exec carries: the intent before its steps, the final record after them. */
interface Records {
  intent?: { puts: PutArgs[]; data: Buffer };
  final?: { puts: PutArgs[]; data: Buffer };
}

interface StepsResult {
  ok: boolean;
  recorded: { intent: boolean; final: boolean };
  /** The intent record failed, so no step ran: why. */
  recordError?: string;
}

/** What every exec of one node's apply shares: its transport, the plan's size, the contents, the options, and where outcomes go. */
interface NodeRun {
  t: Transport;
  total: number;
  content: ContentResolver;
  opts: ApplyOptions;
  outcomes: ActionOutcome[];
  fail: FailFn;
}

async function runWrite(run: NodeRun, index: number, action: FileWriteAction): Promise<boolean> {
  const { t, total, content, opts, outcomes, fail } = run;
  const started = Date.now();
  const emit = (ev: Partial<ApplyProgress>): void => opts.onProgress?.({ node: t.node, index, total, action, ...ev });
  let script: string;
  try {
    script = writeFileScript({ path: action.path, owner: action.owner, group: action.group, mode: action.mode, sha256: action.sha256, backup: true, source: 'stdin' });
  } catch (e) {
    if (!(e instanceof ScriptValueError)) throw e;
    fail(index, e.message, { durationMs: 0 });
    return false;
  }
  let source: { stream: Readable; size: number };
  try {
    source = await content(action);
  } catch (e) {
    const message = bare(e, t.node);
    const hint = e instanceof ConvergeError && e.hint ? e.hint : 'check the artifact or secret on this machine';
    fail(index, `cannot read the content: ${message}`, { durationMs: Date.now() - started, hint }, e);
    return false;
  }
  emit({ bytesSent: 0, bytesTotal: source.size });

  // The stream reaching the node ends early (never errors) when the source
  // fails or the apply is aborted: the node then sees a short upload, its
  // digest check fails and the temporary file is removed.
  const body = new PassThrough();
  let localError: Error | null = null;
  const cut = (): void => {
    source.stream.unpipe(body);
    body.end();
  };
  source.stream.on('error', (e: Error) => {
    localError = e;
    cut();
  });
  const onAbort = (): void => cut();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  source.stream.pipe(body);

  let sent = 0;
  try {
    const r = await t.exec(script, {
      stdin: body,
      timeoutMs: uploadTimeoutMs(source.size),
      onProgress: (n) => {
        sent = n;
        emit({ bytesSent: n, bytesTotal: source.size });
      },
    });
    const parsed = parseWriteOutput(r.stdout.toString('utf8'));
    const durationMs = Date.now() - started;
    if (r.code === 0 && parsed.ok) {
      outcomes.push({ index, action, status: 'ok', durationMs, backupSha256: parsed.backupSha256, bytes: sent });
      return true;
    }
    const err = localError as Error | null;
    const why = err
      ? `reading the content failed: ${err.message} (the target was left untouched)`
      : opts.signal?.aborted
        ? 'interrupted during the upload (the target was left untouched)'
        : reasonOf(r.stderr) || `the write script exited with code ${r.code}`;
    fail(index, why, { durationMs, bytes: sent });
    return false;
  } catch (e) {
    fail(index, `${bare(e, t.node)}; the write may or may not have completed (a partial upload never replaces the target)`, { durationMs: Date.now() - started, bytes: sent }, e);
    return false;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    if (!source.stream.destroyed) source.stream.destroy();
  }
}

function putArgs(a: FileWriteAction, source: PutArgs['source']): PutArgs {
  return { path: a.path, owner: a.owner, group: a.group, mode: a.mode, sha256: a.sha256, backup: true, source };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
  return Buffer.concat(chunks);
}

/**
 * A run of steps in one exec. The contents of its writes are read here
 * first; a value the script refuses, or content that cannot be read, fails
 * that step, and the steps before it still run.
 */
async function runSteps(run: NodeRun, start: number, actions: HostAction[], records: Records = {}): Promise<StepsResult> {
  const { t, total, content, opts, outcomes, fail } = run;
  const began = Date.now();
  const nonce = randomBytes(8).toString('hex');
  const steps: Exclude<ScriptStep, { record: string }>[] = [];
  const recorded: StepsResult['recorded'] = { intent: false, final: false };
  const data: Buffer[] = [];
  let stop: { index: number; message: string; hint?: string; cause?: unknown } | null = null;
  for (const [k, action] of actions.entries()) {
    const index = start + k;
    let step: ScriptStep = action.type === 'file.write' ? { index, put: putArgs(action, 0) } : { index, action };
    try {
      stepsScript([step], nonce);
    } catch (e) {
      if (!(e instanceof ScriptValueError)) throw e;
      stop = { index, message: e.message };
      break;
    }
    if (action.type === 'file.write') {
      let bytes: Buffer;
      try {
        bytes = await readAll((await content(action)).stream);
      } catch (e) {
        const hint = e instanceof ConvergeError && e.hint ? e.hint : 'check the artifact or secret on this machine';
        stop = { index, message: `cannot read the content: ${bare(e, t.node)}`, hint, cause: e };
        break;
      }
      step = { index, put: putArgs(action, bytes.length) };
      data.push(bytes);
    }
    steps.push(step);
  }

  if (steps.length > 0) {
    for (const [k, action] of actions.slice(0, steps.length).entries()) opts.onProgress?.({ node: t.node, index: start + k, total, action });
    // The final record is written only when every step of the plan ran, which a stop before the end rules out.
    const final = stop ? undefined : records.final;
    const script: ScriptStep[] = [
      ...(records.intent ? [{ record: 'intent' as const, puts: records.intent.puts }] : []),
      ...steps,
      ...(final ? [{ record: 'final' as const, puts: final.puts }] : []),
    ];
    const stdin = Buffer.concat([records.intent?.data ?? Buffer.alloc(0), ...data, final?.data ?? Buffer.alloc(0)]);
    const batch = actions.slice(0, steps.length).filter((a): a is BatchAction => a.type !== 'file.write');
    let r;
    try {
      r = await t.exec(stepsScript(script, nonce), { ...(stdin.length ? { stdin } : {}), timeoutMs: batchTimeoutMs(batch) + uploadTimeoutMs(stdin.length) });
    } catch (e) {
      // No report came back: the connection is gone and the outcome of the first step is unknown.
      fail(start, `${bare(e, t.node)}; whether the steps from here on took effect is unknown (the next pass checks; a partial upload never replaces its target)`, { durationMs: Date.now() - began }, e);
      return { ok: false, recorded };
    }
    const durationMs = Date.now() - began;
    const lines = parseBatchOutput(r.stdout.toString('utf8'), nonce);
    recorded.intent = lines.some((l) => l.kind === 'recorded' && l.record === 'intent');
    recorded.final = lines.some((l) => l.kind === 'recorded' && l.record === 'final');
    if (records.intent && !recorded.intent) return { ok: false, recorded, recordError: reasonOf(r.stderr) || `exit code ${r.code}` };
    for (const [k, step] of steps.entries()) {
      const action = actions[k] as HostAction;
      const mine = lines.filter((l) => l.index === step.index);
      const extra: Partial<ActionOutcome> & { durationMs: number } = { durationMs };
      if (action.type === 'dir.create') {
        const all = ancestorsOf(action.path);
        const parents = mine.flatMap((l) => (l.kind === 'parent' && l.ancestor !== undefined && all[l.ancestor] !== undefined ? [all[l.ancestor] as string] : []));
        if (parents.length) extra.createdParents = parents;
      }
      const wrote = mine.find((l) => l.kind === 'wrote');
      if (wrote && 'put' in step) {
        outcomes.push({ ...extra, index: step.index, action, status: 'ok', backupSha256: wrote.backup ?? null, bytes: Number(step.put.source) });
        continue;
      }
      if (mine.some((l) => l.kind === 'ok')) {
        outcomes.push({ ...extra, index: step.index, action, status: 'ok' });
        continue;
      }
      const failed = mine.find((l) => l.kind === 'fail');
      const unitLine = mine.find((l) => l.kind === 'unit');
      if (unitLine && (action.type === 'service.start' || action.type === 'service.restart')) {
        extra.unit = { unit: action.unit, state: unitLine.text ?? '', journal: unitLine.journal ?? [] };
      }
      const why = failed
        ? reasonOf(failed.text ?? '') || 'failed without a message'
        : 'put' in step
          ? reasonOf(r.stderr) || `the write script exited with code ${r.code}`
          : `the step did not report back (exit code ${r.code}): ${reasonOf(r.stderr) || 'no message'}`;
      fail(step.index, extra.unit ? `${why} (${extra.unit.state})` : why, extra);
      return { ok: false, recorded };
    }
  }
  if (stop) {
    fail(stop.index, stop.message, { durationMs: Date.now() - began, ...(stop.hint ? { hint: stop.hint } : {}) }, stop.cause);
    return { ok: false, recorded };
  }
  return { ok: true, recorded };
}

/**
 * Put back a replaced file from its content-addressed backup on the node
 * (BACKUP_DIR/<sha256>), atomically and with the given owner, group and mode.
 * What it replaces is itself backed up first. Needs nothing from elsewhere.
 */
export async function restoreFromBackup(t: Transport, path: string, sha256: string, owner: string, group: string, mode: string): Promise<{ backupSha256: string | null }> {
  let script: string;
  try {
    script = writeFileScript({ path, owner, group, mode, sha256, backup: true, source: { nodePath: `${BACKUP_DIR}/${sha256}` } });
  } catch (e) {
    throw new NodeError('E_APPLY', t.node, `restore ${path}: ${(e as Error).message}`);
  }
  const r = await t.exec(script, { timeoutMs: 300_000 });
  const parsed = parseWriteOutput(r.stdout.toString('utf8'));
  if (r.code !== 0 || !parsed.ok) {
    throw new NodeError('E_APPLY', t.node, `restore ${path} from backup ${sha256.slice(0, 12)}: ${reasonOf(r.stderr) || `exit code ${r.code}`}`, {
      hint: `the backups on the node are in ${BACKUP_DIR}; the target was left as it was`,
    });
  }
  return { backupSha256: parsed.backupSha256 };
}
