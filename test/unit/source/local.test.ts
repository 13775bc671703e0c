// The Git source on a local repository: read straight from the object store
// of a real repository made with the git command line.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SourceError, ConfigError } from '../../../src/errors/index.js';
import { detectRepo, openSource } from '../../../src/source/git.js';
import { git, makeRepo, tempDir } from './_repo.js';

async function rejects(p: Promise<unknown>, cls: new (...a: never[]) => Error, re: RegExp): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, cls);
    assert.match((e as Error).message, re);
    return e as Error;
  }
  assert.unreachable('expected a rejection');
  throw new Error('unreachable');
}

test('resolves the branch head and lists and reads files under --path at that commit', async () => {
  const repo = makeRepo();
  try {
    const c1 = repo.commit({ 'ds/nodes.yaml': 'nodes: 1\n', 'ds/templates/etcd.env.tmpl': 'X={{ node.name }}\n', 'ds/.editorconfig': 'x', 'README.md': 'top' });
    symlinkSync('nodes.yaml', join(repo.dir, 'ds/link.yaml'));
    const c2 = repo.commit({ 'ds/nodes.yaml': 'nodes: 2\n' });
    const src = await openSource({ repo: repo.dir, branch: 'main', path: './ds/' });
    assert.is(src.kind, 'local');
    assert.is(src.path, 'ds');
    assert.is(await src.resolve(), c2);
    const files = src.files(c2);
    // Hidden files and symbolic links are not desired state; files outside --path are not listed.
    assert.equal(await files.list(), ['nodes.yaml', 'templates/etcd.env.tmpl']);
    assert.is((await files.read('nodes.yaml')).toString(), 'nodes: 2\n');
    assert.is(files.root, `git:${c2}:ds`);
    // An older commit (the last good one) stays readable.
    assert.is((await src.files(c1).read('nodes.yaml')).toString(), 'nodes: 1\n');
    await rejects(files.read('README.md'), SourceError, /no file README\.md at commit/);
  } finally {
    repo.remove();
  }
});

test('uncommitted edits in the working tree are not desired state', async () => {
  const repo = makeRepo();
  try {
    const c = repo.commit({ 'a.yaml': 'committed\n' });
    writeFileSync(join(repo.dir, 'a.yaml'), 'edited, not committed\n');
    writeFileSync(join(repo.dir, 'b.yaml'), 'new, not committed\n');
    const src = await openSource({ repo: repo.dir, branch: 'main' });
    assert.is(await src.resolve(), c);
    assert.equal(await src.files(c).list(), ['a.yaml']);
    assert.is((await src.files(c).read('a.yaml')).toString(), 'committed\n');
  } finally {
    repo.remove();
  }
});

test('reads packed refs and packed objects after git gc, and a bare repository', async () => {
  const repo = makeRepo();
  const bareParent = tempDir('bare');
  try {
    repo.commit({ 'x/a.yaml': 'a\n' });
    const c = repo.commit({ 'x/b.yaml': 'b\n' });
    git(repo.dir, 'gc', '--quiet', '--aggressive');
    git(repo.dir, 'pack-refs', '--all');
    const src = await openSource({ repo: repo.dir, branch: 'main', path: 'x' });
    assert.is(await src.resolve(), c);
    assert.equal(await src.files(c).list(), ['a.yaml', 'b.yaml']);
    const bare = join(bareParent, 'ds.git');
    git(bareParent, 'clone', '--quiet', '--bare', repo.dir, bare);
    const b = await openSource({ repo: `file://${bare}`, branch: 'main', path: 'x' });
    assert.is(b.gitdir, bare);
    assert.is(await b.resolve(), c);
    assert.is((await b.files(c).read('b.yaml')).toString(), 'b\n');
    assert.is(await detectRepo(bare), 'git');
  } finally {
    repo.remove();
  }
});

test('other branches: follows the one asked for', async () => {
  const repo = makeRepo();
  try {
    const main = repo.commit({ 'a.yaml': 'main\n' });
    git(repo.dir, 'checkout', '--quiet', '-b', 'feature/x');
    const feature = repo.commit({ 'a.yaml': 'feature\n' });
    assert.is(await (await openSource({ repo: repo.dir, branch: 'main' })).resolve(), main);
    const f = await openSource({ repo: repo.dir, branch: 'feature/x' });
    assert.is(await f.resolve(), feature);
    assert.is((await f.files(feature).read('a.yaml')).toString(), 'feature\n');
  } finally {
    repo.remove();
  }
});

test('clear errors: missing branch, missing folder, unknown commit, not a repository', async () => {
  const repo = makeRepo();
  const plain = tempDir('plain');
  try {
    const c = repo.commit({ 'ds/a.yaml': 'a\n' });
    await rejects((await openSource({ repo: repo.dir, branch: 'nope' })).resolve(), SourceError, /^branch nope not found in /);
    const e = await rejects((await openSource({ repo: repo.dir, branch: 'main', path: 'ds/missing' })).files(c).list(), SourceError, /^folder ds\/missing not found at commit [0-9a-f]{12} of /);
    assert.match((e as SourceError).hint ?? '', /--path/);
    await rejects(Promise.resolve().then(() => openSource({ repo: repo.dir, branch: 'main' }).then((s) => s.files('abc'))), SourceError, /not a commit id/);
    await rejects((await openSource({ repo: repo.dir, branch: 'main' })).files('0'.repeat(40)).list(), SourceError, /^commit 000000000000 is not in /);
    await rejects(openSource({ repo: plain, branch: 'main' }), SourceError, /is not a Git repository/);
    await rejects(openSource({ repo: repo.dir, branch: 'main', path: '../etc' }), ConfigError, /--path must be a folder inside the repository/);
    await rejects(openSource({ repo: repo.dir, branch: 'a..b' }), ConfigError, /not a usable branch name/);
    await rejects(openSource({ repo: 'ssh://git@example.invalid/x.git', branch: 'main' }), ConfigError, /unsupported Git URL scheme/);
    await rejects(openSource({ repo: 'git@example.invalid:org/x.git', branch: 'main' }), ConfigError, /SSH Git URLs are not supported/);
    await rejects(openSource({ repo: 'https://example.invalid/x.git', branch: 'main' }), ConfigError, /needs a cache directory/);
    mkdirSync(join(plain, 'sub'));
    assert.is(await detectRepo(plain), 'dir');
    assert.is(await detectRepo(repo.dir), 'git');
    assert.is(await detectRepo(join(plain, 'none')), 'missing');
    assert.is(await detectRepo('https://example.invalid/x.git'), 'url');
  } finally {
    repo.remove();
  }
});

test.run();
