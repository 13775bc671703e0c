/**
 * What the loop must remember across restarts: the last good commit (what is
 * enforced while a newer commit is rejected) and the rejected commit (not
 * retried until a newer one arrives). Everything else is read afresh.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { RejectedCommit } from './types.js';

export interface LoopState {
  lastGood: string | null;
  applied: string | null;
  rejected: RejectedCommit | null;
}

export const EMPTY_STATE: LoopState = { lastGood: null, applied: null, rejected: null };

const COMMIT = /^[0-9a-f]{40}$/;

export async function loadState(file: string): Promise<LoopState> {
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY_STATE };
    throw e;
  }
  const data = JSON.parse(raw) as Partial<LoopState>;
  const commit = (v: unknown): string | null => (typeof v === 'string' && COMMIT.test(v) ? v : null);
  const r = data.rejected;
  const rejected =
    r && typeof r === 'object' && commit(r.commit) !== null && (r.kind === 'invalid' || r.kind === 'halted')
      ? { commit: r.commit, kind: r.kind, error: String(r.error ?? ''), diagnostics: Array.isArray(r.diagnostics) ? r.diagnostics.map(String) : [], at: String(r.at ?? '') }
      : null;
  return { lastGood: commit(data.lastGood), applied: commit(data.applied), rejected };
}

/** Written to a temporary file and renamed over, so a crash never leaves half a state. */
export async function saveState(file: string, state: LoopState): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}
