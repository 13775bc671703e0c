/**
 * The template language: `{{ variable }}` substitution and nothing else (no
 * code, no loops, no conditionals), so rendering a template can never run
 * anything and every variable can be checked before any node is touched.
 */

export interface TemplateVar {
  /** Dotted name, e.g. "node.labels.role". */
  name: string;
  /** 0-based offset of the `{{` in the text. */
  offset: number;
  /** 1-based line and column of the variable name. */
  line: number;
  col: number;
}

export type TemplatePart = string | TemplateVar;

export interface TemplateProblem {
  line: number;
  col: number;
  message: string;
  hint?: string;
}

export interface ParsedTemplate {
  parts: TemplatePart[];
  vars: TemplateVar[];
}

const ETCD_VARS = [
  'name',
  'peerUrl',
  'clientUrl',
  'initialCluster',
  'members',
  'clientUrls',
  'token',
  'dataDir',
  'clientPort',
  'peerPort',
  'initialEnvFile',
] as const;

export const KNOWN_VARIABLES = [
  'node.name',
  'node.address',
  'node.labels.<key>',
  'vars.<key>',
  ...ETCD_VARS.map((v) => `etcd.${v}`),
];

const EXPR = /^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_][A-Za-z0-9_.-]*)*)\s*$/;

/** 1-based line/column of offsets in one text, from its newline offsets. */
function lineIndex(text: string): (offset: number) => { line: number; col: number } {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return (offset) => {
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, col: offset - starts[lo]! + 1 };
  };
}

/** Why a variable name is not one of the known ones, or null when it is. */
export function unknownVariable(name: string): string | null {
  const [root, first, ...rest] = name.split('.');
  const ok =
    (root === 'node' && (((first === 'name' || first === 'address') && rest.length === 0) || (first === 'labels' && rest.length > 0))) ||
    (root === 'vars' && first !== undefined && rest.length === 0) ||
    (root === 'etcd' && first !== undefined && rest.length === 0 && (ETCD_VARS as readonly string[]).includes(first));
  return ok ? null : `unknown template variable ${JSON.stringify(name)}`;
}

export function parseTemplate(text: string): { template: ParsedTemplate; problems: TemplateProblem[] } {
  const parts: TemplatePart[] = [];
  const vars: TemplateVar[] = [];
  const problems: TemplateProblem[] = [];
  const lineCol = lineIndex(text);
  let i = 0;
  while (i < text.length) {
    const open = text.indexOf('{{', i);
    if (open < 0) {
      parts.push(text.slice(i));
      break;
    }
    if (open > i) parts.push(text.slice(i, open));
    const close = text.indexOf('}}', open + 2);
    const newline = text.indexOf('\n', open + 2);
    if (close < 0 || (newline >= 0 && newline < close)) {
      problems.push({ ...lineCol(open), message: 'unclosed "{{" in template', hint: 'close it with "}}" on the same line' });
      parts.push(text.slice(open));
      break;
    }
    const inner = text.slice(open + 2, close);
    const m = EXPR.exec(inner);
    if (!m || m[1] === undefined) {
      problems.push({
        ...lineCol(open),
        message: `invalid template expression ${JSON.stringify(`{{${inner}}}`)}`,
        hint: 'templates only substitute variables, e.g. {{ node.name }}',
      });
    } else {
      const nameOffset = open + 2 + inner.indexOf(m[1]);
      const v: TemplateVar = { name: m[1], offset: open, ...lineCol(nameOffset) };
      const why = unknownVariable(v.name);
      if (why) problems.push({ line: v.line, col: v.col, message: why, hint: `known: ${KNOWN_VARIABLES.join(', ')}` });
      else {
        parts.push(v);
        vars.push(v);
      }
    }
    i = close + 2;
  }
  return { template: { parts, vars }, problems };
}

/** Values of the etcd.* variables on one member node. */
export interface EtcdTemplateValues {
  name: string;
  peerUrl: string;
  clientUrl: string;
  initialCluster: string;
  members: string;
  clientUrls: string;
  token: string;
  dataDir: string;
  clientPort: string;
  peerPort: string;
  initialEnvFile: string;
}

export interface TemplateContext {
  node: { name: string; address: string; labels: Record<string, string> };
  vars: Record<string, string>;
  /** null on nodes that are not etcd members. */
  etcd: EtcdTemplateValues | null;
  /** `EtcdCluster/<name>` when one is declared, for messages. */
  etcdCluster: string | null;
  /** The declared cluster is invalid (reported elsewhere): etcd.* fail silently. */
  etcdBroken: boolean;
}

/** A variable that has no value on this node: why, and what to do. */
export interface RenderProblem {
  v: TemplateVar;
  message: string;
  hint?: string;
  /** A consequence of an error reported elsewhere: not worth a message of its own. */
  silent?: boolean;
}

function lookup(name: string, ctx: TemplateContext): { value: string } | { message: string; hint?: string; silent?: boolean } {
  const [root, first = '', ...rest] = name.split('.');
  if (root === 'node') {
    if (first === 'name') return { value: ctx.node.name };
    if (first === 'address') return { value: ctx.node.address };
    const key = rest.join('.');
    const v = ctx.node.labels[key];
    return v === undefined
      ? { message: `node ${ctx.node.name} has no label ${JSON.stringify(key)}`, hint: `add it to Node/${ctx.node.name} metadata.labels` }
      : { value: v };
  }
  if (root === 'vars') {
    const v = ctx.vars[first];
    return v === undefined
      ? { message: `node ${ctx.node.name} has no variable ${JSON.stringify(first)}`, hint: `add it to Node/${ctx.node.name} spec.vars` }
      : { value: v };
  }
  if (ctx.etcd === null) {
    if (ctx.etcdBroken) return { message: `${name} has no value: the EtcdCluster is invalid`, silent: true };
    return {
      message: `${name} is only defined on etcd members, and node ${ctx.node.name} is not a member${ctx.etcdCluster ? ` of ${ctx.etcdCluster}` : ' (no EtcdCluster is declared)'}`,
      hint: 'select only member nodes for this file',
    };
  }
  return { value: ctx.etcd[first as keyof EtcdTemplateValues] };
}

export function renderTemplate(t: ParsedTemplate, ctx: TemplateContext): { text: string; problems: RenderProblem[] } {
  let text = '';
  const problems: RenderProblem[] = [];
  for (const part of t.parts) {
    if (typeof part === 'string') {
      text += part;
      continue;
    }
    const r = lookup(part.name, ctx);
    if ('value' in r) text += r.value;
    else problems.push({ v: part, message: r.message, ...(r.hint ? { hint: r.hint } : {}), ...(r.silent ? { silent: true } : {}) });
  }
  return { text, problems };
}
