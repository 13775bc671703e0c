// Every case under test/fixtures/model/ is a small desired-state root with the
// exact diagnostics it must produce: adding a case is adding a folder.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDiagnostic } from '../../../src/errors/index.js';
import { validateDesiredState, type ResolveOptions } from '../../../src/model/index.js';

const base = resolve(dirname(fileURLToPath(import.meta.url)), '../../fixtures/model');
const cases = readdirSync(base).filter((c) => statSync(join(base, c)).isDirectory()).sort();

const REQUIRED = [
  'malformed-yaml',
  'wrong-type',
  'unknown-field',
  'unknown-kind',
  'wrong-api-version',
  'duplicate-name',
  'dangling-reference',
  'conflicting-paths',
  'relative-path',
  'dotdot-path',
  'control-char-path',
  'unknown-template-variable',
  'bad-mode',
  'bad-sha256',
  'alias-bomb',
  'deep-nesting',
  'shell-hostile-unit',
  'invalid-user-name',
  'missing-secret',
  'artifact-mismatch',
];

test('every required bad input has a fixture', () => {
  for (const r of REQUIRED) assert.ok(cases.includes(r), `missing fixture ${r}`);
});

for (const c of cases) {
  test(`fixture ${c}`, async () => {
    const dir = join(base, c);
    const opts: ResolveOptions = {};
    const optsFile = join(dir, 'options.json');
    if (existsSync(optsFile)) {
      const o = JSON.parse(readFileSync(optsFile, 'utf8')) as { secretsDir?: string; artifactsDir?: string };
      if (o.secretsDir) opts.secretsDir = resolve(dir, o.secretsDir);
      if (o.artifactsDir) opts.artifactsDir = resolve(dir, o.artifactsDir);
    }
    const expected = readFileSync(join(dir, 'expected.txt'), 'utf8').trimEnd();
    const r = await validateDesiredState(dir, opts);
    const actual = r.diagnostics.map(formatDiagnostic).join('\n').split(dir).join('$FIXTURE');
    assert.fixture(actual, expected);
    const hasError = r.diagnostics.some((d) => d.severity === 'error');
    assert.is(r.state === null, hasError, 'state is null exactly when there are errors');
    assert.ok(hasError || r.diagnostics.length > 0, 'a fixture shows at least one diagnostic');
  });
}

test.run();
