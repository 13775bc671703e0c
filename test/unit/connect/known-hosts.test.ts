// known_hosts parsing and matching, checked against what OpenSSH's own
// ssh-keygen writes (hashed entries, fingerprints).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  checkHostKey,
  fingerprint,
  hostKeyAlgorithms,
  hostLookupName,
  hostsFieldMatches,
  knownHostsLine,
  parseKnownHosts,
  parsePublicKey,
} from '../../../src/connect/known-hosts.js';

const dir = mkdtempSync(join(tmpdir(), 'converge-kh-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function keygen(name: string, type = 'ed25519'): { pub: string; fp: string } {
  const f = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', name, '-f', f]);
  const pub = readFileSync(`${f}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  const fp = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${f}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
  return { pub, fp };
}

const a = keygen('a');
const b = keygen('b');
const r = keygen('r', 'rsa');

test('fingerprint is the one ssh-keygen -l prints', () => {
  for (const k of [a, b, r]) {
    const key = parsePublicKey(k.pub);
    assert.ok(key);
    assert.is(fingerprint(key.blob), k.fp);
  }
});

test('parsePublicKey refuses a blob whose inner type differs from the declared one', () => {
  const blob = a.pub.split(' ')[1];
  assert.is(parsePublicKey(`ssh-rsa ${blob}`), null);
  assert.is(parsePublicKey('ssh-ed25519 not*base64'), null);
  assert.is(parsePublicKey(''), null);
  assert.equal(parsePublicKey(`${a.pub} a comment`)?.type, 'ssh-ed25519');
});

test('lookup names: port 22 is the bare host, others [host]:port, lowercased', () => {
  assert.is(hostLookupName('Node.Example', 22), 'node.example');
  assert.is(hostLookupName('10.240.16.10', 2222), '[10.240.16.10]:2222');
});

test('plain entries: comma lists, wildcards, negation, [host]:port', () => {
  assert.ok(hostsFieldMatches('cp-a,10.240.16.10', '10.240.16.10'));
  assert.ok(hostsFieldMatches('cp-a,10.240.16.10', 'cp-a'));
  assert.not.ok(hostsFieldMatches('cp-a,10.240.16.10', '10.240.16.1'));
  assert.ok(hostsFieldMatches('10.240.*', '10.240.48.10'));
  assert.ok(hostsFieldMatches('cp-?', 'cp-b'));
  assert.not.ok(hostsFieldMatches('cp-?', 'cp-bb'));
  assert.not.ok(hostsFieldMatches('10.240.*,!10.240.80.10', '10.240.80.10'));
  assert.ok(hostsFieldMatches('10.240.*,!10.240.80.10', '10.240.16.10'));
  assert.ok(hostsFieldMatches('[10.0.0.1]:2222', '[10.0.0.1]:2222'));
  assert.not.ok(hostsFieldMatches('[10.0.0.1]:2222', '10.0.0.1'));
  assert.not.ok(hostsFieldMatches('10.0.0.1', '[10.0.0.1]:2222'));
  // a dot in a pattern is literal, not a regex wildcard
  assert.not.ok(hostsFieldMatches('10.0.0.1', '10x0x0x1'));
});

test('hashed entries written by ssh-keygen -H match their host and nothing else', () => {
  const file = join(dir, 'known_hosts');
  writeFileSync(file, [`cp-a,10.240.16.10 ${a.pub}`, `[127.0.0.1]:2222 ${b.pub}`, ''].join('\n'));
  execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
  const text = readFileSync(file, 'utf8');
  assert.not.ok(text.includes('cp-a') || text.includes('10.240.16.10') || text.includes('127.0.0.1'), 'ssh-keygen hashed the names');
  const { entries, skipped } = parseKnownHosts(text);
  assert.equal(skipped, []);
  assert.is(entries.length, 3);
  for (const e of entries) assert.ok(e.hosts.startsWith('|1|'));
  const ka = parsePublicKey(a.pub)!;
  const kb = parsePublicKey(b.pub)!;
  assert.equal(checkHostKey(entries, ['10.240.16.10'], ka), { status: 'trusted' });
  assert.equal(checkHostKey(entries, ['cp-a'], ka), { status: 'trusted' });
  assert.equal(checkHostKey(entries, ['[127.0.0.1]:2222'], kb), { status: 'trusted' });
  assert.equal(checkHostKey(entries, ['127.0.0.1'], kb), { status: 'unknown' });
  assert.equal(checkHostKey(entries, ['10.240.16.11'], ka), { status: 'unknown' });
  const changed = checkHostKey(entries, ['10.240.16.10'], kb);
  assert.is(changed.status, 'changed');
  if (changed.status === 'changed') assert.equal(changed.known.map((k) => fingerprint(k.blob)), [a.fp]);
});

test('our own hashed line (trust on first use) is read back by ssh-keygen -F', () => {
  const file = join(dir, 'tofu_hosts');
  const key = parsePublicKey(a.pub)!;
  writeFileSync(file, `${knownHostsLine('[10.240.16.10]:2222', key, Buffer.alloc(20, 7))}\n`);
  const out = execFileSync('ssh-keygen', ['-F', '[10.240.16.10]:2222', '-f', file], { encoding: 'utf8' });
  assert.ok(out.includes(a.pub.split(' ')[1]!), out);
  assert.equal(checkHostKey(parseKnownHosts(readFileSync(file, 'utf8')).entries, ['[10.240.16.10]:2222'], key), { status: 'trusted' });
});

test('comments, blank and malformed lines; @revoked and @cert-authority markers', () => {
  const text = [
    '# comment',
    '',
    'garbage',
    `@bogus host ${a.pub}`,
    `cp-a ssh-ed25519 AAAA`,
    `@cert-authority *.lab ${b.pub}`,
    `@revoked cp-b ${b.pub}`,
    `cp-b ${b.pub}`,
    `  cp-c ${a.pub} trailing comment  `,
  ].join('\n');
  const { entries, skipped } = parseKnownHosts(text);
  assert.equal(skipped, [3, 4, 5]);
  assert.equal(entries.map((e) => [e.marker, e.hosts, e.line]), [
    ['cert-authority', '*.lab', 6],
    ['revoked', 'cp-b', 7],
    [null, 'cp-b', 8],
    [null, 'cp-c', 9],
  ]);
  const kb = parsePublicKey(b.pub)!;
  assert.equal(checkHostKey(entries, ['cp-b'], kb), { status: 'revoked', line: 7 });
  // a CA line is not a host key: converge does not accept host certificates
  assert.equal(checkHostKey(entries, ['x.lab'], kb), { status: 'unknown' });
  assert.equal(checkHostKey(entries, ['cp-c'], parsePublicKey(a.pub)!), { status: 'trusted' });
});

test('changed: the known keys of the presented type are reported first', () => {
  const { entries } = parseKnownHosts(`n ${r.pub}\nn ${a.pub}\n`);
  const v = checkHostKey(entries, ['n'], parsePublicKey(b.pub)!);
  assert.is(v.status, 'changed');
  if (v.status === 'changed') assert.equal(v.known.map((k) => k.type), ['ssh-ed25519']);
  const onlyRsa = checkHostKey(parseKnownHosts(`n ${r.pub}\n`).entries, ['n'], parsePublicKey(b.pub)!);
  assert.is(onlyRsa.status, 'changed');
});

test('host key algorithms follow the known key types', () => {
  assert.equal(hostKeyAlgorithms(['ssh-ed25519']), ['ssh-ed25519']);
  assert.equal(hostKeyAlgorithms(['ssh-rsa', 'ecdsa-sha2-nistp256']), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa', 'ecdsa-sha2-nistp256']);
});

test.run();
