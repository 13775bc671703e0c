/**
 * Per-node work with bounded concurrency. Every node gets its own outcome:
 * one node's failure never stops or hides the others.
 */

export const DEFAULT_PARALLEL = 64;

export type NodeOutcome<N, R> = { node: N; ok: true; value: R } | { node: N; ok: false; error: unknown };

/** Run fn for every node, at most `parallel` at a time; outcomes come back in input order. */
export async function withNodes<N, R>(nodes: readonly N[], parallel: number | undefined, fn: (node: N, index: number) => Promise<R>): Promise<NodeOutcome<N, R>[]> {
  const limit = parallel ?? DEFAULT_PARALLEL;
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`parallel must be a positive integer (got ${limit})`);
  const outcomes = new Array<NodeOutcome<N, R>>(nodes.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < nodes.length) {
      const i = next++;
      const node = nodes[i] as N;
      try {
        outcomes[i] = { node, ok: true, value: await fn(node, i) };
      } catch (error) {
        outcomes[i] = { node, ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, nodes.length) }, worker));
  return outcomes;
}
