// One real etcd member on 127.0.0.1 with TLS and client-cert auth, for the
// election tests: the etcd helper's local cluster (../etcd/helpers), started
// as a single-member cluster.
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { localCluster, type LocalCluster } from '../etcd/helpers/local-cluster.js';

export interface SingleEtcd {
  cluster: LocalCluster;
  url: string;
  /** converge's client TLS files, as etcdCa/etcdCert/etcdKey take them. */
  files: { ca: string; cert: string; key: string };
  client(): Etcd3;
  close(): Promise<void>;
}

export async function singleEtcd(port: number): Promise<SingleEtcd> {
  const cluster = localCluster(['coord'], port);
  const n = cluster.nodes.get('coord')!;
  cluster.writeEnv('coord', [`ETCD_INITIAL_CLUSTER=coord=${n.peerUrl}`, 'ETCD_INITIAL_CLUSTER_STATE=new']);
  await cluster.sh('coord', 'systemctl start etcd.service');
  const pki = join(cluster.dir, 'pki');
  const files = { ca: join(pki, 'ca.pem'), cert: join(pki, 'client.pem'), key: join(pki, 'client.key') };
  const clients: Etcd3[] = [];
  const client = (): Etcd3 => {
    const c = new Etcd3({
      hosts: [n.clientUrl],
      credentials: { rootCertificate: cluster.tls.ca, certChain: cluster.tls.cert, privateKey: cluster.tls.key },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 3000 }),
    });
    clients.push(c);
    return c;
  };
  const probe = client();
  const end = Date.now() + 20_000;
  for (;;) {
    try {
      await probe.put('converge-test/ready').value('1');
      break;
    } catch (e) {
      if (Date.now() > end) throw new Error(`the local etcd did not come up: ${(e as Error).message}; journal: ${await cluster.sh('coord', 'journalctl -n 20')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    cluster,
    url: n.clientUrl,
    files,
    client,
    async close() {
      for (const c of clients) c.close();
      await cluster.close();
    },
  };
}
