/** Small statistics and formatting for the benchmark report. */
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem, release } from 'node:os';

export function median(xs: number[]): number {
  if (!xs.length) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function seconds(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

export function mib(kb: number): string {
  return Number.isFinite(kb) && kb > 0 ? `${(kb / 1024).toFixed(0)} MiB` : '-';
}

export interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  kernel: string;
  os: string;
  node: string;
  ansible: string;
}

export function machine(ansibleVersion: string): Machine {
  let os = 'unknown';
  try {
    os = /^PRETTY_NAME="?([^"\n]*)/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os;
  } catch {
    /* not Linux-like */
  }
  return {
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    cores: cpus().length,
    ramGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    os,
    node: process.version,
    ansible: ansibleVersion,
  };
}

export function load(): number {
  return Math.round(loadavg()[0]! * 100) / 100;
}
