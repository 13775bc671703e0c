import type { Readable } from 'node:stream';

/** Result of one remote command. */
export interface ExecResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

export interface ExecOptions {
  /** Bytes to feed on stdin, or a stream (large uploads). */
  stdin?: Buffer | string | Readable;
  /** Per-command timeout; the channel is closed when it expires. */
  timeoutMs?: number;
  /** Called with the number of stdin bytes sent so far (upload progress). */
  onProgress?: (sentBytes: number) => void;
}

/**
 * A connection to one node. Commands are whole POSIX sh scripts: the caller
 * quotes every value with shellQuote(); nothing is ever interpolated unquoted.
 */
export interface Transport {
  readonly node: string;
  exec(script: string, opts?: ExecOptions): Promise<ExecResult>;
  close(): Promise<void>;
  /** Number of exec round trips made on this connection (for benchmarks). */
  readonly execCount: number;
  /** When the connection was made and each exec ran (for `--stats`); transports that keep no timings leave it out. */
  readonly timings?: TransportTimings;
}

/** Milliseconds since the process started (performance.now()). */
export interface TransportTimings {
  connect: { at: number; ms: number };
  execs: { at: number; ms: number; stdinBytes: number }[];
}

/** Quote a value for POSIX sh: the result is always one literal word. */
export function shellQuote(value: string): string {
  if (value.includes('\0')) throw new Error('NUL byte cannot be passed to a shell');
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
