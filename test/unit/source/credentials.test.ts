// Where Git credentials come from, and that URLs are shown without them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../../src/errors/index.js';
import { resolveCredentials, TOKEN_USERNAME } from '../../../src/source/auth.js';
import { displayUrl, scrub } from '../../../src/source/redact.js';
import { tempDir } from './_repo.js';

test('displayUrl drops user-info, query and fragment', () => {
  assert.is(displayUrl('https://bob:pa%3Ass@git.example.invalid:8443/org/ds.git?access_token=t0k#x'), 'https://git.example.invalid:8443/org/ds.git');
  assert.is(displayUrl('https://tok3n@git.example.invalid/ds.git'), 'https://git.example.invalid/ds.git');
  assert.is(displayUrl('http://u:p@[bad/x'), 'http://[bad/x');
  assert.is(displayUrl('/srv/git/ds'), '/srv/git/ds');
});

test('scrub removes secrets and their URL-encoded form', () => {
  assert.is(scrub('bad p@ss:word and p%40ss%3Aword', ['p@ss:word']), 'bad *** and ***');
  assert.is(scrub('nothing here', [undefined, 'zz']), 'nothing here');
});

test('precedence: explicit token, token file, env token, env password, systemd credential, URL', async () => {
  const dir = tempDir('cred');
  const file = join(dir, 'token');
  writeFileSync(file, 'from-file\n');
  const creds = tempDir('credsdir');
  writeFileSync(join(creds, 'git-token'), 'from-systemd\n');
  const url = new URL('https://urluser:urlpass@h.invalid/x.git');
  assert.equal(await resolveCredentials({ token: 'explicit', tokenFile: file }, url, { CONVERGE_GIT_TOKEN: 'env' }), { username: 'urluser', password: 'explicit' });
  assert.equal(await resolveCredentials({ tokenFile: file }, null, { CONVERGE_GIT_TOKEN: 'env' }), { username: TOKEN_USERNAME, password: 'from-file' });
  assert.equal(await resolveCredentials({}, null, { CONVERGE_GIT_TOKEN: 'env', CONVERGE_GIT_USERNAME: 'ci' }), { username: 'ci', password: 'env' });
  assert.equal(await resolveCredentials({}, null, { CONVERGE_GIT_PASSWORD: 'pw', CONVERGE_GIT_USERNAME: 'ci' }), { username: 'ci', password: 'pw' });
  assert.equal(await resolveCredentials({}, null, { CREDENTIALS_DIRECTORY: creds }), { username: TOKEN_USERNAME, password: 'from-systemd' });
  assert.equal(await resolveCredentials({}, url, {}), { username: 'urluser', password: 'urlpass' });
  assert.is(await resolveCredentials({}, new URL('https://h.invalid/x.git'), {}), null);
});

test('a password without a user name, or an unreadable or empty token file, is a configuration error that names no secret', async () => {
  try {
    await resolveCredentials({ password: 'Sekr1t' }, null, {});
    assert.unreachable();
  } catch (e) {
    assert.instance(e, ConfigError);
    assert.not.match((e as Error).message, /Sekr1t/);
  }
  const dir = tempDir('cred');
  writeFileSync(join(dir, 'empty'), '\n');
  for (const f of [join(dir, 'missing'), join(dir, 'empty')]) {
    try {
      await resolveCredentials({ tokenFile: f }, null, {});
      assert.unreachable();
    } catch (e) {
      assert.instance(e, ConfigError);
      assert.match((e as Error).message, new RegExp(`Git token file ${f}`));
    }
  }
});

test.run();
