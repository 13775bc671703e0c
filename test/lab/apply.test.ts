// applyNodePlan against the lab's real nodes (real sshd, coreutils, shadow,
// systemd), over the real SSH transport. Everything this suite writes lives
// under /tmp/converge-test-* or is named converge-test-*/cvgt*, and is
// removed at the end; the nodes themselves are never reset or stopped.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { applyNodePlan, restoreFromBackup, type ContentResolver, type FileWriteAction, type NodeApplyResult } from '../../src/apply/host.js';
import { BACKUP_DIR } from '../../src/apply/script.js';
import { connectSsh } from '../../src/connect/ssh.js';
import { shellQuote as q, type Transport } from '../../src/connect/transport.js';
import type { HostAction, NodePlan } from '../../src/plan/types.js';
import { sshRun } from '../../src/lab/index.js';
import { ensureLab, type TestLab } from '../helpers/lab.js';

const RUN = randomBytes(4).toString('hex');
const DIR = `/tmp/converge-test-${RUN}`;
const HOSTILE_DIR = `${DIR}/a b'c"$(touch /tmp/pwned)\`touch /tmp/pwned\``;
const HOSTILE = `${HOSTILE_DIR}/f;x \${HOME} \u00e9\u6f22 *?[z] 'q'`;
const UNIT_OK = `converge-test-${RUN}-ok.service`;
const UNIT_BAD = `converge-test-${RUN}-bad.service`;
const UNIT_LIMIT = `converge-test-${RUN}-limit.service`;
const ACCOUNT = `cvgt${RUN}`;

/** An action before it is placed on a node. */
type Step = HostAction extends infer A ? (A extends unknown ? Omit<A, 'node'> : never) : never;

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

let lab: TestLab;
const transports = new Map<string, Transport>();
const backups: string[] = [];

/** Run a command on a node with the system's ssh client (strict host keys), independent of converge's transport. */
async function onNode(node: string, command: string): Promise<string> {
  const r = await sshRun({ address: lab.node(node).address, key: lab.sshKey, knownHosts: lab.knownHosts }, command);
  if (r.code !== 0) throw new Error(`${node}: ${command}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

async function transport(node: string): Promise<Transport> {
  let t = transports.get(node);
  if (!t) {
    t = await connectSsh({ node, host: lab.node(node).address, user: 'root', privateKey: lab.sshKey, knownHostsFile: lab.knownHosts });
    transports.set(node, t);
  }
  return t;
}

function write(node: string, path: string, content: Buffer | string, o: { owner?: string; group?: string; mode?: string } = {}): FileWriteAction {
  const b = Buffer.from(content);
  return { node, resource: `File/${path}`, reason: 'test', type: 'file.write', path, owner: o.owner ?? 'root', group: o.group ?? 'root', mode: o.mode ?? '0644', contentKind: 'text', sha256: sha(b), size: b.length, oldSha256: null };
}

function plan(node: string, actions: Step[]): NodePlan {
  return { node, reachable: true, actions: actions.map((a) => ({ ...a, node }) as HostAction), reported: [] };
}

/** Serves each write its bytes in 256 KiB chunks, as a file read from the bastion would come. */
function contents(map: Record<string, Buffer | string>): ContentResolver {
  return async (a) => {
    const b = Buffer.from(map[a.path] ?? '');
    const chunks: Buffer[] = [];
    for (let i = 0; i < b.length; i += 256 * 1024) chunks.push(b.subarray(i, i + 256 * 1024));
    return { stream: Readable.from(chunks), size: b.length };
  };
}

const step = { resource: 'Test/x', reason: 'test' };

function okResult(r: NodeApplyResult): void {
  assert.ok(r.ok, `${r.error?.message ?? ''}\n${JSON.stringify(r.outcomes.filter((o) => o.status !== 'ok'), null, 1)}`);
}

test.before(async () => {
  lab = await ensureLab();
  for (const n of ['cp-a', 'cp-b', 'cp-c']) await onNode(n, `rm -f /tmp/pwned; mkdir -m 0755 ${q(DIR)}`);
});

test.after(async () => {
  for (const t of transports.values()) await t.close();
  for (const n of ['cp-a', 'cp-b', 'cp-c']) {
    // Best effort: other suites may be restarting a node right now; what is left is under /tmp or named converge-test-*.
    await onNode(
      n,
      [
        `systemctl disable --now ${q(UNIT_OK)} ${q(UNIT_BAD)} ${q(UNIT_LIMIT)} >/dev/null 2>&1`,
        `rm -rf ${q(DIR)} /etc/systemd/system/${q(UNIT_OK)} /etc/systemd/system/${q(UNIT_BAD)} /etc/systemd/system/${q(UNIT_LIMIT)}`,
        'systemctl daemon-reload',
        `systemctl reset-failed ${q(UNIT_BAD)} ${q(UNIT_LIMIT)} 2>/dev/null`,
        `userdel ${q(ACCOUNT)} 2>/dev/null`,
        `groupdel ${q(ACCOUNT)} 2>/dev/null`,
        ...backups.map((h) => `rm -f ${q(`${BACKUP_DIR}/${h}`)}`),
        'true',
      ].join('; '),
    ).catch((e: Error) => process.stderr.write(`  cleanup on ${n} incomplete: ${e.message.split('\n')[0]}\n`));
  }
});

test('hostile names are written literally on every node, in parallel, and nothing else happens', async () => {
  const body = `literal ${RUN}\n`;
  const results = await Promise.all(
    ['cp-a', 'cp-b', 'cp-c'].map(async (node) => {
      const p = plan(node, [
        { ...step, type: 'dir.create', path: HOSTILE_DIR, owner: 'root', group: 'root', mode: '0755' },
        write(node, HOSTILE, body, { mode: '0600' }),
        { ...step, type: 'path.chown', path: HOSTILE, owner: 'nobody', group: 'nogroup', from: { owner: 'root', group: 'root' } },
        { ...step, type: 'path.chmod', path: HOSTILE, mode: '0640', from: '0600' },
      ]);
      const t = await transport(node);
      const r = await applyNodePlan(t, p, contents({ [HOSTILE]: body }), { commit: null });
      okResult(r);
      assert.equal(r.performed, p.actions, 'the actions performed are exactly the plan');
      assert.is(r.execs, 1, 'the directory, the small write, chown and chmod: one exec');
      return r;
    }),
  );
  assert.is(results.length, 3);
  for (const node of ['cp-a', 'cp-b', 'cp-c']) {
    const stat = await onNode(node, `stat -c '%U:%G %a %s' -- ${q(HOSTILE)}; sha256sum < ${q(HOSTILE)}; ls -A /tmp | grep -c '^pwned' || true`);
    const [owner, digest, pwned] = stat.trim().split('\n');
    assert.is(owner, `nobody:nogroup 640 ${Buffer.byteLength(body)}`);
    assert.is(digest?.split(' ')[0], sha(body));
    assert.is(pwned, '0', `${node}: /tmp/pwned must never appear`);
    assert.is((await onNode(node, `ls -A ${q(DIR)}`)).trim(), "a b'c\"$(touch");
  }
});

test('an upload reports progress, replaces atomically with a backup kept on the node, and restores from it', async () => {
  const node = 'cp-a';
  const t = await transport(node);
  const path = `${DIR}/etcd-binary`;
  const v1 = randomBytes(8 * 1024 * 1024);
  const v2 = randomBytes(8 * 1024 * 1024);
  backups.push(sha(v1), sha(v2));
  const first = await applyNodePlan(t, plan(node, [write(node, path, v1, { mode: '0755' })]), contents({ [path]: v1 }), { commit: null });
  okResult(first);

  const sent: number[] = [];
  const started = Date.now();
  const second = await applyNodePlan(t, plan(node, [write(node, path, v2, { mode: '0755' })]), contents({ [path]: v2 }), {
    commit: null,
    onProgress: (ev) => {
      if (ev.bytesSent !== undefined) sent.push(ev.bytesSent);
      assert.is(ev.bytesTotal, v2.length);
      assert.is(ev.node, node);
    },
  });
  const ms = Date.now() - started;
  okResult(second);
  process.stdout.write(`\n  8 MiB upload to ${node}: ${ms} ms, ${second.execs} exec, ${sent.length} progress events\n`);
  assert.ok(sent.length >= 8, 'progress is reported while the upload runs');
  assert.is(sent[sent.length - 1], v2.length);
  assert.ok(sent.every((n, i) => i === 0 || n >= (sent[i - 1] as number)));
  assert.is(second.outcomes[0]?.backupSha256, sha(v1));

  const check = await onNode(node, `sha256sum < ${q(path)}; stat -c '%a %U' ${q(`${BACKUP_DIR}/${sha(v1)}`)}; sha256sum < ${q(`${BACKUP_DIR}/${sha(v1)}`)}; ls -A ${q(DIR)} | grep -c converge- || true`);
  const [now, bmode, bsum, temps] = check.trim().split('\n');
  assert.is(now?.split(' ')[0], sha(v2));
  assert.is(bmode, '600 root');
  assert.is(bsum?.split(' ')[0], sha(v1));
  assert.is(temps, '0');

  const restored = await restoreFromBackup(t, path, sha(v1), 'root', 'root', '0755');
  assert.is(restored.backupSha256, sha(v2));
  assert.is((await onNode(node, `sha256sum < ${q(path)}; stat -c %a ${q(path)}`)).trim().split('\n').map((l) => l.split(' ')[0]).join(' '), `${sha(v1)} 755`);
});

test('a symlink at a managed path is refused on the node; the file it points to is untouched', async () => {
  const node = 'cp-b';
  const t = await transport(node);
  await onNode(node, `printf precious > ${q(`${DIR}/real`)} && ln -s ${q(`${DIR}/real`)} ${q(`${DIR}/link`)}`);
  const r = await applyNodePlan(t, plan(node, [write(node, `${DIR}/link`, 'evil'), { ...step, type: 'systemd.daemon-reload' }]), contents({ [`${DIR}/link`]: 'evil' }), { commit: null });
  assert.not.ok(r.ok);
  assert.is(r.error?.message, `cp-b: write ${DIR}/link: the target is a symlink: refusing to write through it`);
  assert.equal(r.outcomes.map((o) => o.status), ['failed', 'skipped']);
  assert.is(await onNode(node, `cat ${q(`${DIR}/real`)}; test -L ${q(`${DIR}/link`)} && echo :link`), 'precious:link\n');
});

test('accounts: a system group and user are created, modified and removed with the shadow tools', async () => {
  const node = 'cp-c';
  const t = await transport(node);
  const create = await applyNodePlan(
    t,
    plan(node, [
      { ...step, type: 'group.create', name: ACCOUNT, system: true },
      { ...step, type: 'user.create', name: ACCOUNT, group: ACCOUNT, groups: ['adm'], home: `${DIR}/home`, shell: '/usr/sbin/nologin', system: true, comment: "converge test 'x' $(touch /tmp/pwned)" },
    ]),
    contents({}),
    { commit: null },
  );
  okResult(create);
  assert.is(create.execs, 1);
  const pw = (await onNode(node, `getent passwd ${q(ACCOUNT)}; id -Gn ${q(ACCOUNT)}; test -e /tmp/pwned && echo PWNED || true`)).trim().split('\n');
  const fields = pw[0]?.split(':') ?? [];
  assert.is(fields[0], ACCOUNT);
  assert.ok(Number(fields[2]) < 1000, 'a system uid');
  assert.is(fields[4], "converge test 'x' $(touch /tmp/pwned)");
  assert.is(fields[5], `${DIR}/home`);
  assert.is(fields[6], '/usr/sbin/nologin');
  assert.equal(pw[1]?.split(' ').sort(), ['adm', ACCOUNT].sort());
  assert.is(pw.length, 2, 'no home was created and /tmp/pwned does not exist');

  const modify = await applyNodePlan(
    t,
    plan(node, [{ ...step, type: 'user.modify', name: ACCOUNT, changes: [{ field: 'shell', from: '/usr/sbin/nologin', to: '/bin/sh' }, { field: 'groups', from: 'adm', to: '' }], group: ACCOUNT, groups: [], home: `${DIR}/home`, shell: '/bin/sh' }]),
    contents({}),
    { commit: null },
  );
  okResult(modify);
  assert.is((await onNode(node, `getent passwd ${q(ACCOUNT)} | cut -d: -f7; id -Gn ${q(ACCOUNT)}`)).trim(), `/bin/sh\n${ACCOUNT}`);

  // userdel would take the group of the same name with it; the group is a resource of its own and stays, same gid.
  const gid = (await onNode(node, `getent group ${q(ACCOUNT)} | cut -d: -f3`)).trim();
  const removeUser = await applyNodePlan(t, plan(node, [{ ...step, type: 'user.remove', name: ACCOUNT }]), contents({}), { commit: null });
  okResult(removeUser);
  assert.is((await onNode(node, `getent passwd ${q(ACCOUNT)} || echo gone; getent group ${q(ACCOUNT)} | cut -d: -f3`)).trim(), `gone\n${gid}`);

  const remove = await applyNodePlan(t, plan(node, [{ ...step, type: 'group.remove', name: ACCOUNT }]), contents({}), { commit: null });
  okResult(remove);
  assert.is((await onNode(node, `getent group ${q(ACCOUNT)} || echo gone`)).trim(), 'gone');

  const again = await applyNodePlan(t, plan(node, [{ ...step, type: 'user.remove', name: ACCOUNT }, { ...step, type: 'group.remove', name: ACCOUNT }]), contents({}), { commit: null });
  okResult(again);
});

test('services: unit written, daemon-reload, enable, start, restart; a unit that fails to start stops the node with its state and journal', async () => {
  const node = 'cp-a';
  const t = await transport(node);
  const okUnit = `[Unit]\nDescription=converge test ${RUN}\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n`;
  const badUnit = `[Unit]\nDescription=converge test ${RUN} (fails)\n[Service]\nExecStart=/bin/sh -c 'echo converge-marker-${RUN} cannot start; exit 3'\n`;
  const okPath = `/etc/systemd/system/${UNIT_OK}`;
  const badPath = `/etc/systemd/system/${UNIT_BAD}`;
  const up = await applyNodePlan(
    t,
    plan(node, [
      write(node, okPath, okUnit),
      { ...step, type: 'systemd.daemon-reload' },
      { ...step, type: 'service.enable', unit: UNIT_OK },
      { ...step, type: 'service.start', unit: UNIT_OK },
      { ...step, type: 'service.restart', unit: UNIT_OK, because: [okPath] },
    ]),
    contents({ [okPath]: okUnit }),
    { commit: null },
  );
  okResult(up);
  assert.is(up.execs, 1, 'the unit file with the steps that load, enable, start and restart it');
  assert.is((await onNode(node, `systemctl is-enabled ${q(UNIT_OK)}; systemctl is-active ${q(UNIT_OK)}`)).trim(), 'enabled\nactive');

  const down = await applyNodePlan(
    t,
    plan(node, [
      write(node, badPath, badUnit),
      { ...step, type: 'systemd.daemon-reload' },
      { ...step, type: 'service.start', unit: UNIT_BAD },
      { ...step, type: 'service.stop', unit: UNIT_OK },
    ]),
    contents({ [badPath]: badUnit }),
    { commit: null },
  );
  assert.not.ok(down.ok);
  assert.equal(down.outcomes.map((o) => o.status), ['ok', 'ok', 'failed', 'skipped']);
  const failed = down.outcomes[2];
  assert.match(failed?.error ?? '', new RegExp(`^cp-a: start ${UNIT_BAD.replace(/\./g, '\\.')}: .*did not become active after start`));
  assert.match(failed?.unit?.state ?? '', /ActiveState=failed/);
  assert.ok(failed?.unit?.journal.some((l) => l.includes(`converge-marker-${RUN} cannot start`)), JSON.stringify(failed?.unit));
  assert.ok((failed?.unit?.journal.length ?? 99) <= 20);
  assert.is((await onNode(node, `systemctl is-active ${q(UNIT_OK)} || true`)).trim(), 'active', 'the step after the failure was not run');

  const stop = await applyNodePlan(t, plan(node, [{ ...step, type: 'service.stop', unit: UNIT_OK }, { ...step, type: 'service.disable', unit: UNIT_OK }]), contents({}), { commit: null });
  okResult(stop);
  assert.is((await onNode(node, `systemctl is-enabled ${q(UNIT_OK)} || true; systemctl is-active ${q(UNIT_OK)} || true`)).trim(), 'disabled\ninactive');
});

test('a unit that reached its start limit (start-limit-hit) is started once its cause is fixed', async () => {
  const node = 'cp-a';
  const t = await transport(node);
  const conf = `${DIR}/limit.conf`;
  // Refuses to start unless its config says valid=yes, as `nginx -t` in ExecStartPre would.
  const unit = `[Unit]\nDescription=converge test ${RUN} (start limit)\n[Service]\nExecStartPre=/bin/grep -qx valid=yes ${conf}\nExecStart=/bin/sleep infinity\n`;
  const path = `/etc/systemd/system/${UNIT_LIMIT}`;
  const install = await applyNodePlan(t, plan(node, [write(node, path, unit), { ...step, type: 'systemd.daemon-reload' }]), contents({ [path]: unit }), { commit: null });
  okResult(install);
  // Good and bad configs in quick turns, as rollbacks and retries go: systemd's own limit (5 starts in 10 s) refuses the next start.
  const u = q(UNIT_LIMIT);
  const c = q(conf);
  const state = await onNode(
    node,
    `for i in 1 2 3 4 5 6; do echo valid=yes > ${c}; systemctl start ${u} 2>/dev/null; echo valid=no > ${c}; systemctl restart ${u} 2>/dev/null; r=$(systemctl show -p Result --value ${u}); [ "$r" = start-limit-hit ] && break; done; echo "$r"`,
  );
  assert.is(state.trim(), 'start-limit-hit');
  await onNode(node, `echo valid=yes > ${c}`);
  const r = await applyNodePlan(t, plan(node, [{ ...step, type: 'service.restart', unit: UNIT_LIMIT, because: [conf] }]), contents({}), { commit: null });
  okResult(r);
  assert.is((await onNode(node, `systemctl is-active ${u}`)).trim(), 'active');
});

test('round trips per action kind on a real node', async () => {
  const node = 'cp-b';
  const t = await transport(node);
  const kinds: [string, Step[]][] = [
    ['file.write', [write(node, `${DIR}/rt`, 'x')]],
    ['dir.create + chown + chmod + remove (one batch)', [
      { ...step, type: 'dir.create', path: `${DIR}/rt-dir/sub`, owner: 'root', group: 'root', mode: '0700' },
      { ...step, type: 'path.chown', path: `${DIR}/rt`, owner: 'nobody', group: 'nogroup', from: { owner: 'root', group: 'root' } },
      { ...step, type: 'path.chmod', path: `${DIR}/rt`, mode: '0600', from: '0644' },
      { ...step, type: 'path.remove', path: `${DIR}/rt-dir/sub`, pathType: 'dir' },
    ]],
  ];
  for (const [label, actions] of kinds) {
    const started = Date.now();
    const r = await applyNodePlan(t, plan(node, actions), contents({ [`${DIR}/rt`]: 'x' }), { commit: null });
    okResult(r);
    assert.is(r.execs, 1, label);
    process.stdout.write(`  ${label}: ${r.execs} exec, ${Date.now() - started} ms\n`);
  }
});

test.run();
