/**
 * `converge lab up|down|status|reset`: the local lab of test nodes. Progress
 * goes to `out` line by line as the lab comes up; failures are LabErrors that
 * the CLI's one handler prints with what to do.
 */
import { UsageError } from '../errors/index.js';
import { labDown, labReset, labStatus, labUp, type LabStatus } from '../lab/index.js';

export type LabSubcommand = 'up' | 'down' | 'status' | 'reset';

function nodeList(v: unknown): string[] | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new UsageError('--nodes takes a comma-separated list of node names');
  const names = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new UsageError('--nodes is empty', 'e.g. --nodes cp-a,cp-b,cp-c,cp-d');
  return names;
}

function renderStatus(s: LabStatus): string {
  const lines: string[] = [];
  if (s.nodes.length === 0) {
    lines.push(`the lab is down (lab directory ${s.labDir}); start it with \`converge lab up\``);
    return lines.join('\n') + '\n';
  }
  const rows = [['NODE', 'ADDRESS', 'STATE', 'LINK', 'SSH', 'SYSTEM']];
  for (const n of s.nodes) {
    const system = n.system === null ? '-' : n.failedUnits.length ? `${n.system} (failed: ${n.failedUnits.join(', ')})` : n.system;
    rows.push([n.name, n.address, n.running ? 'running' : 'stopped', n.running ? (n.linkUp ? 'up' : 'cut') : '-', n.ssh ? 'yes' : 'no', system]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  lines.push(`bridge: ${s.bridge.name} ${s.bridge.exists ? 'present' : 'missing'}`);
  lines.push(`git:    ${s.git.url ?? 'not running'}${s.git.running && !s.git.answers ? ' (not answering)' : ''}`);
  lines.push(`image:  ${s.imageKey ?? '-'}`);
  return lines.join('\n') + '\n';
}

/** Run a lab subcommand; returns the exit code. */
export async function labCommand(sub: LabSubcommand, flags: Record<string, unknown>, positional: string[], out: (s: string) => void): Promise<number> {
  const log = (line: string): void => out(`${line}\n`);
  switch (sub) {
    case 'up': {
      const nodes = nodeList(flags['nodes']);
      const info = await labUp({ ...(nodes ? { nodes } : {}), log });
      for (const n of info.nodes) log(`  ${n.name.padEnd(6)} ${n.address.padEnd(14)} ${n.running ? 'running' : 'stopped'}`);
      log(`ssh:        ssh -i ${info.sshKey} -o UserKnownHostsFile=${info.knownHosts} root@<address>`);
      log(`git:        ${info.git.url ?? 'not running'} (user ${info.git.username}, credentials in ${info.git.credentialsFile})`);
      log(`secrets:    ${info.secretsDir}`);
      log(`artifacts:  ${info.artifactsDir}`);
      if (info.configFile) log(`config:     ${info.configFile} (converge commands in this folder use the lab)`);
      return 0;
    }
    case 'down': {
      await labDown({ log, purge: flags['purge'] === true });
      return 0;
    }
    case 'status': {
      const s = await labStatus();
      if (flags['json']) out(JSON.stringify(s, null, 2) + '\n');
      else out(renderStatus(s));
      return s.up && s.nodes.every((n) => n.ssh) ? 0 : 1;
    }
    case 'reset': {
      const node = positional[0];
      if (!node) throw new UsageError('lab reset needs a node name', 'e.g. converge lab reset cp-a');
      await labReset(node, { log });
      return 0;
    }
  }
}
