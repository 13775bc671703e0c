/**
 * Collects diagnostics for one load. A problem found on several nodes is
 * reported once, naming them all; duplicates are dropped; the result is
 * sorted by place so that output is stable.
 */
import type { Diagnostic } from '../errors/index.js';
import type { SourceRef } from './types.js';
import { where, idOf, type LoadedDocument } from './load.js';
import { fieldName } from './schema.js';
import { absolutePathProblem } from './paths.js';

export const fmt = (at: SourceRef): string => `${at.file}:${at.line}:${at.col}`;

function onNodes(nodes: string[]): string {
  return nodes.length === 1 ? `on node ${nodes[0]}` : `on nodes ${nodes.join(', ')}`;
}

export class Collector {
  private readonly list: Diagnostic[];
  private readonly perNode = new Map<string, { at: SourceRef; resource: string; message: (on: string) => string; hint?: string; nodes: string[] }>();
  constructor(initial: Diagnostic[]) {
    this.list = [...initial];
  }
  error(at: SourceRef, resource: string | undefined, message: string, hint?: string): void {
    this.list.push({ severity: 'error', ...at, ...(resource ? { resource } : {}), message, ...(hint ? { hint } : {}) });
  }
  warning(at: SourceRef, resource: string | undefined, message: string, hint?: string): void {
    this.list.push({ severity: 'warning', ...at, ...(resource ? { resource } : {}), message, ...(hint ? { hint } : {}) });
  }
  onNode(node: string, at: SourceRef, resource: string, key: string, message: (on: string) => string, hint?: string): void {
    const k = `${fmt(at)}|${resource}|${key}`;
    const e = this.perNode.get(k);
    if (e) e.nodes.push(node);
    else this.perNode.set(k, { at, resource, message, nodes: [node], ...(hint ? { hint } : {}) });
  }
  /** Reports a node path that is not absolute and normalised; true when it is fine (or absent). */
  absolute(d: LoadedDocument, path: Array<string | number>, value: string | undefined): boolean {
    if (value === undefined) return true;
    const why = absolutePathProblem(value);
    if (why) this.error(where(d, path), idOf(d), `${fieldName(path)} ${why}`);
    return why === null;
  }
  finish(): Diagnostic[] {
    for (const e of this.perNode.values()) this.error(e.at, e.resource, e.message(onNodes(e.nodes)), e.hint);
    this.perNode.clear();
    const seen = new Set<string>();
    const out = this.list.filter((d) => {
      const k = JSON.stringify([d.severity, d.file, d.line, d.col, d.resource, d.message, d.hint]);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    out.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.col - b.col || (a.message < b.message ? -1 : a.message > b.message ? 1 : 0)));
    return out;
  }
}
