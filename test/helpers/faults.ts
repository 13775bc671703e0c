/**
 * The fault suite's own corner of the lab: nodes fa-a, fa-b, fa-c (fa-d for
 * a scale-out), desired states derived from desired-state/ on those nodes,
 * an artifacts folder with a second etcd binary (the same program with a
 * different digest, so that a change rewrites 20 MiB on every member), the
 * converge CLI run as a real child process, and what the suite checks on the
 * nodes: a node put back to "fresh" quickly, what a kill left behind, and
 * leftovers after a pass.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadEtcdTls, withEtcdClient, type EtcdTls } from '../../src/connect/etcd.js';
import { runOnNode } from '../../src/lab/index.js';
import { fsSource, loadDesiredState } from '../../src/model/index.js';
import type { ResolvedState } from '../../src/model/types.js';
import { bootstrapInitialCluster, initialEnvText, sha256Hex } from '../../src/plan/etcd.js';
import { runCli, startCli, type CliProcess, type CliResult } from './cli.js';
import { writeDesired, type Doc } from './desired.js';
import { ensureLab, projectDir, type TestLab } from './lab.js';

/** The suite's nodes: fa-a … fa-d (FAULTS_NODES=xy gives xy-a … xy-d, for a second run beside the first). */
const PREFIX = process.env['FAULTS_NODES'] ?? 'fa';
export const THREE = [`${PREFIX}-a`, `${PREFIX}-b`, `${PREFIX}-c`];
export const FOURTH = `${PREFIX}-d`;
export const ALL = [...THREE, FOURTH];
const CHAPTER = ['cp-a', 'cp-b', 'cp-c'];

export interface Binary {
  artifact: string;
  sha256: string;
}

export interface FaultLab {
  lab: TestLab;
  /** Artifacts folder of this suite: the lab's etcd and etcdctl, and etcd-b. */
  artifacts: string;
  binaries: { A: Binary; B: Binary };
  tls: EtcdTls;
  /** This suite's copy of the built CLI (see cliSnapshot). */
  cli: string;
}

const sha256File = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

export async function faultLab(): Promise<FaultLab> {
  const lab = await ensureLab({ nodes: ALL });
  const artifacts = mkdtempSync(join(tmpdir(), 'converge-faults-artifacts-'));
  for (const f of ['etcd', 'etcdctl']) copyFileSync(join(lab.artifactsDir, f), join(artifacts, f));
  // The same etcd with a few bytes after the ELF image: it runs the same, its digest differs.
  writeFileSync(join(artifacts, 'etcd-b'), Buffer.concat([readFileSync(join(lab.artifactsDir, 'etcd')), Buffer.from('\nconverge fault suite: variant B\n')]), { mode: 0o755 });
  const tls = await loadEtcdTls({ caFile: join(lab.secretsDir, 'ca.pem'), certFile: join(lab.secretsDir, 'client/etcd-client.pem'), keyFile: join(lab.secretsDir, 'client/etcd-client-key.pem') });
  return {
    cli: cliSnapshot(),
    lab,
    artifacts,
    binaries: { A: { artifact: 'etcd', sha256: sha256File(join(artifacts, 'etcd')) }, B: { artifact: 'etcd-b', sha256: sha256File(join(artifacts, 'etcd-b')) } },
    tls,
  };
}

/**
 * This run's copy of dist: ROOT/dist, beside links to the project's
 * package.json, schemas and node_modules, so that dist's relative paths and
 * its packages resolve as from the project.
 */
const ROOT = join(tmpdir(), `converge-faults-cli-${process.pid}`);
const SNAPSHOT = join(ROOT, 'dist');

function filesUnder(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[]).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length));
}

/**
 * A copy of dist taken at the start of the suite. Other suites on the same
 * machine run `npm run build` while this one runs for many minutes, and tsc
 * rewrites dist in place: a CLI started at that moment can read a truncated
 * module and exit 0 having done nothing. The copy is checked against dist
 * file by file, and taken again when a build ran during the copy.
 */
export function cliSnapshot(): string {
  const dist = join(projectDir, 'dist');
  rmSync(ROOT, { recursive: true, force: true });
  mkdirSync(ROOT, { recursive: true });
  for (const f of ['package.json', 'schemas', 'node_modules']) symlinkSync(join(projectDir, f), join(ROOT, f));
  for (let i = 0; i < 5; i++) {
    rmSync(SNAPSHOT, { recursive: true, force: true });
    cpSync(dist, SNAPSHOT, { recursive: true });
    const files = filesUnder(dist);
    const same = files.length === filesUnder(SNAPSHOT).length && files.every((f) => readFileSync(join(dist, f)).equals(readFileSync(join(SNAPSHOT, f))));
    if (same && files.every((f) => !f.endsWith('.js') || readFileSync(join(SNAPSHOT, f)).length > 0)) return join(SNAPSHOT, 'cli', 'main.js');
  }
  throw new Error(`${dist} kept changing while it was copied: a build is running; run the suite again`);
}

export function removeCliSnapshot(): void {
  rmSync(ROOT, { recursive: true, force: true });
}

export interface Shape {
  /** etcd members (default fa-a, fa-b, fa-c); they get the control-plane role. */
  members?: string[];
  /** Nodes declared besides the members (e.g. a member that is leaving). */
  alsoDeclared?: string[];
  binary?: 'A' | 'B';
  /** Lines added to the etcd env template (an etcd flag: a rolling restart). */
  env?: string[];
  extra?: Doc[];
  files?: Record<string, string>;
}

/** desired-state/ on this suite's nodes, in a fresh folder (or `into`). */
export function desired(f: FaultLab, s: Shape = {}, into?: string): string {
  const members = s.members ?? THREE;
  const declared = [...new Set([...THREE, ...members, ...(s.alsoDeclared ?? [])])];
  const role = (n: string): Record<string, string> => (members.includes(n) ? { role: 'control-plane' } : {});
  const bin = f.binaries[s.binary ?? 'A'];
  const env = readFileSync(join(projectDir, 'desired-state', 'templates', 'etcd.env'), 'utf8');
  const more: Doc[] = declared.filter((n) => !THREE.includes(n)).map((n) => ({ kind: 'Node', metadata: { name: n, labels: role(n) }, spec: { address: f.lab.node(n).address } }));
  return writeDesired(
    {
      nodes: Object.fromEntries(CHAPTER.map((c, i) => [c, { name: THREE[i]!, address: f.lab.node(THREE[i]!).address }])),
      edit: (d) => {
        if (d.kind === 'Node') return { ...d, metadata: { ...d.metadata, labels: role(d.metadata.name) } };
        if (d.kind === 'EtcdCluster') return { ...d, spec: { ...d.spec, members: members.map((node) => ({ node })) } };
        if (d.kind === 'File' && d.metadata.name === 'etcd-binary') return { ...d, spec: { ...d.spec, artifact: { name: bin.artifact, sha256: bin.sha256 } } };
        return d;
      },
      extra: [...more, ...(s.extra ?? [])],
      files: { ...(s.env?.length ? { 'templates/etcd.env': `${env}${s.env.join('\n')}\n` } : {}), ...(s.files ?? {}) },
    },
    into,
  );
}

export async function resolved(f: FaultLab, dir: string): Promise<ResolvedState> {
  return (await loadDesiredState(fsSource(dir), { secretsDir: f.lab.secretsDir, artifactsDir: f.artifacts })).state;
}

/** Every file the desired state puts on `node`, with the sha256 it must have. */
export function desiredHashes(state: ResolvedState, node: string): Map<string, string> {
  const out = new Map<string, string>();
  const n = state.nodes.find((x) => x.name === node);
  for (const file of n?.files ?? []) {
    if (file.ensure !== 'present' || !file.content) continue;
    const c = file.content;
    out.set(file.path, c.sha256 ?? (c.kind === 'text' ? sha256Hex(c.text) : sha256File(c.localPath)));
  }
  return out;
}

/** The digest of the initial env file a first bootstrap writes. */
export function bootstrapEnvSha(state: ResolvedState): string {
  return sha256Hex(initialEnvText(bootstrapInitialCluster(state.etcd!), 'new'));
}

// ---- converge as an operator runs it ---------------------------------------------

export function cliArgs(f: FaultLab, command: string, dir: string, extra: string[] = []): string[] {
  return [command, '--repo', dir, '--secrets', f.lab.secretsDir, '--artifacts', f.artifacts, '--ssh-key', f.lab.sshKey, '--known-hosts', f.lab.knownHosts, ...extra];
}

export function startApply(f: FaultLab, dir: string, extra: string[] = []): CliProcess {
  return startCli(cliArgs(f, 'apply', dir, extra), { timeoutMs: 600_000, main: f.cli });
}

export function apply(f: FaultLab, dir: string, extra: string[] = []): Promise<CliResult> {
  return runCli(cliArgs(f, 'apply', dir, extra), { timeoutMs: 600_000, main: f.cli });
}

export function status(f: FaultLab, dir: string): Promise<CliResult> {
  return runCli(cliArgs(f, 'status', dir, ['--json']), { timeoutMs: 120_000, main: f.cli });
}

/** Whether an apply converged as the CLI reports it: exit 0, verify clean, the cluster healthy with one leader. */
export function converged(r: CliResult, voters = 3): string | null {
  if (r.code !== 0) return `exit ${r.code ?? r.signal}`;
  if (!/Apply complete: the nodes match/.test(r.stdout)) return 'no "Apply complete" line';
  if (/left to do after apply/.test(r.stdout)) return 'work left after apply';
  const m = /HEALTHY — (\d+) started voters, leader (\S+)/.exec(r.stdout);
  if (!m) return 'status not HEALTHY';
  if (Number(m[1]) !== voters) return `${m[1]} started voters, expected ${voters}`;
  return null;
}

/** The error lines of a failed apply, for the report. */
export function errorLines(r: CliResult): string[] {
  return `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^error: |✗ |FAILED/.test(l.trim())).map((l) => l.trim());
}

// ---- the nodes ---------------------------------------------------------------------

export async function sh(node: string, script: string, timeoutMs = 60_000): Promise<string> {
  const r = await runOnNode(node, script, { timeoutMs });
  if (r.code !== 0) throw new Error(`${node}: ${script.split('\n')[0]}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/**
 * Put a node back to what a fresh image has of everything converge manages
 * in this suite: no etcd account, binaries, config, unit, data, and no
 * converge state (inventory, backups). A few seconds instead of a lab reset.
 */
export async function wipe(node: string): Promise<void> {
  await sh(
    node,
    [
      'systemctl stop etcd.service 2>/dev/null',
      'systemctl disable --quiet etcd.service 2>/dev/null',
      'systemctl reset-failed etcd.service 2>/dev/null',
      'rm -rf /var/lib/etcd /var/lib/etcd.removed-* /etc/etcd /usr/local/bin/etcd /usr/local/bin/etcdctl /usr/local/bin/.etcd.converge-* /usr/local/bin/.etcdctl.converge-* /etc/systemd/system/etcd.service /etc/systemd/system/etcd.service.d /etc/systemd/system/.etcd.service.converge-* /var/lib/converge /srv/converge-faults',
      'userdel etcd 2>/dev/null',
      'groupdel etcd 2>/dev/null',
      'systemctl daemon-reload',
      'true',
    ].join('\n'),
  );
}

/** Temporary files converge writes next to targets, in the folders this suite manages. */
export const TEMP_GLOBS = ['/usr/local/bin/.*.converge-*', '/etc/etcd/.*.converge-*', '/etc/etcd/.converge-initial.*', '/etc/etcd/pki/.*.converge-*', '/etc/systemd/system/.*.converge-*', '/var/lib/converge/.*.converge-*', '/var/lib/converge/backup/sha256/.new-*', '/srv/converge-faults/.*.converge-*'];

/** Temporary files present on the node now. */
export async function tempFiles(node: string): Promise<string[]> {
  const out = await sh(node, `for f in ${TEMP_GLOBS.join(' ')}; do [ -e "$f" ] && echo "$f"; done; true`);
  return out === '' ? [] : out.split('\n');
}

/**
 * A one-line account of what is on a member node: how many desired files are
 * in place, whether the bootstrap's initial env file is there, the etcd
 * unit's state, whether the running etcd is the desired binary, and whether
 * its data dir holds a write-ahead log.
 */
export async function nodeState(node: string, want: Map<string, string>): Promise<string> {
  const paths = [...want.keys()];
  const out = await sh(
    node,
    [
      ...paths.map((p) => `h=$(sha256sum < '${p}' 2>/dev/null | cut -c1-64); echo "F $h"`),
      'echo "E $(test -e /etc/etcd/etcd-initial.env && echo yes || echo no)"',
      'echo "U $(systemctl is-active etcd.service 2>/dev/null)"',
      'p=$(systemctl show -p MainPID --value etcd.service 2>/dev/null); [ "${p:-0}" -gt 0 ] && echo "X $(sha256sum < /proc/$p/exe | cut -c1-64)"',
      'echo "W $(ls /var/lib/etcd/member/wal/*.wal >/dev/null 2>&1 && echo yes || echo no)"',
    ].join('\n'),
  );
  const lines = out.split('\n');
  const hashes = lines.filter((l) => l.startsWith('F')).map((l) => l.slice(2).trim());
  const ok = hashes.filter((h, i) => h === want.get(paths[i]!)).length;
  const get = (k: string): string => lines.find((l) => l.startsWith(`${k} `))?.slice(2) ?? '';
  const exe = get('X');
  const bin = want.get('/usr/local/bin/etcd');
  const runs = exe === '' ? '' : exe === bin ? ', runs the new binary' : ', runs the old binary';
  return `${node}: ${ok}/${paths.length} files${get('E') === 'yes' ? ', initial env' : ''}, etcd ${get('U') || 'inactive'}${runs}${get('W') === 'yes' ? ' (data)' : ''}`;
}

/** What a pass must not leave behind on a member node: temporary files, the initial env file. */
export async function leftovers(node: string): Promise<string[]> {
  const temps = await tempFiles(node);
  const env = await sh(node, 'test -e /etc/etcd/etcd-initial.env && echo /etc/etcd/etcd-initial.env; true');
  return [...temps, ...(env ? [env] : [])];
}

/** The running etcd's binary digest and whether its environment holds `flag`. */
export async function runningEtcd(node: string, flag?: string): Promise<{ active: boolean; exeSha: string; hasFlag: boolean }> {
  const out = await sh(node, `p=$(systemctl show -p MainPID --value etcd.service); if [ "$p" -gt 0 ] 2>/dev/null; then echo "S $(sha256sum < /proc/$p/exe | cut -c1-64)"; tr '\\0' '\\n' < /proc/$p/environ; fi; true`);
  const sha = /^S ([0-9a-f]{64})$/m.exec(out)?.[1] ?? '';
  return { active: sha !== '', exeSha: sha, hasFlag: flag ? out.split('\n').includes(flag) : false };
}

// ---- etcd data -------------------------------------------------------------------------

const key = (i: number): string => `faults/${String(i).padStart(4, '0')}`;

export async function writeKeys(tls: EtcdTls, url: string, n = 1000): Promise<void> {
  await withEtcdClient({ ...tls, endpoints: [url], dialTimeoutMs: 10_000 }, async (e) => {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => e.put(key(i + j)).value(`v${i + j}`)));
  });
}

/** How many of the n keys are there with their value (read through each url in turn until one answers). */
export async function keysIntact(tls: EtcdTls, urls: string[], n = 1000): Promise<number> {
  let last: unknown;
  for (const url of urls) {
    try {
      return await withEtcdClient({ ...tls, endpoints: [url], dialTimeoutMs: 10_000 }, async (e) => {
        const all = await e.getAll().prefix('faults/').strings();
        let ok = 0;
        for (let i = 0; i < n; i++) if (all[key(i)] === `v${i}`) ok++;
        return ok;
      });
    } catch (e) {
      last = e;
    }
  }
  throw new Error(`no etcd member answered: ${last instanceof Error ? last.message : String(last)}`);
}

// ---- time and chance ------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so that a run's kill moments can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined | false | null> | T | undefined | false | null, everyMs = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
