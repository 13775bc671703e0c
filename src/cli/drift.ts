/**
 * `converge drift`: where the nodes differ from the commit converge last
 * applied to them (recorded in each node's inventory), labelled corrective
 * (the node changed under us) or intentional (Git changed, not rolled out).
 */
import { loadState, type Session } from '../reconcile/session.js';
import { gather } from '../reconcile/pass.js';
import { buildDriftReport, driftCount, type DriftNodeInput } from '../plan/drift.js';
import { renderDriftText, renderDriftMarkdown, driftToJson } from '../report/drift-text.js';
import type { ResolvedNode } from '../model/types.js';
import { EXIT } from './exit.js';

export async function driftCommand(s: Session, opts: { json: boolean; markdown: boolean; out: (s: string) => void }): Promise<number> {
  const g = await gather(s);
  const appliedStates = new Map<string, Map<string, ResolvedNode> | null>();
  const appliedAt = async (commit: string | null | undefined): Promise<Map<string, ResolvedNode> | null> => {
    if (!commit) return null;
    if (commit === s.state.commit) return new Map(s.state.nodes.map((n) => [n.name, n]));
    if (!appliedStates.has(commit)) {
      let nodes: Map<string, ResolvedNode> | null = null;
      if (s.desired.at) {
        try {
          const { state } = await loadState(s.cfg, { files: s.desired.at(commit), commit });
          nodes = new Map(state.nodes.map((n) => [n.name, n]));
        } catch {
          // An old commit that no longer loads (or is gone from the repository) leaves only what the facts show.
          nodes = null;
        }
      }
      appliedStates.set(commit, nodes);
    }
    return appliedStates.get(commit) ?? null;
  };
  const inputs: DriftNodeInput[] = [];
  for (const n of s.nodes) {
    const facts = g.facts.get(n.name) ?? { error: 'no facts' };
    const applied = 'paths' in facts ? await appliedAt(facts.inventory?.commit) : null;
    inputs.push({ node: n.name, applied: applied?.get(n.name) ?? null, current: n, facts });
  }
  const report = buildDriftReport({ commit: s.state.commit, now: new Date().toISOString(), nodes: inputs });
  opts.out(opts.json ? driftToJson(report) + '\n' : opts.markdown ? renderDriftMarkdown(report) : renderDriftText(report));
  if (report.nodes.some((n) => !n.reachable)) return EXIT.error;
  return driftCount(report) > 0 ? EXIT.changes : EXIT.ok;
}
