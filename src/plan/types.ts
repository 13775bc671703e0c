/**
 * The plan: plain, JSON-serialisable data. An ordered list of actions per
 * node (and for the etcd cluster), each with a human reason that is for
 * display only and never steers apply. Contract between plan/, apply/ and
 * report/.
 */

export const PLAN_FORMAT = 1;

/** How a file's new content is shown: never the content of a secret. */
export type ContentKind = 'text' | 'artifact' | 'secret';

interface Base {
  node: string;
  /** `Kind/name` of the resource behind the action. */
  resource: string;
  reason: string;
}

export type HostAction =
  | (Base & { type: 'group.create'; name: string; gid?: number; system: boolean })
  | (Base & { type: 'group.remove'; name: string })
  | (Base & { type: 'user.create'; name: string; uid?: number; group: string; groups: string[]; home: string; shell: string; system: boolean; comment?: string })
  | (Base & { type: 'user.modify'; name: string; changes: { field: 'group' | 'groups' | 'home' | 'shell' | 'uid'; from: string; to: string }[]; group: string; groups: string[]; home: string; shell: string; uid?: number })
  | (Base & { type: 'user.remove'; name: string })
  | (Base & { type: 'dir.create'; path: string; owner: string; group: string; mode: string })
  | (Base & {
      type: 'file.write';
      path: string;
      owner: string;
      group: string;
      mode: string;
      contentKind: ContentKind;
      sha256: string;
      size: number | null;
      /** Digest of what is there now, null when the file does not exist. */
      oldSha256: string | null;
      /** For text files only (never secrets): old and new text for a unified diff. */
      oldText?: string;
      newText?: string;
    })
  | (Base & { type: 'path.chown'; path: string; owner: string; group: string; from: { owner: string; group: string } })
  | (Base & { type: 'path.chmod'; path: string; mode: string; from: string })
  | (Base & { type: 'path.remove'; path: string; pathType: 'file' | 'dir' })
  | (Base & { type: 'systemd.daemon-reload' })
  | (Base & { type: 'service.enable'; unit: string })
  | (Base & { type: 'service.disable'; unit: string })
  | (Base & { type: 'service.start'; unit: string })
  | (Base & { type: 'service.stop'; unit: string })
  | (Base & { type: 'service.restart'; unit: string; because: string[] });

export type EtcdAction =
  | (Base & { type: 'etcd.bootstrap'; members: string[]; initialCluster: string })
  | (Base & {
      type: 'etcd.member.add';
      name: string;
      peerUrl: string;
      initialCluster: string;
      /**
       * Set when the member is already in the member list but never started
       * (an add or bootstrap that was interrupted): apply does not add it
       * again, it starts it and (a learner) promotes it.
       */
      memberId?: string;
    })
  | (Base & { type: 'etcd.member.promote'; name: string; memberId: string })
  | (Base & {
      type: 'etcd.member.remove';
      name: string;
      memberId: string;
      /**
       * The member leaves for good (scale in): after the removal, etcd is
       * stopped and disabled on its node and the data dir moved aside, so it
       * can never rejoin with stale data. false when the node is wiped already
       * (replace) or cannot be reached.
       */
      moveDataDirAside: boolean;
    })
  | (Base & { type: 'etcd.leader.move'; fromMemberId: string; toMemberId: string })
  | (Base & { type: 'etcd.member.restart'; name: string; unit: string; because: string[] });

export type Action = HostAction | EtcdAction;

/** A per-resource difference that policy `report` keeps out of the actions. */
export interface Drift {
  node: string;
  resource: string;
  field: string;
  want: string;
  have: string;
}

/** A resource the host planner will not touch on a node, with why and what to do. */
export interface NodeRefusal {
  /** `Kind/name` of the resource. */
  resource: string;
  path: string;
  /** Names the node and the path. */
  message: string;
  hint: string;
}

export interface NodePlan {
  node: string;
  /** false when facts could not be gathered; `error` says why. */
  reachable: boolean;
  error?: string;
  actions: HostAction[];
  /** Differences not acted on (policy report, adopted paths kept). */
  reported: Drift[];
  /** Resources refused on this node (their messages are also in `error`). */
  refusals?: NodeRefusal[];
  /** Index in `actions` of the first removal (pruning); absent when nothing is removed. */
  firstRemoval?: number;
  /**
   * Why the etcd unit on this node must restart (changed files it restarts on).
   * The host plan leaves that restart to the etcd rollout, which does it one
   * member at a time.
   */
  etcdRestartBecause?: string[];
}

export interface Plan {
  format: typeof PLAN_FORMAT;
  commit: string | null;
  createdAt: string;
  /** sha256 of the canonical JSON of all facts the plan was computed against. */
  factsDigest: string;
  nodes: NodePlan[];
  /** Ordered cluster-level steps (membership changes, rolling restarts). */
  etcd: EtcdAction[];
  /** Changes refused as unsafe, with why and what to do. Non-empty → apply refuses. */
  refusals: PlanRefusal[];
}

export interface PlanRefusal {
  message: string;
  hint: string;
  /**
   * etcd members whose unit is starting (activating, or active while the
   * member does not answer yet) and without which the refusal would not
   * stand: it may lift within seconds, so a pass waits for them a while
   * before it believes it.
   */
  starting?: string[];
}
