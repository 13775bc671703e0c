// The Git server goes away and comes back: the loop keeps enforcing the last
// good commit from its cache, reports the error, backs off, and recovers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../../src/daemon/log.js';
import { Daemon } from '../../../src/daemon/loop.js';
import { openSource } from '../../../src/source/git.js';
import { tempDir } from '../source/_repo.js';
import { startTestGitServer } from '../source/_gitserver.js';
import { NODES, motd, recorder, until } from './_harness.js';

test('Git server down: the last good commit is still enforced, the error reported; back up: the new commit applies', async () => {
  const srv = await startTestGitServer({ 'ds/nodes.yaml': NODES, 'ds/files.yaml': motd('one\n') });
  const rec = recorder();
  const source = await openSource({ repo: srv.url, branch: 'main', path: 'ds', cacheDir: tempDir('cache'), auth: srv.creds, env: {} });
  const daemon = new Daemon({ source, reconcile: rec.fn, log: createLogger({ level: process.env['DEBUG_LOG'] ? 'debug' : 'silent' }), intervalMs: 0, backoffBaseMs: 50, backoffCapMs: 200 });
  try {
    await daemon.start();
    await daemon.idle();
    const good = rec.calls[0]!.commit;
    assert.is(daemon.status().lastGood, good);

    await srv.down();
    daemon.trigger('webhook');
    await until(() => rec.calls.length >= 3, 5000, 'passes while the server is down');
    await daemon.idle();
    const st = daemon.status();
    assert.is(st.source.ok, false);
    assert.match(st.source.error ?? '', /cannot connect to the Git server at 127\.0\.0\.1:\d+: connection refused/);
    assert.is(st.lastPass?.result, 'failed');
    assert.is(st.lastPass?.role, 'last-good');
    assert.ok(st.consecutiveFailures >= 2);
    // Every pass meanwhile enforced the last good commit, read from the cache.
    assert.ok(rec.calls.slice(1).every((c) => c.commit === good && c.motd === 'one\n'));
    assert.is(st.commitApplied, good);

    await srv.up();
    const next = await srv.push({ 'ds/nodes.yaml': NODES, 'ds/files.yaml': motd('two\n') });
    // The push's webhook (or the next poll).
    daemon.trigger('webhook');
    await until(() => daemon.status().commitApplied === next, 5000, 'the new commit after the server returned');
    await daemon.idle();
    assert.is(daemon.status().source.ok, true);
    assert.is(daemon.status().consecutiveFailures, 0);
    assert.is(rec.calls.at(-1)!.motd, 'two\n');
  } finally {
    await daemon.stop();
    await srv.stop();
  }
});

test.run();
