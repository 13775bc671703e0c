// The EtcdCluster the status fixtures (test/fixtures/etcd/status/*.json) are judged against.
import type { ResolvedEtcd } from '../../../../src/model/types.js';

const address = (node: string): string => `10.240.${16 + 32 * (node.charCodeAt(node.length - 1) - 97)}.10`;

/** One member per node name, named after it, on the chapter's addresses. */
export function statusSpec(members: string[]): ResolvedEtcd {
  return {
    id: 'EtcdCluster/main',
    name: 'main',
    members: members.map((n) => ({ name: n, node: n, address: address(n), peerUrl: `https://${address(n)}:2380`, clientUrl: `https://${address(n)}:2379` })),
    clientPort: 2379,
    peerPort: 2380,
    dataDir: '/var/lib/etcd',
    token: 't',
    unit: 'etcd.service',
    initialEnvFile: '/etc/etcd/etcd-initial.env',
    client: { caFile: 'ca', certFile: 'c', keyFile: 'k' },
    rollout: { healthTimeoutSeconds: 60, learnerTimeoutSeconds: 120 },
    at: { file: 'etcd.yaml', line: 1, col: 1 },
  };
}
