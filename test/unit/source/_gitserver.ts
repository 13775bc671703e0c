// The lab's own Git server (git http-backend behind basic auth on 127.0.0.1),
// started on a throw-away lab directory for the source and daemon tests.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureGitRepo, readGitCredentials, startGitServer, stopGitServers, commitDesiredState, type GitCredentials } from '../../../src/lab/gitserver.js';
import { labPaths, type LabPaths } from '../../../src/lab/paths.js';
import type { GitServerState } from '../../../src/lab/state.js';
import { tempDir } from './_repo.js';

export interface TestGitServer {
  url: string;
  port: number;
  creds: GitCredentials;
  paths: LabPaths;
  /** Commit these files as the whole repository content on main; returns the commit id. */
  push(files: Record<string, string>, message?: string): Promise<string>;
  /** Stop the server process (the repository stays). */
  down(): Promise<void>;
  /** Start it again on the same port. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestGitServer(initial: Record<string, string>): Promise<TestGitServer> {
  const root = tempDir('gitsrv');
  const p = labPaths(root);
  const seed = join(root, 'seed');
  const write = (files: Record<string, string>): void => {
    rmSync(seed, { recursive: true, force: true });
    for (const [f, content] of Object.entries(files)) {
      mkdirSync(join(seed, f, '..'), { recursive: true });
      writeFileSync(join(seed, f), content);
    }
  };
  write(initial);
  await ensureGitRepo(p, seed, () => undefined);
  let state: GitServerState | null = await startGitServer(p, 0);
  const port = state.port;
  return {
    url: state.url,
    port: state.port,
    creds: readGitCredentials(p),
    paths: p,
    async push(files, message = 'test change') {
      write(files);
      return commitDesiredState(p, seed, message);
    },
    async down() {
      await stopGitServers(p, state);
      state = null;
    },
    async up() {
      state = await startGitServer(p, port);
      if (state.port !== port) throw new Error(`the Git server came back on port ${state.port}, not ${port}`);
    },
    async stop() {
      await stopGitServers(p, state);
      state = null;
      rmSync(root, { recursive: true, force: true });
    },
  };
}
