/**
 * What is actually on a node, as gathered by one batched probe. Plain JSON.
 * Contract between facts/, plan/ and apply/.
 */

export type PathFact =
  | { exists: false }
  | {
      exists: true;
      type: 'file' | 'dir' | 'symlink' | 'other';
      owner: string; // name, or the number as a string when it has no name
      group: string;
      uid: number;
      gid: number;
      /** Octal string with 4 digits, e.g. "0640". */
      mode: string;
      size: number;
      /** Regular files only. */
      sha256?: string;
      /**
       * Current content (utf8) of a small text file whose digest differs from
       * the desired one, so that the plan can show a unified diff without a
       * second round trip. Never gathered for secrets or artifacts.
       */
      text?: string;
      /** Symlink target, for messages. */
      target?: string;
    };

export interface UserFact {
  name: string;
  uid: number;
  gid: number;
  /** Primary group name (resolved from gid), or the gid as a string. */
  group: string;
  groups: string[];
  home: string;
  shell: string;
}

export interface GroupFact {
  name: string;
  gid: number;
  members: string[];
}

export interface UnitFact {
  unit: string;
  loadState: string; // loaded, not-found, ...
  activeState: string; // active, inactive, failed, activating, ...
  unitFileState: string; // enabled, disabled, static, "" ...
  needDaemonReload: boolean;
}

/** converge's record of what it manages on a node (written by apply). */
export interface Inventory {
  commit: string | null;
  appliedAt: string;
  /** Resources converge manages on this node, by id. */
  resources: Record<string, InventoryEntry>;
}

export interface InventoryEntry {
  kind: 'Group' | 'User' | 'Directory' | 'File' | 'Service';
  /** Path for File/Directory, unit for Service, name for accounts. */
  target: string;
  /** true when converge created it; false when it existed before (adopted). */
  created: boolean;
  prune: boolean;
  /** Desired sha256 last applied (files), for drift labelling. */
  sha256?: string;
  owner?: string;
  group?: string;
  mode?: string;
}

export interface EtcdDataDirFact {
  path: string;
  exists: boolean;
  /**
   * true when missing or holding no write-ahead log (member/wal/): a start
   * that failed early leaves member/snap/db behind but no WAL, and is not a
   * member's state.
   */
  empty: boolean;
}

export interface NodeFacts {
  node: string;
  paths: Record<string, PathFact>;
  users: Record<string, UserFact>;
  groups: Record<string, GroupFact>;
  units: Record<string, UnitFact>;
  /** Paths found inside managed directories with purge (for purge planning). */
  dirListings: Record<string, string[]>;
  inventory: Inventory | null;
  etcdDataDir?: EtcdDataDirFact;
  /**
   * Files that list the etcd unit in `restarts` and changed after the running
   * etcd started (mtime later than the unit's ExecMainStartTimestamp): a
   * restart that is still owed, e.g. after a rollout halted half-way. Level
   * based, so the next pass finishes what an interrupted one began.
   */
  etcdRestartPending?: string[];
  /**
   * The node's digest cache as the probe found it (see digest-cache.ts):
   * how many records it held, how many answered for an unchanged file, and
   * the key (dev:inode:size:mtime:ctime) of each hashed file that had not
   * changed for a second when the probe began. Not part of the facts' digest.
   */
  digestCache?: DigestCacheFact;
}

export interface DigestCacheFact {
  records: number;
  hits: number;
  keys: Record<string, string>;
}

/** Facts of the etcd cluster, through its API. Member IDs are decimal strings. */
export interface EtcdMemberFact {
  id: string;
  name: string; // "" when not started yet
  peerUrls: string[];
  clientUrls: string[]; // [] when not started yet
  isLearner: boolean;
}

export interface EtcdMemberStatus {
  id: string;
  reachable: boolean;
  leader: string | null; // member id of the leader this member sees
  raftIndex: string | null;
  raftTerm: string | null;
  dbSize: number | null;
  version: string | null;
  /** A linearizable read through this member succeeded. */
  healthy: boolean;
  error?: string;
  /** Cluster ID in this member's answers (decimal string). */
  clusterId?: string;
}

export interface EtcdFacts {
  /** false when no member could be reached at all. */
  reachable: boolean;
  members: EtcdMemberFact[];
  status: Record<string, EtcdMemberStatus>; // by member id
  alarms: { memberId: string; alarm: string }[];
  error?: string;
  /** Cluster ID agreed by the members that answered (decimal string). */
  clusterId?: string;
  /**
   * Client URLs of desired members that answered as a member of another
   * cluster (or as an ID not in the member list): typically etcd started
   * alone on an empty data dir and bootstrapped a cluster of its own.
   */
  foreign?: { url: string; memberId: string; clusterId: string }[];
}
