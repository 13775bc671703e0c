/**
 * The lab for tests: ensureLab() brings it up when it is not (or not fully)
 * up and returns everything a test needs to reach it. It needs root; when the
 * lab cannot run it throws, so the test fails and says why (never a skip).
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_NODES, labUp, readGitCredentials, labPaths, type LabInfo, type LabNode } from '../../src/lab/index.js';

export const projectDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface TestLab extends LabInfo {
  git: LabInfo['git'] & { url: string; password: string };
  /** A node of the lab by name (throws when it has no such node). */
  node(name: string): LabNode;
}

/**
 * Bring the lab up (idempotent: running healthy nodes are left alone; a node
 * that does not answer SSH gets a fresh image). The default three nodes are
 * always there; `nodes` adds more (nodes already up stay up). Progress goes to stderr.
 */
export async function ensureLab(opts: { nodes?: string[] } = {}): Promise<TestLab> {
  const info = await labUp({
    projectDir,
    nodes: [...new Set([...DEFAULT_NODES, ...(opts.nodes ?? [])])],
    log: (line) => process.stderr.write(`  [lab] ${line}\n`),
  });
  if (!info.git.url) throw new Error('lab up finished without a Git server URL');
  const { password } = readGitCredentials(labPaths(info.labDir));
  return {
    ...info,
    git: { ...info.git, url: info.git.url, password },
    node(name: string): LabNode {
      const n = info.nodes.find((x) => x.name === name);
      if (!n) throw new Error(`the lab has no node ${name} (nodes: ${info.nodes.map((x) => x.name).join(', ')})`);
      return n;
    },
  };
}
