// The facts digest: stable under key and node order, sensitive to any fact.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canonicalJson, factsDigest } from '../../../src/facts/digest.js';
import type { NodeFacts } from '../../../src/facts/types.js';

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/facts');
const recorded = (name: string): NodeFacts => JSON.parse(readFileSync(`${fixtures}/${name}/facts.json`, 'utf8'));

/** The same value with every object's keys in reverse order. */
function reversed(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(reversed);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(Object.keys(v).reverse().map((k) => [k, reversed((v as Record<string, unknown>)[k])]));
}

test('canonical JSON sorts keys at every level, keeps array order, drops undefined', () => {
  assert.is(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } }), '{"a":{"d":[3,{"y":2,"z":1}]},"b":1}');
  assert.is(canonicalJson([undefined, 'é\n']), '[null,"é\\n"]');
  assert.is(canonicalJson(null), 'null');
});

test('digest ignores key order and node order', () => {
  const a = recorded('local-hostile');
  const b = recorded('lab-cp-a');
  const d = factsDigest([a, b]);
  assert.match(d, /^[0-9a-f]{64}$/);
  assert.is(factsDigest([b, a]), d);
  assert.is(factsDigest([reversed(a) as NodeFacts, reversed(b) as NodeFacts]), d);
});

test('digest changes when any single fact changes', () => {
  const a = recorded('lab-cp-a');
  const d = factsDigest([a]);
  const mutations: ((f: NodeFacts) => void)[] = [
    (f) => {
      const p = Object.values(f.paths).find((x) => x.exists);
      if (p && p.exists) p.mode = p.mode === '0644' ? '0640' : '0644';
    },
    (f) => {
      const u = Object.values(f.units)[0]!;
      u.activeState = 'failed';
    },
    (f) => {
      f.users['root']!.shell = '/bin/sh';
    },
    (f) => {
      f.etcdDataDir = { path: '/var/lib/etcd', exists: true, empty: false };
    },
    (f) => {
      f.inventory = { commit: null, appliedAt: 'x', resources: {} };
    },
  ];
  for (const m of mutations) {
    const copy = structuredClone(a);
    m(copy);
    assert.is.not(factsDigest([copy]), d);
  }
});

test.run();
