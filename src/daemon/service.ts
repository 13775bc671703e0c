/**
 * `converge watch` put together: the loop, its HTTP listener(s), and for a
 * local repository the ref watch. cli/ parses flags and supplies the
 * reconcile pass; this wires the rest so that tests run exactly what runs.
 */
import type { Logger } from 'pino';
import type { Source } from '../source/git.js';
import { watchLocalRefs, type RefWatch } from '../source/refwatch.js';
import { startHttp, DEFAULT_LISTEN, type HttpHandle } from './http.js';
import type { Leadership } from './leader.js';
import { Daemon } from './loop.js';
import type { Mode, ReconcileFn } from './types.js';

export interface WatchConfig {
  source: Source;
  reconcile: ReconcileFn;
  log: Logger;
  mode?: Mode;
  intervalMs?: number;
  /** Where the loop keeps the last good and the rejected commit. */
  stateFile?: string;
  /** Status, metrics, controls (and the webhook unless webhookListen is set). Default 127.0.0.1:9479. */
  listen?: string;
  /** A second listener serving only POST /hooks/git, e.g. on the address the Git server can reach. */
  webhookListen?: string;
  webhookSecret?: Buffer | null;
  /** Watch a local repository's refs (default: yes for a local repository). */
  watchRefs?: boolean;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  requestTimeoutMs?: number;
  /** Return the nodes of a halted rollout to the last good commit. */
  rollback?: boolean;
  /** Several watchers: reconcile only while elected. */
  leadership?: Leadership;
}

export interface WatchService {
  daemon: Daemon;
  servers: HttpHandle[];
  /** Stop accepting triggers and requests; let the pass under way finish its step. */
  stop(): Promise<void>;
}

export async function startWatch(c: WatchConfig): Promise<WatchService> {
  const daemon = new Daemon({
    source: c.source,
    reconcile: c.reconcile,
    log: c.log,
    ...(c.mode === undefined ? {} : { mode: c.mode }),
    ...(c.intervalMs === undefined ? {} : { intervalMs: c.intervalMs }),
    ...(c.stateFile === undefined ? {} : { stateFile: c.stateFile }),
    ...(c.backoffBaseMs === undefined ? {} : { backoffBaseMs: c.backoffBaseMs }),
    ...(c.backoffCapMs === undefined ? {} : { backoffCapMs: c.backoffCapMs }),
    ...(c.rollback === undefined ? {} : { rollback: c.rollback }),
    ...(c.leadership === undefined ? {} : { leadership: c.leadership }),
  });
  const secret = c.webhookSecret ?? null;
  const hook = secret === null ? null : { secret, branch: c.source.branch };
  const timeouts = c.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: c.requestTimeoutMs };
  const servers: HttpHandle[] = [];
  let refs: RefWatch | null = null;
  try {
    servers.push(await startHttp({ daemon, log: c.log, listen: c.listen ?? DEFAULT_LISTEN, webhook: c.webhookListen === undefined ? hook : null, ...timeouts }));
    if (c.webhookListen !== undefined) {
      servers.push(await startHttp({ daemon, log: c.log, listen: c.webhookListen, routes: 'webhook', webhook: hook, ...timeouts }));
    }
    if (hook === null) c.log.info('no webhook secret: POST /hooks/git is off');
    if (c.source.kind === 'local' && c.watchRefs !== false) {
      const log = c.log.child({ component: 'refwatch' });
      refs = await watchLocalRefs({
        gitdir: c.source.gitdir,
        branch: c.source.branch,
        onChange: (path) => {
          log.debug({ path }, 'ref changed');
          daemon.trigger('watch');
        },
        onError: (e) => log.warn({ error: e.message }, 'ref watch error; polling still runs'),
      });
    }
  } catch (e) {
    await Promise.all(servers.map((s) => s.close()));
    throw e;
  }
  await daemon.start();
  let stopping: Promise<void> | null = null;
  return {
    daemon,
    servers,
    stop() {
      stopping ??= (async () => {
        await refs?.close();
        await daemon.stop();
        await Promise.all(servers.map((s) => s.close()));
      })();
      return stopping;
    },
  };
}
