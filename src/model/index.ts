/**
 * The model's public entry points: load, validate and resolve a desired
 * state from a directory or from any FileSource (e.g. a Git commit in memory).
 */
import { ConfigError, ValidationError, type Diagnostic } from '../errors/index.js';
import type { ResolvedState } from './types.js';
import { fsSource, memorySource, type FileSource } from './source.js';
import { resolveDesiredState, type ResolveOptions, type ResolveResult } from './resolve.js';

export type { FileSource } from './source.js';
export type { ResolveOptions, ResolveResult } from './resolve.js';
export { fsSource, memorySource } from './source.js';
export { DEFAULTS } from './defaults.js';
export { PAYLOAD_FOLDERS, isDocumentFile } from './load.js';
export { LIMITS } from './yaml-file.js';
export { KINDS, API_VERSION, type Kind } from './schema.js';
export { KNOWN_VARIABLES } from './template.js';

function toSource(root: string | FileSource): FileSource {
  return typeof root === 'string' ? fsSource(root) : root;
}

/**
 * Loads, validates and resolves; never throws for an invalid desired state
 * (state is null and diagnostics say why). Throws ConfigError when the root
 * cannot be read at all.
 */
export async function validateDesiredState(root: string | FileSource, opts: ResolveOptions = {}): Promise<ResolveResult> {
  const source = toSource(root);
  try {
    await source.list();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read the desired-state root ${source.root}${code ? ` (${code})` : ''}`, 'point --repo at the folder that holds the desired-state YAML files');
  }
  return resolveDesiredState(source, opts);
}

/**
 * Loads and resolves for plan/apply. Throws ValidationError (carrying every
 * diagnostic) when there is any error; warnings are returned.
 */
export async function loadDesiredState(root: string | FileSource, opts: ResolveOptions = {}): Promise<{ state: ResolvedState; diagnostics: Diagnostic[] }> {
  const r = await validateDesiredState(root, opts);
  if (r.state === null) throw new ValidationError(r.diagnostics);
  return { state: r.state, diagnostics: r.diagnostics };
}

/** loadDesiredState over files held in memory ({ 'etcd.yaml': Buffer, ... }), e.g. read from a Git commit. */
export async function loadDesiredStateFromFiles(
  files: Map<string, Buffer | string> | Record<string, Buffer | string>,
  opts: ResolveOptions & { root?: string } = {},
): Promise<{ state: ResolvedState; diagnostics: Diagnostic[] }> {
  const { root, ...rest } = opts;
  return loadDesiredState(memorySource(files, root), rest);
}
