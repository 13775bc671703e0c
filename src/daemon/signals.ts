/**
 * Shutdown on SIGTERM/SIGINT as systemd expects: stop accepting triggers and
 * requests, let the pass under way finish its current step, exit 0. A second
 * signal does not cut the step short (systemd's TimeoutStopSec is the limit):
 * a half-written file or a half-added etcd member is worse than a slow stop.
 */
import type { Logger } from 'pino';
import type { WatchService } from './service.js';

export function stopOnSignals(service: WatchService, log: Logger, exit: (code: number) => void = (code) => process.exit(code)): void {
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn({ signal }, 'already stopping: waiting for the current step to finish');
      return;
    }
    stopping = true;
    log.info({ signal }, 'signal received: finishing the current step, then exiting');
    service.stop().then(
      () => {
        log.info('stopped');
        exit(0);
      },
      (e: unknown) => {
        log.error({ error: (e as Error).message }, 'error while stopping');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
