/**
 * The benchmark's own parts that decide what it reports: the workspace both
 * tools are pointed at (a generated desired state that converge must accept,
 * and Ansible's inventory for the same nodes and files), the parsers of each
 * tool's output, and the median.
 */
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAllDocuments } from 'yaml';
import { validateDesiredState } from '../../../src/model/index.js';
import type { LabInfo, LabNode } from '../../../src/lab/index.js';
import { median } from '../../bench/lib/stats.js';
import { ansibleChanged, convergeExecs } from '../../bench/lib/tools.js';
import { makeWorkspace } from '../../bench/lib/workspace.js';

const root = mkdtempSync(join(tmpdir(), 'converge-bench-'));

function fakeLab(): { lab: LabInfo; nodes: LabNode[] } {
  const artifactsDir = join(root, 'artifacts');
  mkdirSync(artifactsDir, { recursive: true });
  for (const a of ['etcd', 'etcdctl']) writeFileSync(join(artifactsDir, a), `${a} binary\n`);
  const nodes: LabNode[] = ['bn-a', 'bn-b', 'bn-c'].map((name, i) => ({ name, address: `10.240.9.${i + 10}`, running: true, veth: `vb-${name}`, pid: 100 + i, linkUp: true }));
  const lab = {
    sshKey: join(root, 'id_ed25519'),
    knownHosts: join(root, 'known_hosts'),
    secretsDir: join(root, 'secrets'),
    artifactsDir,
    nodes,
  } as LabInfo;
  return { lab, nodes };
}

test('a 1,000-file workspace is a desired state converge accepts, naming the bench nodes, and an inventory for the same files', async () => {
  const { lab, nodes } = fakeLab();
  const ws = makeWorkspace(join(root, 'ws'), lab, nodes, 1000);

  const r = await validateDesiredState(ws.desired);
  const errors = r.diagnostics.filter((d) => d.severity === 'error');
  assert.equal(errors.map((d) => d.message), []);
  const state = r.state!;
  assert.equal(state.nodes.map((n) => [n.name, n.address]), nodes.map((n) => [n.name, n.address]));
  assert.equal(state.etcd?.members.map((m) => m.node), ['bn-a', 'bn-b', 'bn-c']);
  for (const n of state.nodes) {
    const bench = n.files.filter((f) => f.path.startsWith('/etc/bench/'));
    assert.is(bench.length, 1000, n.name);
    assert.ok(n.directories.some((d) => d.path === '/etc/bench'));
    // etcd cannot start before converge's etcd step writes its initial cluster: both tools leave it stopped.
    assert.is(n.services.find((s) => s.name === 'etcd')?.running, false);
  }

  // No generated YAML file holds more documents than one file may (the limit refused 1,001 in one file).
  const generated = readdirSync(ws.desired).filter((f) => /^bench-\d+\.yaml$/.test(f));
  const counts = generated.map((f) => parseAllDocuments(readFileSync(join(ws.desired, f), 'utf8')).length);
  assert.is(counts.reduce((a, b) => a + b, 0), 1001);
  assert.ok(Math.max(...counts) <= 250, `documents per file: ${counts.join(', ')}`);

  const inv = JSON.parse(readFileSync(ws.inventory, 'utf8')) as { all: { children: { etcd: { hosts: Record<string, { ansible_host: string }>; vars: { bench_files: string[]; ansible_ssh_private_key_file: string; ansible_ssh_common_args: string } } } } };
  const etcd = inv.all.children.etcd;
  assert.equal(Object.entries(etcd.hosts).map(([h, v]) => [h, v.ansible_host]), nodes.map((n) => [n.name, n.address]));
  assert.is(etcd.vars.bench_files.length, 1000);
  assert.equal(new Set(etcd.vars.bench_files).size, 1000);
  // The same key and known_hosts as converge, with strict host key checking.
  assert.is(etcd.vars.ansible_ssh_private_key_file, lab.sshKey);
  assert.match(etcd.vars.ansible_ssh_common_args, `UserKnownHostsFile=${lab.knownHosts}`);
  assert.match(etcd.vars.ansible_ssh_common_args, 'StrictHostKeyChecking=yes');
});

test('Ansible recap: changed summed over hosts; unreachable counts as failed; no recap is no answer', () => {
  const row = (host: string, changed: number, unreachable = 0): string =>
    `${host.padEnd(27)}: ok=14   changed=${changed}    unreachable=${unreachable}    failed=0    skipped=1    rescued=0    ignored=0   `;
  const recap = (rows: string[]): string => ['PLAY RECAP *********************************************************************', ...rows].join('\n');
  assert.equal(ansibleChanged(recap([row('bn-a', 0), row('bn-b', 3), row('bn-c', 1)])), { changed: 4, failed: 0 });
  assert.equal(ansibleChanged(recap([row('bn-a', 0), row('bn-b', 3, 1), row('bn-c', 1)])), { changed: 4, failed: 1 });
  assert.is(ansibleChanged('ERROR! the playbook could not be found'), null);
});

test('converge --stats: exec round trips per node', () => {
  const stderr = [
    'stats: cp-a: 1 connection, 17 exec round trips',
    'stats: cp-a: connect 1.17+0.06 s; exec 1.24+0.10 (151.0 kB in) s',
    'stats: cp-b: 1 connection, 7 exec round trips',
    'stats: total 16702 ms',
  ].join('\n');
  assert.equal(convergeExecs(stderr), { 'cp-a': 17, 'cp-b': 7 });
  assert.equal(convergeExecs(''), {});
});

test('median of odd and even counts, unsorted input left as it was', () => {
  const xs = [5, 1, 4];
  assert.is(median(xs), 4);
  assert.equal(xs, [5, 1, 4]);
  assert.is(median([4, 1, 3, 2]), 2.5);
  assert.ok(Number.isNaN(median([])));
});

test.after(() => rmSync(root, { recursive: true, force: true }));

test.run();
