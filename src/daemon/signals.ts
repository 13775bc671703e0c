/**
 * Shutdown on SIGTERM/SIGINT as systemd expects: stop accepting triggers and
 * requests, let the pass under way finish its current step, exit 0. A second
 * signal does not cut the step short (systemd's TimeoutStopSec is the limit):
 * a half-written file or a half-added etcd member is worse than a slow stop.
 */
import type { Logger } from 'pino';
import type { Daemon } from './loop.js';
import type { HttpHandle } from './http.js';

export interface StopOnSignalOptions {
  daemon: Daemon;
  servers: HttpHandle[];
  /** Closed before the daemon stops (e.g. the local ref watch). */
  closers?: (() => Promise<void>)[];
  log: Logger;
  exit?: (code: number) => void;
}

export function stopOnSignals(o: StopOnSignalOptions): { stopped: Promise<void> } {
  let stopping: Promise<void> | null = null;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping !== null) {
      o.log.warn({ signal }, 'already stopping: waiting for the current step to finish');
      return;
    }
    o.log.info({ signal }, 'signal received: finishing the current step, then exiting');
    stopping = (async () => {
      for (const c of o.closers ?? []) await c().catch(() => undefined);
      // Stop the loop first (no new pass), then the listeners, so /healthz answers until the end of the step.
      await o.daemon.stop();
      await Promise.all(o.servers.map((s) => s.close()));
      o.log.info('stopped');
      resolveStopped();
      (o.exit ?? ((code: number) => process.exit(code)))(0);
    })();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return { stopped };
}
