/**
 * The EtcdCluster: its members on declared nodes, the values of the etcd.*
 * template variables, and the checks a schema cannot make (one cluster, one
 * member per node, the Service on every member, an odd member count).
 */
import { join } from 'node:path';
import type { EtcdMemberSpec, ResolvedEtcd, SourceRef } from './types.js';
import type { EtcdClusterDocument } from './generated/etcdcluster.js';
import type { Kind } from './schema.js';
import type { EtcdTemplateValues } from './template.js';
import { fmt, type Collector } from './collector.js';
import { DEFAULTS } from './defaults.js';
import { hashFile } from './digest.js';
import { byName, idOf, specOf, where, type LoadedDocument } from './load.js';
import { SECRET_NAME } from './paths.js';

export interface EtcdInput {
  /** Every declared EtcdCluster (first declaration of each name). */
  clusters: LoadedDocument[];
  /** The valid nodes. */
  nodes: ReadonlyArray<{ name: string; address: string }>;
  declared: (kind: Kind, name: string) => boolean;
  usable: (kind: Kind, name: string) => boolean;
  presentOn: (kind: Kind, name: string, node: string) => boolean;
  /** Service name → unit. */
  unitOf: ReadonlyMap<string, string>;
  secretsDir?: string;
  c: Collector;
}

export interface EtcdResolution {
  /** null when there is no cluster or it has errors. */
  etcd: ResolvedEtcd | null;
  memberByNode: Map<string, EtcdMemberSpec>;
  /** The etcd.* values shared by all members (null when membership is unusable). */
  values: Omit<EtcdTemplateValues, 'name' | 'peerUrl' | 'clientUrl'> | null;
  /** `EtcdCluster/<name>` of the declared cluster, for messages. */
  label: string | null;
  /** A cluster is declared but its membership could not be resolved. */
  broken: boolean;
  /** Where initialEnvFile is declared (or defaulted), for path conflicts. */
  initialEnvFileAt: SourceRef | null;
}

export async function resolveEtcd(input: EtcdInput): Promise<EtcdResolution> {
  const { clusters, nodes, declared, usable, presentOn, unitOf, secretsDir, c } = input;
  if (clusters.length > 1) {
    for (const d of clusters.slice(1)) {
      c.error(where(d, ['metadata', 'name']), idOf(d), `only one EtcdCluster may be declared; ${idOf(clusters[0]!)} is at ${fmt(where(clusters[0]!, ['metadata', 'name']))}`);
    }
  }
  const etcdDoc = clusters[0]?.valid ? clusters[0] : undefined;
  let etcd: ResolvedEtcd | null = null;
  const memberByNode = new Map<string, EtcdMemberSpec>();
  let etcdValues: Omit<EtcdTemplateValues, 'name' | 'peerUrl' | 'clientUrl'> | null = null;
  if (etcdDoc) {
    const s = specOf<EtcdClusterDocument>(etcdDoc);
    const clientPort = s.clientPort ?? DEFAULTS.clientPort;
    const peerPort = s.peerPort ?? DEFAULTS.peerPort;
    const dataDir = s.dataDir ?? DEFAULTS.dataDir;
    const initialEnvFile = s.initialEnvFile ?? DEFAULTS.initialEnvFile;
    let ok = c.absolute(etcdDoc, ['spec', 'dataDir'], s.dataDir);
    ok = c.absolute(etcdDoc, ['spec', 'initialEnvFile'], s.initialEnvFile) && ok;
    if (clientPort === peerPort) {
      c.error(where(etcdDoc, ['spec', 'peerPort']), idOf(etcdDoc), 'spec.peerPort must differ from spec.clientPort');
      ok = false;
    }
    const members: EtcdMemberSpec[] = [];
    const seenNodes = new Map<string, number>();
    const seenNames = new Map<string, number>();
    s.members.forEach((m, i) => {
      const name = m.name ?? m.node;
      const node = nodes.find((n) => n.name === m.node);
      if (!declared('Node', m.node)) {
        c.error(where(etcdDoc, ['spec', 'members', i, 'node']), idOf(etcdDoc), `spec.members[${i}].node: no Node named ${JSON.stringify(m.node)}`);
        ok = false;
      } else if (seenNodes.has(m.node)) {
        c.error(where(etcdDoc, ['spec', 'members', i, 'node']), idOf(etcdDoc), `spec.members[${i}].node: node ${m.node} is already spec.members[${seenNodes.get(m.node)}]`, 'one member per node');
        ok = false;
      } else if (seenNames.has(name)) {
        c.error(where(etcdDoc, ['spec', 'members', i, m.name ? 'name' : 'node']), idOf(etcdDoc), `spec.members[${i}]: member name ${name} is already used by spec.members[${seenNames.get(name)}]`);
        ok = false;
      } else if (node) {
        members.push({ name, node: node.name, address: node.address, peerUrl: `https://${node.address}:${peerPort}`, clientUrl: `https://${node.address}:${clientPort}` });
      } else ok = false;
      if (!seenNodes.has(m.node)) seenNodes.set(m.node, i);
      if (!seenNames.has(name)) seenNames.set(name, i);
    });
    const count = s.members.length;
    if (count === 1) c.warning(where(etcdDoc, ['spec', 'members'], true), idOf(etcdDoc), 'a single-member etcd cluster has no fault tolerance', 'use 3 or 5 members');
    else if (count % 2 === 0) c.warning(where(etcdDoc, ['spec', 'members'], true), idOf(etcdDoc), `${count} members tolerate no more failures than ${count - 1}`, 'use an odd number of members');
      if (!declared('Service', s.service)) {
      c.error(where(etcdDoc, ['spec', 'service']), idOf(etcdDoc), `spec.service: no Service named ${JSON.stringify(s.service)}`);
      ok = false;
    } else if (usable('Service', s.service)) {
      const missing = members.filter((m) => !presentOn('Service', s.service, m.node)).map((m) => m.node);
      if (missing.length > 0) {
        c.error(where(etcdDoc, ['spec', 'service']), idOf(etcdDoc), `spec.service: Service/${s.service} is not present on member ${missing.length === 1 ? 'node' : 'nodes'} ${missing.join(', ')}`, `select every member node in Service/${s.service}`);
        ok = false;
      }
    } else ok = false;
    // Membership is usable for templates even when a client secret is missing:
    // that is reported on its own, without an error for every etcd.* variable.
    let clientOk = true;
    const client = { caFile: s.client.ca, certFile: s.client.cert, keyFile: s.client.key };
    for (const [key, name] of [['ca', s.client.ca], ['cert', s.client.cert], ['key', s.client.key]] as const) {
      const at = where(etcdDoc, ['spec', 'client', key]);
      if (!SECRET_NAME.test(name)) {
        c.error(at, idOf(etcdDoc), `spec.client.${key} must be a secret name (relative path of letters, digits, '_', '.', '-')`);
        clientOk = false;
      } else if (secretsDir !== undefined) {
        const path = join(secretsDir, name);
        if ((await hashFile(path)) === null) {
          c.error(at, idOf(etcdDoc), `spec.client.${key}: secret ${JSON.stringify(name)} not found in the secrets directory`, `put it at ${path}`);
          clientOk = false;
        }
        client[key === 'ca' ? 'caFile' : key === 'cert' ? 'certFile' : 'keyFile'] = path;
      }
    }
    members.sort(byName);
    if (ok) {
      for (const m of members) memberByNode.set(m.node, m);
    }
    if (ok && clientOk) {
      etcd = {
        id: idOf(etcdDoc),
        name: etcdDoc.name!,
        members,
        clientPort,
        peerPort,
        dataDir,
        token: s.token,
        unit: unitOf.get(s.service)!,
        initialEnvFile,
        client,
        rollout: {
          healthTimeoutSeconds: s.rollout?.healthTimeoutSeconds ?? DEFAULTS.healthTimeoutSeconds,
          learnerTimeoutSeconds: s.rollout?.learnerTimeoutSeconds ?? DEFAULTS.learnerTimeoutSeconds,
        },
        at: etcdDoc.at,
      };
    }
    if (ok) {
      etcdValues = {
        initialCluster: members.map((m) => `${m.name}=${m.peerUrl}`).join(','),
        members: members.map((m) => m.name).join(','),
        clientUrls: members.map((m) => m.clientUrl).join(','),
        token: s.token,
        dataDir,
        clientPort: String(clientPort),
        peerPort: String(peerPort),
        initialEnvFile,
      };
    }
  }
  return {
    etcd,
    memberByNode,
    values: etcdValues,
    label: clusters[0] ? idOf(clusters[0]) : null,
    // A declared cluster that could not be resolved is reported where it is
    // wrong; its etcd.* variables then stay silent instead of failing everywhere.
    broken: clusters.length > 0 && etcdValues === null,
    initialEnvFileAt: etcdDoc ? where(etcdDoc, ['spec', 'initialEnvFile'], true) : null,
  };
}
