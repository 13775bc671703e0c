/**
 * Change trigger for a local repository: a watch on the branch's ref (loose
 * under refs/heads, or in packed-refs) and on HEAD, so that a `git commit`
 * there is noticed at once instead of at the next poll. Git writes a ref as
 * `<ref>.lock` and renames it over the ref, so lock files are ignored and the
 * rename itself is the event.
 */
import { join, sep } from 'node:path';
import { watch } from 'chokidar';

export interface RefWatch {
  close(): Promise<void>;
}

export interface RefWatchOptions {
  gitdir: string;
  branch: string;
  /** Called once per burst of ref changes (a commit touches several files). */
  onChange: (path: string) => void;
  onError?: (err: Error) => void;
  /** Quiet time that closes a burst, ms. */
  debounceMs?: number;
}

export async function watchLocalRefs(o: RefWatchOptions): Promise<RefWatch> {
  const heads = join(o.gitdir, 'refs', 'heads');
  const wanted = new Set([join(heads, ...o.branch.split('/')), join(o.gitdir, 'packed-refs'), join(o.gitdir, 'HEAD')]);
  const allowed = (p: string): boolean => p === o.gitdir || p === heads || wanted.has(p) || (p.startsWith(heads + sep) && !p.endsWith('.lock'));
  const watcher = watch([o.gitdir, heads], {
    ignoreInitial: true,
    atomic: false,
    ignored: (p: string) => !allowed(p),
  });
  let timer: NodeJS.Timeout | null = null;
  let last = '';
  const fire = (path: string): void => {
    if (!wanted.has(path)) return;
    last = path;
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      o.onChange(last);
    }, o.debounceMs ?? 20);
  };
  watcher.on('add', fire).on('change', fire).on('unlink', fire);
  // chokidar drops a second 'change' of one path within 50 ms of the first
  // (its throttle), and two commits can be that close: the raw events of the
  // directory and file watches are not throttled.
  watcher.on('raw', (_event: string, name: unknown, details: unknown) => {
    const dir = (details as { watchedPath?: unknown } | null)?.watchedPath;
    if (typeof dir !== 'string' || typeof name !== 'string') return;
    fire(wanted.has(dir) ? dir : join(dir, name));
  });
  watcher.on('error', (e) => o.onError?.(e instanceof Error ? e : new Error(String(e))));
  await new Promise<void>((resolve) => watcher.once('ready', () => resolve()));
  return {
    async close() {
      if (timer !== null) clearTimeout(timer);
      await watcher.close();
    },
  };
}
