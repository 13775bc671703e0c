// The etcd election (daemon/leader.ts) against a real etcd on 127.0.0.1:
// exactly one leader, a resignation hands over at once, a stalled leader
// stops leading the moment it runs again (before it could do anything), and
// the shared state is written only by the key holder.
import { test } from 'uvu';
import '../../helpers/hooks.js';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { Etcd3 } from 'etcd3';
import { EtcdLeadership } from '../../../src/daemon/leader.js';
import { createLogger } from '../../../src/daemon/log.js';
import { EMPTY_STATE } from '../../../src/daemon/state.js';
import { singleEtcd, type SingleEtcd } from './_etcd.js';
import { until } from './_harness.js';

const TTL = 2;
let etcd: SingleEtcd;
const made: EtcdLeadership[] = [];

function candidate(name: string, id: string, client: Etcd3 = etcd.client()): EtcdLeadership {
  const l = new EtcdLeadership({ client, name, id, ttlSeconds: TTL, log: createLogger({ level: process.env['TEST_LOG'] ?? 'silent' }), retryMs: 300 });
  made.push(l);
  return l;
}

const elected = (l: EtcdLeadership): Promise<number> =>
  new Promise((resolve) => {
    if (l.isLeader()) resolve(Date.now());
    else l.events.once('elected', () => resolve(Date.now()));
  });

test.before(async () => {
  etcd = await singleEtcd(26100);
});

test.after(async () => {
  await Promise.all(made.map((l) => l.stop()));
  // Absent when the before hook failed: its error is the one to read, not one from here.
  if (etcd !== undefined) await etcd.close();
});

test('two candidates: exactly one leads; etcd3\'s own Election API sees the same leader', async () => {
  const name = `t-${randomBytes(3).toString('hex')}`;
  const a = candidate(name, 'a');
  a.start();
  await elected(a);
  const b = candidate(name, 'b');
  b.start();
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(a.isLeader());
  assert.not.ok(b.isLeader());
  assert.ok(await a.confirm());
  assert.not.ok(await b.confirm());
  assert.is(await etcd.client().election(name).leader(), 'a');
  await until(() => b.status().leaderId === 'a', 3000, 'the standby to see the leader');
  assert.is(b.status().leader, false);

  const t = Date.now();
  await a.stop();
  const at = await elected(b);
  // A resignation hands over at once; only a loaded machine makes it slow. The
  // bound is loose on purpose (the figure below is the measurement).
  assert.ok(at - t < 10_000, `a resignation took ${at - t} ms to hand over`);
  assert.ok(await b.confirm(), JSON.stringify({ leader: b.isLeader(), status: b.status(), keys: await etcd.client().getAll().prefix(`election/${name}/`).keys() }));
  console.log(`\n  figures: resign → other elected ${at - t} ms`);
  await b.stop();
});

test('a leader whose process stalls past the TTL no longer leads the moment it runs again, before any callback', async () => {
  const name = `t-${randomBytes(3).toString('hex')}`;
  const a = candidate(name, 'a');
  a.start();
  await elected(a);
  const lost = new Promise<string>((resolve) => a.events.once('lost', resolve));
  // Block the event loop (a GC pause, a frozen VM): no keepalive leaves.
  const stall = Date.now() + TTL * 1000 + 300;
  while (Date.now() < stall);
  assert.not.ok(a.isLeader(), 'the stalled leader still thinks it leads');
  assert.not.ok(await a.saveState(EMPTY_STATE), 'a stalled leader wrote the shared state');
  assert.match(await lost, /not renewed in time|lease lost/);
  // Alone in the election, it campaigns again and leads again.
  await elected(a);
  assert.ok(await a.confirm());
  await a.stop();
});

/** A TCP relay to etcd that can be cut silently (packets dropped, nothing closed), as a network partition does. */
async function relay(target: URL): Promise<{ url: string; cut(): void; close(): void }> {
  const sockets = new Set<Socket>();
  let cut = false;
  const server = createServer((inbound) => {
    if (cut) return inbound.destroy();
    const outbound = connect(Number(target.port), target.hostname);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut() {
      cut = true;
      for (const s of sockets) {
        s.unpipe();
        s.pause();
      }
    },
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

test('a partitioned leader stops leading before etcd lets the other candidate take over', async () => {
  const name = `t-${randomBytes(3).toString('hex')}`;
  const r = await relay(new URL(etcd.url));
  const cut = new Etcd3({
    hosts: [r.url],
    credentials: { rootCertificate: etcd.cluster.tls.ca, certChain: etcd.cluster.tls.cert, privateKey: etcd.cluster.tls.key },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 1000 }),
  });
  try {
    const a = candidate(name, 'a', cut);
    const b = candidate(name, 'b');
    a.start();
    await elected(a);
    b.start();
    await until(() => b.status().leaderId === 'a', 3000, 'b to follow a');
    let aStopped = 0;
    a.events.once('lost', () => (aStopped = Date.now()));
    const t = Date.now();
    r.cut();
    const bLeads = await elected(b);
    assert.ok(aStopped > 0, 'b leads while a still thinks it leads');
    assert.ok(aStopped <= bLeads, `a stopped leading ${aStopped - bLeads} ms after b began`);
    assert.not.ok(a.isLeader());
    console.log(`\n  figures: partition → old leader stops ${aStopped - t} ms, → new leader ${bLeads - t} ms (TTL ${TTL} s), gap ${bLeads - aStopped} ms`);
    await b.stop();
    await a.stop();
  } finally {
    cut.close();
    r.close();
  }
});

test('the shared state is written only while the key is held: a deleted key fails the transaction', async () => {
  const name = `t-${randomBytes(3).toString('hex')}`;
  const a = candidate(name, 'a');
  a.start();
  await elected(a);
  const state = { ...EMPTY_STATE, lastGood: 'a'.repeat(40) };
  assert.ok(await a.saveState(state));
  assert.equal(await a.loadState(), state);
  // Someone else removes the key (an operator, or etcd expiring it while this process does not know yet).
  await etcd.client().delete().prefix(`election/${name}/`);
  assert.not.ok(await a.saveState({ ...state, lastGood: 'b'.repeat(40) }), 'written without holding the key');
  assert.not.ok(await a.confirm());
  assert.equal(await a.loadState(), state);
  await a.stop();
});

test.run();
