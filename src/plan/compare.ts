/**
 * Small comparisons shared by the host planner and the drift report, so that
 * both agree on what "differs" means (modes written "750" or "0750", owners
 * seen by name or, once the account is gone, by number).
 */
import type { PathFact, UnitFact } from '../facts/types.js';

type ExistingPath = Extract<PathFact, { exists: true }>;

/** "750", "0750" and "00750" are the same mode: 4 octal digits. */
export function normalizeMode(mode: string): string {
  if (!/^[0-7]+$/.test(mode)) return mode;
  const n = parseInt(mode, 8);
  return n <= 0o7777 ? n.toString(8).padStart(4, '0') : mode;
}

export function ownerMatches(fact: ExistingPath, want: string): boolean {
  return fact.owner === want || (/^\d+$/.test(want) && fact.uid === Number(want));
}

export function groupMatches(fact: ExistingPath, want: string): boolean {
  return fact.group === want || (/^\d+$/.test(want) && fact.gid === Number(want));
}

const UNIT_DIRS = ['/etc/systemd/system/', '/run/systemd/system/', '/usr/local/lib/systemd/system/', '/usr/lib/systemd/system/', '/lib/systemd/system/'];

/** A unit file or drop-in that systemd reads only after a daemon-reload. */
export function isUnitFilePath(path: string): boolean {
  return UNIT_DIRS.some((d) => path.startsWith(d));
}

/** `/a/b/c` → [`/a`, `/a/b`]. */
export function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  for (let i = path.indexOf('/', 1); i > 0; i = path.indexOf('/', i + 1)) out.push(path.slice(0, i));
  return out;
}

export function isUnder(path: string, dir: string): boolean {
  const d = dir.endsWith('/') ? dir : dir + '/';
  return path.startsWith(d);
}

/** A unit the facts did not list is treated as systemd would show it: not found. */
export function unitOrNotFound(units: Record<string, UnitFact>, unit: string): UnitFact {
  return units[unit] ?? { unit, loadState: 'not-found', activeState: 'inactive', unitFileState: '', needDaemonReload: false };
}

export function isRunning(u: UnitFact): boolean {
  return u.activeState === 'active' || u.activeState === 'reloading';
}

export function isEnabled(u: UnitFact): boolean {
  return u.unitFileState === 'enabled';
}

/** Supplementary groups without the primary group, sorted: `id -Gn` lists the primary one too. */
export function supplementaryGroups(groups: string[], primary: string): string[] {
  return [...new Set(groups.filter((g) => g !== primary))].sort();
}

export function byString<T>(key: (t: T) => string): (a: T, b: T) => number {
  return (a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
}
