/**
 * `converge drift`: where the nodes differ from the commit converge last
 * applied to them, labelled corrective or intentional. Exit 0 none, 2 drift,
 * 1 error (a node that could not be checked).
 */
import type { Session } from '../reconcile/session.js';
import { gather } from '../reconcile/pass.js';
import { computeDrift } from '../reconcile/drift.js';
import { driftCount } from '../plan/drift.js';
import { renderDriftText, renderDriftMarkdown, driftToJson } from '../report/drift-text.js';
import { EXIT } from './exit.js';

export async function driftCommand(s: Session, opts: { json: boolean; markdown: boolean; out: (s: string) => void }): Promise<number> {
  const report = await computeDrift(s, await gather(s), new Date());
  opts.out(opts.json ? driftToJson(report) + '\n' : opts.markdown ? renderDriftMarkdown(report) : renderDriftText(report));
  if (report.nodes.some((n) => !n.reachable)) return EXIT.error;
  return driftCount(report) > 0 ? EXIT.changes : EXIT.ok;
}
