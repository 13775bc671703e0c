/**
 * Asking again while the facts are in between: an election under way, a
 * unit activating, a member still starting. Each caller says what "in
 * between" is and how long it is worth waiting for; this is the loop they
 * share, with the clock injectable for tests.
 */

export interface SettleClock {
  pauseMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  signal?: AbortSignal;
}

/**
 * Starting from `first` (already taken), take again while `pending` holds,
 * pausing between takes, for at most `settleMs` from now; the last answer is
 * returned whether it settled or not.
 */
export async function settle<T>(first: T, take: () => Promise<T>, pending: (t: T) => boolean, o: SettleClock & { settleMs: number }): Promise<T> {
  const now = o.now ?? Date.now;
  const pause = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const until = now() + o.settleMs;
  let t = first;
  while (pending(t) && now() < until && !o.signal?.aborted) {
    await pause(o.pauseMs ?? 1000);
    t = await take();
  }
  return t;
}
