/** Host mounts the lab makes (node overlays) and finding the ones left behind. */
import { readFileSync } from 'node:fs';
import { LabError } from '../errors/index.js';
import { run, runOk } from './proc.js';

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points of the host (this process's mount namespace). */
export function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => unescape(l.split(' ')[4] ?? ''));
}

export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return mountPoints().filter((m) => m === dir || m.startsWith(prefix));
}

export function isMounted(path: string): boolean {
  return mountPoints().includes(path);
}

/** Unmount everything at or below `dir`, deepest first; lazily if busy. */
export async function unmountUnder(dir: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const ms = mountsUnder(dir).sort((a, b) => b.length - a.length);
    if (ms.length === 0) return;
    for (const m of ms) {
      const r = await run('umount', [m]);
      if (r.code !== 0) await run('umount', ['-l', m]);
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) throw new LabError(`cannot unmount ${left.join(', ')}`, 'stop the processes using them (fuser -m PATH), then run lab down again');
}

export async function mountOverlay(lower: string, upper: string, work: string, target: string): Promise<void> {
  await runOk('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, target], { what: `mounting the overlay on ${target}` });
}
