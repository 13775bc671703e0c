/**
 * The node image: a Debian bookworm minbase rootfs with systemd, OpenSSH and
 * python3-minimal, built once with debootstrap and cached under a key derived
 * from everything that went into it. A build happens in a scratch directory
 * that is renamed into place only when complete, so a crash never leaves a
 * half image under a valid key.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, renameSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { LabError } from '../errors/index.js';
import { elapsed, isSameProcess, pidStart, runOk } from './proc.js';
import { requireFreeDisk } from './prereq.js';
import { unmountUnder } from './mounts.js';

/** Bump when the recipe below changes in a way the package list does not show. */
const RECIPE_VERSION = 3;
const SUITE = 'bookworm';
const VARIANT = 'minbase';
/**
 * coreutils (sha256sum, stat), libc-bin (getent), tar, util-linux and mount
 * are Essential and come with minbase; the rest is what converge and the
 * tests rely on. python3 rather than python3-minimal alone: Ansible's modules
 * import stdlib modules (shutil, …) that python3-minimal lacks. No etcd:
 * converge installs it.
 */
export const IMAGE_PACKAGES = ['systemd', 'systemd-sysv', 'dbus', 'openssh-server', 'iproute2', 'python3-minimal', 'python3', 'procps'] as const;

/** Root logs in with the lab's key only. MaxSessions: converge runs many channels per connection. */
const SSHD_CONF = `# converge lab
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 128
MaxStartups 100:30:200
`;

/** Journals in memory: the overlay's upper layer stays small and a reset stays fast. */
const JOURNALD_CONF = `[Journal]
Storage=volatile
RuntimeMaxUse=32M
`;

const IMAGE_MB = 1200;

export interface Image {
  key: string;
  rootfs: string;
  builtIn?: string;
}

export function imageKey(arch: string): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ RECIPE_VERSION, SUITE, VARIANT, arch, packages: [...IMAGE_PACKAGES].sort(), SSHD_CONF, JOURNALD_CONF }));
  return `${SUITE}-${arch}-${h.digest('hex').slice(0, 16)}`;
}

/**
 * The Debian mirror this machine's apt uses, read at run time from its
 * sources (deb822 .sources files first, then sources.list).
 */
export function hostMirror(): { uri: string; keyring?: string } {
  const dir = '/etc/apt/sources.list.d';
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.sources')).sort().map((f) => join(dir, f)) : [];
  for (const f of files) {
    for (const stanza of readFileSync(f, 'utf8').split(/\n\s*\n/)) {
      const fields = new Map<string, string>();
      for (const line of stanza.split('\n')) {
        if (line.startsWith('#')) continue;
        const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
        if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
      }
      const types = (fields.get('types') ?? '').split(/\s+/);
      const suites = (fields.get('suites') ?? '').split(/\s+/);
      const uri = (fields.get('uris') ?? '').split(/\s+/)[0];
      if (fields.get('enabled') === 'no' || !types.includes('deb') || !uri) continue;
      if (!suites.some((s) => s === SUITE || s === 'stable')) continue;
      const keyring = fields.get('signed-by');
      return keyring && keyring.startsWith('/') && existsSync(keyring) ? { uri, keyring } : { uri };
    }
  }
  const list = '/etc/apt/sources.list';
  if (existsSync(list)) {
    for (const line of readFileSync(list, 'utf8').split('\n')) {
      const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
      if (m && (m[2] === SUITE || m[2] === 'stable')) return { uri: m[1]! };
    }
  }
  throw new LabError(
    `no Debian ${SUITE} mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list`,
    `add a "deb" source for ${SUITE} to the machine's apt configuration (the lab builds its node image from it)`,
  );
}

async function hostArch(): Promise<string> {
  return (await runOk('dpkg', ['--print-architecture'])).stdout.trim();
}

/** Remove scratch builds left by crashed runs (their builder is gone). */
async function removeStaleBuilds(cache: string): Promise<void> {
  for (const name of readdirSync(cache)) {
    const m = /^\.build-.*-(\d+)-(\d+)$/.exec(name);
    if (!m) continue;
    if (isSameProcess(Number(m[1]), Number(m[2]))) continue;
    const dir = join(cache, name);
    await unmountUnder(dir);
    await runOk('rm', ['-rf', '--one-file-system', dir]);
  }
}

/** Remove cached images other than `keep` (older recipes), unless a node still runs on them. */
export async function pruneImages(cache: string, keep: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  if (!existsSync(cache)) return removed;
  for (const name of readdirSync(cache)) {
    if (name.startsWith('.') || keep.has(name) || !existsSync(join(cache, name, 'meta.json'))) continue;
    const dir = join(cache, name);
    await unmountUnder(dir);
    await runOk('rm', ['-rf', '--one-file-system', dir]);
    removed.push(name);
  }
  return removed;
}

/** The cached image, building it first when there is none for the current recipe. */
export async function ensureImage(cache: string, log: (line: string) => void): Promise<Image> {
  const key = imageKey(await hostArch());
  const dir = join(cache, key);
  const rootfs = join(dir, 'rootfs');
  if (existsSync(join(dir, 'meta.json')) && existsSync(join(rootfs, 'usr/sbin/sshd'))) return { key, rootfs };

  mkdirSync(cache, { recursive: true, mode: 0o755 });
  await removeStaleBuilds(cache);
  requireFreeDisk(cache, IMAGE_MB, 'building the node image (about 300 MB, plus the packages while they install)');
  const mirror = hostMirror();
  const t0 = Date.now();
  const build = join(cache, `.build-${key}-${process.pid}-${pidStart(process.pid) ?? 0}`);
  rmSync(build, { recursive: true, force: true });
  mkdirSync(build, { recursive: true });
  const target = join(build, 'rootfs');
  log(`building node image ${key} with debootstrap (first run only, about 1-2 minutes)`);
  try {
    await debootstrap(target, mirror, join(build, 'debootstrap.log'), log);
    await configureImage(target);
    writeFileSync(join(build, 'meta.json'), JSON.stringify({ key, suite: SUITE, variant: VARIANT, packages: IMAGE_PACKAGES, recipe: RECIPE_VERSION, builtAt: new Date().toISOString(), buildSeconds: (Date.now() - t0) / 1000 }, null, 2) + '\n');
    if (existsSync(dir)) await runOk('rm', ['-rf', '--one-file-system', dir]);
    renameSync(build, dir);
  } catch (e) {
    await unmountUnder(build);
    await runOk('rm', ['-rf', '--one-file-system', build]).catch(() => undefined);
    throw e;
  }
  log(`node image built in ${elapsed(t0)}`);
  return { key, rootfs, builtIn: elapsed(t0) };
}

function debootstrap(target: string, mirror: { uri: string; keyring?: string }, logFile: string, log: (line: string) => void): Promise<void> {
  const args = [`--variant=${VARIANT}`, `--include=${IMAGE_PACKAGES.join(',')}`];
  if (mirror.keyring) args.push(`--keyring=${mirror.keyring}`);
  args.push(SUITE, target, mirror.uri);
  const fd = openSync(logFile, 'w');
  return new Promise((resolve, reject) => {
    const child = spawn('debootstrap', args, { stdio: ['ignore', 'pipe', fd] });
    let last = '';
    let lastShown = Date.now();
    let buf = '';
    child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        if (l.startsWith('I: ')) last = l.slice(3);
        if (Date.now() - lastShown > 10_000 && last) {
          log(`  debootstrap: ${last}`);
          lastShown = Date.now();
        }
      }
    });
    child.on('error', (e) => {
      closeSync(fd);
      reject(new LabError(`cannot run debootstrap: ${e.message}`, 'apt-get install debootstrap'));
    });
    child.on('close', (code) => {
      closeSync(fd);
      if (code === 0) return resolve();
      let tailText = '';
      try {
        tailText = readFileSync(logFile, 'utf8').trim().split('\n').slice(-8).join('\n');
      } catch {
        // no log
      }
      reject(new LabError(`debootstrap failed (exit ${code}); last lines of ${logFile}:\n${tailText || last}`, 'check that the apt mirror of this machine is reachable and that there is free disk'));
    });
  });
}

/** Make the rootfs a lab node template: no host keys, no machine id, key-only root login. */
async function configureImage(root: string): Promise<void> {
  for (const f of readdirSync(join(root, 'etc/ssh'))) {
    if (f.startsWith('ssh_host_')) rmSync(join(root, 'etc/ssh', f));
  }
  writeFileSync(join(root, 'etc/ssh/sshd_config.d/converge-lab.conf'), SSHD_CONF);
  mkdirSync(join(root, 'etc/systemd/journald.conf.d'), { recursive: true });
  writeFileSync(join(root, 'etc/systemd/journald.conf.d/converge-lab.conf'), JOURNALD_CONF);
  truncateSync(join(root, 'etc/machine-id'), 0);
  rmSync(join(root, 'var/lib/dbus/machine-id'), { force: true });
  mkdirSync(join(root, 'root/.ssh'), { recursive: true });
  chmodSync(join(root, 'root/.ssh'), 0o700);
  const debs = join(root, 'var/cache/apt/archives');
  for (const f of existsSync(debs) ? readdirSync(debs) : []) if (f.endsWith('.deb')) rmSync(join(debs, f));
  await runOk('chroot', [root, 'systemctl', 'enable', 'systemd-networkd.service'], { what: 'enabling systemd-networkd in the image' });
}
