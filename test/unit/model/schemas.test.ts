// The schemas are the truth: the generated types follow them, every field is
// described, objects are closed, and resolution applies the documented defaults.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GENERATED_DIR, SCHEMAS_DIR, generateTypes } from '../../../src/model/gen-types.js';
import { DEFAULTS, KINDS, memorySource, validateDesiredState } from '../../../src/model/index.js';

type Schema = Record<string, unknown> & { properties?: Record<string, Schema>; $ref?: string; items?: Schema; definitions?: Record<string, Schema> };

const schemas = new Map<string, Schema>(
  readdirSync(SCHEMAS_DIR)
    .filter((f) => f.endsWith('.schema.json'))
    .map((f) => [f, JSON.parse(readFileSync(join(SCHEMAS_DIR, f), 'utf8')) as Schema]),
);
const defs = schemas.get('defs.schema.json')!.definitions!;

function deref(s: Schema): Schema {
  const ref = s.$ref;
  if (!ref) return s;
  const name = ref.split('/').pop()!;
  const target = defs[name];
  if (!target) throw new Error(`dangling $ref ${ref}`);
  return { ...deref(target), ...s, $ref: undefined };
}

/** Every object schema reachable from s, with a path for messages. */
function objects(s: Schema, path: string, out: Array<[string, Schema]>): void {
  const d = deref(s);
  if (d.type === 'object') out.push([path, d]);
  for (const [k, v] of Object.entries(d.properties ?? {})) objects(v, `${path}.${k}`, out);
  if (d.items) objects(d.items, `${path}[]`, out);
  if (typeof d.additionalProperties === 'object') objects(d.additionalProperties as Schema, `${path}{}`, out);
}

test('the generated types are up to date (run `npm run gen`)', async () => {
  const fresh = await generateTypes();
  const onDisk = readdirSync(GENERATED_DIR).filter((f) => f.endsWith('.ts')).sort();
  assert.equal(onDisk, [...fresh.keys()].sort());
  for (const [name, ts] of fresh) assert.fixture(readFileSync(join(GENERATED_DIR, name), 'utf8'), ts, `src/model/generated/${name} is stale`);
});

test('one schema per kind', () => {
  for (const k of KINDS) assert.ok(schemas.has(`${k.toLowerCase()}.schema.json`), k);
});

test('every property has a description and every object is closed', () => {
  for (const [file, s] of schemas) {
    const roots: Array<[string, Schema]> = file === 'defs.schema.json' ? Object.entries(defs).map(([k, v]) => [`#${k}`, v]) : [[file, s]];
    for (const [rootPath, root] of roots) {
      const found: Array<[string, Schema]> = [];
      objects(root, rootPath, found);
      for (const [path, o] of found) {
        const closed = o.additionalProperties === false || typeof o.additionalProperties === 'object';
        assert.ok(closed, `${file} ${path}: additionalProperties must be false (or a schema for maps)`);
        for (const [k, v] of Object.entries(o.properties ?? {})) {
          assert.type(deref(v).description, 'string', `${file} ${path}.${k} has no description`);
        }
      }
    }
  }
});

/** A minimal valid document of each kind, to read the defaults back from resolution. */
test('resolution applies the defaults the schemas document', async () => {
  const r = await validateDesiredState(
    memorySource({
      'all.yaml': [
        'apiVersion: converge.dev/v1\nkind: Node\nmetadata: { name: n1 }\nspec: { address: 10.240.0.2 }',
        'apiVersion: converge.dev/v1\nkind: Group\nmetadata: { name: g }\nspec: {}',
        'apiVersion: converge.dev/v1\nkind: User\nmetadata: { name: u }\nspec: { group: g, home: /home/u }',
        'apiVersion: converge.dev/v1\nkind: Directory\nmetadata: { name: d }\nspec: { path: /srv/d }',
        'apiVersion: converge.dev/v1\nkind: File\nmetadata: { name: f }\nspec: { path: /srv/f, content: x }',
        'apiVersion: converge.dev/v1\nkind: Service\nmetadata: { name: s }\nspec: { unit: s.service }',
        'apiVersion: converge.dev/v1\nkind: EtcdCluster\nmetadata: { name: e }\nspec: { members: [{ node: n1 }], token: t, service: s, client: { ca: ca.pem, cert: c.pem, key: k.pem } }',
      ].join('\n---\n'),
    }),
  );
  const n = r.state!.nodes[0]!;
  const d = (file: string, path: string[]): unknown => {
    let s: Schema = schemas.get(file)!;
    for (const p of path) s = deref(s).properties![p]!;
    return deref(s).default;
  };
  const base = ['spec'];
  for (const [kind, res] of [['group', n.groups[0]], ['user', n.users[0]], ['directory', n.directories[0]], ['file', n.files[0]], ['service', n.services[0]]] as const) {
    const file = `${kind}.schema.json`;
    assert.is(res!.ensure, d(file, [...base, 'ensure']), `${kind} ensure`);
    assert.is(res!.policy, d(file, [...base, 'policy']), `${kind} policy`);
    assert.is(res!.prune, d(file, [...base, 'prune']), `${kind} prune`);
  }
  assert.is(n.groups[0]!.system, d('group.schema.json', ['spec', 'system']));
  assert.is(n.users[0]!.system, d('user.schema.json', ['spec', 'system']));
  assert.is(n.users[0]!.shell, d('user.schema.json', ['spec', 'shell']));
  assert.equal(n.users[0]!.groups, d('user.schema.json', ['spec', 'groups']));
  for (const k of ['owner', 'group', 'mode', 'purge'] as const) assert.is(n.directories[0]![k], d('directory.schema.json', ['spec', k]), `Directory ${k}`);
  for (const k of ['owner', 'group', 'mode'] as const) assert.is(n.files[0]![k], d('file.schema.json', ['spec', k]), `File ${k}`);
  assert.equal(n.files[0]!.restarts, d('file.schema.json', ['spec', 'restarts']));
  assert.is(n.services[0]!.enabled, d('service.schema.json', ['spec', 'enabled']));
  assert.is(n.services[0]!.running, d('service.schema.json', ['spec', 'running']));
  assert.is(n.ssh.port, d('node.schema.json', ['spec', 'ssh', 'port']));
  assert.is(n.ssh.user, d('node.schema.json', ['spec', 'ssh', 'user']));
  const e = r.state!.etcd!;
  for (const k of ['clientPort', 'peerPort', 'dataDir', 'initialEnvFile'] as const) assert.is(e[k], d('etcdcluster.schema.json', ['spec', k]), `EtcdCluster ${k}`);
  assert.is(e.rollout.healthTimeoutSeconds, d('etcdcluster.schema.json', ['spec', 'rollout', 'healthTimeoutSeconds']));
  assert.is(e.rollout.learnerTimeoutSeconds, d('etcdcluster.schema.json', ['spec', 'rollout', 'learnerTimeoutSeconds']));
  assert.is(DEFAULTS.payloadFileMode, d('directory.schema.json', ['spec', 'fileMode']));
});

test.run();
