/**
 * `converge validate`: load, check and resolve the desired state; print every
 * diagnostic (or JSON) and a one-line summary. Exit 0 when valid, 1 when not.
 */
import { formatDiagnostic } from '../errors/index.js';
import { validateDesiredState, type FileSource } from '../model/index.js';

export interface ValidateOptions {
  /** The desired-state root: a directory, or any FileSource (e.g. a Git commit). */
  root: string | FileSource;
  /** The commit the files were read at, named in the summary. */
  commit?: string | null;
  json: boolean;
  out: (s: string) => void;
  /** When given, secrets are read and checked (existence, digest). */
  secretsDir?: string;
  /** When given, artifacts are read and checked against their pins. */
  artifactsDir?: string;
}

export async function validateCommand(opts: ValidateOptions): Promise<number> {
  const r = await validateDesiredState(opts.root, {
    ...(opts.secretsDir !== undefined ? { secretsDir: opts.secretsDir } : {}),
    ...(opts.artifactsDir !== undefined ? { artifactsDir: opts.artifactsDir } : {}),
    ...(opts.commit ? { commit: opts.commit } : {}),
  });
  const at = opts.commit ? ` at commit ${opts.commit}` : '';
  const errors = r.diagnostics.filter((d) => d.severity === 'error').length;
  const warnings = r.diagnostics.length - errors;
  const valid = r.state !== null;
  if (opts.json) {
    const summary = r.state
      ? {
          nodes: r.state.nodes.map((n) => ({
            name: n.name,
            resources: n.groups.length + n.users.length + n.directories.length + n.files.length + n.services.length,
          })),
          etcdMembers: r.state.etcd?.members.map((m) => m.name) ?? [],
        }
      : null;
    opts.out(JSON.stringify({ valid, commit: opts.commit ?? null, errors, warnings, diagnostics: r.diagnostics, summary }, null, 2) + '\n');
    return valid ? 0 : 1;
  }
  for (const d of r.diagnostics) opts.out(formatDiagnostic(d) + '\n');
  if (r.state) {
    const resources = r.state.nodes.reduce((n, x) => n + x.groups.length + x.users.length + x.directories.length + x.files.length + x.services.length, 0);
    const etcd = r.state.etcd ? `, etcd cluster ${r.state.etcd.name} with ${r.state.etcd.members.length} members` : '';
    opts.out(`valid${at}: ${r.state.nodes.length} nodes, ${resources} resources${etcd}${warnings ? `, ${warnings} warning(s)` : ''}\n`);
    return 0;
  }
  opts.out(`invalid${at}: ${errors} error(s)${warnings ? `, ${warnings} warning(s)` : ''}\n`);
  return 1;
}
