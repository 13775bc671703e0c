/**
 * The SSH transport (ssh2): one connection per node, each exec one channel
 * running a whole sh script. Host keys are checked strictly against a
 * known_hosts file or a pinned key; every failure is a NodeError naming the
 * node and saying what to do. Key material never appears in any message.
 */
import { appendFile, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { constants as osConstants } from 'node:os';
import type { Readable } from 'node:stream';
import ssh2 from 'ssh2';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import { NodeError } from '../errors/index.js';
import {
  blobKeyType,
  checkHostKey,
  entriesFor,
  fingerprint,
  formatPublicKey,
  hostKeyAlgorithms,
  hostLookupName,
  knownHostsLine,
  parseKnownHosts,
  parsePublicKey,
} from './known-hosts.js';
import type { KnownHostEntry, PublicKey } from './known-hosts.js';
import { shellQuote } from './transport.js';
import type { ExecOptions, ExecResult, Transport, TransportTimings } from './transport.js';

export { withNodes } from './parallel.js';
export type { NodeOutcome } from './parallel.js';

export interface SshOptions {
  /** Node name, for messages. */
  node: string;
  host: string;
  port?: number;
  user: string;
  /** The private key itself (Buffer) or the path of its file (string). */
  privateKey?: Buffer | string;
  /** ssh-agent socket (SSH_AUTH_SOCK). */
  agent?: string;
  knownHostsFile?: string;
  /** "ssh-ed25519 AAAA…": when set, the only key accepted for this node. */
  pinnedHostKey?: string;
  connectTimeoutMs?: number;
  /** Default per-command timeout; 0 disables it. */
  commandTimeoutMs?: number;
  /**
   * Accept (and record in knownHostsFile) the key of a host that is not known
   * yet. A changed key is still refused. For throwaway setups only.
   */
  insecureTrustOnFirstUse?: boolean;
}

const DEFAULT_PORT = 22;
const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 10 * 60_000;
/**
 * The script travels as one argument of `sh -c`; Linux caps a single argument
 * at 128 KiB (MAX_ARG_STRLEN). Bulk data belongs on stdin.
 */
export const MAX_SCRIPT_BYTES = 120 * 1024;
const STDIN_CHUNK = 64 * 1024;

/** Host key types ssh2 can negotiate (see its DEFAULT/SUPPORTED_SERVER_HOST_KEY). */
const SUPPORTED_HOST_KEY_TYPES = new Set([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
  'ssh-dss',
]);

interface TrustAnchors {
  entries: KnownHostEntry[];
  /** Where they came from, for messages. */
  source: string;
  names: string[];
}

async function loadTrust(o: SshOptions, port: number): Promise<TrustAnchors> {
  const names = [hostLookupName(o.host, port)];
  if (o.pinnedHostKey !== undefined) {
    const key = parsePublicKey(o.pinnedHostKey);
    if (!key) {
      throw new NodeError('E_HOSTKEY', o.node, 'the pinned host key in the Node spec is not a valid public key', {
        hint: 'write it as "TYPE BASE64", e.g. the first two fields of /etc/ssh/ssh_host_ed25519_key.pub on the node',
      });
    }
    return { entries: [{ marker: null, hosts: names[0]!, key, line: 0 }], source: 'the key pinned in the Node spec', names };
  }
  if (o.knownHostsFile === undefined) return { entries: [], source: 'no known_hosts file', names };
  let text = '';
  try {
    text = await readFile(o.knownHostsFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new NodeError('E_HOSTKEY', o.node, `cannot read known_hosts file ${o.knownHostsFile}: ${(e as Error).message}`);
    }
  }
  return { entries: parseKnownHosts(text).entries, source: o.knownHostsFile, names };
}

function keyDesc(k: PublicKey): string {
  return `${k.type} ${fingerprint(k.blob)}`;
}

function hostKeyRefusal(o: SshOptions, port: number, trust: TrustAnchors, presented: PublicKey, verdict: ReturnType<typeof checkHostKey>): NodeError | null {
  const where = `${o.host}:${port}`;
  const pinned = o.pinnedHostKey !== undefined;
  const data = { host: o.host, port, presented: formatPublicKey(presented), fingerprint: fingerprint(presented.blob) };
  switch (verdict.status) {
    case 'trusted':
      return null;
    case 'revoked':
      return new NodeError('E_HOSTKEY', o.node, `host key of ${where} (${keyDesc(presented)}) is marked @revoked in ${trust.source} line ${verdict.line}`, {
        hint: 'the node must get a new host key; do not connect until it has one that you have checked out of band',
        data,
      });
    case 'unknown':
      return new NodeError('E_HOSTKEY', o.node, `host key of ${where} is unknown (${keyDesc(presented)}); ${o.knownHostsFile === undefined ? 'no known_hosts file was given' : `not in ${trust.source}`}`, {
        hint:
          `check the fingerprint out of band (on the node: ssh-keygen -lf /etc/ssh/ssh_host_${presented.type.replace(/^ssh-|-.*$/g, '')}_key.pub), ` +
          `then add "${hostLookupName(o.host, port)} ${formatPublicKey(presented)}" to ${o.knownHostsFile ?? 'your known_hosts file'} ` +
          `or pin it in the Node spec (ssh.hostKey: "${formatPublicKey(presented)}")`,
        data,
      });
    case 'changed': {
      const known = verdict.known.map(keyDesc).join(', ');
      return new NodeError(
        'E_HOSTKEY',
        o.node,
        `host key of ${where} has CHANGED: ${pinned ? 'pinned' : 'known'} ${known}, presented ${keyDesc(presented)}. ` +
          'Someone may be intercepting the connection (man-in-the-middle); refusing to connect',
        {
          hint: pinned
            ? 'if the node was reinstalled, check the new key out of band and update ssh.hostKey in the Node spec'
            : `if the node was reinstalled, check the new key out of band, remove the old one (ssh-keygen -R "${hostLookupName(o.host, port)}" -f ${trust.source}) and add the new one`,
          data: { ...data, known: verdict.known.map((k) => fingerprint(k.blob)) },
        },
      );
    }
  }
}

function signalExitCode(signal: string | undefined): number {
  const n = signal ? (osConstants.signals as Record<string, number>)[`SIG${signal}`] : undefined;
  return 128 + (n ?? 0);
}

function waitWritable(ch: ClientChannel): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      ch.off('drain', onDrain);
      ch.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    ch.once('drain', onDrain);
    ch.once('close', onClose);
  });
}

function* chunksOf(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += STDIN_CHUNK) yield buf.subarray(i, i + STDIN_CHUNK);
}

/**
 * Stream stdin into the channel, honouring its window (backpressure), then
 * send EOF. Stops quietly when the remote side closes first: the command's
 * exit status says what happened.
 */
async function feedStdin(ch: ClientChannel, stdin: ExecOptions['stdin'], onProgress: ExecOptions['onProgress'], isOpen: () => boolean): Promise<void> {
  if (stdin === undefined) {
    ch.end();
    return;
  }
  const source: Iterable<Buffer> | Readable = typeof stdin === 'string' ? chunksOf(Buffer.from(stdin, 'utf8')) : Buffer.isBuffer(stdin) ? chunksOf(stdin) : stdin;
  let sent = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer | string>) {
      if (!isOpen()) break;
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      const more = ch.write(buf);
      sent += buf.length;
      onProgress?.(sent);
      if (!more && !(await waitWritable(ch))) break;
    }
  } finally {
    if (typeof stdin === 'object' && !Buffer.isBuffer(stdin) && !stdin.destroyed) stdin.destroy();
  }
  if (isOpen()) ch.end();
}

class SshTransport implements Transport {
  readonly node: string;
  private count = 0;
  private closed = false;
  private lost: string | null = null;
  private readonly inflight = new Set<(err: NodeError) => void>();
  readonly timings: TransportTimings;

  constructor(
    private readonly client: InstanceType<typeof ssh2.Client>,
    private readonly opts: SshOptions,
    private readonly where: string,
    connect: TransportTimings['connect'],
  ) {
    this.timings = { connect, execs: [] };
    this.node = opts.node;
    client.on('error', (err: Error) => this.drop(`connection to ${where} failed: ${err.message}`));
    client.on('close', () => this.drop(`connection to ${where} closed`));
  }

  get execCount(): number {
    return this.count;
  }

  private drop(reason: string): void {
    if (this.lost === null) this.lost = reason;
    const err = new NodeError('E_CONNECT', this.node, this.closed ? 'connection already closed' : `${reason} while a command was running`, {
      hint: 'check the node and the network; the next pass starts again from the node\'s actual state',
    });
    for (const fail of this.inflight) fail(err);
    this.inflight.clear();
  }

  exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    if (this.closed || this.lost !== null) {
      return Promise.reject(new NodeError('E_CONNECT', this.node, this.closed ? 'connection already closed' : this.lost!));
    }
    const command = `sh -c ${shellQuote(script)}`;
    if (Buffer.byteLength(command) > MAX_SCRIPT_BYTES) {
      return Promise.reject(new Error(`script for ${this.node} is ${Buffer.byteLength(command)} bytes; the limit is ${MAX_SCRIPT_BYTES} (send data on stdin)`));
    }
    this.count++;
    const timeoutMs = opts.timeoutMs ?? this.opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const timing = { at: performance.now(), ms: 0, stdinBytes: 0 };
    this.timings.execs.push(timing);
    const onProgress = (n: number): void => {
      timing.stdinBytes = n;
      opts.onProgress?.(n);
    };
    return new Promise<ExecResult>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      let channel: ClientChannel | undefined;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        timing.ms = performance.now() - timing.at;
        if (timer) clearTimeout(timer);
        this.inflight.delete(onLost);
        fn();
      };
      const onLost = (err: NodeError) => settle(() => reject(err));
      this.inflight.add(onLost);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          settle(() =>
            reject(
              new NodeError('E_REMOTE', this.node, `command timed out after ${(timeoutMs / 1000).toFixed(1)} s`, {
                hint: 'the node may be overloaded or a service may hang; look at it, or raise the command timeout',
                data: { timeoutMs },
              }),
            ),
          );
          if (channel) {
            // OpenSSH ≥ 7.9 honours the signal request; closing the channel covers older servers.
            channel.signal('KILL');
            channel.close();
          }
        }, timeoutMs);
      }
      this.client.exec(command, (err, ch) => {
        if (err) {
          settle(() => reject(new NodeError('E_CONNECT', this.node, `cannot open a session channel on ${this.where}: ${err.message}`, { hint: 'check MaxSessions in the node\'s sshd_config' })));
          return;
        }
        channel = ch;
        if (settled) {
          ch.close();
          return;
        }
        const out: Buffer[] = [];
        const errOut: Buffer[] = [];
        let code: number | null = null;
        let open = true;
        ch.on('data', (d: Buffer) => out.push(d));
        ch.stderr.on('data', (d: Buffer) => errOut.push(d));
        ch.on('exit', (c: number | null, signal?: string) => {
          code = c ?? signalExitCode(signal);
        });
        ch.on('close', () => {
          open = false;
          settle(() => {
            if (code === null) {
              reject(new NodeError('E_CONNECT', this.node, `the channel on ${this.where} closed without an exit status`, { hint: 'the connection may have been cut; run again' }));
            } else {
              resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(errOut).toString('utf8') });
            }
          });
        });
        feedStdin(ch, opts.stdin, onProgress, () => open && !settled).catch((e: unknown) => {
          settle(() => reject(new NodeError('E_APPLY', this.node, `reading the data to send failed: ${(e as Error).message}`)));
          ch.close();
        });
      });
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.lost !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.client.destroy();
        resolve();
      }, 2000);
      this.client.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.client.end();
    });
  }
}

async function loadKey(o: SshOptions): Promise<{ key: Buffer | undefined; label: string }> {
  if (o.privateKey === undefined) return { key: undefined, label: `the keys in ssh-agent (${o.agent})` };
  if (Buffer.isBuffer(o.privateKey)) return { key: o.privateKey, label: 'the configured key' };
  try {
    return { key: await readFile(o.privateKey), label: `key ${o.privateKey}` };
  } catch (e) {
    throw new NodeError('E_CONNECT', o.node, `cannot read SSH key ${o.privateKey}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, {
      hint: 'check the path of the SSH key in the configuration',
    });
  }
}

function connectError(o: SshOptions, where: string, keyLabel: string, timeoutMs: number, err: Error & { level?: string; code?: string }): NodeError {
  const opts = (hint: string) => ({ hint, cause: err });
  if (err.level === 'client-authentication') {
    return new NodeError('E_CONNECT', o.node, `authentication failed for ${o.user}@${where} with ${keyLabel}`, opts(
      `check that the matching public key is in ~${o.user}/.ssh/authorized_keys on the node and that the user is right`,
    ));
  }
  if (err.level === 'client-timeout' || err.code === 'ETIMEDOUT') {
    return new NodeError('E_CONNECT', o.node, `timed out after ${(timeoutMs / 1000).toFixed(1)} s connecting to ${where}`, opts(
      'check that the node is up and reachable on that address and port, or raise the connect timeout',
    ));
  }
  switch (err.code) {
    case 'ECONNREFUSED':
      return new NodeError('E_CONNECT', o.node, `connection refused by ${where}`, opts('check that sshd runs on the node and listens on that port'));
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EHOSTDOWN':
      return new NodeError('E_CONNECT', o.node, `${where} is unreachable (${err.code})`, opts('check that the node is up and that its address in the Node spec is right'));
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new NodeError('E_CONNECT', o.node, `cannot resolve ${o.host}`, opts('check the address in the Node spec'));
    case 'ECONNRESET':
      return new NodeError('E_CONNECT', o.node, `${where} reset the connection`, opts('check sshd on the node (MaxStartups, tcp wrappers, fail2ban)'));
  }
  return new NodeError('E_CONNECT', o.node, `ssh to ${where} failed: ${err.message}`, opts('check the node and its sshd'));
}

/** Open an SSH connection to one node, checking its host key strictly. */
export async function connectSsh(o: SshOptions): Promise<Transport> {
  const port = o.port ?? DEFAULT_PORT;
  const where = `${o.host}:${port}`;
  const timeoutMs = o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  if (o.privateKey === undefined && o.agent === undefined) {
    throw new NodeError('E_CONNECT', o.node, `no SSH credentials for ${o.user}@${where}`, { hint: 'configure an SSH key file or an ssh-agent socket (SSH_AUTH_SOCK)' });
  }
  const trust = await loadTrust(o, port);
  const { key, label } = await loadKey(o);

  const mine = entriesFor(trust.entries, trust.names).filter((e) => e.marker === null);
  const algs = hostKeyAlgorithms(new Set(mine.map((e) => e.key.type).filter((t) => SUPPORTED_HOST_KEY_TYPES.has(t))));

  let refusal: NodeError | null = null;
  let learned: string | null = null;
  const hostVerifier = (blob: Buffer): boolean => {
    const type = blobKeyType(blob);
    if (type === null) {
      refusal = new NodeError('E_HOSTKEY', o.node, `${where} presented a malformed host key`);
      return false;
    }
    const presented = { type, blob: Buffer.from(blob) };
    const verdict = checkHostKey(trust.entries, trust.names, presented);
    if (verdict.status === 'unknown' && o.insecureTrustOnFirstUse) {
      learned = knownHostsLine(trust.names[0]!, presented, randomBytes(20));
      return true;
    }
    refusal = hostKeyRefusal(o, port, trust, presented, verdict);
    return refusal === null;
  };

  const config: ConnectConfig = {
    host: o.host,
    port,
    username: o.user,
    readyTimeout: timeoutMs,
    keepaliveInterval: 15_000,
    keepaliveCountMax: 4,
    hostVerifier,
    // Straight to the key: ssh2 would first try "none" to learn the server's methods, a round trip for nothing.
    authHandler: [key !== undefined ? 'publickey' : 'agent'],
    ...(key !== undefined ? { privateKey: key } : {}),
    ...(o.agent !== undefined ? { agent: o.agent } : {}),
    ...(algs.length > 0 ? { algorithms: { serverHostKey: algs as NonNullable<ConnectConfig['algorithms']>['serverHostKey'] } } : {}),
  };

  const client = new ssh2.Client();
  const connectAt = performance.now();
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error & { level?: string; code?: string }) => {
      client.off('ready', onReady);
      // A failed client may still report socket errors while it winds down.
      client.on('error', () => undefined);
      client.destroy();
      if (refusal) return reject(refusal);
      if (algs.length > 0 && err.level === 'handshake' && /host key/i.test(err.message)) {
        return reject(
          new NodeError('E_HOSTKEY', o.node, `${where} offers none of the host key types known for it (${mine.map((e) => keyDesc(e.key)).join(', ')})`, {
            hint: `the node's host keys may have been replaced: check them out of band and update ${trust.source}`,
            cause: err,
          }),
        );
      }
      reject(connectError(o, where, label, timeoutMs, err));
    };
    const onReady = () => {
      client.off('error', onError);
      resolve();
    };
    client.once('error', onError);
    client.once('ready', onReady);
    try {
      client.connect(config);
      // Nagle off: an exec is a few small messages (open, exec, stdin, EOF) that would each wait for the ACK of the one before.
      client.setNoDelay(true);
    } catch (e) {
      client.off('error', onError);
      client.off('ready', onReady);
      const msg = (e as Error).message;
      const hint = /encrypted|passphrase/i.test(msg) ? 'converge does not ask for passphrases: load the key into ssh-agent and configure the agent socket instead' : 'use an OpenSSH, PEM or PPK private key';
      reject(new NodeError('E_CONNECT', o.node, `cannot use ${label}: ${/encrypted|passphrase/i.test(msg) ? 'it is encrypted' : 'it is not a valid private key'}`, { hint }));
    }
  });
  const transport = new SshTransport(client, o, where, { at: connectAt, ms: performance.now() - connectAt });
  if (learned !== null && o.knownHostsFile !== undefined) {
    await appendFile(o.knownHostsFile, `${learned}\n`, { mode: 0o600 });
  }
  return transport;
}
