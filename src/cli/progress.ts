/**
 * Progress of an apply on a terminal: one line rewritten in place (node,
 * step, bytes for large uploads). Off when stderr is not a terminal, so logs
 * and pipes get only the final report.
 */
import type { ApplyProgress } from '../apply/host.js';

export class Progress {
  private readonly tty: boolean;
  private shown = false;
  constructor(private readonly stream: NodeJS.WriteStream) {
    this.tty = Boolean(stream.isTTY);
  }

  update(ev: ApplyProgress): void {
    if (!this.tty) return;
    const bytes = ev.bytesTotal ? ` ${mib(ev.bytesSent ?? 0)}/${mib(ev.bytesTotal)} MiB` : '';
    const what = 'path' in ev.action ? `${ev.action.type} ${ev.action.path}` : 'unit' in ev.action ? `${ev.action.type} ${ev.action.unit}` : ev.action.type;
    const line = `${ev.node} [${ev.index + 1}/${ev.total}] ${what}${bytes}`;
    this.stream.write(`\r\x1b[K${line.slice(0, (this.stream.columns ?? 100) - 1)}`);
    this.shown = true;
  }

  done(): void {
    if (this.shown) this.stream.write('\r\x1b[K');
  }
}

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}
