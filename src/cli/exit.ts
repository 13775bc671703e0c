import { ConvergeError, ValidationError, formatDiagnostic } from '../errors/index.js';

/** Exit codes, as DESIGN.md documents them. */
export const EXIT = {
  ok: 0,
  error: 1,
  /** plan/drift: changes pending or drift found. */
  changes: 2,
} as const;

/**
 * The single top-level handler: a ConvergeError becomes its message (and what
 * to do) on stderr and exit 1; anything else is a bug in converge and keeps
 * its stack so it can be reported.
 */
export function handleError(err: unknown, write: (s: string) => void): number {
  if (err instanceof ValidationError) {
    for (const d of err.diagnostics) write(formatDiagnostic(d) + '\n');
    write(`converge: ${err.message}\n`);
    return EXIT.error;
  }
  if (err instanceof ConvergeError) {
    write(`converge: ${err.message}\n`);
    if (err.hint) write(`  what to do: ${err.hint}\n`);
    return EXIT.error;
  }
  const stack = err instanceof Error ? (err.stack ?? err.message) : String(err);
  write(`converge: internal error (a bug in converge; please report it with this output):\n${stack}\n`);
  return EXIT.error;
}
