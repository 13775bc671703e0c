/**
 * What the loop must remember across restarts: the last good commit (what is
 * enforced while a newer commit is rejected) and the rejected commit (not
 * retried until a newer one arrives). Everything else is read afresh. With
 * several watchers, the leader also keeps it in etcd (leader.ts), so that the
 * next leader knows it too.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { RejectedCommit, RollbackSummary } from './types.js';

export interface LoopState {
  lastGood: string | null;
  applied: string | null;
  rejected: RejectedCommit | null;
}

export const EMPTY_STATE: LoopState = { lastGood: null, applied: null, rejected: null };

const COMMIT = /^[0-9a-f]{40}$/;
const commit = (v: unknown): string | null => (typeof v === 'string' && COMMIT.test(v) ? v : null);
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);

function rollback(v: unknown): RollbackSummary | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const r = v as Record<string, unknown>;
  const toCommit = commit(r['toCommit']);
  if (toCommit === null) return undefined;
  return {
    toCommit,
    nodes: strings(r['nodes']),
    ok: r['ok'] === true,
    changes: Number(r['changes'] ?? 0) || 0,
    durationMs: Number(r['durationMs'] ?? 0) || 0,
    ...(typeof r['error'] === 'string' ? { error: r['error'] } : {}),
    ...(Array.isArray(r['skipped']) && r['skipped'].length ? { skipped: strings(r['skipped']) } : {}),
  };
}

/** The state from its JSON text; anything malformed in it is dropped, not trusted. */
export function parseState(raw: string): LoopState {
  const data = JSON.parse(raw) as Partial<LoopState>;
  const r = data.rejected;
  const rb = r && typeof r === 'object' ? rollback(r.rolledBack) : undefined;
  const rejected: RejectedCommit | null =
    r && typeof r === 'object' && commit(r.commit) !== null && (r.kind === 'invalid' || r.kind === 'halted')
      ? { commit: r.commit, kind: r.kind, error: String(r.error ?? ''), diagnostics: strings(r.diagnostics), at: String(r.at ?? ''), ...(rb ? { rolledBack: rb } : {}) }
      : null;
  return { lastGood: commit(data.lastGood), applied: commit(data.applied), rejected };
}

export async function loadState(file: string): Promise<LoopState> {
  let raw: string;
  try {
    raw = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY_STATE };
    throw e;
  }
  return parseState(raw);
}

/** Written to a temporary file and renamed over, so a crash never leaves half a state. */
export async function saveState(file: string, state: LoopState): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}
