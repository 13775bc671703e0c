// The validators are compiled from schemas/ at build time: the committed
// module must be exactly what the schemas compile to, and must reject what the
// schemas reject.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { GENERATED_VALIDATORS, generateValidators } from '../../../src/model/validate-gen.js';
import { validateDocument } from '../../../src/model/schema.js';

test('the generated validators are up to date (run `npm run gen`)', () => {
  assert.ok(readFileSync(GENERATED_VALIDATORS, 'utf8') === generateValidators(), 'src/model/validate-generated.ts differs from what schemas/ compile to: run `npm run gen`');
});

test('the generated module loads no Ajv compiler, only its runtime helpers', () => {
  const text = readFileSync(GENERATED_VALIDATORS, 'utf8');
  const imports = [...text.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1]);
  assert.equal(imports, ['node:module']);
  const required = [...text.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  assert.ok(required.length > 0);
  for (const m of required) assert.match(m!, /^ajv\/dist\/runtime\/[a-z0-9]+$/);
});

test('a generated validator reports what the schema says, with its x-message', () => {
  const node = { apiVersion: 'converge.dev/v1', kind: 'Node', metadata: { name: 'n1' }, spec: { address: 'not an address!' } };
  const problems = validateDocument('Node', node);
  assert.equal(problems.map((p) => p.message), ['spec.address must be an IPv4 address or a DNS host name']);
  assert.equal(validateDocument('Node', { ...node, spec: { address: '10.0.0.1' } }), []);
  const extra = validateDocument('Node', { ...node, spec: { address: '10.0.0.1', adress: 'x' } });
  assert.equal(extra.map((p) => [p.message, p.hint]), [['unknown field spec.adress', 'allowed here: address, ssh, vars']]);
});

test.run();
