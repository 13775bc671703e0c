/**
 * converge's settings, from (highest precedence first) command-line flags,
 * environment variables CONVERGE_<UPPER_SNAKE> and a JSON config file
 * (--config FILE, else CONVERGE_CONFIG, else ./.converge/config.json when it
 * exists), then built-in defaults. Every effective value remembers where it
 * came from, for `converge config`.
 *
 * Relative paths are resolved against the current directory for flags and
 * environment variables, and against the config file's folder for the file.
 * Settings hold only paths to secrets, never secrets themselves.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { ConfigError } from '../errors/index.js';

export interface Config {
  /** The desired-state folder on this machine. */
  desiredState: string;
  /** Git repository to follow (URL or local repository); null: use desiredState as is. */
  repo: string | null;
  branch: string;
  /** Folder of the desired state inside the repository ("." = its root). */
  path: string;
  /** JSON file {"username", "password"} for the Git server's basic auth. */
  gitCredentials: string | null;
  secretsDir: string | null;
  artifactsDir: string | null;
  /** SSH private key; null: the ssh-agent (SSH_AUTH_SOCK). */
  sshKey: string | null;
  knownHosts: string | null;
  etcdCa: string | null;
  etcdCert: string | null;
  etcdKey: string | null;
  /** Nodes handled at once. */
  parallel: number;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
}

export type ConfigKey = keyof Config;
export type Origin = 'flag' | 'env' | `file:${string}` | 'default';

type Kind = 'path' | 'repo' | 'string' | 'int';

const SPEC: Record<ConfigKey, { kind: Kind; help: string }> = {
  desiredState: { kind: 'path', help: 'desired-state folder' },
  repo: { kind: 'repo', help: 'Git repository (URL or local path) to follow' },
  branch: { kind: 'string', help: 'Git branch' },
  path: { kind: 'string', help: 'folder of the desired state inside the repository' },
  gitCredentials: { kind: 'path', help: 'Git credentials file (JSON username/password)' },
  secretsDir: { kind: 'path', help: 'secrets directory (TLS keys and certificates)' },
  artifactsDir: { kind: 'path', help: 'artifacts directory (binaries pinned by sha256)' },
  sshKey: { kind: 'path', help: 'SSH private key' },
  knownHosts: { kind: 'path', help: 'known_hosts file (strict host key checking)' },
  etcdCa: { kind: 'path', help: 'CA certificate of the etcd cluster' },
  etcdCert: { kind: 'path', help: 'etcd client certificate' },
  etcdKey: { kind: 'path', help: 'etcd client key' },
  parallel: { kind: 'int', help: 'nodes handled at once' },
  connectTimeoutMs: { kind: 'int', help: 'SSH connect timeout (ms)' },
  commandTimeoutMs: { kind: 'int', help: 'timeout of one remote command (ms)' },
};

export const CONFIG_KEYS = Object.keys(SPEC) as ConfigKey[];

/** Flag spellings the CLI uses that differ from the setting's name. */
const FLAG_ALIASES: Record<string, ConfigKey> = {
  secrets: 'secretsDir',
  artifacts: 'artifactsDir',
};

const DEFAULTS: Omit<Config, 'desiredState'> = {
  repo: null,
  branch: 'main',
  path: '.',
  gitCredentials: null,
  secretsDir: null,
  artifactsDir: null,
  sshKey: null,
  knownHosts: null,
  etcdCa: null,
  etcdCert: null,
  etcdKey: null,
  parallel: 64,
  connectTimeoutMs: 10_000,
  commandTimeoutMs: 300_000,
};

/** CONVERGE_<UPPER_SNAKE> for a setting, e.g. sshKey → CONVERGE_SSH_KEY. */
export function envName(key: ConfigKey): string {
  return `CONVERGE_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

export interface ResolvedConfig {
  config: Config;
  origins: Record<ConfigKey, Origin>;
  /** The config file that was read, or null. */
  file: string | null;
}

function isRemote(repo: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(repo) || /^[^/]+@[^/:]+:/.test(repo);
}

function convert(key: ConfigKey, raw: unknown, where: string, base: string): string | number | null {
  if (raw === null) return null;
  const kind = SPEC[key].kind;
  if (kind === 'int') {
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*\d+\s*$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${where}: ${key} must be a positive whole number, not ${JSON.stringify(raw)}`);
    return n;
  }
  if (typeof raw !== 'string' || raw === '') throw new ConfigError(`${where}: ${key} must be a non-empty string, not ${JSON.stringify(raw)}`);
  if (kind === 'path') return isAbsolute(raw) ? raw : resolve(base, raw);
  if (kind === 'repo') return isRemote(raw) || isAbsolute(raw) ? raw : resolve(base, raw);
  return raw;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'check the path given with --config or CONVERGE_CONFIG');
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) throw new ConfigError(`config file ${file} must hold a JSON object`);
  for (const k of Object.keys(data)) {
    if (!(k in SPEC)) throw new ConfigError(`config file ${file}: unknown setting "${k}"`, `known settings: ${CONFIG_KEYS.join(', ')}`);
  }
  return data as Record<string, unknown>;
}

/** The effective settings and where each came from. */
export function resolveConfig(flags: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): ResolvedConfig {
  const flagValues = new Map<ConfigKey, unknown>();
  for (const [name, value] of Object.entries(flags)) {
    if (value === undefined) continue;
    const key = FLAG_ALIASES[name] ?? (name in SPEC ? (name as ConfigKey) : undefined);
    if (key) flagValues.set(key, value);
  }

  let file: string | null = null;
  let explicit = false;
  if (typeof flags['config'] === 'string' && flags['config'] !== '') {
    file = resolve(cwd, flags['config']);
    explicit = true;
  } else if (env['CONVERGE_CONFIG']) {
    file = resolve(cwd, env['CONVERGE_CONFIG']);
    explicit = true;
  } else {
    const def = resolve(cwd, '.converge', 'config.json');
    if (existsSync(def)) file = def;
  }
  if (file && explicit && !existsSync(file)) throw new ConfigError(`config file ${file} does not exist`, 'check --config / CONVERGE_CONFIG, or run `converge lab up` to write one for the lab');
  const fromFile = file ? readConfigFile(file) : {};

  const config = { desiredState: resolve(cwd, 'desired-state'), ...DEFAULTS } as Record<ConfigKey, unknown>;
  const origins = Object.fromEntries(CONFIG_KEYS.map((k) => [k, 'default'])) as Record<ConfigKey, Origin>;
  for (const key of CONFIG_KEYS) {
    if (flagValues.has(key)) {
      config[key] = convert(key, flagValues.get(key), `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, cwd);
      origins[key] = 'flag';
    } else if (env[envName(key)] !== undefined && env[envName(key)] !== '') {
      config[key] = convert(key, env[envName(key)], envName(key), cwd);
      origins[key] = 'env';
    } else if (file && key in fromFile && fromFile[key] !== null) {
      config[key] = convert(key, fromFile[key], `${file}`, dirname(file));
      origins[key] = `file:${file}`;
    }
  }
  return { config: config as unknown as Config, origins, file };
}

/** `converge config`: the effective settings, where each came from; secrets only ever as paths. */
export async function configCommand(flags: Record<string, unknown>, out: (s: string) => void, env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): Promise<number> {
  const { config, origins, file } = resolveConfig(flags, env, cwd);
  if (flags['json']) {
    const settings = Object.fromEntries(CONFIG_KEYS.map((k) => [k, { value: config[k], origin: origins[k] }]));
    out(JSON.stringify({ configFile: file, settings }, null, 2) + '\n');
    return 0;
  }
  out(`config file: ${file ?? '(none)'}\n`);
  const width = Math.max(...CONFIG_KEYS.map((k) => k.length));
  for (const k of CONFIG_KEYS) {
    const v = config[k] === null ? '-' : String(config[k]);
    out(`${k.padEnd(width)}  ${v}  (${origins[k] === 'env' ? `env ${envName(k)}` : origins[k]})\n`);
  }
  return 0;
}
