/**
 * The lab's PKI, made with openssl: a CA (its key stays in the lab-only ca/
 * folder), a client certificate for converge and, per node, server and peer
 * certificates whose SANs are the node's name, its address and 127.0.0.1.
 * The layout under secrets/ is what desired-state/ refers to:
 *
 *   ca.pem
 *   client/etcd-client.pem, client/etcd-client-key.pem
 *   nodes/<node>/server.pem, server-key.pem, peer.pem, peer-key.pem
 *
 * Files are 0600 and folders 0700. Keys are ECDSA P-256 (fast to make).
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabPaths } from './paths.js';
import { nodeSecretsDir } from './paths.js';
import { runOk } from './proc.js';

const DAYS = '3650';

function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

async function newKey(file: string): Promise<void> {
  await runOk('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], { what: `making key ${file}` });
  chmodSync(file, 0o600);
}

async function ensureCa(p: LabPaths): Promise<boolean> {
  privateDir(p.caDir);
  privateDir(p.secrets);
  if (existsSync(p.caKey) && existsSync(p.caCert)) return false;
  await newKey(p.caKey);
  await runOk('openssl', [
    'req', '-x509', '-new', '-key', p.caKey, '-sha256', '-days', DAYS,
    '-subj', '/CN=converge lab CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-out', p.caCert,
  ], { what: 'making the lab CA certificate' });
  chmodSync(p.caCert, 0o600);
  return true;
}

interface LeafSpec {
  cn: string;
  certFile: string;
  keyFile: string;
  eku: string;
  sans: string[];
}

async function issue(p: LabPaths, spec: LeafSpec): Promise<void> {
  const tmp = join(p.caDir, `tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  privateDir(tmp);
  try {
    const csr = join(tmp, 'req.csr');
    const ext = join(tmp, 'ext.cnf');
    await newKey(spec.keyFile);
    await runOk('openssl', ['req', '-new', '-key', spec.keyFile, '-subj', `/CN=${spec.cn}`, '-out', csr], { what: `making the request for ${spec.certFile}` });
    const lines = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${spec.eku}`];
    if (spec.sans.length) lines.push(`subjectAltName=${spec.sans.join(',')}`);
    writeFileSync(ext, lines.join('\n') + '\n');
    await runOk('openssl', [
      'x509', '-req', '-in', csr, '-CA', p.caCert, '-CAkey', p.caKey,
      '-set_serial', `0x${randomBytes(16).toString('hex').replace(/^[89a-f]/, '7')}`,
      '-days', DAYS, '-sha256', '-extfile', ext, '-out', spec.certFile,
    ], { what: `signing ${spec.certFile}` });
    chmodSync(spec.certFile, 0o600);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** True when `certFile` exists, was signed by the current CA and carries exactly these SANs. */
function upToDate(p: LabPaths, certFile: string, keyFile: string, sans: string[]): boolean {
  if (!existsSync(certFile) || !existsSync(keyFile)) return false;
  try {
    const cert = new X509Certificate(readFileSync(certFile));
    const ca = new X509Certificate(readFileSync(p.caCert));
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false;
    const want = sans.map((s) => s.replace(/^IP:/, 'IP Address:')).sort().join(', ');
    const have = (cert.subjectAltName ?? '').split(', ').filter(Boolean).sort().join(', ');
    return want === have;
  } catch {
    return false;
  }
}

export function nodeSans(node: string, address: string): string[] {
  return [`DNS:${node}`, `IP:${address}`, 'IP:127.0.0.1'];
}

/** Make whatever is missing or outdated: the CA, the client certificate, each node's certificates. */
export async function ensurePki(p: LabPaths, nodes: ReadonlyArray<{ name: string; address: string }>): Promise<{ made: string[] }> {
  const made: string[] = [];
  if (await ensureCa(p)) made.push('CA');
  privateDir(join(p.secrets, 'client'));
  if (!upToDate(p, p.clientCert, p.clientCertKey, [])) {
    await issue(p, { cn: 'converge', certFile: p.clientCert, keyFile: p.clientCertKey, eku: 'clientAuth', sans: [] });
    made.push('client');
  }
  privateDir(join(p.secrets, 'nodes'));
  await Promise.all(
    nodes.map(async (n) => {
      const dir = nodeSecretsDir(p, n.name);
      privateDir(dir);
      const sans = nodeSans(n.name, n.address);
      for (const kind of ['server', 'peer'] as const) {
        const certFile = join(dir, `${kind}.pem`);
        const keyFile = join(dir, `${kind}-key.pem`);
        if (upToDate(p, certFile, keyFile, sans)) continue;
        await issue(p, { cn: n.name, certFile, keyFile, eku: 'serverAuth,clientAuth', sans });
        made.push(`${n.name}/${kind}`);
      }
    }),
  );
  return { made };
}
