// The ref watch of a local repository against real `git commit`s: every
// commit is noticed, even two that land within chokidar's 50 ms change
// throttle, and work that moves no watched ref is not reported.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { watchLocalRefs } from '../../../src/source/refwatch.js';
import { git, makeRepo } from './_repo.js';

/** Records onChange calls; next() resolves with the next one, or null after `ms`. */
class Changes {
  readonly seen: string[] = [];
  private waiting: ((p: string) => void)[] = [];
  readonly onChange = (p: string): void => {
    this.seen.push(p);
    this.waiting.shift()?.(p);
  };
  next(ms: number): Promise<string | null> {
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(null), ms);
      this.waiting.push((p) => {
        clearTimeout(t);
        resolve(p);
      });
    });
  }
}

test('two commits 0-50 ms apart: each is reported after its ref moved', async () => {
  const repo = makeRepo();
  repo.commit({ a: '0' });
  const c = new Changes();
  const w = await watchLocalRefs({ gitdir: join(repo.dir, '.git'), branch: 'main', onChange: c.onChange, debounceMs: 5 });
  try {
    for (let i = 1; i <= 5; i++) {
      const first = c.next(5000);
      const a = repo.commit({ a: `${i}a` });
      assert.is(await first, join(repo.dir, '.git', 'refs', 'heads', 'main'), `commit ${i}a`);
      // The second commit right away: well inside the 50 ms in which chokidar drops a repeated change.
      const second = c.next(5000);
      const b = repo.commit({ a: `${i}b` });
      assert.ok(a !== b);
      assert.ok((await second) !== null, `commit ${i}b, right after ${i}a, was not reported`);
      assert.is(repo.head(), b);
    }
  } finally {
    await w.close();
    repo.remove();
  }
});

test('a commit on another branch moves no watched ref: nothing is reported', async () => {
  const repo = makeRepo();
  repo.commit({ a: '0' });
  git(repo.dir, 'branch', 'other');
  const c = new Changes();
  const w = await watchLocalRefs({ gitdir: join(repo.dir, '.git'), branch: 'main', onChange: c.onChange, debounceMs: 5 });
  try {
    const next = c.next(800);
    git(repo.dir, 'update-ref', 'refs/heads/other', git(repo.dir, 'commit-tree', '-m', 'x', 'HEAD^{tree}'));
    assert.is(await next, null, `reported ${c.seen.join(', ')}`);
  } finally {
    await w.close();
    repo.remove();
  }
});

test.run();
