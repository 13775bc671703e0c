// systemd/converge.service holds the settings the issue asks for, and the
// example environment file names only settings converge reads. (systemd's
// own verifier runs on it in test/lab/watch-systemd.test.ts: systemd-analyze
// comes with the lab's host packages.)
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CONFIG_KEYS, envName } from '../../../src/cli/config.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const unit = join(root, 'systemd/converge.service');
const example = join(root, 'systemd/converge.env.example');

function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      continue;
    }
    const i = line.indexOf('=');
    const key = `${section}.${line.slice(0, i)}`;
    out.set(key, [...(out.get(key) ?? []), line.slice(i + 1)]);
  }
  return out;
}

test('the hardening and restart settings the issue asks for are there', () => {
  const d = directives(readFileSync(unit, 'utf8'));
  const one = (k: string): string | undefined => d.get(k)?.at(-1);
  assert.is(one('Service.NoNewPrivileges'), 'yes');
  assert.is(one('Service.ProtectSystem'), 'strict');
  assert.is(one('Service.PrivateTmp'), 'yes');
  assert.is(one('Service.ProtectHome'), 'read-only');
  assert.is(one('Service.Restart'), 'on-failure');
  assert.ok(one('Service.RestartSec'));
  assert.is(one('Service.StateDirectory'), 'converge');
  assert.ok(one('Service.ReadWritePaths')?.split(/\s+/).includes('/var/lib/converge'));
  assert.is(one('Service.EnvironmentFile'), '-/etc/converge/converge.env');
  assert.match(one('Service.ExecStart') ?? '', / watch$/);
  assert.equal(d.get('Service.LoadCredential')?.map((v) => v.split(':')[0]), ['git-token', 'webhook-secret']);
  assert.is(one('Service.KillSignal'), 'SIGTERM');
  assert.ok(Number(one('Service.TimeoutStopSec')) >= 60, 'a pass needs time to finish its step');
});

/** Every CONVERGE_* name that appears in converge's sources. */
function namesInSource(): Set<string> {
  const names = new Set<string>(CONFIG_KEYS.map(envName));
  const walk = (dir: string): void => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) for (const m of readFileSync(p, 'utf8').matchAll(/CONVERGE_[A-Z_]+/g)) names.add(m[0]);
    }
  };
  walk(join(root, 'src'));
  return names;
}

test('converge.env.example names only settings converge reads, and holds no secret', () => {
  const text = readFileSync(example, 'utf8');
  const known = namesInSource();
  const used = [...text.matchAll(/^#?(CONVERGE_[A-Z_]+)=/gm)].map((m) => m[1]!);
  assert.ok(used.length >= 8);
  for (const name of used) assert.ok(known.has(name), `${name} in converge.env.example is read by nothing in src/`);
  const active = text.split('\n').filter((l) => /^CONVERGE_/.test(l));
  for (const l of active) assert.not.match(l, /^CONVERGE_(GIT_TOKEN|GIT_PASSWORD|WEBHOOK_SECRET)=/, `a secret in the environment file: ${l}`);
});

test.run();
