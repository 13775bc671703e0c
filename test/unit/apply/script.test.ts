// The scripts apply sends to nodes, as text: every value from the desired
// state appears only as one single-quoted word.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { shellQuote } from '../../../src/connect/transport.js';
import type { HostAction } from '../../../src/plan/types.js';
import {
  ScriptValueError,
  ancestorsOf,
  stepsScript,
  checkPath,
  chmodMode,
  parentOf,
  parseBatchOutput,
  parseWriteOutput,
  tempPrefix,
  writeFileScript,
} from '../../../src/apply/script.js';

const SHA = 'a'.repeat(64);
const NONCE = '0123456789abcdef';
const HOSTILE_DIR = "/srv/a b'c\"$(touch /tmp/pwned)`touch /tmp/pwned2`";
const HOSTILE = `${HOSTILE_DIR}/f;rm -rf \${HOME} é\u00e9\u6f22\n\tx*?[z] \\ 'q'`;
const isValueError = (e: unknown): boolean => e instanceof ScriptValueError;
const base = { node: 'n1', resource: 'File/x', reason: 'test' };

/** Removes every single-quoted occurrence of the given values; what is left must hold none of their dangerous parts. */
function assertOnlyQuoted(script: string, values: string[]): void {
  let rest = script;
  for (const v of values.sort((a, b) => b.length - a.length)) rest = rest.split(shellQuote(v)).join('<Q>');
  for (const fragment of ['touch /tmp/pwned', '`', 'rm -rf ${HOME}', '\u6f22', '[z]']) {
    assert.not.ok(rest.includes(fragment), `unquoted ${JSON.stringify(fragment)} in:\n${rest}`);
  }
}

test('a write script carries a hostile path only inside single quotes', () => {
  const s = writeFileScript({ path: HOSTILE, owner: 'etcd', group: 'etcd', mode: '0640', sha256: SHA, backup: true, source: 'stdin' });
  assert.ok(s.includes(shellQuote(HOSTILE)));
  assert.ok(s.includes(shellQuote(parentOf(HOSTILE))));
  assertOnlyQuoted(s, [HOSTILE, parentOf(HOSTILE), tempPrefix(HOSTILE)]);
});

test('every batch step carries hostile paths and names only inside single quotes', () => {
  const actions: HostAction[] = [
    { ...base, type: 'dir.create', path: HOSTILE_DIR, owner: 'root', group: 'root', mode: '0755' },
    { ...base, type: 'path.chown', path: HOSTILE, owner: 'etcd', group: 'etcd', from: { owner: 'root', group: 'root' } },
    { ...base, type: 'path.chmod', path: HOSTILE, mode: '0600', from: '0644' },
    { ...base, type: 'path.remove', path: HOSTILE, pathType: 'file' },
    { ...base, type: 'path.remove', path: HOSTILE_DIR, pathType: 'dir' },
    { ...base, type: 'service.restart', unit: 'x`touch /tmp/pwned`.service', because: [] },
    { ...base, type: 'user.create', name: 'etcd', group: 'etcd', groups: [], home: HOSTILE_DIR, shell: '/usr/sbin/nologin', system: true, comment: 'c $(touch /tmp/pwned) `x`' },
  ];
  const s = stepsScript(actions.map((action, index) => ({ index, action: action as Exclude<HostAction, { type: 'file.write' }> })), NONCE);
  assertOnlyQuoted(s, [HOSTILE, HOSTILE_DIR, ...ancestorsOf(HOSTILE_DIR), tempPrefix(HOSTILE), 'x`touch /tmp/pwned`.service', 'c $(touch /tmp/pwned) `x`']);
});

test('account commands: flags, quoting and -- before the name', () => {
  const s = stepsScript(
    [
      { index: 0, action: { ...base, type: 'group.create', name: 'etcd', gid: 990, system: true } },
      { index: 1, action: { ...base, type: 'user.create', name: 'etcd', uid: 990, group: 'etcd', groups: ['adm', 'ssl-cert'], home: '/var/lib/etcd', shell: '/usr/sbin/nologin', system: true } },
      { index: 2, action: { ...base, type: 'user.modify', name: 'etcd', changes: [{ field: 'shell', from: '/bin/sh', to: '/usr/sbin/nologin' }, { field: 'groups', from: '', to: 'adm' }], group: 'etcd', groups: ['adm'], home: '/var/lib/etcd', shell: '/usr/sbin/nologin' } },
      { index: 3, action: { ...base, type: 'user.remove', name: 'old' } },
      { index: 4, action: { ...base, type: 'group.remove', name: 'old' } },
      { index: 5, action: { ...base, type: 'group.create', name: 'plain', system: false } },
    ],
    NONCE,
  );
  assert.ok(s.includes("groupadd --system --gid '990' -- 'etcd'"));
  assert.ok(s.includes("useradd --system --no-create-home --uid '990' --gid 'etcd' --groups 'adm,ssl-cert' --home-dir '/var/lib/etcd' --shell '/usr/sbin/nologin' -- 'etcd'"));
  assert.ok(s.includes("usermod --shell '/usr/sbin/nologin' --groups 'adm' -- 'etcd'"));
  assert.ok(s.includes("n='old'\n  getent passwd \"$n\" >/dev/null || exit 0"));
  assert.ok(s.includes('userdel -- "$n"'));
  assert.ok(s.includes('groupdel -- "$n"'));
  assert.ok(s.includes("groupadd -- 'plain'"));
});

test('names that a tool could take for an option or a list are refused', () => {
  for (const name of ['-r', 'a,b', 'a:b', 'a b', '']) {
    assert.throws(() => stepsScript([{ index: 0, action: { ...base, type: 'group.create', name, system: true } }], NONCE), isValueError);
  }
  assert.throws(
    () => writeFileScript({ path: '/etc/x', owner: 'root:0', group: 'root', mode: '0644', sha256: SHA, backup: false, source: 'stdin' }),
    isValueError,
  );
});

test('paths must be absolute and normalised', () => {
  for (const p of ['etc/x', '/', '/etc//x', '/etc/./x', '/etc/../x', '/etc/x/', 'a\0b', '']) {
    assert.throws(() => checkPath(p), isValueError, JSON.stringify(p));
  }
  assert.is(checkPath('/etc/x y'), '/etc/x y');
  assert.equal(ancestorsOf('/a/b/c/d'), ['/a', '/a/b', '/a/b/c']);
  assert.equal(ancestorsOf('/a'), []);
});

test('modes go to chmod with an explicit leading zero so set-id bits of directories are exact', () => {
  assert.is(chmodMode('0755'), '00755');
  assert.is(chmodMode('755'), '00755');
  assert.is(chmodMode('2750'), '02750');
  for (const m of ['0855', '75', '07550', 'rwx', '0755; id']) assert.throws(() => chmodMode(m), isValueError);
});

test('temporary names stay within NAME_MAX and never split a character', () => {
  const long = `/d/${'\u00e9'.repeat(200)}`;
  const prefix = tempPrefix(long);
  assert.ok(Buffer.byteLength(prefix) + 8 <= 255);
  assert.ok(prefix.startsWith('.\u00e9'));
  assert.ok(prefix.endsWith('.converge-'));
  assert.not.ok(prefix.includes('\ufffd'));
  assert.is(tempPrefix('/etc/etcd/etcd.env'), '.etcd.env.converge-');
});

test('sizes, digests and sources are checked before any script is built', () => {
  const ok = { path: '/etc/x', owner: 'root', group: 'root', mode: '0644', sha256: SHA, backup: false };
  assert.throws(() => writeFileScript({ ...ok, sha256: 'abc', source: 'stdin' }), isValueError);
  assert.throws(() => writeFileScript({ ...ok, source: -1 }), isValueError);
  assert.throws(() => writeFileScript({ ...ok, source: { nodePath: 'relative' } }), isValueError);
  assert.ok(writeFileScript({ ...ok, source: 12 }).includes("'+12'"));
});

test('batch output: only lines with the nonce count, payloads are base64', () => {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const out = [
    `${NONCE} ok 0`,
    `${NONCE} parent 1 0`,
    `${NONCE} ok 1`,
    'ffffffffffffffff ok 2',
    `journal line pretending: ${NONCE} ok 2`,
    `${NONCE} unit 2 ${b64('ActiveState=failed')} ${b64('line 1\nline 2\n')}`,
    `${NONCE} fail 2 ${b64('Job failed\n')}`,
  ].join('\n');
  assert.equal(parseBatchOutput(out, NONCE), [
    { index: 0, kind: 'ok' },
    { index: 1, kind: 'parent', ancestor: 0 },
    { index: 1, kind: 'ok' },
    { index: 2, kind: 'unit', text: 'ActiveState=failed', journal: ['line 1', 'line 2'] },
    { index: 2, kind: 'fail', text: 'Job failed' },
  ]);
  assert.throws(() => stepsScript([], 'not-hex'), isValueError);
});

test('write output: the replaced content digest or none', () => {
  assert.equal(parseWriteOutput(`ok ${SHA}\n`), { ok: true, backupSha256: SHA });
  assert.equal(parseWriteOutput('ok -\n'), { ok: true, backupSha256: null });
  assert.equal(parseWriteOutput('garbage\n'), { ok: false, backupSha256: null });
});

test('writes among the steps: each hostile path only quoted, each reported by index with the nonce', () => {
  const put = (path: string, n: number) => ({ path, owner: 'root', group: 'root', mode: '0644', sha256: SHA, backup: true, source: n });
  const chmod = { ...base, type: 'path.chmod', path: HOSTILE, mode: '0600', from: '0644' } as Exclude<HostAction, { type: 'file.write' }>;
  const script = stepsScript([{ index: 3, put: put(HOSTILE, 5) }, { index: 4, action: chmod }, { index: 5, put: put(`${HOSTILE_DIR}/g`, 7) }], NONCE);
  assertOnlyQuoted(script, [HOSTILE, HOSTILE_DIR, `${HOSTILE_DIR}/g`, tempPrefix(HOSTILE), tempPrefix(`${HOSTILE_DIR}/g`)]);
  assert.match(script, /'\+5'/);
  assert.match(script, /'\+7'/);
  assert.match(script, /^um=\$\(umask\)$/m, 'the node\'s umask is kept for the steps');
  assert.match(stepsScript([{ index: 0, action: chmod }], NONCE), /^um=$/m, 'no writes: the umask is left alone');
  assert.throws(() => stepsScript([{ index: 0, put: put('relative/path', 1) }], NONCE), isValueError);
  const out = [`${NONCE} wrote 3 -`, `${NONCE} ok 4`, `${NONCE} wrote 5 ${SHA}`, `ffffffffffffffff wrote 6 -`, `${NONCE} wrote 7 not-a-digest`].join('\n');
  assert.equal(parseBatchOutput(out, NONCE), [
    { index: 3, kind: 'wrote', backup: null },
    { index: 4, kind: 'ok' },
    { index: 5, kind: 'wrote', backup: SHA },
  ]);
});

test('enable and disable skip their own reload only when a daemon-reload follows in the same batch', () => {
  const act = (type: 'service.enable' | 'service.disable' | 'systemd.daemon-reload', k: number) => ({ index: k, action: (type === 'systemd.daemon-reload' ? { ...base, type } : { ...base, type, unit: 'etcd.service' }) as Exclude<HostAction, { type: 'file.write' }> });
  const before = stepsScript([act('service.enable', 0), act('service.disable', 1), act('systemd.daemon-reload', 2)], NONCE);
  assert.match(before, /systemctl enable --no-reload -- 'etcd\.service'/);
  assert.match(before, /systemctl disable --no-reload -- 'etcd\.service'/);
  const alone = stepsScript([act('systemd.daemon-reload', 0), act('service.enable', 1)], NONCE);
  assert.match(alone, /systemctl enable -- 'etcd\.service'/);
  assert.not.match(alone, /--no-reload/);
});

test.run();
