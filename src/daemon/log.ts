/**
 * JSON logs (pino) to stdout, which systemd sends to the journal. Secrets are
 * never passed to the logger; the redaction below is a second line of defence
 * against a field of that name slipping into a log call.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

const REDACT = ['password', 'token', 'secret', 'authorization', 'privateKey', '*.password', '*.token', '*.secret', '*.authorization', '*.privateKey', 'headers.authorization', 'headers["x-hub-signature-256"]'];

export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  const options = { name: 'converge', level: opts.level ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } };
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination);
}
