// systemd's own tools on systemd/converge.service: `systemd-analyze verify`
// accepts it without a warning, and `systemd-analyze security` rates its
// hardening. systemd-analyze comes with the host packages the lab installs.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ensureHostPackages, requireRoot } from '../../src/lab/prereq.js';
import { projectDir } from '../helpers/lab.js';

const unit = join(projectDir, 'systemd/converge.service');

function analyze(...args: string[]): { code: number; out: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8' });
  if (r.error) throw new Error(`systemd-analyze cannot run (${(r.error as NodeJS.ErrnoException).code}) even after the lab's host packages were installed`);
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

test.before(async () => {
  requireRoot();
  await ensureHostPackages((line) => process.stderr.write(`  [lab] ${line}\n`));
});

test('systemd-analyze verify accepts the unit without a single warning', () => {
  const r = analyze('verify', unit);
  assert.is(r.code, 0, r.out);
  assert.is(r.out.trim(), '', `verify printed:\n${r.out}`);
});

test('systemd-analyze security rates the unit OK (exposure ≤ 2.0) and parses every line', () => {
  const r = analyze('security', '--offline=yes', unit);
  assert.not.match(r.out, /Invalid syntax|Unknown key|ignoring/i);
  const m = /Overall exposure level for converge\.service: ([\d.]+)/.exec(r.out);
  assert.ok(m, r.out);
  assert.ok(Number(m![1]) <= 2.0, `exposure ${m![1]}`);
  console.log(`\n  figures: systemd-analyze security exposure ${m![1]}`);
});

test.run();
