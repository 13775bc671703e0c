// Real Git repositories for the source and daemon tests: made and committed
// to with the git command line, exactly as an operator would.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const IDENTITY = {
  GIT_AUTHOR_NAME: 'converge test',
  GIT_AUTHOR_EMAIL: 'test@converge.invalid',
  GIT_COMMITTER_NAME: 'converge test',
  GIT_COMMITTER_EMAIL: 'test@converge.invalid',
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, env: { ...process.env, ...IDENTITY }, encoding: 'utf8' }).trim();
}

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A temporary directory, removed when the test process exits. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `converge-${prefix}-`));
  made.push(d);
  return d;
}

export interface TestRepo {
  dir: string;
  /** Write files (path → content) and commit them on the current branch; returns the commit id. */
  commit(files: Record<string, string>, message?: string): string;
  head(branch?: string): string;
  remove(): void;
}

export function makeRepo(branch = 'main'): TestRepo {
  const dir = tempDir('repo');
  git(dir, 'init', '--quiet', `--initial-branch=${branch}`);
  let n = 0;
  return {
    dir,
    commit(files, message) {
      for (const [p, content] of Object.entries(files)) {
        mkdirSync(dirname(join(dir, p)), { recursive: true });
        writeFileSync(join(dir, p), content);
      }
      git(dir, 'add', '--all');
      git(dir, 'commit', '--quiet', '--allow-empty', '-m', message ?? `change ${++n}`);
      return git(dir, 'rev-parse', 'HEAD');
    },
    head(b = branch) {
      return git(dir, 'rev-parse', `refs/heads/${b}`);
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
