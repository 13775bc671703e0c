/**
 * Reading the desired-state documents: which files are documents, parsing
 * them with positions, checking the envelope (apiVersion, kind) and the
 * kind's schema. Semantic checks and resolution happen in resolve.ts.
 *
 * Rule: every *.yaml / *.yml file under the root is a document file, except
 * the files under the top-level folders templates/ and files/, which hold
 * payloads (templates, source files, Directory sources) and are never parsed
 * as documents. Hidden files and folders are ignored.
 */
import type { Document, LineCounter } from 'yaml';
import type { Diagnostic } from '../errors/index.js';
import type { SourceRef } from './types.js';
import type { FileSource } from './source.js';
import { API_VERSION, KINDS, isKind, validateDocument, type Kind } from './schema.js';
import { locate, nodePos, parseYamlFile } from './yaml-file.js';

/** Top-level folders that hold payloads, not documents. */
export const PAYLOAD_FOLDERS = ['templates', 'files'] as const;

export function isDocumentFile(path: string): boolean {
  if (!/\.ya?ml$/.test(path)) return false;
  const top = path.split('/')[0] ?? '';
  return !(path.includes('/') && (PAYLOAD_FOLDERS as readonly string[]).includes(top));
}

export interface LoadedDocument {
  /** Root-relative file. */
  file: string;
  /** 0-based index of the document in the file. */
  index: number;
  kind: Kind;
  /** metadata.name when it is a string (even when the document is invalid). */
  name: string | null;
  /** Plain data, aliases expanded. */
  value: unknown;
  /** true when the document passed its kind's schema. */
  valid: boolean;
  /** Where the document starts. */
  at: SourceRef;
  doc: Document.Parsed;
  lineCounter: LineCounter;
}

export interface LoadResult {
  docs: LoadedDocument[];
  diagnostics: Diagnostic[];
  /** Every file of the source (root-relative), documents and payloads. */
  files: string[];
}

/** Position of the value at `path` in a document (or of its key, or of the nearest existing parent). */
export function where(d: Pick<LoadedDocument, 'file' | 'doc' | 'lineCounter'>, path: ReadonlyArray<string | number>, atKey = false): SourceRef {
  const found = locate(d.doc, path);
  const node = found.complete ? (atKey && found.key ? found.key : found.node) : (found.key ?? found.node);
  const p = nodePos(d.lineCounter, node);
  return { file: d.file, line: p.line, col: p.col };
}

function resourceLabel(kind: string, value: unknown): string | undefined {
  const name = (value as { metadata?: { name?: unknown } } | null)?.metadata?.name;
  return typeof name === 'string' ? `${kind}/${name}` : undefined;
}

export async function loadDocuments(source: FileSource): Promise<LoadResult> {
  const files = await source.list();
  const docs: LoadedDocument[] = [];
  const diagnostics: Diagnostic[] = [];
  const err = (file: string, line: number, col: number, message: string, extra: { resource?: string; hint?: string } = {}): void => {
    diagnostics.push({ severity: 'error', file, line, col, message, ...extra });
  };

  const docFiles = files.filter(isDocumentFile);
  if (docFiles.length === 0) {
    err('.', 1, 1, 'no desired-state documents (*.yaml) found', { hint: 'is this the desired-state root?' });
  }
  for (const file of docFiles) {
    const parsed = parseYamlFile(await source.read(file));
    for (const p of parsed.problems) err(file, p.line, p.col, p.message, p.hint ? { hint: p.hint } : {});
    for (const pd of parsed.docs) {
      const base = { file, doc: pd.doc, lineCounter: parsed.lineCounter };
      const at = where(base, []);
      const v = pd.value;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        err(file, at.line, at.col, 'a document must be a mapping with apiVersion, kind, metadata and spec');
        continue;
      }
      const rec = v as Record<string, unknown>;
      const kindValue = rec.kind;
      const label = isKind(kindValue) ? resourceLabel(kindValue, v) : undefined;
      const extra = label ? { resource: label } : {};
      let envelopeOk = true;
      if (rec.apiVersion !== API_VERSION) {
        const w = where(base, ['apiVersion']);
        err(
          file,
          w.line,
          w.col,
          rec.apiVersion === undefined ? 'missing required field apiVersion' : `apiVersion must be ${JSON.stringify(API_VERSION)}, not ${JSON.stringify(rec.apiVersion)}`,
          { ...extra, hint: `start every document with apiVersion: ${API_VERSION}` },
        );
        envelopeOk = false;
      }
      if (!isKind(kindValue)) {
        const w = where(base, ['kind']);
        err(
          file,
          w.line,
          w.col,
          kindValue === undefined ? 'missing required field kind' : `unknown kind ${JSON.stringify(kindValue)}`,
          { hint: `kind is one of ${KINDS.join(', ')}` },
        );
        continue;
      }
      const problems = envelopeOk ? validateDocument(kindValue, v) : [];
      for (const p of problems) {
        const w = where(base, p.path, p.atKey);
        err(file, w.line, w.col, p.message, { ...extra, ...(p.hint ? { hint: p.hint } : {}) });
      }
      const name = (rec.metadata as { name?: unknown } | undefined)?.name;
      docs.push({
        ...base,
        index: pd.index,
        kind: kindValue,
        name: typeof name === 'string' ? name : null,
        value: v,
        valid: envelopeOk && problems.length === 0,
        at,
      });
    }
  }
  return { docs, diagnostics, files };
}

export type Spec<D> = D extends { spec: infer S } ? S : never;
export const specOf = <D>(d: LoadedDocument): Spec<D> => (d.value as { spec: Spec<D> }).spec;
export const labelsOf = (d: LoadedDocument): Record<string, string> =>
  ((d.value as { metadata: { labels?: Record<string, string> } }).metadata.labels ?? {}) as Record<string, string>;
export const idOf = (d: LoadedDocument): string => `${d.kind}/${d.name ?? '?'}`;
/** Resources are ordered by name in code-unit order (never locale order), so plans are deterministic. */
export const byName = <T extends { name: string }>(a: T, b: T): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
