// Host reconcile on real nodes (issue 5): from fresh nodes to converged, a
// second pass that changes nothing, drift made by hand fixed exactly, pruning,
// restarts only where a rendered file changed, hostile names written
// literally, and per-node failures that leave the other nodes converging.
// Every apply is checked for exactness: what it did is what the plan said.
import { test } from 'uvu';
import '../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ensureLab, projectDir, type TestLab } from '../helpers/lab.js';
import { writeDesired, type Doc } from '../helpers/desired.js';
import { labReset, runOnNode, stopNode, startNode } from '../../src/lab/index.js';
import { fsSource } from '../../src/model/index.js';
import { openSession, type PassConfig } from '../../src/reconcile/session.js';
import { gather, computePlan, applyPlan, type ApplyReport } from '../../src/reconcile/pass.js';
import type { HostAction, Plan } from '../../src/plan/types.js';

const NODES = ['rc-a', 'rc-b', 'rc-c', 'rc-d'];
const CHAPTER = ['cp-a', 'cp-b', 'cp-c'];
const HOSTILE_DIR = "/tmp/converge test dir";
// No slash inside the name: a slash would make it a path of several folders.
const HOSTILE = `${HOSTILE_DIR}/it's \$(touch pwned) \`touch pwned2\` ünï \$HOME \\ "q" ;|&<>*?.txt`;
const PWNED = 'ls / /root /tmp 2>/dev/null | grep -c pwned';

let lab: TestLab;
let cfg: PassConfig;

const unitFile = `[Unit]\nDescription=converge test service\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n`;

function extraDocs(): Doc[] {
  return [
    { kind: 'Directory', metadata: { name: 'app-dir' }, spec: { path: '/etc/converge-test', mode: '0755' } },
    { kind: 'File', metadata: { name: 'app-unit' }, spec: { path: '/etc/systemd/system/converge-test.service', content: unitFile, restarts: ['converge-test'] } },
    { kind: 'File', metadata: { name: 'app-conf' }, spec: { path: '/etc/converge-test/app.conf', template: 'templates/app.conf', restarts: ['converge-test'] } },
    { kind: 'Service', metadata: { name: 'converge-test' }, spec: { unit: 'converge-test.service', enabled: true, running: true } },
    { kind: 'Directory', metadata: { name: 'hostile-dir' }, spec: { path: HOSTILE_DIR, mode: '0755' } },
    { kind: 'File', metadata: { name: 'hostile' }, spec: { path: HOSTILE, content: 'written literally\n', mode: '0640' } },
  ];
}

interface Scenario {
  vars?: Record<string, Record<string, string>>;
  drop?: string[];
  more?: Doc[];
}

function desired(s: Scenario = {}): string {
  const nodes = Object.fromEntries(CHAPTER.map((c, i) => [c, { name: NODES[i]!, address: lab.node(NODES[i]!).address }]));
  // rc-d is no control-plane node: it gets only the test service, and stays healthy while the others fail.
  const plain: Doc = { kind: 'Node', metadata: { name: 'rc-d' }, spec: { address: lab.node('rc-d').address } };
  return writeDesired({
    nodes,
    edit: (d) => {
      if (d.kind === 'Node') return { ...d, spec: { ...d.spec, vars: { greeting: 'hello', ...(s.vars?.[d.metadata.name] ?? {}) } } };
      return d;
    },
    extra: [plain, ...extraDocs(), ...(s.more ?? [])].filter((d) => !(s.drop ?? []).includes(`${d.kind}/${d.metadata.name}`)).map((d) => (d.kind === 'Node' ? { ...d, spec: { ...d.spec, vars: { greeting: 'hello', ...(s.vars?.[d.metadata.name] ?? {}) } } } : d)),
    files: { 'templates/app.conf': 'greeting = {{ vars.greeting }}\nnode = {{ node.name }}\n' },
  });
}

async function pass(dir: string, opts: { apply?: boolean; cfg?: Partial<PassConfig> } = {}): Promise<{ plan: Plan; report: ApplyReport | null; unreachable: Map<string, Error> }> {
  const s = await openSession({ ...cfg, ...opts.cfg }, { files: fsSource(dir), commit: null }, NODES);
  try {
    const g = await gather(s);
    const plan = computePlan(s, g, new Date());
    const report = opts.apply ? await applyPlan(s, plan, g) : null;
    if (report) {
      // Exactness: every node did exactly what the plan printed, in order.
      for (const n of report.nodes) {
        const planned = plan.nodes.find((p) => p.node === n.node)!.actions;
        if (n.ok) assert.equal(n.performed, planned, `${n.node}: performed actions differ from the plan`);
      }
    }
    return { plan, report, unreachable: s.unreachable };
  } finally {
    await s.close();
  }
}

function actions(plan: Plan, node: string): HostAction[] {
  return plan.nodes.find((n) => n.node === node)?.actions ?? [];
}

function types(plan: Plan, node: string): string[] {
  return actions(plan, node).map((a) => `${a.type}${'path' in a ? ` ${a.path}` : 'unit' in a ? ` ${a.unit}` : 'name' in a ? ` ${a.name}` : ''}`);
}

async function on(node: string, script: string): Promise<string> {
  const r = await runOnNode(node, script);
  assert.is(r.code, 0, `${node}: ${script}: ${r.stderr}`);
  return r.stdout.trim();
}

function assertConverged(r: { report: ApplyReport | null }): void {
  assert.ok(r.report, 'applied');
  assert.ok(r.report!.ok, r.report!.errors.map((e) => e.message).join('\n'));
  assert.ok(r.report!.verify, 'verified');
  assert.is(r.report!.verify!.nodes.reduce((n, p) => n + p.actions.length, 0), 0, 'nothing left to do after apply');
}

test.before(async () => {
  lab = await ensureLab({ nodes: NODES });
  await Promise.all(NODES.map((n) => labReset(n)));
  cfg = {
    sshKey: lab.sshKey,
    knownHosts: lab.knownHosts,
    parallel: 64,
    connectTimeoutMs: 10_000,
    commandTimeoutMs: 300_000,
    secretsDir: lab.secretsDir,
    artifactsDir: lab.artifactsDir,
    skipEtcd: true,
  };
});

test('fresh nodes: apply the host part of desired-state/, facts match, nothing left', async () => {
  const dir = desired();
  const first = await pass(dir);
  for (const n of NODES.slice(0, 3)) {
    const t = types(first.plan, n);
    assert.ok(t.includes('group.create etcd') && t.includes('user.create etcd'), `${n}: ${t.join(', ')}`);
    assert.ok(t.includes('file.write /usr/local/bin/etcd'));
    assert.ok(t.includes('service.enable etcd.service'));
    assert.ok(t.includes('service.start converge-test.service'));
    // the etcd unit is never started by the host planner: that is the etcd rollout's job
    assert.not.ok(t.includes('service.start etcd.service'));
  }
  const applied = await pass(dir, { apply: true });
  assertConverged(applied);
  const pin = readFileSync(join(dir, 'files.yaml'), 'utf8').match(/sha256: ([0-9a-f]{64})/)![1];
  assert.is(await on('rc-d', 'systemctl is-active converge-test.service; ls /usr/local/bin/etcd 2>/dev/null | wc -l'), 'active\n0');
  for (const n of NODES.slice(0, 3)) {
    assert.is(await on(n, 'sha256sum /usr/local/bin/etcd | cut -d" " -f1'), pin);
    assert.is(await on(n, "stat -c '%U:%G %a' /etc/etcd/pki/server-key.pem /var/lib/etcd /usr/local/bin/etcd"), 'etcd:etcd 600\netcd:etcd 700\nroot:root 755');
    assert.is(await on(n, 'systemctl is-enabled etcd.service converge-test.service; systemctl is-active converge-test.service'), 'enabled\nenabled\nactive');
    assert.is(await on(n, 'getent passwd etcd | cut -d: -f6,7'), '/var/lib/etcd:/usr/sbin/nologin');
  }
});

test('a second plan says no changes and a second apply restarts nothing', async () => {
  const dir = desired();
  const since = await on('rc-a', 'systemctl show -p ActiveEnterTimestampMonotonic --value converge-test.service');
  const again = await pass(dir, { apply: true });
  assertConverged(again);
  for (const n of NODES) assert.equal(actions(again.plan, n), [], `${n}: ${types(again.plan, n).join(', ')}`);
  assert.is(await on('rc-a', 'systemctl show -p ActiveEnterTimestampMonotonic --value converge-test.service'), since, 'not restarted');
});

test('the digest cache: a clean apply records the settled digests, the next probe reads none of those files, and an in-place edit with size and mtime put back is still found', async () => {
  const dir = desired();
  // files written by the apply above are recorded once unchanged for a second when a probe begins
  await new Promise((r) => setTimeout(r, 2500));
  assertConverged(await pass(dir, { apply: true }));
  assert.is(await on('rc-a', "stat -c '%a %U:%G' /var/lib/converge/digests"), '600 root:root');
  assert.is(await on('rc-a', "tr '\\0' '\\n' < /var/lib/converge/digests | grep -cx /usr/local/bin/etcd"), '1');
  const s = await openSession(cfg, { files: fsSource(dir), commit: null }, NODES);
  try {
    const g = await gather(s);
    for (const n of NODES) {
      const f = g.facts.get(n);
      assert.ok(f && 'paths' in f && f.digestCache, `${n}: facts with the cache's record`);
      const files = Object.keys(f.digestCache.keys).length;
      assert.ok(files > 0 && f.digestCache.records === files && f.digestCache.hits === files, `${n}: ${f.digestCache.hits} of ${files} files answered by a cache of ${f.digestCache.records}`);
    }
  } finally {
    await s.close();
  }
  const f = '/etc/etcd/etcd.env';
  await on('rc-a', `touch -r ${f} /tmp/converge-test-ref; c=$(head -c1 ${f}); if [ "$c" = "#" ]; then n=X; else n="#"; fi; printf %s "$n" | dd of=${f} bs=1 count=1 conv=notrunc status=none; touch -m -r /tmp/converge-test-ref ${f}; rm /tmp/converge-test-ref`);
  const planned = await pass(dir);
  assert.equal(types(planned.plan, 'rc-a'), [`file.write ${f}`]);
  assertConverged(await pass(dir, { apply: true }));
});

const drifts: { name: string; make: string; expect: string[] }[] = [
  { name: 'a file edited', make: 'echo "# edited by hand" >> /etc/etcd/etcd.env', expect: ['file.write /etc/etcd/etcd.env'] },
  { name: 'a mode changed', make: 'chmod 0644 /etc/etcd/pki/server-key.pem', expect: ['path.chmod /etc/etcd/pki/server-key.pem'] },
  { name: 'an owner changed', make: 'chown root:root /etc/etcd/pki/peer.pem', expect: ['path.chown /etc/etcd/pki/peer.pem'] },
  { name: 'a service stopped', make: 'systemctl stop converge-test.service', expect: ['service.start converge-test.service'] },
  { name: 'a service disabled', make: 'systemctl disable --quiet converge-test.service', expect: ['service.enable converge-test.service'] },
  { name: 'a file deleted', make: 'rm /etc/etcd/etcdctl.env', expect: ['file.write /etc/etcd/etcdctl.env'] },
];

for (const d of drifts) {
  test(`drift by hand — ${d.name} — is planned exactly and fixed`, async () => {
    const dir = desired();
    await on('rc-b', d.make);
    const planned = await pass(dir);
    assert.equal(types(planned.plan, 'rc-b'), d.expect);
    assert.equal(actions(planned.plan, 'rc-a'), []);
    assert.equal(actions(planned.plan, 'rc-c'), []);
    assertConverged(await pass(dir, { apply: true }));
  });
}

test('drift by hand — the account deleted — is recreated and its files re-owned', async () => {
  const dir = desired();
  await on('rc-b', 'userdel etcd; getent group etcd >/dev/null && groupdel etcd; true');
  const planned = await pass(dir);
  const t = types(planned.plan, 'rc-b');
  assert.ok(t.includes('user.create etcd'), t.join(', '));
  assert.ok(t.includes('path.chown /var/lib/etcd'), t.join(', '));
  assertConverged(await pass(dir, { apply: true }));
  assert.is(await on('rc-b', "stat -c '%U:%G' /var/lib/etcd /etc/etcd/pki/server-key.pem"), 'etcd:etcd\netcd:etcd');
});

test('a changed template restarts only the declaring service, only where the rendered file changed', async () => {
  const dir = desired({ vars: { 'rc-b': { greeting: 'bonjour' } } });
  const before = await Promise.all(NODES.map((n) => on(n, 'systemctl show -p ExecMainPID --value converge-test.service')));
  const planned = await pass(dir);
  assert.equal(types(planned.plan, 'rc-b'), ['file.write /etc/converge-test/app.conf', 'service.restart converge-test.service']);
  assert.equal(actions(planned.plan, 'rc-a'), []);
  assert.equal(actions(planned.plan, 'rc-c'), []);
  assert.equal(actions(planned.plan, 'rc-d'), []);
  assertConverged(await pass(dir, { apply: true }));
  const after = await Promise.all(NODES.map((n) => on(n, 'systemctl show -p ExecMainPID --value converge-test.service')));
  assert.is(after[0], before[0], 'rc-a not restarted');
  assert.is.not(after[1], before[1], 'rc-b restarted');
  assert.is(after[2], before[2], 'rc-c not restarted');
  assert.is(await on('rc-b', 'cat /etc/converge-test/app.conf'), 'greeting = bonjour\nnode = rc-b');
});

test('hostile names are written literally and nothing else happens on the node', async () => {
  for (const n of NODES) {
    assert.is(await on(n, `cat ${shq(HOSTILE)}; stat -c '%a' ${shq(HOSTILE)}`), 'written literally\n640');
    assert.is(await runOnNode(n, PWNED).then((r) => r.stdout.trim()), '0');
  }
});

test('a File deleted from the desired state is removed; an adopted file stays', async () => {
  await on('rc-a', 'echo "made by hand" > /etc/converge-test/adopted.conf');
  const adopted: Doc = { kind: 'File', metadata: { name: 'adopted' }, spec: { path: '/etc/converge-test/adopted.conf', content: 'made by hand\n', nodes: { names: ['rc-a'] } } };
  const extra: Doc = { kind: 'File', metadata: { name: 'extra' }, spec: { path: '/etc/converge-test/extra.conf', content: 'created by converge\n' } };
  assertConverged(await pass(desired({ more: [adopted, extra] }), { apply: true }));
  assert.is(await on('rc-a', 'cat /etc/converge-test/extra.conf'), 'created by converge');

  const dir = desired();
  const planned = await pass(dir);
  for (const n of NODES) assert.equal(types(planned.plan, n), ['path.remove /etc/converge-test/extra.conf']);
  const kept = planned.plan.nodes.find((n) => n.node === 'rc-a')!.reported;
  assert.ok(kept.some((r) => r.resource === 'File/adopted'), JSON.stringify(kept));
  assertConverged(await pass(dir, { apply: true }));
  for (const n of NODES) assert.is(await on(n, 'ls /etc/converge-test/extra.conf 2>/dev/null | wc -l'), '0');
  assert.is(await on('rc-a', 'cat /etc/converge-test/adopted.conf'), 'made by hand');
});

test('an unknown host key, a wrong client key and a stopped node fail alone; the others converge; exit 1', async () => {
  const dir = desired({ vars: { 'rc-a': { greeting: 'hola' }, 'rc-b': { greeting: 'hallo' }, 'rc-c': { greeting: 'ciao' }, 'rc-d': { greeting: 'hej' } } });
  const work = mkdtempSync(join(tmpdir(), 'converge-rc-'));
  // rc-a: its host key is not in known_hosts.
  const known = readFileSync(lab.knownHosts, 'utf8').split('\n').filter((l) => !l.includes(lab.node('rc-a').address) && !l.startsWith('rc-a')).join('\n');
  writeFileSync(join(work, 'known_hosts'), known + '\n');
  // rc-b: root accepts another key only.
  await on('rc-b', 'cp /root/.ssh/authorized_keys /root/.ssh/authorized_keys.bak && ssh-keygen -q -t ed25519 -N "" -f /tmp/other && cp /tmp/other.pub /root/.ssh/authorized_keys');
  // rc-c: stopped.
  await stopNode('rc-c');
  try {
    const r = await pass(dir, { apply: true, cfg: { knownHosts: join(work, 'known_hosts'), connectTimeoutMs: 4000 } });
    assert.ok(r.report && !r.report.ok);
    const a = r.unreachable.get('rc-a') as { code?: string; message: string } | undefined;
    const b = r.unreachable.get('rc-b') as { code?: string; message: string } | undefined;
    const c = r.unreachable.get('rc-c') as { code?: string; message: string } | undefined;
    assert.is(a?.code, 'E_HOSTKEY', a?.message);
    assert.match(a!.message, /rc-a/);
    assert.match(a!.message, /SHA256:/);
    assert.is(b?.code, 'E_CONNECT', b?.message);
    assert.match(b!.message, /rc-b.*authentication/i);
    assert.is(c?.code, 'E_CONNECT', c?.message);
    assert.match(c!.message, /rc-c/);
    // rc-d converged all the same.
    assert.ok(r.report.nodes.find((n) => n.node === 'rc-d')?.ok, 'rc-d applied');
    assert.is(await on('rc-d', 'cat /etc/converge-test/app.conf'), 'greeting = hej\nnode = rc-d');

    // The CLI says the same and exits 1.
    const cli = spawnSync(process.execPath, [join(projectDir, 'dist/cli/main.js'), 'plan', '--repo', dir, '--secrets', lab.secretsDir, '--artifacts', lab.artifactsDir, '--ssh-key', lab.sshKey, '--known-hosts', join(work, 'known_hosts'), '--skip-etcd', '--nodes', NODES.join(',')], { encoding: 'utf8', cwd: work, timeout: 60_000 });
    assert.is(cli.status, 1, cli.stdout + cli.stderr);
    assert.match(cli.stdout + cli.stderr, /rc-a.*(unknown|not in known_hosts|not known)/i);
    assert.not.match(cli.stdout + cli.stderr, /\n\s+at .*\.js:\d+/, 'no stack trace');
  } finally {
    await on('rc-b', 'mv /root/.ssh/authorized_keys.bak /root/.ssh/authorized_keys');
    await startNode('rc-c');
  }
  // Everything converges once the nodes are back.
  assertConverged(await pass(dir, { apply: true }));
});

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

test.run();
