/**
 * Added round-trip latency between this machine and some lab nodes.
 *
 * `tc netem` is the usual tool, but this machine's kernel is built without
 * sch_netem (CONFIG_NET_SCH_NETEM is not set), so the delay is added in
 * netfilter instead: iptables (legacy backend; the nft backend's queue
 * expression is not built either) sends the packets coming from the nodes'
 * addresses to an NFQUEUE at the host's INPUT, where delay.py holds each one
 * for the whole round trip. Holding the outgoing half instead was tried
 * first: a packet held on its way out still counts against its TCP socket's
 * small-queue budget (TSQ, about a millisecond of data at the pacing rate),
 * which throttled a 21 MB upload at 20 ms to 0.55 MB/s (38 s); delayed on
 * the way in, the same upload takes 0.8 s, and a TCP connect 20.3 ms. Every
 * round trip waits the same, which is what both tools feel. Only the nodes
 * given are affected; traffic between nodes and to every other lab node is
 * not. stop() removes the rules and ends delay.py, and is safe to call twice
 * or after a failed start.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CHAIN = 'CONVERGE_BENCH_DELAY';
const QUEUE = 4711;
const IPT = 'iptables-legacy';

function ipt(args: string[], check = true): boolean {
  const r = spawnSync(IPT, ['-w', ...args], { encoding: 'utf8' });
  if (r.error) throw new Error(`${IPT} is not installed (apt-get install iptables): ${r.error.message}`);
  if (check && r.status !== 0) throw new Error(`${IPT} ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.status === 0;
}

/** Remove the chain and its jumps, whatever state a previous run left them in. */
export function removeRules(): void {
  if (spawnSync(IPT, ['--version']).error) return;
  while (ipt(['-D', 'OUTPUT', '-j', CHAIN], false));
  while (ipt(['-D', 'INPUT', '-j', CHAIN], false));
  ipt(['-F', CHAIN], false);
  ipt(['-X', CHAIN], false);
}

export interface Latency {
  rttMs: number;
  addresses: string[];
  stop(): Promise<void>;
}

export async function addLatency(addresses: string[], rttMs: number): Promise<Latency> {
  removeRules();
  const script = join(dirname(fileURLToPath(import.meta.url)), 'delay.py');
  // Real-time priority where chrt works: on a busy machine a late wake-up would add to the delay.
  const rt = spawnSync('chrt', ['-f', '50', 'true']).status === 0;
  const argv = [...(rt ? ['chrt', '-f', '50'] : []), 'python3', script, String(QUEUE), String(rttMs)];
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Rules first: with no listener, queued packets would be dropped.
    removeRules();
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let err = '';
      child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
      child.stdout!.on('data', (b: Buffer) => {
        if (b.toString().includes('ready')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`delay.py exited (${code}): ${err.trim()}`)));
      setTimeout(() => reject(new Error('delay.py did not start within 5 s')), 5000).unref();
    });
    ipt(['-N', CHAIN]);
    for (const a of addresses) ipt(['-A', CHAIN, '-s', `${a}/32`, '-j', 'NFQUEUE', '--queue-num', String(QUEUE)]);
    ipt(['-I', 'INPUT', '-j', CHAIN]);
  } catch (e) {
    await stop();
    throw e;
  }
  return { rttMs, addresses, stop };
}
