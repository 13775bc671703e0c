// A Transport that runs apply's scripts on this machine, for real (sh,
// coreutils, rename), in a private mount namespace where `root` is bound over
// /var/lib: converge's state dir (/var/lib/converge) and the test's targets
// (under /var/lib/t) then live in a scratch directory, on one mount, so that
// hard links between them work as on a node. Needs root and unshare(1).
import { spawn, type ChildProcess } from 'node:child_process';
import { Readable } from 'node:stream';
import type { ExecOptions, ExecResult, Transport } from '../../../src/connect/transport.js';

export interface LocalTransport extends Transport {
  /** The running script's process group, while an exec is in flight. */
  readonly running: ChildProcess | null;
  /** Scripts run so far. */
  readonly scripts: string[];
}

export function localTransport(root: string, node = 'local'): LocalTransport {
  let count = 0;
  let running: ChildProcess | null = null;
  const scripts: string[] = [];
  return {
    node,
    get execCount() {
      return count;
    },
    get running() {
      return running;
    },
    scripts,
    close: async () => undefined,
    exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
      count++;
      scripts.push(script);
      const inner = 'mount --rbind "$1" /var/lib || exit 90; exec sh -c "$2"';
      const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', inner, 'sh', root, script], {
        stdio: ['pipe', 'pipe', 'pipe'],
        detached: true,
      });
      running = child;
      return new Promise((resolve, reject) => {
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let timer: NodeJS.Timeout | undefined;
        if (opts.timeoutMs) timer = setTimeout(() => process.kill(-(child.pid as number), 'SIGKILL'), opts.timeoutMs);
        child.stdout.on('data', (b: Buffer) => out.push(b));
        child.stderr.on('data', (b: Buffer) => err.push(b));
        child.stdin.on('error', () => undefined);
        child.on('error', reject);
        child.on('close', (code, signal) => {
          if (timer) clearTimeout(timer);
          running = null;
          resolve({ code: code ?? (signal === 'SIGKILL' ? 137 : 128), stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
        });
        const stdin = opts.stdin;
        if (stdin === undefined) {
          child.stdin.end();
          return;
        }
        const src = typeof stdin === 'string' || Buffer.isBuffer(stdin) ? Readable.from([Buffer.from(stdin)]) : stdin;
        let sent = 0;
        src.on('data', (b: Buffer) => {
          sent += b.length;
          opts.onProgress?.(sent);
        });
        src.on('error', () => child.stdin.end());
        src.pipe(child.stdin);
      });
    },
  };
}
