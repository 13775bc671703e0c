/**
 * Leader election among several `converge watch` instances, through etcd.
 *
 * The algorithm and keys are etcd's own election (Go concurrency.Election,
 * which etcd3's `client.election(name)` also implements): every candidate puts
 * `election/<name>/<lease id>` under its lease; the key with the lowest create
 * revision leads, the others wait for the key just before theirs to go. So
 * `client.election(name).leader()` or `etcdctl elect -l` show the leader.
 *
 * The campaign is written here on etcd3's public Lease API rather than taken
 * from etcd3's Campaign, for fencing: Campaign hides its lease, and that
 * lease reports itself lost only 2 × TTL after keepalives stop, while etcd
 * expires it after 1 × TTL and elects the next candidate. Here every
 * keepalive's answer moves a deadline to (when it was sent + TTL − margin):
 * the server cannot expire the lease before then, so while the clock is
 * before it no other instance can lead. Past it this instance stops leading
 * at once, aborts the pass under way before its next step, and campaigns
 * again. Before each pass the loop also confirms the leadership with a
 * linearizable read (confirm()), and the shared loop state is written only
 * in a transaction that requires this instance's key to still exist.
 */
import { EventEmitter } from 'node:events';
import type { Etcd3, Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { parseState, type LoopState } from './state.js';
import type { ElectionStatus } from './types.js';

/** What the loop needs from an election (tests may supply their own). */
export interface Leadership {
  readonly id: string;
  /** 'elected' (); 'lost' (why: string). */
  readonly events: EventEmitter;
  /** Elected, and the lease is certainly still alive on the server. Synchronous: checked before every step. */
  isLeader(): boolean;
  /** A linearizable read: this instance's key is still the first. False on any doubt. */
  confirm(): Promise<boolean>;
  status(): ElectionStatus;
  /** The loop state the leaders share; null when none was saved yet or it cannot be read. */
  loadState(): Promise<LoopState | null>;
  /** Saves it only while this instance leads (a transaction on its key); false when it does not. */
  saveState(state: LoopState): Promise<boolean>;
  start(): void;
  /** Resigns (revokes the lease, so another instance takes over at once) and stops campaigning. */
  stop(): Promise<void>;
}

export interface EtcdLeadershipOptions {
  client: Etcd3;
  /** Election name; instances following the same branch use the same one. */
  name: string;
  /** This instance's id (the value it campaigns with, shown as the leader's id). */
  id: string;
  ttlSeconds: number;
  log: Logger;
  /** Wait before campaigning again after a failure (default 1 s, doubling up to 10 s). */
  retryMs?: number;
}

const errText = (e: unknown): string => (e instanceof Error ? e.message.split('\n')[0] ?? e.message : String(e));

export class EtcdLeadership implements Leadership {
  readonly events = new EventEmitter();
  readonly id: string;
  private readonly client: Etcd3;
  private readonly name: string;
  private readonly prefix: string;
  private readonly stateKey: string;
  private readonly ttlMs: number;
  private readonly marginMs: number;
  private readonly log: Logger;
  private readonly retryMs: number;
  /** Bumped whenever a campaign ends: results of an older one are ignored. */
  private generation = 0;
  private lease: Lease | null = null;
  private key: string | null = null;
  private elected = false;
  private since: number | null = null;
  /** Until when the server certainly keeps this instance's lease. */
  private validUntil = 0;
  /** When each keepalive still unanswered was sent, oldest first. */
  private fired: number[] = [];
  private watcher: Watcher | null = null;
  private cancelWait: (() => void) | null = null;
  private checker: NodeJS.Timeout | null = null;
  /** Fires when validUntil passes while leading. */
  private deadline: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;
  private stopped = true;
  private leaderId: string | null = null;
  private error: string | undefined;

  constructor(o: EtcdLeadershipOptions) {
    if (!(o.ttlSeconds >= 2)) throw new RangeError('the election lease TTL must be at least 2 s');
    this.client = o.client;
    this.name = o.name;
    this.id = o.id;
    this.prefix = `election/${o.name}/`;
    this.stateKey = `converge/${o.name}/state`;
    this.ttlMs = o.ttlSeconds * 1000;
    this.marginMs = Math.max(500, this.ttlMs / 10);
    this.log = o.log.child({ component: 'election' });
    this.retryMs = o.retryMs ?? 1000;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    // Standbys refresh whom they follow.
    this.checker = setInterval(() => this.tick(), 250);
    this.log.info({ name: this.name, id: this.id, ttlSeconds: this.ttlMs / 1000 }, 'campaigning for leadership');
    void this.campaign();
  }

  isLeader(): boolean {
    return this.elected && Date.now() < this.validUntil;
  }

  async confirm(): Promise<boolean> {
    const key = this.key;
    if (!this.isLeader() || key === null) return false;
    try {
      const first = await this.client.getAll().prefix(this.prefix).sort('Create', 'Ascend').limit(1).keys();
      return first[0] === key && this.isLeader();
    } catch (e) {
      this.log.warn({ error: errText(e) }, 'cannot confirm the leadership with etcd');
      return false;
    }
  }

  status(): ElectionStatus {
    return {
      id: this.id,
      name: this.name,
      leader: this.isLeader(),
      leaderId: this.isLeader() ? this.id : this.leaderId,
      since: this.isLeader() && this.since !== null ? new Date(this.since).toISOString() : null,
      ttlSeconds: this.ttlMs / 1000,
      ...(this.error === undefined ? {} : { error: this.error }),
    };
  }

  async loadState(): Promise<LoopState | null> {
    try {
      const raw = await this.client.get(this.stateKey).string();
      return raw === null ? null : parseState(raw);
    } catch (e) {
      this.log.warn({ error: errText(e) }, 'cannot read the shared loop state from etcd');
      return null;
    }
  }

  async saveState(state: LoopState): Promise<boolean> {
    const key = this.key;
    if (!this.isLeader() || key === null) return false;
    try {
      const r = await this.client.if(key, 'Create', '>', 0).then(this.client.put(this.stateKey).value(JSON.stringify(state))).commit();
      return r.succeeded;
    } catch (e) {
      this.log.warn({ error: errText(e) }, 'cannot save the shared loop state to etcd');
      return false;
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.checker !== null) clearInterval(this.checker);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.checker = null;
    this.retryTimer = null;
    const wasLeader = this.elected;
    await this.end('stopping');
    if (wasLeader) this.log.info('resigned the leadership');
  }

  private tick(): void {
    if (!this.elected && !this.stopped) void this.refreshLeader();
  }

  private refreshing = false;
  private lastRefresh = 0;

  private async refreshLeader(): Promise<void> {
    if (this.refreshing || Date.now() - this.lastRefresh < 1000) return;
    this.refreshing = true;
    this.lastRefresh = Date.now();
    try {
      this.leaderId = (await this.client.election(this.name).leader()) ?? null;
    } catch {
      this.leaderId = null;
    } finally {
      this.refreshing = false;
    }
  }

  private async campaign(): Promise<void> {
    const gen = ++this.generation;
    const current = (): boolean => gen === this.generation && !this.stopped;
    const lease = this.client.lease(this.ttlMs / 1000);
    this.lease = lease;
    this.fired = [];
    lease.on('keepaliveEstablished', () => {
      // Answers to keepalives sent on a stream that broke never come.
      this.fired = [];
    });
    lease.on('keepaliveFired', () => this.fired.push(Date.now()));
    lease.on('keepaliveSucceeded', () => {
      const sent = this.fired.shift();
      if (sent !== undefined && current()) this.extend(gen, sent + this.ttlMs - this.marginMs);
      this.log.trace({ sentAgoMs: sent === undefined ? null : Date.now() - sent, validForMs: this.validUntil - Date.now() }, 'lease renewed');
    });
    lease.on('keepaliveFailed', (e) => this.log.debug({ error: errText(e) }, 'lease keepalive failed; retrying'));
    lease.on('lost', (e) => this.lose(gen, `lease lost: ${errText(e)}`));
    try {
      const asked = Date.now();
      const leaseId = await lease.grant();
      if (!current()) return;
      this.validUntil = asked + this.ttlMs - this.marginMs;
      const key = `${this.prefix}${BigInt(leaseId).toString(16)}`;
      const put = await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(this.id).lease(leaseId)).else(this.client.get(key)).commit();
      if (!current()) return;
      this.key = key;
      const mine = put.succeeded ? put.header.revision : (put.responses[0]?.response_range?.kvs[0]?.create_revision ?? put.header.revision);
      for (;;) {
        const before = await this.client.getAll().prefix(this.prefix).maxCreateRevision((BigInt(mine) - 1n).toString()).sort('Create', 'Descend').limit(1).exec();
        if (!current()) return;
        const ahead = before.kvs[0];
        if (ahead === undefined) break;
        void this.refreshLeader();
        await this.waitForDelete(ahead.key.toString(), before.header.revision);
        if (!current()) return;
      }
      if (!this.isLeaseValid()) throw new Error('the lease expired while waiting to lead');
      this.elected = true;
      this.since = Date.now();
      this.failures = 0;
      this.error = undefined;
      this.leaderId = this.id;
      this.extend(gen, this.validUntil);
      this.log.info({ id: this.id, key }, 'elected leader');
      this.events.emit('elected');
    } catch (e) {
      if (!current()) return;
      this.error = errText(e);
      this.lose(gen, `campaign failed: ${this.error}`);
    }
  }

  /** Moves the deadline; while leading, the leadership ends exactly when it passes. */
  private extend(gen: number, until: number): void {
    this.validUntil = Math.max(this.validUntil, until);
    if (!this.elected) return;
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      this.deadline = null;
      if (this.elected && Date.now() >= this.validUntil) this.lose(gen, 'the lease was not renewed in time (etcd unreachable or this process stalled)');
      else if (this.elected) this.extend(gen, this.validUntil);
    }, Math.max(0, this.validUntil - Date.now()));
  }

  private isLeaseValid(): boolean {
    return Date.now() < this.validUntil;
  }

  private waitForDelete(key: string, revision: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (e?: Error): void => {
        if (done) return;
        done = true;
        this.cancelWait = null;
        const w = this.watcher;
        this.watcher = null;
        void w?.cancel().catch(() => undefined);
        if (e) reject(e);
        else resolve();
      };
      this.cancelWait = () => finish();
      this.client
        .watch()
        .key(key)
        .startRevision(revision)
        .only('delete')
        .create()
        .then((w) => {
          if (done) {
            void w.cancel().catch(() => undefined);
            return;
          }
          this.watcher = w;
          w.on('delete', () => finish());
          w.on('error', (e: Error) => finish(e));
        }, (e: Error) => finish(e));
    });
  }

  /** Ends the current campaign: no longer leader, lease revoked (best effort) so the key goes now rather than after the TTL. */
  private async end(why: string): Promise<void> {
    this.generation++;
    this.elected = false;
    this.since = null;
    this.validUntil = 0;
    if (this.deadline !== null) clearTimeout(this.deadline);
    this.deadline = null;
    this.cancelWait?.();
    const lease = this.lease;
    this.lease = null;
    this.key = null;
    if (lease !== null) {
      lease.removeAllListeners();
      lease.on('lost', () => undefined);
      await lease.revoke().catch((e: unknown) => this.log.debug({ error: errText(e), why }, 'could not revoke the old lease; it expires by itself'));
    }
  }

  private lose(gen: number, why: string): void {
    if (gen !== this.generation || this.stopped) return;
    const wasLeader = this.elected;
    void this.end(why);
    if (wasLeader) {
      this.log.warn({ id: this.id, why }, 'leadership lost');
      this.events.emit('lost', why);
    } else {
      this.log.warn({ id: this.id, why }, 'not campaigning: will try again');
    }
    this.failures += 1;
    const delay = wasLeader ? this.retryMs : Math.min(10_000, this.retryMs * 2 ** Math.min(this.failures - 1, 4));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (!this.stopped) void this.campaign();
    }, delay);
  }
}
