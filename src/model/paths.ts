/**
 * Path rules. A path converge writes to must say exactly one thing: a path
 * that normalises to another (`/etc//x`, `/etc/./x`, `/etc/x/`) would let two
 * resources manage the same file unnoticed, and `..` or control characters
 * have no business in a managed path.
 */

function controlChar(p: string): string | null {
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return `U+${c.toString(16).toUpperCase().padStart(4, '0')}`;
  }
  return null;
}

/** What is wrong with an absolute node path, as "must …" text, or null. */
export function absolutePathProblem(p: string): string | null {
  const cc = controlChar(p);
  if (cc) return `must not contain control characters (found ${cc})`;
  if (!p.startsWith('/')) return "must be an absolute path (starting with '/')";
  if (p === '/') return "must not be '/'";
  if (p.includes('//')) return "must not contain '//'";
  if (p.endsWith('/')) return "must not end with '/'";
  const segs = p.slice(1).split('/');
  if (segs.includes('..')) return "must not contain '..' segments";
  if (segs.includes('.')) return "must not contain '.' segments";
  return null;
}

/** What is wrong with a path relative to the desired-state root, or null. */
export function repoPathProblem(p: string): string | null {
  const cc = controlChar(p);
  if (cc) return `must not contain control characters (found ${cc})`;
  if (p.startsWith('/')) return 'must be relative to the desired-state root';
  if (p.includes('//')) return "must not contain '//'";
  if (p.endsWith('/')) return "must not end with '/'";
  const segs = p.split('/');
  if (segs.includes('..')) return "must not contain '..' segments";
  if (segs.includes('.')) return "must not contain '.' segments";
  return null;
}

/** Secret names (after rendering) are relative paths in the secrets directory. */
export const SECRET_NAME = /^(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;
