// A watch loop on a real local Git repository, with a reconcile function that
// really loads and validates the commit it is given (the model's loader) and
// records which commits it was called with, when, and in which mode: that
// record is what the loop's tests assert on. It applies nothing.
import { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { join } from 'node:path';
import { loadDesiredState } from '../../../src/model/index.js';
import { createLogger } from '../../../src/daemon/log.js';
import { Daemon, type DaemonOptions } from '../../../src/daemon/loop.js';
import type { Mode, PassOutcome, PassSummary, ReconcileFn } from '../../../src/daemon/types.js';
import { openSource, type Source } from '../../../src/source/git.js';
import { makeRepo, tempDir, type TestRepo } from '../source/_repo.js';

export const NODES = 'apiVersion: converge.dev/v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  address: 127.0.0.1\n';
export const motd = (text: string): string =>
  `apiVersion: converge.dev/v1\nkind: File\nmetadata:\n  name: motd\nspec:\n  path: /etc/motd\n  content: ${JSON.stringify(text)}\n`;
/** A commit whose YAML is broken on line 7 of nodes.yaml. */
export const BROKEN_NODES = NODES + 'spec: [\n';

export interface Call {
  commit: string;
  passId: string;
  mode: Mode;
  at: number;
  /** The motd text of that commit, as the pass read it from its files. */
  motd: string | null;
}

export interface Recorder {
  calls: Call[];
  fn: ReconcileFn;
  /** Outcomes to return, in order, once the commit validated (default ok). */
  outcomes: PassOutcome[];
  /** Extra summary fields for every pass. */
  extra: Partial<PassSummary>;
  /** While set, each pass waits for it (after recording the call) before returning. */
  hold: Promise<void> | null;
  /** Resolves at the next call. */
  nextCall(): Promise<Call>;
}

export function recorder(): Recorder {
  let waiters: ((c: Call) => void)[] = [];
  const r: Recorder = {
    calls: [],
    outcomes: [],
    extra: {},
    hold: null,
    nextCall: () => new Promise((resolve) => waiters.push(resolve)),
    fn: async (job) => {
      const call: Call = { commit: job.commit, passId: job.passId, mode: job.mode, at: Date.now(), motd: null };
      r.calls.push(call);
      const w = waiters;
      waiters = [];
      for (const f of w) f(call);
      if (r.hold) await r.hold;
      const { state } = await loadDesiredState(job.files);
      const file = state.nodes[0]?.files.find((f) => f.path === '/etc/motd');
      call.motd = file?.content?.kind === 'text' ? file.content.text : null;
      return { outcome: r.outcomes.shift() ?? 'ok', ...r.extra };
    },
  };
  return r;
}

export interface Harness {
  repo: TestRepo;
  source: Source;
  daemon: Daemon;
  rec: Recorder;
  log: Logger;
  logs: Record<string, unknown>[];
  rawLogs: () => string;
  stateFile: string;
  /** Commit a new motd (valid) or the given files; returns the commit id. */
  commit(files?: Record<string, string> | string): string;
  done(): Promise<void>;
}

let counter = 0;

export async function harness(opts: Partial<DaemonOptions> & { start?: boolean } = {}): Promise<Harness> {
  const repo = makeRepo();
  repo.commit({ 'nodes.yaml': NODES, 'files.yaml': motd('first\n') }, 'initial');
  const source = await openSource({ repo: repo.dir, branch: 'main' });
  const lines: string[] = [];
  const log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''));
        cb();
      },
    }),
  });
  const rec = recorder();
  const stateFile = opts.stateFile ?? join(tempDir('state'), 'state.json');
  const daemon = new Daemon({ source, reconcile: rec.fn, log, intervalMs: 0, backoffBaseMs: 40, backoffCapMs: 200, stateFile, ...opts });
  if (opts.start !== false) await daemon.start();
  return {
    repo,
    source,
    daemon,
    rec,
    log,
    get logs() {
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    rawLogs: () => lines.join('\n'),
    stateFile,
    commit(files) {
      if (typeof files === 'string' || files === undefined) return repo.commit({ 'files.yaml': motd(files ?? `change ${++counter}\n`) });
      return repo.commit(files);
    },
    async done() {
      await daemon.stop();
      repo.remove();
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Wait until `cond` holds, polling; fails after `ms`. */
export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}
