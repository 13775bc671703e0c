// Real etcd members on 127.0.0.1, for the etcd tests that need a cluster
// but not the lab: Debian's /usr/bin/etcd (3.4.23), TLS with client-cert auth
// (a throw-away CA made with openssl), one "node" per member.
//
// A node is a directory bound over /var/lib in a private mount namespace for
// every command run through its Transport, so the data dir and the env files
// sit at the same paths on every node, as on real ones. `systemctl` and
// `journalctl` on that PATH are a small stand-in for systemd that knows one
// unit, etcd.service: start reads the env files as EnvironmentFile= would
// (etcd.env, then the optional initial env file) and runs etcd in the
// background; stop sends SIGTERM and waits; a unit whose process died
// unasked is "failed". The real systemd is covered by the lab suites.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecOptions, ExecResult, Transport } from '../../../../src/connect/transport.js';
import type { EtcdTls } from '../../../../src/connect/etcd.js';
import type { ResolvedEtcd } from '../../../../src/model/types.js';

export const ETCD_BIN = '/usr/bin/etcd';

export interface LocalNode {
  name: string;
  clientUrl: string;
  peerUrl: string;
  root: string;
}

export interface LocalCluster {
  dir: string;
  tls: EtcdTls;
  nodes: Map<string, LocalNode>;
  /** The EtcdCluster for these members (a subset of the nodes, in this order). */
  spec(members: string[], rollout?: Partial<ResolvedEtcd['rollout']>): ResolvedEtcd;
  transport(node: string): Transport;
  /** Runs a script on a node, returns stdout; throws on a non-zero exit. */
  sh(node: string, script: string): Promise<string>;
  /** Writes the node's static etcd.env (what the host reconcile does), with extra lines. */
  writeEnv(node: string, extra?: string[]): void;
  /** Kills etcd on a node without telling the stand-in systemd (a crash), and waits until it is gone. */
  crash(node: string): Promise<void>;
  /** Stops every etcd started here and removes the directory. */
  close(): Promise<void>;
}

const SYSTEMCTL = String.raw`#!/bin/sh
# systemd stand-in for the local etcd test nodes: one unit, etcd.service.
R=/var/lib/run; mkdir -p "$R"; P="$R/etcd.pid"
# A killed etcd stays a zombie until it is reaped, and kill -0 succeeds on a zombie.
running() { [ -r "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat"; }
alive() { [ -f "$P" ] && running "$(cat "$P")"; }
state() { if alive; then echo active; elif [ -f "$P" ]; then echo failed; else echo inactive; fi; }
start() {
  alive && return 0
  rm -f "$P"
  (
    set -a
    . /var/lib/etc/etcd.env
    if [ -f /var/lib/etc/etcd-initial.env ]; then . /var/lib/etc/etcd-initial.env; fi
    set +a
    exec setsid sh -c 'echo $$ > /var/lib/run/etcd.pid; exec ` + ETCD_BIN + String.raw` >> /var/lib/run/journal 2>&1' </dev/null >/dev/null 2>&1 &
  )
  i=0; while [ ! -s "$P" ] && [ $i -lt 50 ]; do sleep 0.02; i=$((i+1)); done
}
stop() {
  if alive; then
    pid=$(cat "$P"); kill "$pid"
    i=0; while running "$pid" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$P"
}
mono() {
  alive || { echo 0; return; }
  t=$(cut -d' ' -f22 "/proc/$(cat "$P")/stat"); echo $((t * 10000))
}
while [ $# -gt 0 ]; do case "$1" in --no-block|--quiet|-q|--) shift ;; *) break ;; esac; done
cmd="$1"; shift
while [ $# -gt 0 ]; do case "$1" in --no-block|--quiet|-q|--) shift ;; -p) shift 2 ;; *) break ;; esac; done
case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  reset-failed) alive || rm -f "$P" ;;
  enable) rm -f "$R/disabled" ;;
  disable) touch "$R/disabled" ;;
  is-active) s=$(state); echo "$s"; [ "$s" = active ] ;;
  show)
    echo LoadState=loaded
    echo "ActiveState=$(state)"
    if [ -f "$R/disabled" ]; then echo UnitFileState=disabled; else echo UnitFileState=enabled; fi
    echo NeedDaemonReload=no
    echo "ExecMainStartTimestampMonotonic=$(mono)"
    if alive; then echo "MainPID=$(cat "$P")"; else echo MainPID=0; fi ;;
  *) echo "systemctl stand-in: $cmd not supported" >&2; exit 1 ;;
esac
`;

const JOURNALCTL = String.raw`#!/bin/sh
n=20
while [ $# -gt 0 ]; do case "$1" in -n) n="$2"; shift 2 ;; *) shift ;; esac; done
tail -n "$n" /var/lib/run/journal 2>/dev/null || true
`;

function openssl(cwd: string, args: string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makePki(dir: string): EtcdTls {
  mkdirSync(dir, { recursive: true });
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=converge-test-ca']);
  for (const name of ['server', 'client']) {
    openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    writeFileSync(join(dir, `${name}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
    openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`]);
  }
  return { ca: readFileSync(join(dir, 'ca.pem')), cert: readFileSync(join(dir, 'client.pem')), key: readFileSync(join(dir, 'client.key')) };
}

const live = new Set<LocalCluster>();
process.on('exit', () => {
  for (const c of live) killAll(c.dir);
});

function killAll(dir: string): void {
  const nodes = join(dir, 'nodes');
  if (!existsSync(nodes)) return;
  for (const n of readdirSync(nodes)) {
    const pidFile = join(nodes, n, 'run', 'etcd.pid');
    if (!existsSync(pidFile)) continue;
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    try {
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Which of `ports` something listens on, with the process `ss` names ("24900 by etcd pid 123"). */
function listeners(ports: number[]): string[] {
  const want = new Set(ports);
  const out = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' });
  return out.split('\n').flatMap((line) => {
    const local = line.split(/\s+/)[3] ?? '';
    const port = Number(local.slice(local.lastIndexOf(':') + 1));
    if (!want.has(port)) return [];
    const who = /\("([^"]+)",pid=(\d+)/.exec(line);
    return [`${port}${who ? ` by ${who[1]} pid ${who[2]}` : ''}`];
  });
}

export function localCluster(names: string[], basePort: number): LocalCluster {
  if (process.getuid?.() !== 0) throw new Error('the local etcd cluster needs root (unshare --mount)');
  if (!existsSync(ETCD_BIN)) throw new Error(`${ETCD_BIN} is missing: apt-get install etcd-server (and keep its own service stopped)`);
  const ports = names.flatMap((_, i) => [basePort + 2 * i, basePort + 2 * i + 1]);
  const taken = listeners(ports);
  if (taken.length > 0) {
    throw new Error(`127.0.0.1 ports this local cluster needs are in use: ${taken.join('; ')} (an etcd left by an earlier run that was killed? stop it and run the tests again)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'converge-etcd-'));
  const pki = join(dir, 'pki');
  const tls = makePki(pki);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'systemctl'), SYSTEMCTL);
  writeFileSync(join(bin, 'journalctl'), JOURNALCTL);
  chmodSync(join(bin, 'systemctl'), 0o755);
  chmodSync(join(bin, 'journalctl'), 0o755);

  const nodes = new Map<string, LocalNode>();
  names.forEach((name, i) => {
    const root = join(dir, 'nodes', name);
    mkdirSync(join(root, 'etc'), { recursive: true });
    mkdirSync(join(root, 'run'), { recursive: true });
    mkdirSync(join(root, 'etcd'), { mode: 0o700 });
    nodes.set(name, { name, root, clientUrl: `https://127.0.0.1:${basePort + 2 * i}`, peerUrl: `https://127.0.0.1:${basePort + 2 * i + 1}` });
  });

  const transport = (node: string): Transport => {
    const n = nodes.get(node);
    if (!n) throw new Error(`no local node ${node}`);
    let count = 0;
    return {
      node,
      get execCount() {
        return count;
      },
      close: async () => undefined,
      exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
        count++;
        const inner = 'mount --rbind "$1" /var/lib || exit 90; PATH="$2:$PATH"; export PATH; exec sh -c "$3"';
        const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', inner, 'sh', n.root, bin, script], { stdio: ['pipe', 'pipe', 'pipe'] });
        return new Promise((resolve, reject) => {
          const out: Buffer[] = [];
          const err: Buffer[] = [];
          const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
          child.stdout.on('data', (b: Buffer) => out.push(b));
          child.stderr.on('data', (b: Buffer) => err.push(b));
          child.stdin.on('error', () => undefined);
          child.on('error', reject);
          child.on('close', (code) => {
            if (timer) clearTimeout(timer);
            resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
          });
          if (typeof opts.stdin === 'string' || Buffer.isBuffer(opts.stdin)) child.stdin.end(opts.stdin);
          else child.stdin.end();
        });
      },
    };
  };

  const cluster: LocalCluster = {
    dir,
    tls,
    nodes,
    spec(members, rollout = {}) {
      return {
        id: 'EtcdCluster/local',
        name: 'local',
        members: members.map((m) => {
          const n = nodes.get(m)!;
          return { name: m, node: m, address: '127.0.0.1', peerUrl: n.peerUrl, clientUrl: n.clientUrl };
        }),
        clientPort: 0,
        peerPort: 0,
        dataDir: '/var/lib/etcd',
        token: 'converge-local',
        unit: 'etcd.service',
        initialEnvFile: '/var/lib/etc/etcd-initial.env',
        client: { caFile: join(pki, 'ca.pem'), certFile: join(pki, 'client.pem'), keyFile: join(pki, 'client.key') },
        rollout: { healthTimeoutSeconds: rollout.healthTimeoutSeconds ?? 20, learnerTimeoutSeconds: rollout.learnerTimeoutSeconds ?? 20 },
        at: { file: 'etcd.yaml', line: 1, col: 1 },
      };
    },
    transport,
    async sh(node, script) {
      const r = await transport(node).exec(script);
      if (r.code !== 0) throw new Error(`${node}: exit ${r.code}: ${r.stderr}`);
      return r.stdout.toString('utf8');
    },
    writeEnv(node, extra = []) {
      const n = nodes.get(node)!;
      const lines = [
        `ETCD_NAME=${node}`,
        'ETCD_DATA_DIR=/var/lib/etcd',
        `ETCD_LISTEN_PEER_URLS=${n.peerUrl}`,
        `ETCD_INITIAL_ADVERTISE_PEER_URLS=${n.peerUrl}`,
        `ETCD_LISTEN_CLIENT_URLS=${n.clientUrl}`,
        `ETCD_ADVERTISE_CLIENT_URLS=${n.clientUrl}`,
        'ETCD_INITIAL_CLUSTER_TOKEN=converge-local',
        // A start on an empty data dir without converge's initial env fails instead of bootstrapping a cluster of its own.
        'ETCD_INITIAL_CLUSTER_STATE=existing',
        `ETCD_CERT_FILE=${join(pki, 'server.pem')}`,
        `ETCD_KEY_FILE=${join(pki, 'server.key')}`,
        `ETCD_TRUSTED_CA_FILE=${join(pki, 'ca.pem')}`,
        'ETCD_CLIENT_CERT_AUTH=true',
        `ETCD_PEER_CERT_FILE=${join(pki, 'server.pem')}`,
        `ETCD_PEER_KEY_FILE=${join(pki, 'server.key')}`,
        `ETCD_PEER_TRUSTED_CA_FILE=${join(pki, 'ca.pem')}`,
        'ETCD_PEER_CLIENT_CERT_AUTH=true',
        ...extra,
      ];
      writeFileSync(join(n.root, 'etc', 'etcd.env'), lines.join('\n') + '\n');
    },
    async crash(node) {
      const pidFile = join(nodes.get(node)!.root, 'run', 'etcd.pid');
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 200 && existsSync(`/proc/${pid}/stat`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z '); i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async close() {
      killAll(dir);
      live.delete(cluster);
      await new Promise((r) => setTimeout(r, 100));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  live.add(cluster);
  for (const name of names) cluster.writeEnv(name);
  return cluster;
}
