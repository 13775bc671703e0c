/** The lab bridge (host 10.240.0.1/16) and the host side of each node's veth. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { HOST_ADDRESS, PREFIX_LENGTH } from './paths.js';
import { run, runOk } from './proc.js';

export function linkExists(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** Interfaces enslaved to the bridge. */
export function bridgePorts(bridge: string): string[] {
  const dir = `/sys/class/net/${bridge}/brif`;
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export async function ensureBridge(bridge: string): Promise<void> {
  if (!linkExists(bridge)) {
    await runOk('ip', ['link', 'add', bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'], { what: `creating bridge ${bridge}` });
  }
  const addrs = await runOk('ip', ['-o', '-4', 'addr', 'show', 'dev', bridge]);
  if (!addrs.stdout.includes(` ${HOST_ADDRESS}/${PREFIX_LENGTH} `)) {
    await runOk('ip', ['addr', 'replace', `${HOST_ADDRESS}/${PREFIX_LENGTH}`, 'dev', bridge], { what: `addressing bridge ${bridge}` });
  }
  await runOk('ip', ['link', 'set', bridge, 'up'], { what: `bringing bridge ${bridge} up` });
}

export async function deleteLink(name: string): Promise<void> {
  if (linkExists(name)) await run('ip', ['link', 'del', name]);
}

export async function setLink(name: string, up: boolean): Promise<void> {
  await runOk('ip', ['link', 'set', 'dev', name, up ? 'up' : 'down'], { what: `setting ${name} ${up ? 'up' : 'down'}` });
}

/** Administratively up (IFF_UP, bit 0 of /sys/class/net/<if>/flags). */
export function linkIsUp(name: string): boolean {
  try {
    return (Number.parseInt(readFileSync(`/sys/class/net/${name}/flags`, 'utf8').trim(), 16) & 1) === 1;
  } catch {
    return false;
  }
}
