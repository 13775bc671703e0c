/**
 * SSH access to the nodes: the lab's client key, each node's host keys (made
 * once per node and kept across resets, so known_hosts stays true), the
 * known_hosts file, and running commands with the system's OpenSSH client
 * under strict host key checking.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync, renameSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { LabError } from '../errors/index.js';
import type { LabPaths } from './paths.js';
import { run, runOk, sleep, type RunResult } from './proc.js';

export async function ensureClientKey(p: LabPaths): Promise<void> {
  mkdirSync(p.sshDir, { recursive: true, mode: 0o700 });
  chmodSync(p.sshDir, 0o700);
  if (existsSync(p.clientKey) && existsSync(`${p.clientKey}.pub`)) return;
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'converge-lab', '-f', p.clientKey], { input: 'y\n', what: 'making the lab SSH client key' });
  chmodSync(p.clientKey, 0o600);
}

/** Make the node's host keys (ssh-keygen -A) unless it already has them. */
export async function ensureHostKeys(hostKeysDir: string): Promise<void> {
  const sshDir = join(hostKeysDir, 'etc', 'ssh');
  if (existsSync(join(sshDir, 'ssh_host_ed25519_key.pub'))) return;
  mkdirSync(sshDir, { recursive: true, mode: 0o700 });
  await runOk('ssh-keygen', ['-A', '-f', hostKeysDir], { what: 'making SSH host keys' });
}

/** The node's host public keys as "type base64" strings. */
export function hostPublicKeys(hostKeysDir: string): string[] {
  const sshDir = join(hostKeysDir, 'etc', 'ssh');
  return readdirSync(sshDir)
    .filter((f) => f.startsWith('ssh_host_') && f.endsWith('.pub'))
    .sort()
    .map((f) => readFileSync(join(sshDir, f), 'utf8').trim().split(/\s+/).slice(0, 2).join(' '));
}

/** Write known_hosts: each node by address and by name. */
export function writeKnownHosts(file: string, nodes: ReadonlyArray<{ name: string; address: string; keys: string[] }>): void {
  const lines: string[] = [];
  for (const n of [...nodes].sort((a, b) => a.name.localeCompare(b.name))) {
    for (const k of n.keys) lines.push(`${n.address},${n.name} ${k}`);
  }
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, lines.join('\n') + (lines.length ? '\n' : ''), { mode: 0o644 });
  renameSync(tmp, file);
}

export interface SshTarget {
  address: string;
  key: string;
  knownHosts: string;
}

export function sshArgs(t: SshTarget, connectTimeoutSec = 5): string[] {
  return [
    '-F', '/dev/null',
    '-i', t.key,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', `UserKnownHostsFile=${t.knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', `ConnectTimeout=${connectTimeoutSec}`,
    '-o', 'LogLevel=ERROR',
    `root@${t.address}`,
  ];
}

/** Run a shell command on a node over SSH (strict host key checking). */
export function sshRun(t: SshTarget, command: string, opts: { timeoutMs?: number; input?: string; connectTimeoutSec?: number } = {}): Promise<RunResult> {
  return run('ssh', [...sshArgs(t, opts.connectTimeoutSec), command], { timeoutMs: opts.timeoutMs ?? 60_000, ...(opts.input === undefined ? {} : { input: opts.input }) });
}

/** Wait until the node accepts the lab key over SSH; returns the milliseconds it took. */
export async function waitForSsh(name: string, t: SshTarget, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  let last: RunResult | undefined;
  while (Date.now() - t0 < timeoutMs) {
    last = await sshRun(t, 'true', { timeoutMs: 5000, connectTimeoutSec: 2 });
    if (last.code === 0) return Date.now() - t0;
    await sleep(200);
  }
  const why = (last?.stderr ?? '').trim().split('\n').slice(-2).join(' ');
  throw new LabError(`${name} (${t.address}) did not answer SSH within ${Math.round(timeoutMs / 1000)} s${why ? `: ${why}` : ''}`, `see its console log; \`converge lab reset ${name}\` gives it a fresh image`);
}

/** Whether sshd on `address` answers with its banner: a cheap liveness check, no key exchange. */
export function sshBanner(address: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: address, port: 22, timeout: timeoutMs });
    let got = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.on('data', (b: Buffer) => {
      got += b.toString('latin1');
      if (got.includes('\n')) done(got.startsWith('SSH-2.0-'));
    });
    sock.once('timeout', () => done(false));
    sock.once('error', () => done(false));
    sock.once('end', () => done(false));
  });
}
