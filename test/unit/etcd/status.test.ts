// The status report (pure): healthy only when every member node runs etcd,
// every desired member is a started, healthy voter, all agree on one leader
// and no alarm is raised. Cases are data: test/fixtures/etcd/status/*.json
// hold the facts as gathered and the expected verdict and problems.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildStatusReport, renderStatusJson, renderStatusText, type UnitState } from '../../../src/report/status.js';
import type { EtcdFacts } from '../../../src/facts/types.js';
import { statusSpec } from './helpers/status-spec.js';

const dir = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/etcd/status');

interface Fixture {
  description: string;
  members: string[];
  etcd: EtcdFacts;
  units: Record<string, UnitState>;
  expect: { healthy: boolean; problems: string[]; text: string[]; leader?: string | null };
}

for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
  const f = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Fixture;
  test(`${file}: ${f.description}`, () => {
    const r = buildStatusReport(statusSpec(f.members), f.etcd, f.units, { checkedAt: '2026-01-01T00:00:00.000Z', elapsedMs: 12 });
    assert.is(r.healthy, f.expect.healthy, r.problems.join('; '));
    assert.equal(r.problems, f.expect.problems);
    if (f.expect.leader !== undefined) assert.is(r.leader?.name ?? null, f.expect.leader);
    const text = renderStatusText(r);
    for (const re of f.expect.text) assert.match(text, new RegExp(re, 'm'));
    const json = JSON.parse(renderStatusJson(r)) as typeof r;
    assert.equal(json, r);
    for (const m of json.members) assert.type(m.id, 'string');
  });
}

test.run();
