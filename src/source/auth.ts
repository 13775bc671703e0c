/**
 * Git credentials for HTTP(S): from the options, a token file, the
 * environment, or systemd's credentials directory (LoadCredential=), in that
 * order. They are handed to isomorphic-git through onAuth only; nothing here
 * ever formats them into a message.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors/index.js';

export interface SourceAuth {
  username?: string;
  password?: string;
  /** A token is sent as the password of HTTP basic auth (GitHub, Gitea and GitLab accept this). */
  token?: string;
  /** A file holding the token (trailing newline ignored), e.g. one written by a secrets manager. */
  tokenFile?: string;
}

export interface Credentials {
  username: string;
  password: string;
}

/** The user name sent with a token when none is given; GitHub and Gitea ignore it. */
export const TOKEN_USERNAME = 'x-access-token';

async function readSecretFile(file: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError(`cannot read the ${what} file ${file} (${code})`, 'check the path and that the converge user may read it');
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') throw new ConfigError(`the ${what} file ${file} is empty`, `write the ${what} into it`);
  return value;
}

async function credentialFile(env: NodeJS.ProcessEnv, name: string): Promise<string | undefined> {
  const dir = env['CREDENTIALS_DIRECTORY'];
  if (dir === undefined || dir === '') return undefined;
  try {
    const value = (await readFile(join(dir, name), 'utf8')).replace(/\r?\n$/, '');
    return value === '' ? undefined : value;
  } catch {
    return undefined;
  }
}

/**
 * Credentials embedded in the URL (`https://user:pass@host/...`) are honoured
 * but never shown; explicit settings win over them.
 */
export async function resolveCredentials(auth: SourceAuth, url: URL | null, env: NodeJS.ProcessEnv): Promise<Credentials | null> {
  const username = auth.username ?? env['CONVERGE_GIT_USERNAME'] ?? (url && url.username !== '' ? decodeURIComponent(url.username) : undefined);
  const token =
    auth.token ??
    (auth.tokenFile !== undefined ? await readSecretFile(auth.tokenFile, 'Git token') : undefined) ??
    nonEmpty(env['CONVERGE_GIT_TOKEN']) ??
    (await credentialFile(env, 'git-token'));
  if (token !== undefined) return { username: username ?? TOKEN_USERNAME, password: token };
  const password =
    auth.password ??
    nonEmpty(env['CONVERGE_GIT_PASSWORD']) ??
    (await credentialFile(env, 'git-password')) ??
    (url && url.password !== '' ? decodeURIComponent(url.password) : undefined);
  if (password !== undefined) {
    if (username === undefined) {
      throw new ConfigError('a Git password is set but no user name', 'set CONVERGE_GIT_USERNAME (or use a token instead of a password)');
    }
    return { username, password };
  }
  return null;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}
