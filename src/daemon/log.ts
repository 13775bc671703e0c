/**
 * JSON logs (pino) to stdout, which systemd sends to the journal. Secrets are
 * never passed to the logger; the redaction below is a second line of defence
 * against a field of that name slipping into a log call.
 */
import { destination, pino, type DestinationStream, type Logger } from 'pino';

const REDACT = ['password', 'token', 'secret', 'authorization', 'privateKey', '*.password', '*.token', '*.secret', '*.authorization', '*.privateKey', 'headers.authorization', 'headers["x-hub-signature-256"]'];

export function createLogger(opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  const options = { name: 'converge', level: opts.level ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } };
  // Synchronous: an asynchronous write still in flight at exit can land after
  // (or without) the lines written by the exit flush, and the last lines of a
  // shutdown are the ones an operator reads. The daemon logs little.
  return pino(options, opts.destination ?? destination({ dest: 1, sync: true }));
}
