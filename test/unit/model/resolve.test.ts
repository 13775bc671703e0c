// Resolution: node selection, per-node templates, payload expansion, secrets
// and artifacts, and a stable order so that plans are deterministic.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ValidationError, formatDiagnostic } from '../../../src/errors/index.js';
import {
  fsSource,
  loadDesiredState,
  loadDesiredStateFromFiles,
  memorySource,
  validateDesiredState,
} from '../../../src/model/index.js';
import type { DesiredFile, ResolvedNode, ResolvedState } from '../../../src/model/types.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const example = join(repo, 'desired-state');
const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

const doc = (kind: string, name: string, spec: string, labels = ''): string =>
  `apiVersion: converge.dev/v1\nkind: ${kind}\nmetadata:\n  name: ${name}\n${labels}spec:\n${spec}`;
const node = (name: string, address: string, labels: Record<string, string>, vars = ''): string =>
  doc('Node', name, `  address: ${address}\n${vars}`, Object.keys(labels).length === 0 ? '' : `  labels:\n${Object.entries(labels).map(([k, v]) => `    ${k}: ${v}\n`).join('')}`);

function file(n: ResolvedNode, name: string): DesiredFile {
  const f = n.files.find((x) => x.name === name);
  if (!f) throw new Error(`no file ${name} on ${n.name}`);
  return f;
}
const text = (f: DesiredFile): string => {
  if (f.content?.kind !== 'text') throw new Error(`${f.id} is not text`);
  return f.content.text;
};

function readTree(dir: string, prefix = ''): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const rel = prefix ? `${prefix}/${name}` : name;
    if (statSync(p).isDirectory()) Object.assign(out, readTree(p, rel));
    else out[rel] = readFileSync(p);
  }
  return out;
}

test('the example desired state validates clean', async () => {
  const r = await validateDesiredState(example);
  assert.equal(r.diagnostics.map(formatDiagnostic), []);
  const s = r.state!;
  assert.equal(s.nodes.map((n) => `${n.name}=${n.address}`), ['cp-a=10.240.16.10', 'cp-b=10.240.48.10', 'cp-c=10.240.80.10']);
  assert.equal(s.etcd!.members.map((m) => m.peerUrl), ['https://10.240.16.10:2380', 'https://10.240.48.10:2380', 'https://10.240.80.10:2380']);
  assert.is(s.etcd!.unit, 'etcd.service');
  for (const n of s.nodes) {
    assert.equal(n.users.map((u) => [u.name, u.system, u.group, u.home, u.shell]), [['etcd', true, 'etcd', '/var/lib/etcd', '/usr/sbin/nologin']]);
    const env = text(file(n, 'etcd-env'));
    assert.match(env, `\nETCD_NAME=${n.name}\n`);
    assert.match(env, `\nETCD_LISTEN_CLIENT_URLS=https://${n.address}:2379,https://127.0.0.1:2379\n`);
    assert.not.match(env, /^ETCD_INITIAL_CLUSTER=/m);
    // Only the safe default: a wiped member must never bootstrap a cluster of its own.
    assert.match(env, /^ETCD_INITIAL_CLUSTER_STATE=existing$/m);
    assert.match(text(file(n, 'etcdctl-env')), 'ETCDCTL_ENDPOINTS=https://10.240.16.10:2379,https://10.240.48.10:2379,https://10.240.80.10:2379\n');
    const unit = text(file(n, 'etcd-unit'));
    for (const line of ['Type=notify', 'User=etcd', 'EnvironmentFile=/etc/etcd/etcd.env', 'EnvironmentFile=-/etc/etcd/etcd-initial.env', 'ExecStart=/usr/local/bin/etcd', 'Restart=on-failure', 'LimitNOFILE=65536']) {
      assert.ok(unit.split('\n').includes(line), `${n.name}: unit lacks ${line}`);
    }
    const key = file(n, 'etcd-server-key');
    assert.equal(key.content, { kind: 'secret', name: `nodes/${n.name}/server-key.pem`, localPath: `nodes/${n.name}/server-key.pem`, sha256: null, size: null });
    assert.equal([key.owner, key.group, key.mode, key.restarts], ['etcd', 'etcd', '0600', ['etcd.service']]);
    const bin = file(n, 'etcd-binary');
    assert.equal(bin.content, { kind: 'artifact', name: 'etcd', localPath: 'etcd', sha256: 'a45de16600eafc57939b84013b0522c4670435471eb4073dd963d01e0eb5a217', size: null });
    assert.equal(n.directories.map((d) => `${d.path} ${d.owner}:${d.group} ${d.mode}`), ['/etc/etcd root:root 0755', '/var/lib/etcd etcd:etcd 0700', '/etc/etcd/pki etcd:etcd 0700']);
    assert.equal(n.services.map((x) => [x.unit, x.enabled, x.running]), [['etcd.service', true, true]]);
  }
});

test('with a secrets directory in the documented layout, secrets are read and hashed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'converge-secrets-'));
  try {
    const put = (rel: string, body: string): void => {
      mkdirSync(dirname(join(dir, rel)), { recursive: true });
      writeFileSync(join(dir, rel), body);
    };
    put('ca.pem', 'CA\n');
    put('client/etcd-client.pem', 'client cert\n');
    put('client/etcd-client-key.pem', 'client key\n');
    for (const n of ['cp-a', 'cp-b', 'cp-c']) for (const f of ['server.pem', 'server-key.pem', 'peer.pem', 'peer-key.pem']) put(`nodes/${n}/${f}`, `${n} ${f}\n`);
    const { state, diagnostics } = await loadDesiredState(example, { secretsDir: dir });
    assert.equal(diagnostics, []);
    const b = state.nodes[1]!;
    assert.equal(file(b, 'etcd-peer-key').content, { kind: 'secret', name: 'nodes/cp-b/peer-key.pem', localPath: join(dir, 'nodes/cp-b/peer-key.pem'), sha256: sha('cp-b peer-key.pem\n'), size: 18 });
    assert.equal(state.etcd!.client, { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'client/etcd-client.pem'), keyFile: join(dir, 'client/etcd-client-key.pem') });
    rmSync(join(dir, 'nodes/cp-c/server.pem'));
    rmSync(join(dir, 'client/etcd-client-key.pem'));
    const err = await loadDesiredState(example, { secretsDir: dir }).catch((e: unknown) => e);
    assert.instance(err, ValidationError);
    assert.equal(
      (err as ValidationError).diagnostics.map(formatDiagnostic).map((l) => l.split(dir).join('$S')),
      [
        'etcd.yaml:23:10: EtcdCluster/main: spec.client.key: secret "client/etcd-client-key.pem" not found in the secrets directory (put it at $S/client/etcd-client-key.pem)',
        'files.yaml:155:11: File/etcd-server-cert: secret "nodes/cp-c/server.pem" not found in the secrets directory (put it at $S/nodes/cp-c/server.pem)',
        'files.yaml:236:11: File/etcd-client-key: secret "client/etcd-client-key.pem" not found in the secrets directory (put it at $S/client/etcd-client-key.pem)',
      ],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('artifacts: a staged file matching its pin gets its size; a missing one is an error', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'converge-artifacts-'));
  try {
    const body = Buffer.from('#!/bin/sh\necho tool 1.0\n');
    writeFileSync(join(dir, 'tool'), body);
    const files = {
      'nodes.yaml': node('n1', '10.240.0.2', { role: 'x' }),
      'files.yaml':
        doc('File', 'tool', `  path: /usr/local/bin/tool\n  mode: "755"\n  artifact:\n    name: tool\n    sha256: ${sha(body)}\n`) +
        '---\n' +
        doc('File', 'other', `  path: /usr/local/bin/other\n  artifact:\n    name: other\n    sha256: "${'1'.repeat(64)}"\n`),
    };
    const r = await validateDesiredState(memorySource(files), { artifactsDir: dir });
    assert.equal(r.diagnostics.map(formatDiagnostic).map((l) => l.split(dir).join('$A')), [
      'files.yaml:19:11: File/other: artifact "other" not found in the artifacts directory (stage it at $A/other)',
    ]);
    const ok = await validateDesiredState(memorySource({ 'nodes.yaml': files['nodes.yaml'], 'files.yaml': files['files.yaml'].split('---\n')[0]! }), { artifactsDir: dir });
    const f = ok.state!.nodes[0]!.files[0]!;
    assert.equal(f.content, { kind: 'artifact', name: 'tool', localPath: join(dir, 'tool'), sha256: sha(body), size: body.length });
    assert.is(f.mode, '0755');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('node selection by label and by name', async () => {
  const r = await validateDesiredState(
    memorySource({
      'nodes.yaml': [node('db-1', '10.240.1.1', { role: 'db', zone: 'a' }), node('db-2', '10.240.1.2', { role: 'db', zone: 'b' }), node('web-1', '10.240.2.1', { role: 'web', zone: 'a' })].join('---\n'),
      'files.yaml': [
        doc('File', 'db-conf', '  path: /etc/db.conf\n  content: db\n  nodes:\n    labels:\n      role: db\n'),
        doc('File', 'zone-a', '  path: /etc/zone\n  content: a\n  nodes:\n    labels: { role: db, zone: a }\n'),
        doc('File', 'web-conf', '  path: /etc/web.conf\n  content: web\n  nodes:\n    names: [web-1]\n'),
        doc('File', 'motd', '  path: /etc/motd\n  content: hi\n'),
      ].join('---\n'),
    }),
  );
  assert.equal(r.diagnostics, []);
  const names = Object.fromEntries(r.state!.nodes.map((n) => [n.name, n.files.map((f) => f.name)]));
  assert.equal(names, { 'db-1': ['db-conf', 'motd', 'zone-a'], 'db-2': ['db-conf', 'motd'], 'web-1': ['motd', 'web-conf'] });
});

test('templates are rendered per node (name, address, labels, vars, etcd)', async () => {
  const files = {
    'nodes.yaml': [
      node('cp-a', '10.240.16.10', { zone: 'east' }, '  vars:\n    motd: hello A\n'),
      node('cp-b', '10.240.48.10', { zone: 'west' }, '  vars:\n    motd: hello B\n'),
      node('cp-c', '10.240.80.10', { zone: 'west' }, '  vars:\n    motd: hello C\n'),
    ].join('---\n'),
    'etcd.yaml':
      doc('EtcdCluster', 'main', '  members:\n    - node: cp-a\n    - node: cp-b\n      name: beta\n    - node: cp-c\n  clientPort: 12379\n  peerPort: 12380\n  token: tok\n  service: etcd\n  client: { ca: ca.pem, cert: c.pem, key: k.pem }\n') +
      '---\n' +
      doc('Service', 'etcd', '  unit: etcd.service\n'),
    'files.yaml': doc('File', 'info', '  path: /etc/info\n  template: templates/info.tmpl\n'),
    'templates/info.tmpl':
      '{{ node.name }} {{node.address}} {{ node.labels.zone }} {{ vars.motd }}\n{{ etcd.name }} {{ etcd.peerUrl }} {{ etcd.clientUrl }}\n{{ etcd.initialCluster }}\n{{ etcd.members }} {{ etcd.clientUrls }}\n{{ etcd.token }} {{ etcd.dataDir }} {{ etcd.clientPort }} {{ etcd.peerPort }} {{ etcd.initialEnvFile }}\n',
  };
  const { state } = await loadDesiredStateFromFiles(files, { root: 'git:test' });
  assert.is(state.root, 'git:test');
  const b = file(state.nodes[1]!, 'info');
  assert.is(
    text(b),
    'cp-b 10.240.48.10 west hello B\nbeta https://10.240.48.10:12380 https://10.240.48.10:12379\n' +
      'beta=https://10.240.48.10:12380,cp-a=https://10.240.16.10:12380,cp-c=https://10.240.80.10:12380\n' +
      'beta,cp-a,cp-c https://10.240.48.10:12379,https://10.240.16.10:12379,https://10.240.80.10:12379\n' +
      'tok /var/lib/etcd 12379 12380 /etc/etcd/etcd-initial.env\n',
  );
  assert.equal(b.content, { kind: 'text', origin: 'template', text: text(b), sha256: sha(text(b)), size: Buffer.byteLength(text(b)) });
  assert.match(text(file(state.nodes[0]!, 'info')), /^cp-a 10\.240\.16\.10 east hello A\ncp-a /);
});

test('a label or var missing on one node is an error at the template position', async () => {
  const r = await validateDesiredState(
    memorySource({
      'nodes.yaml': [node('a', '10.240.0.2', { zone: 'x' }), node('b', '10.240.0.3', { rack: 'r1' })].join('---\n'),
      'files.yaml': doc('File', 'z', '  path: /etc/zone\n  template: templates/zone\n'),
      'templates/zone': 'zone={{ node.labels.zone }}\nmotd={{ vars.motd }}\n',
    }),
  );
  assert.equal(r.diagnostics.map(formatDiagnostic), [
    'templates/zone:1:9: File/z: node b has no label "zone" (add it to Node/b metadata.labels)',
    'templates/zone:2:9: File/z: node a has no variable "motd" (add it to Node/a spec.vars)',
    'templates/zone:2:9: File/z: node b has no variable "motd" (add it to Node/b spec.vars)',
  ]);
});

test('a Directory source folder expands into Files of the directory', async () => {
  const { state } = await loadDesiredStateFromFiles({
    'nodes.yaml': node('n1', '10.240.0.2', {}),
    'dirs.yaml':
      doc('Directory', 'conf', '  path: /etc/app\n  mode: "0750"\n  source: files/app\n  fileMode: "0640"\n  purge: true\n  restarts: [app]\n') +
      '---\n' +
      doc('Service', 'app', '  unit: app.service\n'),
    'files/app/a.conf': 'a=1\n',
    'files/app/b.yaml': 'not: a document\n',
  });
  const n = state.nodes[0]!;
  assert.equal(n.directories.map((d) => [d.id, d.path, d.mode, d.purge]), [['Directory/conf', '/etc/app', '0750', true]]);
  assert.equal(
    n.files.map((f) => [f.id, f.path, f.mode, f.fromDirectory, f.restarts, text(f)]),
    [
      ['File/conf/a.conf', '/etc/app/a.conf', '0640', 'Directory/conf', ['app.service'], 'a=1\n'],
      ['File/conf/b.yaml', '/etc/app/b.yaml', '0640', 'Directory/conf', ['app.service'], 'not: a document\n'],
    ],
  );
  assert.equal(n.files[0]!.at, { file: 'dirs.yaml', line: 8, col: 11 });
});

test('payload and declared file on the same path conflict, naming both', async () => {
  const r = await validateDesiredState(
    memorySource({
      'nodes.yaml': node('n1', '10.240.0.2', {}),
      'dirs.yaml': doc('Directory', 'conf', '  path: /etc/app\n  source: files/app\n'),
      'x.yaml': doc('File', 'zz', '  path: /etc/app/a.conf\n  content: x\n'),
      'files/app/a.conf': 'a=1\n',
    }),
  );
  assert.equal(r.diagnostics.map(formatDiagnostic), [
    'x.yaml:6:9: File/zz: path /etc/app/a.conf is also managed by File/conf/a.conf (dirs.yaml:7:11) on node n1 (each path is managed by one resource)',
  ]);
});

test('the order is stable: shuffling documents and files changes nothing', async () => {
  const parts = [
    node('n2', '10.240.0.3', { r: 'x' }),
    doc('File', 'b', '  path: /b\n  content: b\n'),
    node('n1', '10.240.0.2', { r: 'x' }),
    doc('Service', 's2', '  unit: s2.service\n'),
    doc('File', 'a', '  path: /a\n  content: a\n'),
    doc('Group', 'g', '  system: true\n'),
    doc('Service', 's1', '  unit: s1.service\n'),
  ];
  const strip = (s: ResolvedState): string => JSON.stringify(s, (k, v: unknown) => (k === 'at' ? undefined : v));
  const one = await loadDesiredStateFromFiles({ 'all.yaml': parts.join('---\n') });
  const two = await loadDesiredStateFromFiles(Object.fromEntries([...parts].reverse().map((p, i) => [`d${i}/x.yml`, p])));
  assert.is(strip(one.state), strip(two.state));
  assert.equal(one.state.nodes.map((n) => n.name), ['n1', 'n2']);
  assert.equal(one.state.nodes[0]!.files.map((f) => f.name), ['a', 'b']);
  assert.equal(one.state.nodes[0]!.services.map((f) => f.name), ['s1', 's2']);
});

test('an in-memory copy of the example resolves like the directory', async () => {
  const fromDisk = await loadDesiredState(example);
  const fromMemory = await loadDesiredStateFromFiles(readTree(example), { root: fromDisk.state.root });
  assert.equal(fromMemory.state, fromDisk.state);
});

test('fsSource lists regular files only: no symlinks, no hidden entries', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'converge-src-'));
  try {
    writeFileSync(join(dir, 'a.yaml'), 'x: 1\n');
    mkdirSync(join(dir, '.git'));
    writeFileSync(join(dir, '.git', 'config.yaml'), 'x: 1\n');
    symlinkSync('/etc/hostname', join(dir, 'link.yaml'));
    const src = fsSource(dir);
    assert.equal(await src.list(), ['a.yaml']);
    assert.is((await src.read('a.yaml')).toString(), 'x: 1\n');
    let refused = false;
    await src.read('link.yaml').catch(() => (refused = true));
    assert.ok(refused, 'a symlink is not read');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('validation errors are collected in one run, not one at a time', async () => {
  const r = await validateDesiredState(
    memorySource({
      'nodes.yaml': node('n1', '10.240.0.2', {}),
      'a.yaml': doc('File', 'x', '  path: relative\n  mode: 644\n  content: x\n  bogus: 1\n'),
      'b.yaml': doc('Service', 'bad', '  unit: "x.service;reboot"\n'),
    }),
  );
  assert.equal(r.diagnostics.map(formatDiagnostic), [
    'a.yaml:6:9: File/x: spec.path must be an absolute path (starting with \'/\')',
    'a.yaml:7:9: File/x: spec.mode must be a string (YAML read the unquoted value as a number: quote it, e.g. mode: "0640")',
    'a.yaml:9:3: File/x: unknown field spec.bogus (allowed here: path, owner, group, mode, content, source, template, artifact, secret, restarts, nodes, ensure, policy, prune)',
    'b.yaml:6:9: Service/bad: spec.unit must be a systemd unit name such as etcd.service (letters, digits, \':\', \'_\', \'.\', \'@\', \'-\' and a unit suffix)',
  ]);
});

test.run();
