/**
 * The small, closed set of errors converge raises. Each has a stable `code`;
 * the CLI's single top-level handler maps them to exit codes and messages.
 * A ConvergeError is a user-facing failure: it is printed as its message (and
 * hint), never as a stack trace. Anything else reaching the top is a bug.
 */

export type ErrorCode =
  | 'E_USAGE' // bad command line
  | 'E_CONFIG' // configuration missing or wrong
  | 'E_VALIDATION' // the desired state is invalid (carries diagnostics)
  | 'E_SOURCE' // Git source: clone/fetch/read failed
  | 'E_CONNECT' // a node could not be reached (network, timeout, auth)
  | 'E_HOSTKEY' // a node's host key is unknown or changed
  | 'E_REMOTE' // a command on a node failed
  | 'E_STALE_PLAN' // a saved plan no longer matches the commit or facts
  | 'E_APPLY' // applying a step failed
  | 'E_ETCD' // etcd API failure
  | 'E_ETCD_UNSAFE' // a change refused because it could lose quorum or data
  | 'E_LAB'; // the lab could not be built or run

export interface Diagnostic {
  severity: 'error' | 'warning';
  /** Path relative to the desired-state root (or absolute when outside it). */
  file: string;
  line: number;
  col: number;
  /** `Kind/name` of the resource, when known. */
  resource?: string;
  message: string;
  /** What to do about it, when that helps. */
  hint?: string;
}

export function formatDiagnostic(d: Diagnostic): string {
  const where = `${d.file}:${d.line}:${d.col}`;
  const what = d.resource ? `${d.resource}: ${d.message}` : d.message;
  const sev = d.severity === 'warning' ? 'warning: ' : '';
  return `${where}: ${sev}${what}${d.hint ? ` (${d.hint})` : ''}`;
}

export class ConvergeError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly data: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, opts: { hint?: string; data?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = opts.hint;
    this.data = opts.data ?? {};
  }
}

export class UsageError extends ConvergeError {
  constructor(message: string, hint?: string) {
    super('E_USAGE', message, hint === undefined ? {} : { hint });
  }
}

export class ConfigError extends ConvergeError {
  constructor(message: string, hint?: string) {
    super('E_CONFIG', message, hint === undefined ? {} : { hint });
  }
}

export class ValidationError extends ConvergeError {
  readonly diagnostics: Diagnostic[];
  constructor(diagnostics: Diagnostic[]) {
    const errors = diagnostics.filter((d) => d.severity === 'error');
    super('E_VALIDATION', `desired state is invalid: ${errors.length} error(s)`);
    this.diagnostics = diagnostics;
  }
}

export class SourceError extends ConvergeError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super('E_SOURCE', message, opts);
  }
}

/** A failure that concerns one node: the other nodes go on. */
export class NodeError extends ConvergeError {
  readonly node: string;
  constructor(code: 'E_CONNECT' | 'E_HOSTKEY' | 'E_REMOTE' | 'E_APPLY', node: string, message: string, opts: { hint?: string; data?: Record<string, unknown>; cause?: unknown } = {}) {
    super(code, `${node}: ${message}`, opts);
    this.node = node;
  }
}

export class StalePlanError extends ConvergeError {
  constructor(message: string) {
    super('E_STALE_PLAN', message, { hint: 'run `converge plan` again and review the new plan' });
  }
}

export class EtcdError extends ConvergeError {
  constructor(message: string, opts: { hint?: string; data?: Record<string, unknown>; cause?: unknown } = {}) {
    super('E_ETCD', message, opts);
  }
}

/** A change refused because it could lose quorum or data. Never retried automatically. */
export class EtcdUnsafeError extends ConvergeError {
  constructor(message: string, hint: string, data: Record<string, unknown> = {}) {
    super('E_ETCD_UNSAFE', message, { hint, data });
  }
}

export class LabError extends ConvergeError {
  constructor(message: string, hint?: string) {
    super('E_LAB', message, hint === undefined ? {} : { hint });
  }
}

export function isConvergeError(e: unknown): e is ConvergeError {
  return e instanceof ConvergeError;
}
