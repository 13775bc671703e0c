/**
 * The resolved desired state: what plan/ consumes. Produced by resolve() from
 * the validated documents; one ResolvedNode per Node, holding the concrete
 * resources selected for it with templates already rendered.
 *
 * This shape is a contract between model/, plan/, facts/ and apply/: change it
 * only together with all of them. Everything here is plain JSON data.
 */

/** Where a resource was declared, for messages: `file:line:col`. */
export interface SourceRef {
  file: string;
  line: number;
  col: number;
}

/** enforce: correct drift; report: never change, only report drift. */
export type Policy = 'enforce' | 'report';

export interface ResourceBase {
  /** `Kind/name`, unique in the desired state. */
  id: string;
  kind: 'Group' | 'User' | 'Directory' | 'File' | 'Service';
  name: string;
  ensure: 'present' | 'absent';
  policy: Policy;
  /** Remove from nodes when deleted from the desired state (default true). */
  prune: boolean;
  at: SourceRef;
}

export interface DesiredGroup extends ResourceBase {
  kind: 'Group';
  system: boolean;
  gid?: number;
}

export interface DesiredUser extends ResourceBase {
  kind: 'User';
  system: boolean;
  uid?: number;
  /** Primary group name. */
  group: string;
  /** Supplementary groups. */
  groups: string[];
  home: string;
  shell: string;
  comment?: string;
}

export interface DesiredDirectory extends ResourceBase {
  kind: 'Directory';
  path: string;
  owner: string;
  group: string;
  /** Octal string, e.g. "0750". */
  mode: string;
  /** Delete files inside that no resource manages (only with a source folder). */
  purge: boolean;
}

/**
 * How a file's bytes are obtained. `sha256` is always the digest of the
 * final bytes (rendered template, artifact, secret); `size` their length.
 * Text content is carried inline (it is in Git anyway); artifacts and secrets
 * are read from the bastion at apply time by their local path.
 */
export type ContentRef =
  | { kind: 'text'; origin: 'inline' | 'source' | 'template'; text: string; sha256: string; size: number }
  | { kind: 'artifact'; name: string; localPath: string; sha256: string; size: number | null }
  | { kind: 'secret'; name: string; localPath: string; sha256: string | null; size: number | null };

export interface DesiredFile extends ResourceBase {
  kind: 'File';
  path: string;
  owner: string;
  group: string;
  mode: string;
  /** Absent when ensure is 'absent'. */
  content?: ContentRef;
  /** Service units (e.g. "etcd.service") to restart when this file changes. */
  restarts: string[];
  /**
   * The Directory resource id this file came from when it is part of a
   * directory payload (Directory.source), else undefined.
   */
  fromDirectory?: string;
}

export interface DesiredService extends ResourceBase {
  kind: 'Service';
  /** Full unit name, e.g. "etcd.service". */
  unit: string;
  enabled: boolean;
  running: boolean;
}

export interface ResolvedNode {
  name: string;
  address: string;
  ssh: { user: string; port: number; hostKey?: string };
  labels: Record<string, string>;
  vars: Record<string, string>;
  groups: DesiredGroup[];
  users: DesiredUser[];
  directories: DesiredDirectory[];
  files: DesiredFile[];
  services: DesiredService[];
}

export interface EtcdMemberSpec {
  /** Member name (defaults to the node name). */
  name: string;
  node: string;
  address: string;
  peerUrl: string;
  clientUrl: string;
}

export interface ResolvedEtcd {
  id: string;
  name: string;
  members: EtcdMemberSpec[];
  clientPort: number;
  peerPort: number;
  dataDir: string;
  token: string;
  /** Service resource unit that runs etcd on each member, e.g. "etcd.service". */
  unit: string;
  /**
   * File converge writes only when a member is bootstrapped or added
   * (data dir empty): ETCD_INITIAL_CLUSTER / _STATE. The unit reads it with
   * EnvironmentFile=-. initial-* settings are ignored once a data dir exists,
   * so this file is not a Git-managed File and never triggers restarts.
   */
  initialEnvFile: string;
  /** Client TLS for converge itself (paths on the bastion, from the secrets dir). */
  client: { caFile: string; certFile: string; keyFile: string };
  rollout: { healthTimeoutSeconds: number; learnerTimeoutSeconds: number };
  at: SourceRef;
}

export interface ResolvedState {
  /** Absolute desired-state root that was loaded. */
  root: string;
  /** Commit id when loaded from Git, else null. */
  commit: string | null;
  nodes: ResolvedNode[];
  etcd: ResolvedEtcd | null;
}
