// `converge watch` as a process, minus the CLI: the same startWatch and
// signal handling, with a pass that works in steps until it is told to stop.
// Used by triggers.test.ts to send it a real SIGTERM.
import { createLogger } from '../../../src/daemon/log.js';
import { startWatch } from '../../../src/daemon/service.js';
import { stopOnSignals } from '../../../src/daemon/signals.js';
import { openSource } from '../../../src/source/git.js';

const [repo, stateFile] = process.argv.slice(2);
if (repo === undefined || stateFile === undefined) throw new Error('usage: _watch-child.ts REPO STATEFILE');
const log = createLogger();
const source = await openSource({ repo, branch: 'main' });
const service = await startWatch({
  source,
  log,
  stateFile,
  listen: '127.0.0.1:0',
  intervalMs: 0,
  reconcile: async (job) => {
    job.log.info({ commit: job.commit }, 'test pass running');
    while (!job.signal.aborted) await new Promise((r) => setTimeout(r, 10));
    job.log.info('test pass: abort seen, finishing the current step');
    await new Promise((r) => setTimeout(r, 300));
    job.log.info('test pass: step finished');
    return { outcome: 'aborted', error: 'stopped' };
  },
});
stopOnSignals(service, log);
