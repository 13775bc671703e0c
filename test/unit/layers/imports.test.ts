// Keeps the layers of ../shared/DESIGN.md honest: imports point down only,
// and plan/ (the pure planner) reaches nothing that does I/O.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../../src');

/** Which src/ folders each folder may import (errors/ is open to all). */
const allowed: Record<string, string[]> = {
  cli: ['daemon', 'reconcile', 'source', 'model', 'facts', 'plan', 'apply', 'report', 'connect', 'lab', 'errors'],
  daemon: ['reconcile', 'report', 'source', 'model', 'errors'],
  reconcile: ['source', 'model', 'facts', 'plan', 'apply', 'report', 'connect', 'errors'],
  source: ['model', 'errors'],
  model: ['errors'],
  facts: ['connect', 'model', 'errors'],
  plan: ['model', 'errors'],
  apply: ['connect', 'facts', 'plan', 'model', 'errors'],
  report: ['plan', 'model', 'errors'],
  connect: ['errors'],
  lab: ['connect', 'errors'],
  errors: [],
};
/** Data-only contracts that may be imported as types from anywhere below cli. */
const typeOnly = new Set(['facts/types.ts', 'plan/types.ts', 'model/types.ts']);
/** Node built-ins that mean I/O; plan/ may use none of them. */
const ioModules = /^(node:)?(fs|fs\/promises|child_process|net|tls|http|https|dgram|dns|worker_threads|cluster|readline|process)$/;
const ioPackages = new Set(['ssh2', 'etcd3', 'isomorphic-git', 'chokidar', 'pino', 'prom-client']);

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return walk(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

interface Import { spec: string; typeOnly: boolean; line: number }

function importsOf(file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const out: Import[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of text.matchAll(re)) {
    const spec = m[3] ?? m[4];
    if (!spec) continue;
    const line = text.slice(0, m.index).split('\n').length;
    out.push({ spec, typeOnly: Boolean(m[2]), line });
  }
  return out;
}

const files = walk(src);

test('every src folder is a known layer', () => {
  const folders = new Set(files.map((f) => relative(src, f).split('/')[0] ?? ''));
  for (const f of folders) assert.ok(f in allowed, `src/${f}/ is not a layer of DESIGN.md; add it to the table here and in DESIGN.md`);
});

test('imports point down the layers', () => {
  const wrong: string[] = [];
  for (const file of files) {
    const rel = relative(src, file);
    const layer = rel.split('/')[0] ?? '';
    for (const imp of importsOf(file)) {
      if (!imp.spec.startsWith('.')) continue;
      const target = relative(src, resolve(dirname(file), imp.spec)).replace(/\.js$/, '.ts');
      const targetLayer = target.split('/')[0] ?? '';
      if (targetLayer === layer) continue;
      if (imp.typeOnly && typeOnly.has(target) && layer !== 'errors') continue;
      if (!(allowed[layer] ?? []).includes(targetLayer)) wrong.push(`src/${rel}:${imp.line} imports ${imp.spec} (${layer} → ${targetLayer})`);
    }
  }
  assert.equal(wrong, [], wrong.join('\n'));
});

test('plan/ does no I/O', () => {
  const wrong: string[] = [];
  for (const file of files.filter((f) => relative(src, f).startsWith('plan/'))) {
    for (const imp of importsOf(file)) {
      if (ioModules.test(imp.spec) || ioPackages.has(imp.spec)) wrong.push(`src/${relative(src, file)}:${imp.line} imports ${imp.spec}`);
    }
    const text = readFileSync(file, 'utf8');
    if (/\bprocess\.|Date\.now\(|new Date\(\)/.test(text)) wrong.push(`src/${relative(src, file)} reads the process or the clock`);
  }
  assert.equal(wrong, [], wrong.join('\n'));
});

test('the checker itself sees a wrong import', () => {
  const found = importsOf(fileURLToPath(import.meta.url)).map((i) => i.spec);
  assert.ok(found.includes('node:fs'));
});

test.run();
