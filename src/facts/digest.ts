/**
 * The digest of a set of facts, which a saved plan carries so that apply can
 * refuse it when the nodes changed since. Pure.
 */
import { createHash } from 'node:crypto';
import type { NodeFacts } from './types.js';

/** JSON with object keys sorted at every level; undefined members are left out, as JSON.stringify does. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const s = JSON.stringify(value);
    return s === undefined ? 'null' : s;
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.keys(value)
    .sort()
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

/** sha256 (hex) of the canonical JSON of the facts, in node-name order. */
export function factsDigest(facts: readonly NodeFacts[]): string {
  // The digest cache says how the digests were obtained, not what is on the node.
  const byNode = [...facts].map(({ digestCache: _, ...f }) => f).sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  return createHash('sha256').update(canonicalJson(byNode)).digest('hex');
}
