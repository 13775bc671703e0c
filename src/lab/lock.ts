/**
 * One lab operation at a time per machine. The lock is a file created with
 * O_EXCL holding the owner's PID and start time; a lock whose owner is gone
 * (a crashed run) is stale and is taken over. A lab operation that calls
 * another one inside the same async flow re-enters the lock it already holds.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { LabError } from '../errors/index.js';
import { isSameProcess, pidStart, sleep } from './proc.js';

const holding = new AsyncLocalStorage<string>();

interface Owner {
  pid: number;
  start: number;
}

function readOwner(file: string): Owner | null {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as Partial<Owner>;
    return typeof o.pid === 'number' && typeof o.start === 'number' ? { pid: o.pid, start: o.start } : null;
  } catch {
    return null;
  }
}

function tryAcquire(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  writeSync(fd, JSON.stringify({ pid: process.pid, start: pidStart(process.pid) }));
  closeSync(fd);
  return true;
}

/**
 * Remove a stale lock without racing another process doing the same: only the
 * holder of `<lock>.takeover` may remove it, and only if the dead owner is still
 * the one recorded (else someone already took the lock over).
 */
function removeStale(file: string, dead: Owner): void {
  const guard = `${file}.takeover`;
  try {
    if (Date.now() - statSync(guard).mtimeMs > 10_000) rmSync(guard, { force: true });
  } catch {
    // no guard: nobody is taking over
  }
  if (!tryAcquire(guard)) return;
  try {
    const now = readOwner(file);
    if (now !== null && now.pid === dead.pid && now.start === dead.start) rmSync(file, { force: true });
  } finally {
    rmSync(guard, { force: true });
  }
}

/** Run `fn` holding the lab lock; waits up to `waitMs` for another lab run to finish. */
export async function withLock<T>(file: string, fn: () => Promise<T>, opts: { waitMs?: number; onWait?: (ownerPid: number) => void } = {}): Promise<T> {
  if (holding.getStore() === file) return fn();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const until = Date.now() + (opts.waitMs ?? 15 * 60_000);
  let told = false;
  let unreadableSince = 0;
  for (;;) {
    if (tryAcquire(file)) break;
    const owner = readOwner(file);
    if (owner === null) {
      // Being written this instant, or left half-written by a crash: give the writer a moment.
      if (unreadableSince === 0) unreadableSince = Date.now();
      else if (Date.now() - unreadableSince > 2000) rmSync(file, { force: true });
      await sleep(50);
      continue;
    }
    unreadableSince = 0;
    if (!isSameProcess(owner.pid, owner.start)) {
      removeStale(file, owner);
      continue;
    }
    if (!told) opts.onWait?.(owner.pid);
    told = true;
    if (Date.now() > until) {
      throw new LabError(`another lab run (pid ${owner.pid}) holds the lab lock ${file}`, 'wait for it to finish, or stop that process');
    }
    await sleep(200);
  }
  try {
    return await holding.run(file, fn);
  } finally {
    rmSync(file, { force: true });
  }
}
