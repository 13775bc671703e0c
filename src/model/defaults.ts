import type { Policy } from './types.js';

/** The defaults the schemas document (a unit test keeps both in step). */
export const DEFAULTS = {
  policy: 'enforce' as Policy,
  ensure: 'present' as 'present' | 'absent',
  prune: true,
  owner: 'root',
  group: 'root',
  fileMode: '0644',
  directoryMode: '0755',
  payloadFileMode: '0644',
  shell: '/usr/sbin/nologin',
  sshUser: 'root',
  sshPort: 22,
  clientPort: 2379,
  peerPort: 2380,
  dataDir: '/var/lib/etcd',
  initialEnvFile: '/etc/etcd/etcd-initial.env',
  healthTimeoutSeconds: 60,
  learnerTimeoutSeconds: 120,
} as const;
