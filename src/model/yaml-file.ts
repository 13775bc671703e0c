/**
 * Parsing one YAML file into documents that remember where every node came
 * from, with limits that refuse hostile input (alias bombs, deep nesting,
 * huge files) quickly and with a located message instead of a hang or a crash.
 */
import { Document, LineCounter, Lexer, isAlias, isMap, isPair, isScalar, isSeq, parseAllDocuments, visit } from 'yaml';
import type { Node as YamlNode, ParsedNode } from 'yaml';

export const LIMITS = {
  /** A desired-state YAML file larger than this is refused. */
  maxFileBytes: 1024 * 1024,
  /** Nesting of mappings and sequences. */
  maxDepth: 64,
  /** Alias expansions per document (yaml's maxAliasCount). */
  maxAliasCount: 100,
  /** Documents per file. */
  maxDocuments: 1000,
} as const;

export interface Position {
  line: number;
  col: number;
}

/** A problem found while parsing, before the document's kind is known. */
export interface ParseProblem {
  line: number;
  col: number;
  message: string;
  hint?: string;
}

export interface ParsedYamlDoc {
  /** 0-based index of the document in its file. */
  index: number;
  doc: Document.Parsed;
  /** The plain data (aliases expanded). */
  value: unknown;
}

export interface ParsedYamlFile {
  docs: ParsedYamlDoc[];
  problems: ParseProblem[];
  lineCounter: LineCounter;
}

/** Tokens that the yaml Lexer emits without consuming source characters. */
const CONTROL_TOKENS = new Set(['\x02', '\x18', '\x1f']);

/**
 * The yaml parser recurses per nesting level and dies (uncatchably) on some
 * inputs nested a few thousand levels deep, so flow nesting and compact
 * block nesting are bounded with the lexer, which is flat and fast, before
 * parsing. Exact depth is checked again on the parsed tree.
 */
function prescan(text: string, lc: LineCounter): ParseProblem | null {
  let offset = 0;
  let flow = 0;
  let compact = 0;
  let atLineStart = true;
  let firstOnLine = false;
  let indent = 0;
  const indents: number[] = [];
  for (const tok of new Lexer().lex(text)) {
    if (CONTROL_TOKENS.has(tok)) continue;
    const here = offset;
    offset += tok.length;
    if (tok.endsWith('\n')) {
      atLineStart = true;
      indent = 0;
      compact = 0;
      continue;
    }
    if (atLineStart && /^[ \t]+$/.test(tok)) {
      indent = tok.length;
      continue;
    }
    firstOnLine = false;
    if (atLineStart && flow === 0 && !tok.startsWith('#')) {
      atLineStart = false;
      firstOnLine = true;
      if (tok === '---' || tok === '...') {
        indents.length = 0;
      } else {
        while (indents.length > 0 && indents[indents.length - 1]! > indent) indents.pop();
        if (indents.length === 0 || indents[indents.length - 1]! < indent) indents.push(indent);
        if (indents.length > LIMITS.maxDepth) return depthProblem(lc, here);
      }
    }
    if (tok === '[' || tok === '{') {
      flow++;
      if (flow + indents.length > LIMITS.maxDepth) return depthProblem(lc, here);
    } else if (tok === ']' || tok === '}') {
      flow = Math.max(0, flow - 1);
    } else if (flow === 0 && !firstOnLine && (tok === '-' || tok === '?')) {
      compact++;
      if (compact + indents.length > LIMITS.maxDepth) return depthProblem(lc, here);
    }
  }
  return null;
}

function depthProblem(lc: LineCounter, offset: number): ParseProblem {
  const p = lc.linePos(offset);
  return {
    line: p.line,
    col: p.col,
    message: `YAML nesting deeper than ${LIMITS.maxDepth} levels`,
    hint: 'flatten the document; desired state never needs this depth',
  };
}

/** Depth of the parsed tree, without recursion; returns the first node too deep. */
function tooDeep(doc: Document.Parsed): YamlNode | null {
  const stack: Array<{ node: unknown; depth: number }> = [{ node: doc.contents, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop()!;
    if (isMap(node) || isSeq(node)) {
      if (depth > LIMITS.maxDepth) return node;
      for (const item of node.items) {
        if (isPair(item)) {
          stack.push({ node: item.key, depth: depth + 1 });
          stack.push({ node: item.value, depth: depth + 1 });
        } else stack.push({ node: item, depth: depth + 1 });
      }
    }
  }
  return null;
}

function firstAlias(doc: Document.Parsed): YamlNode | null {
  let found: YamlNode | null = null;
  visit(doc, {
    Alias(_key, node) {
      found = node;
      return visit.BREAK;
    },
  });
  return found;
}

export function nodePos(lc: LineCounter, node: { range?: [number, number, number] | null } | null | undefined): Position {
  const offset = node?.range?.[0] ?? 0;
  return lc.linePos(offset);
}

export function parseYamlFile(bytes: Buffer): ParsedYamlFile {
  const lineCounter = new LineCounter();
  const problems: ParseProblem[] = [];
  if (bytes.length > LIMITS.maxFileBytes) {
    problems.push({
      line: 1,
      col: 1,
      message: `file is ${bytes.length} bytes, larger than the limit of ${LIMITS.maxFileBytes} bytes`,
      hint: 'split it into several files',
    });
    return { docs: [], problems, lineCounter };
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    problems.push({ line: 1, col: 1, message: 'file is not valid UTF-8' });
    return { docs: [], problems, lineCounter };
  }
  const deep = prescan(text, relined(text));
  if (deep) return { docs: [], problems: [deep], lineCounter };

  const parsed = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  // A file of comments only parses to an EmptyStream, which is not an array.
  const all = Array.isArray(parsed) ? parsed : [];
  if (all.length > LIMITS.maxDocuments) {
    problems.push({ line: 1, col: 1, message: `more than ${LIMITS.maxDocuments} documents in one file` });
    return { docs: [], problems, lineCounter };
  }
  const docs: ParsedYamlDoc[] = [];
  all.forEach((doc, index) => {
    const errs = [...doc.errors, ...doc.warnings];
    for (const e of errs) {
      const p = lineCounter.linePos(e.pos[0]);
      problems.push({ line: p.line, col: p.col, message: `YAML: ${firstLine(e.message)}` });
    }
    if (errs.length > 0) return;
    const deepNode = tooDeep(doc);
    if (deepNode) {
      problems.push({ ...depthProblem(lineCounter, deepNode.range?.[0] ?? 0) });
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: LIMITS.maxAliasCount });
    } catch (e) {
      const alias = firstAlias(doc);
      const p = nodePos(lineCounter, alias);
      if (alias && e instanceof Error && /alias count/i.test(e.message)) {
        problems.push({
          line: p.line,
          col: p.col,
          message: `YAML aliases expand to more than ${LIMITS.maxAliasCount} nodes: refused as a possible "billion laughs" attack`,
          hint: 'write the values out instead of nesting aliases',
        });
      } else {
        problems.push({ line: p.line, col: p.col, message: `YAML: ${firstLine(e instanceof Error ? e.message : String(e))}` });
      }
      return;
    }
    if (doc.contents === null || value === null || value === undefined) return;
    docs.push({ index, doc, value });
  });
  return { docs, problems, lineCounter };
}

/** A line counter for text that was not handed to the parser. */
function relined(text: string): LineCounter {
  const lc = new LineCounter();
  lc.addNewLine(0);
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) lc.addNewLine(i + 1);
  return lc;
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/**
 * The YAML node that an Ajv instancePath ("/spec/members/0/node") points at,
 * following aliases; `key` is the mapping key node of the last step. Stops at
 * the deepest node that exists.
 */
export function locate(doc: Document.Parsed, path: ReadonlyArray<string | number>): { node: ParsedNode | null; key: ParsedNode | null; complete: boolean } {
  let node: unknown = doc.contents;
  let key: ParsedNode | null = null;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return { node: node as ParsedNode, key, complete: false };
      key = pair.key as ParsedNode;
      node = pair.value ?? pair.key;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) return { node: node as ParsedNode, key, complete: false };
      key = null;
      node = item;
    } else {
      return { node: (node as ParsedNode | null) ?? null, key, complete: false };
    }
  }
  return { node: (node as ParsedNode | null) ?? null, key, complete: true };
}
