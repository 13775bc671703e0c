// apply's scripts run for real on this machine (sh, coreutils, rename(2))
// through a local Transport, against scratch directories: atomicity under
// kill -9, backups, symlink refusal, temp file permissions, disk full.
// Needs root (mount namespaces, chown, tmpfs), as the whole suite does.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMALL_WRITE_BYTES, applyNodePlan, execGroups, restoreFromBackup, type ContentResolver, type FileWriteAction } from '../../../src/apply/host.js';
import { stepsScript } from '../../../src/apply/script.js';
import { MAX_SCRIPT_BYTES } from '../../../src/connect/ssh.js';
import { shellQuote } from '../../../src/connect/transport.js';
import { INVENTORY_PATH, MANAGED_PATHS_PATH, writeInventory } from '../../../src/apply/inventory.js';
import { ConvergeError } from '../../../src/errors/index.js';
import type { Inventory } from '../../../src/facts/types.js';
import type { HostAction, NodePlan } from '../../../src/plan/types.js';
import { localTransport, type LocalTransport } from './local-transport.js';

const NODE = 'local-node';
const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const uidOf = (name: string): number => Number(execFileSync('id', ['-u', name]).toString().trim());
const gidOf = (name: string): number => Number(execFileSync('getent', ['group', name]).toString().split(':')[2]);

let root = '';
let t: LocalTransport;
/** Where a node path under /var/lib (inside the transport's namespace) is on this machine. */
const host = (nodePath: string): string => `${root}${nodePath.slice('/var/lib'.length)}`;
const temps = (nodeDir: string): string[] => readdirSync(host(nodeDir)).filter((n) => n.includes('.converge-'));

test.before.each(() => {
  root = mkdtempSync('/tmp/converge-test-apply-');
  mkdirSync(`${root}/t`, { mode: 0o755 });
  t = localTransport(root, NODE);
});

test.after.each(() => {
  rmSync(root, { recursive: true, force: true });
});

const base = { node: NODE, resource: 'File/x', reason: 'test' };

function writeAction(path: string, content: Buffer | string, o: { owner?: string; group?: string; mode?: string; old?: Buffer | string } = {}): FileWriteAction {
  const b = Buffer.from(content);
  return { ...base, type: 'file.write', path, owner: o.owner ?? 'root', group: o.group ?? 'root', mode: o.mode ?? '0644', contentKind: 'text', sha256: sha(b), size: b.length, oldSha256: o.old === undefined ? null : sha(o.old) };
}

function plan(actions: HostAction[]): NodePlan {
  return { node: NODE, reachable: true, actions, reported: [] };
}

/** Serves each write the bytes given for its path. */
function contents(map: Record<string, Buffer | string>): ContentResolver {
  return async (a) => {
    const b = Buffer.from(map[a.path] ?? '');
    return { stream: Readable.from([b]), size: b.length };
  };
}

/** A big deterministic stream, produced chunk by chunk as it is read. */
function bigStream(chunks: number, chunkSize = 1024 * 1024, fill = 0x61): { stream: Readable; bytes: Buffer } {
  const bytes = Buffer.alloc(chunks * chunkSize, fill);
  let i = 0;
  const stream = new Readable({
    read() {
      this.push(i < chunks ? bytes.subarray(i * chunkSize, ++i * chunkSize) : null);
    },
  });
  return { stream, bytes };
}

test('a new file is written with its owner, group and mode in one exec; no temporary file remains', async () => {
  const a = writeAction('/var/lib/t/new.conf', 'hello\n', { owner: 'nobody', group: 'nogroup', mode: '0640' });
  const r = await applyNodePlan(t, plan([a]), contents({ [a.path]: 'hello\n' }), { commit: 'c1' });
  assert.ok(r.ok, r.error?.message);
  assert.is(r.execs, 1);
  assert.equal(r.performed, [a]);
  assert.is(r.outcomes[0]?.backupSha256, null);
  const st = statSync(host(a.path));
  assert.is(readFileSync(host(a.path), 'utf8'), 'hello\n');
  assert.is(st.mode & 0o7777, 0o640);
  assert.is(st.uid, uidOf('nobody'));
  assert.is(st.gid, gidOf('nogroup'));
  assert.equal(temps('/var/lib/t'), []);
});

test('replacing a file keeps the old content on the node, content-addressed and root-only; restore needs nothing else', async () => {
  const path = '/var/lib/t/etcd.env';
  writeFileSync(host(path), 'v1\n', { mode: 0o644 });
  execFileSync('chown', ['nobody:nogroup', host(path)]);
  const oldIno = statSync(host(path)).ino;

  const a = writeAction(path, 'v2\n', { mode: '0600', old: 'v1\n' });
  const r = await applyNodePlan(t, plan([a]), contents({ [path]: 'v2\n' }), { commit: null });
  assert.ok(r.ok, r.error?.message);
  assert.is(r.outcomes[0]?.backupSha256, sha('v1\n'));
  const backup = `${root}/converge/backup/sha256/${sha('v1\n')}`;
  assert.is(readFileSync(backup, 'utf8'), 'v1\n');
  const bst = statSync(backup);
  assert.is(bst.ino, oldIno, 'the backup is the old inode itself (a hard link), no copy');
  assert.is(bst.mode & 0o7777, 0o600);
  assert.is(bst.uid, 0);
  assert.is(statSync(`${root}/converge/backup/sha256`).mode & 0o777, 0o700);
  assert.is(statSync(`${root}/converge/backup`).mode & 0o777, 0o700);
  assert.is(readFileSync(host(path), 'utf8'), 'v2\n');

  const restored = await restoreFromBackup(t, path, sha('v1\n'), 'nobody', 'nogroup', '0644');
  assert.is(restored.backupSha256, sha('v2\n'), 'what the restore replaced is backed up too');
  assert.is(readFileSync(host(path), 'utf8'), 'v1\n');
  const st = statSync(host(path));
  assert.is(st.mode & 0o7777, 0o644);
  assert.is(st.uid, uidOf('nobody'));
  assert.is(readFileSync(backup, 'utf8'), 'v1\n', 'the restore copies: the backup stays');
  assert.equal(temps('/var/lib/t'), []);

  const missing = await restoreFromBackup(t, path, 'f'.repeat(64), 'root', 'root', '0644').then(
    () => null,
    (e: Error) => e,
  );
  assert.match(missing?.message ?? '', /^local-node: restore \/var\/lib\/t\/etcd\.env from backup ffffffffffff: no such file on the node/);
  assert.is(readFileSync(host(path), 'utf8'), 'v1\n');
});

test('hostile names are written literally, and nothing else happens', async () => {
  rmSync('/tmp/pwned', { force: true });
  rmSync('/tmp/pwned2', { force: true });
  const dir = "/var/lib/t/a b'c\"$(touch /tmp/pwned)`touch /tmp/pwned2`";
  const file = `${dir}/f;x \${HOME} \u00e9\u6f22 *?[z]\n'q'`;
  const a = writeAction(file, 'literal\n', { mode: '0600' });
  const p = plan([
    { ...base, type: 'dir.create', path: dir, owner: 'root', group: 'root', mode: '0755' },
    a,
    { ...base, type: 'path.chmod', path: file, mode: '0640', from: '0600' },
    { ...base, type: 'path.chown', path: file, owner: 'nobody', group: 'nogroup', from: { owner: 'root', group: 'root' } },
  ]);
  const r = await applyNodePlan(t, p, contents({ [file]: 'literal\n' }), { commit: null });
  assert.ok(r.ok, r.error?.message);
  assert.equal(r.performed, p.actions);
  assert.equal(r.outcomes[0]?.createdParents, [
    "/var/lib/t/a b'c\"$(touch ",
    "/var/lib/t/a b'c\"$(touch /tmp",
    "/var/lib/t/a b'c\"$(touch /tmp/pwned)`touch ",
    "/var/lib/t/a b'c\"$(touch /tmp/pwned)`touch /tmp",
  ]);
  assert.is(readFileSync(host(file), 'utf8'), 'literal\n');
  assert.is(statSync(host(file)).mode & 0o7777, 0o640);
  assert.is(statSync(host(file)).uid, uidOf('nobody'));
  assert.not.ok(existsSync('/tmp/pwned'));
  assert.not.ok(existsSync('/tmp/pwned2'));
  assert.equal(readdirSync(`${root}/t`), ["a b'c\"$(touch "]);
});

test('a symlink or a directory at the target is refused, not written through; nothing is left behind', async () => {
  writeFileSync(`${root}/t/real`, 'precious\n');
  symlinkSync(`${root}/t/real`, `${root}/t/link`);
  mkdirSync(`${root}/t/adir`);
  for (const path of ['/var/lib/t/link', '/var/lib/t/adir']) {
    const a = writeAction(path, 'evil\n');
    const r = await applyNodePlan(t, plan([a, { ...base, type: 'path.chmod', path: '/var/lib/t/real', mode: '0600', from: '0644' }]), contents({ [path]: 'evil\n' }), { commit: null });
    assert.not.ok(r.ok);
    assert.is(r.outcomes[0]?.status, 'failed');
    assert.match(r.outcomes[0]?.error ?? '', path === '/var/lib/t/link' ? /^local-node: write \/var\/lib\/t\/link: the target is a symlink/ : /the target is a directory/);
    assert.is(r.outcomes[1]?.status, 'skipped');
    assert.equal(r.performed, []);
  }
  assert.ok(lstatSync(`${root}/t/link`).isSymbolicLink());
  assert.is(readFileSync(`${root}/t/real`, 'utf8'), 'precious\n');
  assert.is(statSync(`${root}/t/real`).mode & 0o777, 0o644);
  assert.equal(temps('/var/lib/t'), []);

  for (const action of [
    { ...base, type: 'path.chmod', path: '/var/lib/t/link', mode: '0777', from: '0644' },
    { ...base, type: 'path.chown', path: '/var/lib/t/link', owner: 'nobody', group: 'nogroup', from: { owner: 'root', group: 'root' } },
  ] as HostAction[]) {
    const r = await applyNodePlan(t, plan([action]), contents({}), { commit: null });
    assert.match(r.outcomes[0]?.error ?? '', /symlink: refusing to follow it/);
  }
  assert.is(statSync(`${root}/t/real`).mode & 0o777, 0o644);
  assert.is(statSync(`${root}/t/real`).uid, 0);
});

test('content whose digest differs from the plan is refused and the target left untouched', async () => {
  writeFileSync(`${root}/t/f`, 'old\n');
  const a = writeAction('/var/lib/t/f', 'planned\n');
  const r = await applyNodePlan(t, plan([a]), contents({ '/var/lib/t/f': 'tampered\n' }), { commit: null });
  assert.is(r.outcomes[0]?.status, 'failed');
  assert.match(r.outcomes[0]?.error ?? '', new RegExp(`has sha256 ${sha('tampered\n')}, expected ${a.sha256}`));
  assert.is(readFileSync(`${root}/t/f`, 'utf8'), 'old\n');
  assert.equal(temps('/var/lib/t'), []);
});

test('the temporary file is 0600 and root-owned from its creation, while the target is still the old one', async () => {
  writeFileSync(`${root}/t/secret.key`, 'old key\n', { mode: 0o600 });
  const first = randomBytes(256 * 1024);
  const rest = randomBytes(256 * 1024);
  const all = Buffer.concat([first, rest]);
  const a = writeAction('/var/lib/t/secret.key', all, { owner: 'nobody', group: 'nogroup', mode: '0440' });
  const stream = new Readable({ read() {} });
  stream.push(first);
  const applying = applyNodePlan(t, plan([a]), async () => ({ stream, size: all.length }), { commit: null });

  let seen: string[] = [];
  for (let i = 0; i < 200 && !(seen.length === 1 && statSync(`${root}/t/${seen[0]}`).size >= first.length); i++) {
    await sleep(10);
    seen = temps('/var/lib/t');
  }
  assert.is(seen.length, 1, 'the upload is paused with its temporary file in place');
  const name = seen[0] as string;
  assert.match(name, /^\.secret\.key\.converge-[A-Za-z0-9]{8}$/);
  const st = statSync(`${root}/t/${name}`);
  assert.is(st.mode & 0o7777, 0o600);
  assert.is(st.uid, 0);
  assert.is(st.gid, 0);
  assert.is(readFileSync(`${root}/t/secret.key`, 'utf8'), 'old key\n');

  stream.push(rest);
  stream.push(null);
  const r = await applying;
  assert.ok(r.ok, r.error?.message);
  assert.ok(readFileSync(`${root}/t/secret.key`).equals(all));
  assert.is(statSync(`${root}/t/secret.key`).mode & 0o7777, 0o440);
  assert.equal(temps('/var/lib/t'), []);
});

test('kill -9 in the middle of a large upload: the target is the old file, and the next write cleans the stale temporary file', async () => {
  writeFileSync(`${root}/t/etcd`, 'old binary\n', { mode: 0o755 });
  const big = bigStream(32);
  const a = writeAction('/var/lib/t/etcd', big.bytes, { mode: '0755' });
  let killed = false;
  const r = await applyNodePlan(t, plan([a]), async () => ({ stream: big.stream, size: big.bytes.length }), {
    commit: null,
    onProgress: (ev) => {
      if (!killed && (ev.bytesSent ?? 0) >= 8 * 1024 * 1024 && t.running?.pid) {
        killed = true;
        process.kill(-t.running.pid, 'SIGKILL');
      }
    },
  });
  assert.ok(killed);
  assert.is(r.outcomes[0]?.status, 'failed');
  assert.match(r.outcomes[0]?.error ?? '', /^local-node: write \/var\/lib\/t\/etcd: /);
  assert.is(readFileSync(`${root}/t/etcd`, 'utf8'), 'old binary\n');
  const stale = temps('/var/lib/t');
  assert.is(stale.length, 1, 'kill -9 gives the script no chance to clean up');
  assert.is(statSync(`${root}/t/${stale[0]}`).mode & 0o7777, 0o600);
  assert.ok(statSync(`${root}/t/${stale[0]}`).size < big.bytes.length);

  const small = writeAction('/var/lib/t/etcd', 'new binary\n', { mode: '0755' });
  const again = await applyNodePlan(t, plan([small]), contents({ '/var/lib/t/etcd': 'new binary\n' }), { commit: null });
  assert.ok(again.ok, again.error?.message);
  assert.is(readFileSync(`${root}/t/etcd`, 'utf8'), 'new binary\n');
  assert.equal(temps('/var/lib/t'), [], 'the next write of the target removed the stale temporary file');
});

test('killed at random moments, the target is always entirely the old or the new content', async () => {
  const A = Buffer.alloc(512 * 1024, 0x41);
  const B = Buffer.alloc(512 * 1024, 0x42);
  writeFileSync(`${root}/t/f`, A);
  const outcomes = { old: 0, new: 0 };
  for (let i = 0; i < 30; i++) {
    const current = readFileSync(`${root}/t/f`);
    const next = current.equals(A) ? B : A;
    const a = writeAction('/var/lib/t/f', next);
    const applying = applyNodePlan(t, plan([a]), contents({ '/var/lib/t/f': next }), { commit: null });
    await sleep(Math.floor(Math.random() * 40));
    if (t.running?.pid) {
      try {
        process.kill(-t.running.pid, 'SIGKILL');
      } catch {
        // already finished
      }
    }
    await applying;
    const now = readFileSync(`${root}/t/f`);
    assert.ok(now.equals(A) || now.equals(B), `iteration ${i}: partial content (${now.length} bytes)`);
    if (now.equals(next)) outcomes.new++;
    else outcomes.old++;
    // A temporary file is root-only until its content is verified; it takes the target's mode just before the rename.
    for (const n of temps('/var/lib/t')) {
      const mode = statSync(`${root}/t/${n}`).mode & 0o7777;
      if (mode !== 0o600) assert.ok(readFileSync(`${root}/t/${n}`).equals(next), `iteration ${i}: a temporary file with mode ${mode.toString(8)} does not hold the whole new content`);
    }
  }
  assert.is(outcomes.old + outcomes.new, 30);
});

test('SIGTERM or a cut connection mid-upload: the script removes its temporary file, the target is untouched', async () => {
  writeFileSync(`${root}/t/f`, 'old\n');
  const big = bigStream(32);
  const a = writeAction('/var/lib/t/f', big.bytes);
  let sent = false;
  const r = await applyNodePlan(t, plan([a]), async () => ({ stream: big.stream, size: big.bytes.length }), {
    commit: null,
    onProgress: (ev) => {
      if (!sent && (ev.bytesSent ?? 0) >= 4 * 1024 * 1024 && t.running?.pid) {
        sent = true;
        process.kill(-t.running.pid, 'SIGTERM');
      }
    },
  });
  assert.is(r.outcomes[0]?.status, 'failed');
  assert.is(readFileSync(`${root}/t/f`, 'utf8'), 'old\n');
  assert.equal(temps('/var/lib/t'), []);

  // The stream ends early, as when the connection to the bastion's file is lost.
  const half = bigStream(4);
  const b = writeAction('/var/lib/t/f', Buffer.alloc(8 * 1024 * 1024, 0x61));
  const cut = await applyNodePlan(t, plan([b]), async () => ({ stream: half.stream, size: 8 * 1024 * 1024 }), { commit: null });
  assert.match(cut.outcomes[0]?.error ?? '', /incomplete or changed upload/);
  assert.is(readFileSync(`${root}/t/f`, 'utf8'), 'old\n');
  assert.equal(temps('/var/lib/t'), []);
});

test('a failing content source or an abort cuts the upload short: target untouched, the rest skipped', async () => {
  writeFileSync(`${root}/t/f`, 'old\n');
  const a = writeAction('/var/lib/t/f', Buffer.alloc(4 * 1024 * 1024));
  const next: HostAction = { ...base, type: 'path.chmod', path: '/var/lib/t/f', mode: '0600', from: '0644' };
  const failing = new Readable({
    read() {
      this.push(Buffer.alloc(64 * 1024));
      setImmediate(() => this.destroy(new Error('EIO: disk read error')));
    },
  });
  const r = await applyNodePlan(t, plan([a, next]), async () => ({ stream: failing, size: 4 * 1024 * 1024 }), { commit: null });
  assert.match(r.outcomes[0]?.error ?? '', /reading the content failed: EIO: disk read error/);
  assert.is(r.outcomes[1]?.status, 'skipped');
  assert.is(readFileSync(`${root}/t/f`, 'utf8'), 'old\n');
  assert.equal(temps('/var/lib/t'), []);

  const missing = await applyNodePlan(
    t,
    plan([a, next]),
    async () => {
      throw new ConvergeError('E_CONFIG', `${NODE}: secret etcd-key for /var/lib/t/f is missing on this machine (/secrets/etcd-key.pem)`, { hint: 'check --secrets' });
    },
    { commit: null },
  );
  assert.is(missing.error?.message, `${NODE}: write /var/lib/t/f: cannot read the content: secret etcd-key for /var/lib/t/f is missing on this machine (/secrets/etcd-key.pem)`);
  assert.is(missing.error?.hint, 'check --secrets');
  assert.is(missing.execs, 0);

  const ac = new AbortController();
  const big = bigStream(32);
  const b = writeAction('/var/lib/t/f', big.bytes);
  const aborted = await applyNodePlan(t, plan([b, next]), async () => ({ stream: big.stream, size: big.bytes.length }), {
    commit: null,
    signal: ac.signal,
    onProgress: (ev) => {
      if ((ev.bytesSent ?? 0) >= 4 * 1024 * 1024) ac.abort();
    },
  });
  assert.match(aborted.outcomes[0]?.error ?? '', /interrupted during the upload/);
  assert.is(aborted.outcomes[1]?.status, 'skipped');
  assert.is(readFileSync(`${root}/t/f`, 'utf8'), 'old\n');
  assert.equal(temps('/var/lib/t'), []);
  assert.is(statSync(`${root}/t/f`).mode & 0o777, 0o644);
});

test('disk full: the error names the node and the path, the old file is intact, the temporary file is gone', async () => {
  const full = `${root}/t/full`;
  mkdirSync(full);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'converge-test', full]);
  try {
    writeFileSync(`${full}/data.bin`, 'old content\n');
    const big = Buffer.alloc(256 * 1024, 0x7a);
    const a = writeAction('/var/lib/t/full/data.bin', big);
    const r = await applyNodePlan(t, plan([a]), contents({ [a.path]: big }), { commit: null });
    assert.not.ok(r.ok);
    assert.match(r.error?.message ?? '', /^local-node: write \/var\/lib\/t\/full\/data\.bin: .*No space left on device/);
    assert.match(r.error?.hint ?? '', /free space/);
    assert.is(r.error?.code, 'E_APPLY');
    assert.is(readFileSync(`${full}/data.bin`, 'utf8'), 'old content\n');
    assert.equal(readdirSync(full), ['data.bin']);
  } finally {
    execFileSync('umount', [full]);
  }
});

test('batched steps: one exec per run of small steps, each outcome attributed, the first failure stops the rest', async () => {
  mkdirSync(`${root}/t/d`);
  writeFileSync(`${root}/t/d/suid`, '#!/bin/sh\n');
  chmodSync(`${root}/t/d/suid`, 0o4755);
  mkdirSync(`${root}/t/sg`);
  chmodSync(`${root}/t/sg`, 0o2755);
  const actions: HostAction[] = [
    { ...base, type: 'dir.create', path: '/var/lib/t/new/deep/conf', owner: 'nobody', group: 'nogroup', mode: '0750' },
    { ...base, type: 'path.chown', path: '/var/lib/t/d/suid', owner: 'nobody', group: 'nogroup', from: { owner: 'root', group: 'root' } },
    { ...base, type: 'path.chmod', path: '/var/lib/t/sg', mode: '0755', from: '2755' },
    writeAction('/var/lib/t/new/deep/conf/a', 'a\n'),
    writeAction('/var/lib/t/new/deep/conf/b', 'b\n'),
    { ...base, type: 'path.remove', path: '/var/lib/t/new/deep/conf/a', pathType: 'file' },
    { ...base, type: 'path.chmod', path: '/var/lib/t/missing', mode: '0600', from: '0644' },
    { ...base, type: 'path.chmod', path: '/var/lib/t/sg', mode: '0700', from: '0755' },
  ];
  const r = await applyNodePlan(t, plan(actions), contents({ '/var/lib/t/new/deep/conf/a': 'a\n', '/var/lib/t/new/deep/conf/b': 'b\n' }), { commit: null });
  assert.is(r.execs, 1, 'small steps and small writes: one exec');
  assert.equal(r.outcomes.map((o) => o.status), ['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'failed', 'skipped']);
  assert.equal(r.performed, actions.slice(0, 6));
  assert.equal(r.outcomes[0]?.createdParents, ['/var/lib/t/new', '/var/lib/t/new/deep']);
  assert.is(r.outcomes[6]?.error, 'local-node: chmod /var/lib/t/missing: the path does not exist');
  assert.match(r.outcomes[7]?.error ?? '', /skipped: step 7 \(chmod \/var\/lib\/t\/missing\) failed/);

  const conf = statSync(`${root}/t/new/deep/conf`);
  assert.is(conf.mode & 0o7777, 0o750);
  assert.is(conf.uid, uidOf('nobody'));
  const parent = statSync(`${root}/t/new/deep`);
  assert.is(parent.mode & 0o7777, 0o755);
  assert.is(parent.uid, 0);
  assert.is(statSync(`${root}/t/d/suid`).mode & 0o7777, 0o4755, 'chown cleared the set-uid bit; it was put back');
  assert.is(statSync(`${root}/t/d/suid`).uid, uidOf('nobody'));
  assert.is(statSync(`${root}/t/sg`).mode & 0o7777, 0o755, 'the set-gid bit of the directory was cleared exactly');
  assert.not.ok(existsSync(`${root}/t/new/deep/conf/a`));
  assert.is(readFileSync(`${root}/t/new/deep/conf/b`, 'utf8'), 'b\n');
});

test('small writes share one exec, each reported; the first failure is pinned to its file, those before it are written, the rest skipped', async () => {
  writeFileSync(`${root}/t/b`, 'old b\n');
  symlinkSync(`${root}/t/elsewhere`, `${root}/t/c`);
  const files = ['a', 'b', 'c', 'd'].map((n) => writeAction(`/var/lib/t/${n}`, `new ${n}\n`, n === 'b' ? { old: 'old b\n', mode: '0600' } : {}));
  const body = Object.fromEntries(files.map((f) => [f.path, `new ${f.path.slice(-1)}\n`]));
  const r = await applyNodePlan(t, plan(files), contents(body), { commit: null });
  assert.is(r.execs, 1, 'four small writes, one exec');
  assert.equal(r.outcomes.map((o) => o.status), ['ok', 'ok', 'failed', 'skipped']);
  assert.is(r.outcomes[2]?.error, 'local-node: write /var/lib/t/c: the target is a symlink: refusing to write through it');
  assert.match(r.outcomes[3]?.error ?? '', /skipped: step 3 \(write \/var\/lib\/t\/c\) failed/);
  assert.equal(r.performed, files.slice(0, 2));
  assert.is(r.outcomes[0]?.backupSha256, null, 'a was new');
  assert.is(r.outcomes[1]?.backupSha256, sha('old b\n'), 'the replaced b is kept by digest');
  assert.is(r.outcomes[1]?.bytes, 6);
  assert.is(readFileSync(`${root}/t/a`, 'utf8'), 'new a\n');
  assert.is(readFileSync(`${root}/t/b`, 'utf8'), 'new b\n');
  assert.is(statSync(`${root}/t/b`).mode & 0o777, 0o600);
  assert.ok(lstatSync(`${root}/t/c`).isSymbolicLink());
  assert.not.ok(existsSync(`${root}/t/elsewhere`));
  assert.not.ok(existsSync(`${root}/t/d`));
  assert.equal(temps('/var/lib/t'), []);

  // Content that cannot be read: the writes before it still run, in the same exec.
  rmSync(`${root}/t/c`);
  const unreadable = await applyNodePlan(
    t,
    plan(files.slice(2)),
    async (a) => {
      if (a.path === '/var/lib/t/d') throw new ConvergeError('E_CONFIG', `${NODE}: secret d for /var/lib/t/d is missing on this machine (/secrets/d)`, { hint: 'check --secrets' });
      return { stream: Readable.from([Buffer.from(body[a.path] ?? '')]), size: 6 };
    },
    { commit: null },
  );
  assert.is(unreadable.execs, 1);
  assert.equal(unreadable.outcomes.map((o) => o.status), ['ok', 'failed']);
  assert.is(unreadable.error?.message, `${NODE}: write /var/lib/t/d: cannot read the content: secret d for /var/lib/t/d is missing on this machine (/secrets/d)`);
  assert.is(unreadable.error?.hint, 'check --secrets');
  assert.is(readFileSync(`${root}/t/c`, 'utf8'), 'new c\n');
});

test('exec groups: small writes with the other steps within their bounds, a large write alone', () => {
  const small = (i: number, size = 100): FileWriteAction => ({ ...writeAction(`/var/lib/t/f${i}`, 'x'), size });
  const chmod: HostAction = { ...base, type: 'path.chmod', path: '/var/lib/t/f0', mode: '0600', from: '0644' };
  const shape = (actions: HostAction[]): string => execGroups(actions).map((g) => `${g.kind}:${g.actions.length}`).join(' ');
  assert.is(shape([chmod, small(1), small(2), { ...small(3), size: SMALL_WRITE_BYTES + 1 }, small(4), chmod, chmod]), 'steps:3 write:1 steps:3');
  assert.is(shape([small(1), { ...small(2), size: null }, small(3)]), 'steps:1 write:1 steps:1', 'a size not known is streamed alone');
  assert.is(shape(Array.from({ length: 250 }, (_, i) => small(i))), 'steps:100 steps:100 steps:50', 'at most 100 writes per exec');
  assert.is(shape(Array.from({ length: 9 }, (_, i) => small(i, 200 * 1024))), 'steps:5 steps:4', 'at most 1 MiB of content per exec');
  assert.is(shape(Array.from({ length: 300 }, () => chmod)), 'steps:300', 'steps without content: bounded by the script size only');
  // Quotes in a path grow 13-fold once the script is quoted for the remote shell.
  const quoted = (i: number): FileWriteAction => ({ ...small(i), path: `/var/lib/t/${"'".repeat(200)}/${i}` });
  const groups = execGroups(Array.from({ length: 40 }, (_, i) => quoted(i)));
  assert.ok(groups.length > 1, 'paths full of quotes: fewer writes per exec');
  for (const g of groups) {
    const script = stepsScript(g.actions.map((a, k) => ({ index: k, put: { ...(a as FileWriteAction), backup: true, source: 1 } })), 'abcdef0123456789');
    assert.ok(Buffer.byteLength(shellQuote(script)) < MAX_SCRIPT_BYTES, `${Buffer.byteLength(script)} bytes`);
  }
});

test('removals: files, stale temporaries with them, empty directories; a non-empty directory is refused', async () => {
  mkdirSync(`${root}/t/d/sub`, { recursive: true });
  writeFileSync(`${root}/t/d/f`, 'x');
  writeFileSync(`${root}/t/d/.f.converge-AbCdEf12`, 'stale', { mode: 0o600 });
  writeFileSync(`${root}/t/keep`, 'x');
  mkdirSync(`${root}/t/full-dir`);
  writeFileSync(`${root}/t/full-dir/other`, 'x');
  const r = await applyNodePlan(
    t,
    plan([
      { ...base, type: 'path.remove', path: '/var/lib/t/d/f', pathType: 'file' },
      { ...base, type: 'path.remove', path: '/var/lib/t/d/sub', pathType: 'dir' },
      { ...base, type: 'path.remove', path: '/var/lib/t/d', pathType: 'dir' },
      { ...base, type: 'path.remove', path: '/var/lib/t/gone-already', pathType: 'file' },
      { ...base, type: 'path.remove', path: '/var/lib/t/full-dir', pathType: 'dir' },
    ]),
    contents({}),
    { commit: null },
  );
  assert.equal(r.outcomes.map((o) => o.status), ['ok', 'ok', 'ok', 'ok', 'failed']);
  assert.match(r.outcomes[4]?.error ?? '', /^local-node: remove \/var\/lib\/t\/full-dir: .*not empty/);
  assert.equal(readdirSync(`${root}/t`).sort(), ['full-dir', 'keep']);
  assert.ok(existsSync(`${root}/t/full-dir/other`));
});

test('stale temporary files are matched literally: a target named with glob characters cleans only its own', async () => {
  writeFileSync(`${root}/t/.other.converge-AbCdEf12`, 'someone else', { mode: 0o600 });
  writeFileSync(`${root}/t/.*.converge-AbCdEf12`, 'stale', { mode: 0o600 });
  const a = writeAction('/var/lib/t/*', 'star\n');
  const r = await applyNodePlan(t, plan([a]), contents({ '/var/lib/t/*': 'star\n' }), { commit: null });
  assert.ok(r.ok, r.error?.message);
  assert.equal(readdirSync(`${root}/t`).sort(), ['*', '.other.converge-AbCdEf12']);
});

test('values the scripts refuse fail their step before anything of it runs; earlier steps of the batch still run', async () => {
  writeFileSync(`${root}/t/a`, 'x', { mode: 0o644 });
  const r = await applyNodePlan(
    t,
    plan([
      { ...base, type: 'path.chmod', path: '/var/lib/t/a', mode: '0600', from: '0644' },
      { ...base, type: 'path.chmod', path: '/var/lib/t/../../../etc/passwd', mode: '0777', from: '0644' },
      { ...base, type: 'path.chmod', path: '/var/lib/t/a', mode: '0640', from: '0600' },
    ]),
    contents({}),
    { commit: null },
  );
  assert.equal(r.outcomes.map((o) => o.status), ['ok', 'failed', 'skipped']);
  assert.match(r.outcomes[1]?.error ?? '', /path is not normalised/);
  assert.is(statSync(`${root}/t/a`).mode & 0o777, 0o600);
});

test('the inventory and the managed paths are written atomically, root-only, and only when they change', async () => {
  const inv: Inventory = {
    commit: 'c1',
    appliedAt: '2026-01-01T00:00:00.000Z',
    resources: {
      'File/w': { kind: 'File', target: "/etc/a b'$(x)", created: true, prune: true, sha256: 'a'.repeat(64), owner: 'root', group: 'root', mode: '0644' },
      'Group/g': { kind: 'Group', target: 'g', created: false, prune: true },
    },
  };
  await writeInventory(t, inv);
  const dir = `${root}/converge`;
  assert.is(statSync(dir).mode & 0o777, 0o700);
  for (const f of [INVENTORY_PATH, MANAGED_PATHS_PATH]) {
    const st = statSync(host(f));
    assert.is(st.mode & 0o7777, 0o600);
    assert.is(st.uid, 0);
  }
  assert.equal(JSON.parse(readFileSync(host(INVENTORY_PATH), 'utf8')), inv);
  assert.is(readFileSync(host(MANAGED_PATHS_PATH), 'utf8'), `${Buffer.from("/etc/a b'$(x)").toString('base64')}\n`);
  assert.equal(readdirSync(dir).sort(), ['inventory.json', 'managed-paths']);

  // Through applyNodePlan: an intent record before a step that creates, the final one after.
  const f = writeAction('/var/lib/t/created', 'x\n');
  const node = {
    name: NODE, address: '127.0.0.1', ssh: { user: 'root', port: 22 }, labels: {}, vars: {}, groups: [], users: [], directories: [], services: [],
    files: [{ id: 'File/created', kind: 'File' as const, name: 'created', ensure: 'present' as const, policy: 'enforce' as const, prune: true, at: { file: 'f', line: 1, col: 1 }, path: f.path, owner: 'root', group: 'root', mode: '0644', content: { kind: 'text' as const, origin: 'inline' as const, text: 'x\n', sha256: f.sha256, size: 3 }, restarts: [] }],
  };
  const facts = { node: NODE, paths: { [f.path]: { exists: false as const } }, users: {}, groups: {}, units: {}, dirListings: {}, inventory: null };
  const fa = { ...f, resource: 'File/created' };
  const r = await applyNodePlan(t, plan([fa]), contents({ [f.path]: 'x\n' }), { commit: 'c2', inventory: { node, facts, now: () => new Date('2026-02-02T00:00:00Z') } });
  assert.ok(r.ok, r.error?.message);
  assert.is(r.execs, 1, 'the intent record, the small write and the final record: one exec');
  const written = JSON.parse(readFileSync(host(INVENTORY_PATH), 'utf8')) as Inventory;
  assert.equal(written, r.inventory);
  assert.equal(written.resources['File/created'], { kind: 'File', target: f.path, created: true, prune: true, sha256: f.sha256, owner: 'root', group: 'root', mode: '0644' });
  assert.is(written.commit, 'c2');

  // The next pass: nothing to do, same commit → no exec at all.
  const factsAfter = { ...facts, paths: { [f.path]: { exists: true as const, type: 'file' as const, owner: 'root', group: 'root', uid: 0, gid: 0, mode: '0644', size: 2, sha256: f.sha256 } }, inventory: written };
  const noop = await applyNodePlan(t, plan([]), contents({}), { commit: 'c2', inventory: { node, facts: factsAfter } });
  assert.ok(noop.ok);
  assert.is(noop.execs, 0);
  assert.equal(readdirSync(dir).sort(), ['backup', 'inventory.json', 'managed-paths'].filter((n) => existsSync(`${dir}/${n}`)));

  // A step fails after the write: the intent was recorded first; the final record (what was done) follows in an exec of its own.
  rmSync(host(f.path));
  const missing: HostAction = { ...base, type: 'path.chmod', path: '/var/lib/t/missing', mode: '0600', from: '0644' };
  const failed = await applyNodePlan(t, plan([fa, missing]), contents({ [f.path]: 'x\n' }), { commit: 'c3', inventory: { node, facts } });
  assert.not.ok(failed.ok);
  assert.equal(failed.outcomes.map((o) => o.status), ['ok', 'failed']);
  assert.is(failed.execs, 2, 'intent + steps, then the final record');
  const partial = JSON.parse(readFileSync(host(INVENTORY_PATH), 'utf8')) as Inventory;
  assert.equal(partial, failed.inventory);
  assert.is(partial.resources['File/created']?.created, true);
  assert.is(partial.commit, null, 'an incomplete pass does not claim its commit (the facts had no inventory)');

  // The intent cannot be recorded: no step runs at all.
  rmSync(host(f.path));
  rmSync(dir, { recursive: true });
  writeFileSync(dir, 'not a directory');
  const refused = await applyNodePlan(t, plan([fa]), contents({ [f.path]: 'x\n' }), { commit: 'c4', inventory: { node, facts } });
  assert.not.ok(refused.ok);
  assert.match(refused.error?.message ?? '', /^local-node: writing the inventory \/var\/lib\/converge\/inventory\.json failed: .*cannot create \/var\/lib\/converge$/);
  assert.equal(refused.outcomes.map((o) => o.status), ['skipped']);
  assert.not.ok(existsSync(host(f.path)), 'nothing was written before the intent was recorded');
});

test('an unreachable node: nothing runs, every step is skipped', async () => {
  const r = await applyNodePlan(t, { node: NODE, reachable: false, error: 'local-node: connection refused', actions: [writeAction('/var/lib/t/x', 'x')], reported: [] }, contents({}), { commit: null });
  assert.not.ok(r.ok);
  assert.is(r.execs, 0);
  assert.is(r.error?.code, 'E_CONNECT');
  assert.equal(r.outcomes.map((o) => o.status), ['skipped']);
});

test.run();
