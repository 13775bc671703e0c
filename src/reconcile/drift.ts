/**
 * Drift of a pass: the nodes compared with the commit converge last applied
 * to each (from its inventory) and with the current commit, so that every
 * difference is labelled corrective (the node changed under us) or
 * intentional (Git changed, not rolled out yet). Shared by `converge drift`
 * and the daemon.
 */
import { buildDriftReport, type DriftNodeInput, type DriftReport } from '../plan/drift.js';
import type { ResolvedNode } from '../model/types.js';
import { loadState, type Session } from './session.js';
import type { Gathered } from './pass.js';

export async function computeDrift(s: Session, g: Gathered, now: Date): Promise<DriftReport> {
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
          // A commit that no longer loads (or is gone from the repository):
          // the planner falls back to what the inventory recorded.
          nodes = null;
        }
      }
      appliedStates.set(commit, nodes);
    }
    return appliedStates.get(commit) ?? null;
  };
  const inputs: DriftNodeInput[] = [];
  for (const n of s.nodes) {
    const facts = g.facts.get(n.name) ?? { error: 'no facts were gathered' };
    const applied = 'paths' in facts ? await appliedAt(facts.inventory?.commit) : null;
    inputs.push({ node: n.name, applied: applied?.get(n.name) ?? null, current: n, facts });
  }
  return buildDriftReport({ commit: s.state.commit, now: now.toISOString(), nodes: inputs });
}
