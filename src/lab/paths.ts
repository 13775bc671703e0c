/**
 * Where the lab keeps things and the fixed facts of its network. There is one
 * lab per machine (one bridge, fixed addresses), so its state lives outside
 * any project checkout; each project gets a config file pointing at it.
 */
import { join, resolve } from 'node:path';

export const BRIDGE = 'converge0';
export const HOST_ADDRESS = '10.240.0.1';
export const PREFIX_LENGTH = 16;
export const DEFAULT_NODES = ['cp-a', 'cp-b', 'cp-c'] as const;
export const GIT_USER = 'converge';
export const GIT_REPO_NAME = 'desired-state.git';

/** The lab's own directory: CONVERGE_LAB_DIR, else /var/lib/converge-lab. */
export function labDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['CONVERGE_LAB_DIR'] || '/var/lib/converge-lab');
}

/** Cached node images: CONVERGE_IMAGE_CACHE, else /var/cache/converge/images. */
export function imageCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env['CONVERGE_IMAGE_CACHE'] || '/var/cache/converge/images');
}

export interface LabPaths {
  root: string;
  state: string;
  lock: string;
  config: string;
  sshDir: string;
  clientKey: string;
  knownHosts: string;
  /** The CA's private key: lab-only, never inside secrets/ (which desired state may reference). */
  caDir: string;
  caKey: string;
  secrets: string;
  caCert: string;
  clientCert: string;
  clientCertKey: string;
  artifacts: string;
  gitDir: string;
  gitRepo: string;
  gitCredentials: string;
  gitLog: string;
  gitPortFile: string;
  nodesDir: string;
}

export function labPaths(root: string = labDir()): LabPaths {
  const secrets = join(root, 'secrets');
  const gitDir = join(root, 'git');
  return {
    root,
    state: join(root, 'state.json'),
    lock: join(root, 'lock'),
    config: join(root, 'config.json'),
    sshDir: join(root, 'ssh'),
    clientKey: join(root, 'ssh', 'id_ed25519'),
    knownHosts: join(root, 'ssh', 'known_hosts'),
    caDir: join(root, 'ca'),
    caKey: join(root, 'ca', 'ca-key.pem'),
    secrets,
    caCert: join(secrets, 'ca.pem'),
    clientCert: join(secrets, 'client', 'etcd-client.pem'),
    clientCertKey: join(secrets, 'client', 'etcd-client-key.pem'),
    artifacts: join(root, 'artifacts'),
    gitDir,
    gitRepo: join(gitDir, GIT_REPO_NAME),
    gitCredentials: join(gitDir, 'credentials.json'),
    gitLog: join(gitDir, 'server.log'),
    gitPortFile: join(gitDir, 'server.port'),
    nodesDir: join(root, 'nodes'),
  };
}

export interface NodePaths {
  dir: string;
  /** Per-node SSH host keys, kept across resets so known_hosts stays valid. */
  hostKeys: string;
  upper: string;
  work: string;
  /** The overlay mount point: the node's root filesystem. */
  root: string;
  console: string;
}

export function nodePaths(p: LabPaths, node: string): NodePaths {
  const dir = join(p.nodesDir, node);
  return {
    dir,
    hostKeys: join(dir, 'hostkeys'),
    upper: join(dir, 'upper'),
    work: join(dir, 'work'),
    root: join(dir, 'root'),
    console: join(dir, 'console.log'),
  };
}

export function nodeSecretsDir(p: LabPaths, node: string): string {
  return join(p.secrets, 'nodes', node);
}
