/**
 * The plan as JSON (`converge plan --json`, `--out plan.json`): the Plan
 * object itself, checked on the way out so that a secret's content can never
 * reach a file or a terminal even if a planner bug put it into the plan.
 */
import type { Plan } from '../plan/types.js';

/** Thrown for a plan that carries a secret's text: a bug in converge, never a user error. */
export class SecretLeakError extends Error {
  constructor(node: string, path: string) {
    super(`refusing to serialise the plan: the write of ${path} on ${node} carries the text of a secret`);
    this.name = 'SecretLeakError';
  }
}

export function assertNoSecretText(plan: Plan): void {
  for (const n of plan.nodes) {
    for (const a of n.actions) {
      if (a.type === 'file.write' && a.contentKind === 'secret' && (a.oldText !== undefined || a.newText !== undefined)) throw new SecretLeakError(n.node, a.path);
    }
  }
}

export function planToJson(plan: Plan): string {
  assertNoSecretText(plan);
  return JSON.stringify(plan, null, 2);
}
