/**
 * JSON-Schema validation of one document against schemas/, with every Ajv
 * error turned into a located, readable message. The validators are compiled
 * from schemas/ at build time (validate-gen.ts), not at each start.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ErrorObject, ValidateFunction, AnySchemaObject } from 'ajv';
import * as generated from './validate-generated.js';

/** schemas/ sits two levels above both src/model/ and dist/model/. */
export const SCHEMAS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../schemas');

export const API_VERSION = 'converge.dev/v1';
export const KINDS = ['Node', 'Group', 'User', 'Directory', 'File', 'Service', 'EtcdCluster'] as const;
export type Kind = (typeof KINDS)[number];

export function isKind(s: unknown): s is Kind {
  return typeof s === 'string' && (KINDS as readonly string[]).includes(s);
}

/** One schema problem: where (a path into the document) and what. */
export interface SchemaProblem {
  path: Array<string | number>;
  /** Point at the mapping key rather than the value (unknown fields). */
  atKey: boolean;
  message: string;
  hint?: string;
}

const validators = generated as unknown as Record<Lowercase<Kind>, ValidateFunction>;

function pathOf(instancePath: string): Array<string | number> {
  if (instancePath === '') return [];
  return instancePath
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));
}

/** `spec.members[1].node` */
export function fieldName(path: ReadonlyArray<string | number>): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out === '' ? seg : `.${seg}`;
  return out === '' ? 'the document' : out;
}

function typeWord(t: string): string {
  switch (t) {
    case 'object':
      return 'a mapping';
    case 'array':
      return 'a list';
    case 'integer':
      return 'an integer';
    default:
      return `a ${t}`;
  }
}

function describe(e: ErrorObject): SchemaProblem | null {
  const path = pathOf(e.instancePath);
  const field = fieldName(path);
  const parent = e.parentSchema as (AnySchemaObject & { 'x-message'?: string }) | undefined;
  switch (e.keyword) {
    case 'required': {
      const missing = String((e.params as { missingProperty: string }).missingProperty);
      return { path, atKey: true, message: `missing required field ${fieldName([...path, missing])}` };
    }
    case 'additionalProperties': {
      const extra = String((e.params as { additionalProperty: string }).additionalProperty);
      const allowed = Object.keys((parent?.properties as Record<string, unknown> | undefined) ?? {});
      return {
        path: [...path, extra],
        atKey: true,
        message: `unknown field ${fieldName([...path, extra])}`,
        ...(allowed.length > 0 ? { hint: `allowed here: ${allowed.join(', ')}` } : {}),
      };
    }
    case 'type': {
      const want = String((e.params as { type: string }).type);
      const unquoted = want === 'string' && (typeof e.data === 'number' || typeof e.data === 'boolean');
      return {
        path,
        atKey: false,
        message: `${field} must be ${typeWord(want)}`,
        ...(unquoted ? { hint: `YAML read the unquoted value as a ${typeof e.data}: quote it, e.g. mode: "0640"` } : {}),
      };
    }
    case 'const':
      return { path, atKey: false, message: `${field} must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}` };
    case 'enum':
      return {
        path,
        atKey: false,
        message: `${field} must be one of: ${((e.params as { allowedValues: unknown[] }).allowedValues).map((v) => String(v)).join(', ')}`,
      };
    case 'pattern': {
      if (e.propertyName !== undefined) {
        const msg = parent?.['x-message'] ?? 'is not an allowed key';
        return { path: [...path, e.propertyName], atKey: true, message: `key ${JSON.stringify(e.propertyName)} in ${field} ${msg}` };
      }
      return { path, atKey: false, message: `${field} ${parent?.['x-message'] ?? `must match ${String((e.params as { pattern: string }).pattern)}`}` };
    }
    case 'propertyNames':
      return null;
    case 'minItems':
      return { path, atKey: false, message: `${field} must have at least ${String((e.params as { limit: number }).limit)} item(s)` };
    case 'minimum':
    case 'maximum':
    case 'minLength':
    case 'maxLength':
      return { path, atKey: false, message: `${field} ${e.message ?? 'is out of range'}` };
    default:
      return { path, atKey: false, message: `${field} ${e.message ?? 'is invalid'}` };
  }
}

/** Validates a document whose kind is known; returns [] when it is valid. */
export function validateDocument(kind: Kind, value: unknown): SchemaProblem[] {
  const v = validators[kind.toLowerCase() as Lowercase<Kind>];
  if (v(value)) return [];
  const out: SchemaProblem[] = [];
  for (const e of v.errors ?? []) {
    const p = describe(e);
    if (p) out.push(p);
  }
  return out;
}
