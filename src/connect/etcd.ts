/**
 * etcd clients (etcd3 over gRPC with TLS and a client certificate).
 *
 * etcd3 picks a random host for every call and retries on another one, which
 * is wrong for two things converge does: per-member calls (status, health)
 * must reach exactly that member, and membership changes must never be sent
 * twice blindly (a retried add fails with "Peer URLs already exists", or
 * worse, a retried remove hits a different member). So every client here has
 * retries and circuit breakers turned off and a deadline on every call;
 * callers that want failover try the members one by one themselves.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { Etcd3, IOptions } from 'etcd3';
import { ConfigError } from '../errors/index.js';

/** PEM bytes of converge's client TLS. `key` is a secret: never print it. */
export interface EtcdTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export interface EtcdClientOptions extends EtcdTls {
  /** Client URLs, e.g. `https://10.240.16.10:2379`. */
  endpoints: string[];
  /**
   * Deadline of every call, connecting included (gRPC has no separate dial
   * timeout): a member that is down or unroutable answers within this time.
   */
  dialTimeoutMs?: number;
}

export const DEFAULT_DIAL_TIMEOUT_MS = 3000;

/** Per-call gRPC options (the deadline), as etcd3's RPC methods take them. */
export type CallOptions = NonNullable<Parameters<Etcd3['cluster']['memberList']>[1]>;

const noRetry = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => T | Promise<T>) => Promise.resolve(fn({ signal: new AbortController().signal })),
};

// etcd3 and its gRPC stack take about 0.3 s of CPU to load: only a command
// that talks to etcd pays for it (a plan with --skip-etcd never does).
let etcd3: typeof import('etcd3') | null = null;
const requireEtcd3 = (): typeof import('etcd3') => (etcd3 ??= createRequire(import.meta.url)('etcd3') as typeof import('etcd3'));

export function etcdClient(o: EtcdClientOptions): Etcd3 {
  if (o.endpoints.length === 0) throw new ConfigError('no etcd endpoints to connect to', 'list at least one member in the EtcdCluster');
  const timeout = o.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
  const options: IOptions = {
    hosts: o.endpoints,
    credentials: { rootCertificate: o.ca, certChain: o.cert, privateKey: o.key },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    grpcOptions: {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    },
    faultHandling: {
      host: () => noRetry as never,
      global: noRetry as never,
    },
  };
  return new (requireEtcd3().Etcd3)(options);
}

/** Call options with a deadline `ms` from now, for calls slower than the default. */
export function deadline(ms: number): CallOptions {
  return { deadline: Date.now() + ms };
}

/** Runs fn with a client and always closes it. */
export async function withEtcdClient<T>(o: EtcdClientOptions, fn: (client: Etcd3) => Promise<T>): Promise<T> {
  const client = etcdClient(o);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** One client per member client URL, so that a call reaches exactly that member. */
export class MemberClients {
  private readonly clients = new Map<string, Etcd3>();
  constructor(
    private readonly tls: EtcdTls,
    private readonly dialTimeoutMs: number = DEFAULT_DIAL_TIMEOUT_MS,
  ) {}

  get(url: string): Etcd3 {
    let c = this.clients.get(url);
    if (!c) {
      c = etcdClient({ ...this.tls, endpoints: [url], dialTimeoutMs: this.dialTimeoutMs });
      this.clients.set(url, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** Runs fn with a set of per-member clients and always closes them all. */
export async function withMemberClients<T>(tls: EtcdTls, dialTimeoutMs: number, fn: (clients: MemberClients) => Promise<T>): Promise<T> {
  const clients = new MemberClients(tls, dialTimeoutMs);
  try {
    return await fn(clients);
  } finally {
    clients.close();
  }
}

/** Reads converge's client TLS files (paths on the bastion). */
export async function loadEtcdTls(files: { caFile: string; certFile: string; keyFile: string }): Promise<EtcdTls> {
  const read = async (path: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'error';
      throw new ConfigError(`cannot read the etcd client ${what} ${path} (${code})`, 'check the secrets directory and the EtcdCluster client settings');
    }
  };
  const [ca, cert, key] = await Promise.all([read(files.caFile, 'CA certificate'), read(files.certFile, 'certificate'), read(files.keyFile, 'key')]);
  checkClientTls(files, { ca, cert, key });
  return { ca, cert, key };
}

/**
 * What can be known about converge's own TLS files without a connection: a
 * member answers a bad client certificate with a bare "bad certificate" alert,
 * so an expired certificate or a key of another certificate is named here.
 */
export function checkClientTls(files: { caFile: string; certFile: string; keyFile: string }, tls: EtcdTls, now: Date = new Date()): void {
  const hint = 'check the EtcdCluster client settings (or etcdCa/etcdCert/etcdKey) and the secrets directory';
  let cert: X509Certificate;
  try {
    new X509Certificate(tls.ca);
  } catch {
    throw new ConfigError(`the etcd CA certificate ${files.caFile} is not a PEM certificate`, hint);
  }
  try {
    cert = new X509Certificate(tls.cert);
  } catch {
    throw new ConfigError(`the etcd client certificate ${files.certFile} is not a PEM certificate`, hint);
  }
  const day = (d: string): string => new Date(d).toISOString().slice(0, 10);
  if (new Date(cert.validTo).getTime() < now.getTime()) {
    throw new ConfigError(`the etcd client certificate ${files.certFile} expired on ${day(cert.validTo)} (valid ${day(cert.validFrom)} to ${day(cert.validTo)})`, 'issue a new client certificate from the cluster\'s CA and put it in its place');
  }
  if (new Date(cert.validFrom).getTime() > now.getTime()) {
    throw new ConfigError(`the etcd client certificate ${files.certFile} is not valid before ${day(cert.validFrom)}`, 'check the clock of this machine, or issue a certificate valid now');
  }
  let matches = false;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(tls.key));
  } catch {
    throw new ConfigError(`the etcd client key ${files.keyFile} is not a PEM private key`, hint);
  }
  if (!matches) throw new ConfigError(`the etcd client key ${files.keyFile} does not belong to the certificate ${files.certFile}`, hint);
}

/**
 * A short, single-line description of an etcd/gRPC error for facts and
 * reports ("connection refused", "etcdserver: unhealthy cluster").
 */
export function etcdErrorText(e: unknown): string {
  const raw = e instanceof Error ? e.message : String(e);
  const last = /Last error: (?:Error: )?(.*?)\.?\s*(?:Resolution note|$)/.exec(raw)?.[1];
  const text = (last ?? raw)
    .replace(/^\d+ [A-Z_]+: /, '')
    .replace(/\s+/g, ' ')
    .trim();
  const alert = /alert ([a-z ]+?)(?::|$)/i.exec(text)?.[1];
  if (alert) return `TLS: the member refused converge's client certificate (${alert})`;
  if (/unable to verify|self[- ]signed|certificate verify failed|unable to get (local )?issuer/i.test(text)) {
    return `TLS: the member's certificate is not signed by the etcd CA converge was given (${text.replace(/^Error: /, '').split(/[.(]/)[0]?.trim()})`;
  }
  if (/ECONNREFUSED|connection refused/i.test(text)) return 'connection refused';
  if (/deadline exceeded/i.test(text)) return 'timed out';
  if (/EHOSTUNREACH|ENETUNREACH/i.test(text)) return 'no route to host';
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
