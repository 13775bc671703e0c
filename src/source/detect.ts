/**
 * What `--repo` names, found from the file system alone: deciding that a
 * plain folder is not a Git repository must not load the Git library.
 */
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How `--repo` is to be read: a URL, a local Git repository, or a plain directory. */
export async function detectRepo(repo: string): Promise<'url' | 'git' | 'dir' | 'missing'> {
  if (/^https?:\/\//i.test(repo)) return 'url';
  const dir = repo.startsWith('file://') ? fileURLToPath(repo) : repo;
  try {
    if (!(await stat(dir)).isDirectory()) return 'missing';
  } catch {
    return 'missing';
  }
  return (await findGitdir(resolvePath(dir))) === null ? 'dir' : 'git';
}

/** The git directory of a working tree (.git dir or `gitdir:` file) or of a bare repository. */
export async function findGitdir(dir: string): Promise<string | null> {
  const dotgit = join(dir, '.git');
  try {
    const st = await stat(dotgit);
    if (st.isDirectory()) return dotgit;
    const m = /^gitdir:\s*(.+?)\s*$/m.exec(await readFile(dotgit, 'utf8'));
    if (m?.[1]) return isAbsolute(m[1]) ? m[1] : resolvePath(dir, m[1]);
  } catch {
    // not a working tree: maybe bare
  }
  try {
    await stat(join(dir, 'HEAD'));
    if ((await stat(join(dir, 'objects'))).isDirectory() && (await stat(join(dir, 'refs'))).isDirectory()) return dir;
  } catch {
    // not a repository
  }
  return null;
}
