/**
 * Node names and their addresses on the lab bridge. cp-a, cp-b, cp-c sit at
 * the etcd chapter's addresses, and every cp-<letter> has a fixed address so
 * that desired-state files can name it before the node exists.
 */
import { LabError } from '../errors/index.js';

/** Machine names become the host-side veth "vb-<name>", which must fit in 15 characters. */
const NAME = /^[a-z][a-z0-9-]{0,11}$/;

export function checkNodeName(name: string): void {
  if (!NAME.test(name) || name.endsWith('-')) {
    throw new LabError(`invalid lab node name "${name}"`, 'use 1-12 characters: lowercase letters, digits and "-", starting with a letter (e.g. cp-d)');
  }
}

/**
 * cp-<letter k> (a=0): 10.240.(16+32k).10 for k < 8, then the same eight
 * subnets again with host part 11, 12, … (cp-i is 10.240.16.11).
 */
export function fixedAddress(name: string): string | null {
  const m = /^cp-([a-z])$/.exec(name);
  if (!m) return null;
  const k = m[1]!.charCodeAt(0) - 'a'.charCodeAt(0);
  return `10.240.${16 + 32 * (k % 8)}.${10 + Math.floor(k / 8)}`;
}

/** The address for `name`: its fixed one, else the first free one from 10.240.1.10 on. */
export function allocateAddress(name: string, taken: ReadonlySet<string>): string {
  const fixed = fixedAddress(name);
  if (fixed !== null) {
    if (taken.has(fixed)) throw new LabError(`address ${fixed} of node ${name} is already in use in the lab`);
    return fixed;
  }
  for (let third = 1; third < 255; third++) {
    if ((third - 16) % 32 === 0 && third >= 16) continue;
    for (let host = 10; host < 250; host++) {
      const a = `10.240.${third}.${host}`;
      if (!taken.has(a)) return a;
    }
  }
  throw new LabError('no free address left in 10.240.0.0/16');
}

export function veth(name: string): string {
  return `vb-${name}`;
}
