/** Timing rules of the loop, as pure functions so that they are tested exactly. */

/** Delay before retrying after `failures` consecutive failed passes (1 → base). */
export function backoffDelay(failures: number, baseMs: number, capMs: number): number {
  if (failures <= 0) return 0;
  // 2 ** 31 would overflow nothing in JS, but stop doubling well before that: the cap wins anyway.
  const exp = Math.min(failures - 1, 30);
  return Math.min(capMs, baseMs * 2 ** exp);
}

/**
 * The poll interval spread by ±fraction, so that several watchers (or one
 * restarted on a schedule) do not hit the Git server in step.
 * `random` returns a number in [0, 1).
 */
export function jittered(intervalMs: number, fraction: number, random: () => number): number {
  const spread = intervalMs * fraction;
  return Math.round(intervalMs - spread + 2 * spread * random());
}
