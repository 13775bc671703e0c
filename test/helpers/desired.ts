/**
 * Desired states for lab tests: desired-state/ itself, moved onto the lab
 * nodes a suite owns (so suites never fight over cp-a..cp-c), plus whatever
 * extra documents a scenario needs. Written to a fresh temp folder.
 */
import { cpSync, mkdtempSync, readFileSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { projectDir } from './lab.js';

export type Doc = { apiVersion?: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: Record<string, unknown> };

export interface DesiredOptions {
  /** The chapter's node → lab node it becomes, e.g. { 'cp-a': { name: 'rc-a', address: '10.240.1.10' } }. */
  nodes: Record<string, { name: string; address: string }>;
  /** Change documents (return null to drop one). */
  edit?: (doc: Doc) => Doc | null;
  /** More documents, e.g. a test service. */
  extra?: Doc[];
  /** More files (templates/…), relative path → content. */
  files?: Record<string, string>;
}

const API = 'converge.dev/v1';

export function docs(file: string): Doc[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as Doc);
}

/** Writes the desired state and returns its folder. */
export function writeDesired(o: DesiredOptions, into?: string): string {
  const dir = into ?? mkdtempSync(join(tmpdir(), 'converge-desired-'));
  cpSync(join(projectDir, 'desired-state'), dir, { recursive: true });
  const rename = (n: string): string => o.nodes[n]?.name ?? n;
  for (const f of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
    const out: Doc[] = [];
    for (let d of docs(join(dir, f))) {
      if (d.kind === 'Node') {
        const to = o.nodes[d.metadata.name];
        if (!to) continue;
        d = { ...d, metadata: { ...d.metadata, name: to.name }, spec: { ...d.spec, address: to.address } };
      }
      if (d.kind === 'EtcdCluster') {
        const members = (d.spec['members'] as { node: string; name?: string }[]).filter((m) => o.nodes[m.node]).map((m) => ({ ...m, node: rename(m.node) }));
        d = { ...d, spec: { ...d.spec, members } };
      }
      const e = o.edit ? o.edit(d) : d;
      if (e) out.push(e);
    }
    writeFileSync(join(dir, f), out.map((d) => stringify(d)).join('---\n'));
  }
  if (o.extra?.length) writeFileSync(join(dir, 'extra.yaml'), o.extra.map((d) => stringify({ apiVersion: API, ...d })).join('---\n'));
  for (const [p, text] of Object.entries(o.files ?? {})) writeFileSync(join(dir, p), text);
  return dir;
}
