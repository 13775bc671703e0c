// What the etcd scenarios measure while a rollout runs: an application
// writing a key every 100 ms, and the number of healthy voters seen every
// 250 ms (quorum kept throughout means it never drops below a majority).
import { Etcd3 } from 'etcd3';
import * as assert from 'uvu/assert';
import { withEtcdClient, type EtcdTls } from '../../../../src/connect/etcd.js';
import { gatherEtcdFacts } from '../../../../src/facts/etcd.js';
import type { ResolvedEtcd } from '../../../../src/model/types.js';

export interface WriterFigures {
  ok: number;
  failed: number;
  /** Longest time between a failed write and the next one that succeeded. */
  longestOutageMs: number;
}

/** Puts a key every 100 ms through an ordinary client (it retries on another member, as applications do). */
export function writer(tls: EtcdTls, urls: string[]): { stop(): WriterFigures } {
  const e = new Etcd3({
    hosts: urls,
    credentials: { rootCertificate: tls.ca, certChain: tls.cert, privateKey: tls.key },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 2000 }),
  });
  let i = 0;
  let ok = 0;
  let failed = 0;
  let failingSince: number | null = null;
  let longest = 0;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    const t = Date.now();
    e.put(`w/${i++}`)
      .value(String(t))
      .then(
        () => {
          ok++;
          if (failingSince !== null) longest = Math.max(longest, Date.now() - failingSince);
          failingSince = null;
        },
        () => {
          failed++;
          failingSince ??= t;
        },
      )
      .finally(() => (busy = false));
  }, 100);
  return {
    stop(): WriterFigures {
      clearInterval(timer);
      e.close();
      return { ok, failed, longestOutageMs: failingSince !== null ? Math.max(longest, Date.now() - failingSince) : longest };
    },
  };
}

/** Counts healthy voters every 250 ms; `stop` returns the smallest count seen and the voters then. */
export function quorumWatch(spec: ResolvedEtcd, tls: EtcdTls): { stop(): Promise<{ minHealthy: number; voters: number; samples: number }> } {
  let minHealthy = Number.POSITIVE_INFINITY;
  let votersAtMin = 0;
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const f = await gatherEtcdFacts(spec, tls, { timeoutMs: 1000 });
      const voters = f.members.filter((m) => !m.isLearner);
      const healthy = voters.filter((m) => f.status[m.id]?.healthy).length;
      if (f.members.length > 0) {
        samples++;
        if (healthy < minHealthy) {
          minHealthy = healthy;
          votersAtMin = voters.length;
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { minHealthy, voters: votersAtMin, samples };
    },
  };
}

const key = (i: number): string => `k/${String(i).padStart(4, '0')}`;

export async function writeKeys(tls: EtcdTls, url: string, n = 1000): Promise<void> {
  await withEtcdClient({ ...tls, endpoints: [url], dialTimeoutMs: 10_000 }, async (e) => {
    for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, (_, j) => e.put(key(i + j)).value(`v${i + j}`)));
  });
}

/** All n keys are there with their values. */
export async function assertKeys(tls: EtcdTls, url: string, n = 1000): Promise<void> {
  await withEtcdClient({ ...tls, endpoints: [url], dialTimeoutMs: 10_000 }, async (e) => {
    const all = await e.getAll().prefix('k/').strings();
    assert.is(Object.keys(all).length, n, `all ${n} keys are there`);
    for (let i = 0; i < n; i++) assert.is(all[key(i)], `v${i}`, key(i));
  });
}
