/**
 * `npm start`: the whole story on this machine — bring the lab up, reconcile
 * desired-state/ into it with the same code path as `converge apply`, and
 * show the cluster the etcd chapter ends with.
 */
import { labUp } from '../lab/index.js';
import { apply, validate } from './commands.js';
import { EXIT } from './exit.js';

type Out = (s: string) => void;

export async function demoCommand(_flags: Record<string, unknown>, out: Out): Promise<number> {
  const started = Date.now();
  const step = (title: string): void => out(`\n== ${title} (${((Date.now() - started) / 1000).toFixed(1)} s)\n`);

  step('lab: nodes, PKI, artifacts, Git server');
  await labUp({ log: (line) => out(`${line}\n`) });

  step('converge validate');
  const valid = await validate({}, out);
  if (valid !== EXIT.ok) return valid;

  step('converge apply: reconcile desired-state/ into the lab, then converge status');
  const applied = await apply({}, undefined, out);
  if (applied !== EXIT.ok) {
    out('\nthe demo could not bring the lab to a healthy cluster; the errors above say where.\n');
    return applied;
  }
  out(`\ndone in ${((Date.now() - started) / 1000).toFixed(1)} s: the etcd chapter's three started voters, one leader, all healthy over TLS.\n`);
  out('Next: `node dist/cli/main.js plan` (no changes, exit 0), `node dist/cli/main.js status`, `node dist/cli/main.js drift`.\n');
  return EXIT.ok;
}
