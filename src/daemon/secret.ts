/**
 * The webhook's shared secret: from a file (--webhook-secret-file), the
 * environment (CONVERGE_WEBHOOK_SECRET) or systemd's credentials directory
 * (LoadCredential=webhook-secret:...). None of them → no webhook endpoint.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors/index.js';

export async function loadWebhookSecret(file: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<Buffer | null> {
  const fromFile = async (f: string, optional: boolean): Promise<Buffer | null> => {
    let text: string;
    try {
      text = await readFile(f, 'utf8');
    } catch (e) {
      if (optional) return null;
      throw new ConfigError(`cannot read the webhook secret file ${f} (${(e as NodeJS.ErrnoException).code ?? 'error'})`, 'check the path and that the converge user may read it');
    }
    const value = text.replace(/\r?\n$/, '');
    // An empty systemd credential is how the unit says "not set".
    if (value === '' && optional) return null;
    if (value === '') throw new ConfigError(`the webhook secret file ${f} is empty`, 'write the shared secret (the one set on the Git server) into it');
    return Buffer.from(value, 'utf8');
  };
  if (file !== undefined) return fromFile(file, false);
  const v = env['CONVERGE_WEBHOOK_SECRET'];
  if (v !== undefined && v !== '') return Buffer.from(v, 'utf8');
  const dir = env['CREDENTIALS_DIRECTORY'];
  if (dir !== undefined && dir !== '') return fromFile(join(dir, 'webhook-secret'), true);
  return null;
}
