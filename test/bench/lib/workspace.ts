/**
 * One benchmark case on disk: a copy of desired-state/ naming the bench's own
 * lab nodes (with `extraFiles` generated File resources and etcd's Service not
 * running: etcd cannot start without the initial cluster that only converge's
 * etcd step writes), and the Ansible inventory for the same nodes, files,
 * key and known_hosts. Both tools read the same template, artifact and secret
 * files.
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabInfo, LabNode } from '../../../src/lab/index.js';
import { projectDir } from '../../helpers/lab.js';

export const ANSIBLE_DIR = join(projectDir, 'test', 'bench', 'ansible');

export interface Workspace {
  dir: string;
  desired: string;
  inventory: string;
  nodes: LabNode[];
  extraFiles: number;
}

const DOC_SEP = '\n---\n';

function nodeDoc(n: LabNode): string {
  return `apiVersion: converge.dev/v1
kind: Node
metadata:
  name: ${n.name}
  labels:
    role: control-plane
spec:
  address: ${n.address}
`;
}

function benchFileName(i: number): string {
  return `f${String(i).padStart(4, '0')}.conf`;
}

/** Small, distinct text files: what a config-heavy node carries. */
function benchFileContent(i: number): string {
  return `# bench file ${i}\nkey_${i} = ${createHash('sha256').update(String(i)).digest('hex')}\n`;
}

/** Generated resources per YAML file (one file may hold at most 1,000 documents). */
const DOCS_PER_FILE = 250;

function writeDesired(desired: string, nodes: LabNode[], extraFiles: number): void {
  cpSync(join(projectDir, 'desired-state'), desired, { recursive: true });
  writeFileSync(join(desired, 'nodes.yaml'), nodes.map(nodeDoc).join(DOC_SEP));
  const etcd = readFileSync(join(desired, 'etcd.yaml'), 'utf8').replace(
    /^  members:\n(?:    - node: .*\n)+/m,
    `  members:\n${nodes.map((n) => `    - node: ${n.name}\n`).join('')}`,
  );
  if (!nodes.every((n) => etcd.includes(`node: ${n.name}\n`))) throw new Error('desired-state/etcd.yaml: could not rewrite its members list');
  writeFileSync(join(desired, 'etcd.yaml'), etcd);
  const services = readFileSync(join(desired, 'services.yaml'), 'utf8');
  if (!/running: true/.test(services)) throw new Error('desired-state/services.yaml: expected `running: true` for etcd');
  writeFileSync(join(desired, 'services.yaml'), services.replace('running: true', 'running: false'));
  if (extraFiles === 0) return;
  const dir = join(desired, 'files', 'bench');
  mkdirSync(dir, { recursive: true });
  const docs = [
    `apiVersion: converge.dev/v1\nkind: Directory\nmetadata:\n  name: bench\nspec:\n  path: /etc/bench\n  mode: "0755"\n`,
  ];
  for (let i = 0; i < extraFiles; i++) {
    writeFileSync(join(dir, benchFileName(i)), benchFileContent(i));
    docs.push(`apiVersion: converge.dev/v1\nkind: File\nmetadata:\n  name: bench-${i}\nspec:\n  path: /etc/bench/${benchFileName(i)}\n  mode: "0644"\n  source: files/bench/${benchFileName(i)}\n`);
  }
  // Several files, as an operator would keep a thousand resources.
  for (let i = 0; i < docs.length; i += DOCS_PER_FILE) {
    writeFileSync(join(desired, `bench-${String(i / DOCS_PER_FILE).padStart(2, '0')}.yaml`), docs.slice(i, i + DOCS_PER_FILE).join(DOC_SEP));
  }
}

function sha1(file: string): string {
  return createHash('sha1').update(readFileSync(file)).digest('hex');
}

function writeInventory(file: string, lab: LabInfo, desired: string, nodes: LabNode[], extraFiles: number): void {
  const hosts = Object.fromEntries(nodes.map((n) => [n.name, { ansible_host: n.address }]));
  const vars = {
    ansible_user: 'root',
    ansible_ssh_private_key_file: lab.sshKey,
    ansible_ssh_common_args: `-o UserKnownHostsFile=${lab.knownHosts} -o StrictHostKeyChecking=yes`,
    secrets_dir: lab.secretsDir,
    artifacts_dir: lab.artifactsDir,
    artifacts: ['etcd', 'etcdctl'].map((name) => ({ name, sha1: sha1(join(lab.artifactsDir, name)) })),
    templates_dir: join(desired, 'templates'),
    bench_files_dir: join(desired, 'files', 'bench'),
    bench_files: Array.from({ length: extraFiles }, (_, i) => benchFileName(i)),
    etcd_running: false,
  };
  // JSON is YAML: Ansible's yaml inventory plugin reads it as is.
  writeFileSync(file, JSON.stringify({ all: { children: { etcd: { hosts, vars } } } }, null, 2) + '\n');
}

export function makeWorkspace(root: string, lab: LabInfo, nodes: LabNode[], extraFiles: number): Workspace {
  const dir = join(root, `n${nodes.length}-f${extraFiles}`);
  const desired = join(dir, 'desired-state');
  mkdirSync(dir, { recursive: true });
  writeDesired(desired, nodes, extraFiles);
  const inventory = join(dir, 'inventory.yml');
  writeInventory(inventory, lab, desired, nodes, extraFiles);
  return { dir, desired, inventory, nodes, extraFiles };
}
