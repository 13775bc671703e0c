// The comparisons the planner and the drift report share.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ancestorsOf, isUnder, isUnitFilePath, normalizeMode, supplementaryGroups, unitOrNotFound } from '../../../src/plan/compare.js';

test('modes: 3 or 4 or more octal digits are one mode; anything else is left alone', () => {
  assert.is(normalizeMode('750'), '0750');
  assert.is(normalizeMode('0750'), '0750');
  assert.is(normalizeMode('00750'), '0750');
  assert.is(normalizeMode('2750'), '2750');
  assert.is(normalizeMode('u=rwx'), 'u=rwx');
  assert.is(normalizeMode('17777'), '17777');
});

test('ancestors of a path, nearest last', () => {
  assert.equal(ancestorsOf('/etc/etcd/pki/server-key.pem'), ['/etc', '/etc/etcd', '/etc/etcd/pki']);
  assert.equal(ancestorsOf('/etc'), []);
});

test('isUnder is about path components, not string prefixes', () => {
  assert.ok(isUnder('/etc/etcd/x', '/etc/etcd'));
  assert.ok(isUnder('/etc/etcd/x', '/etc/etcd/'));
  assert.not.ok(isUnder('/etc/etcd-old/x', '/etc/etcd'));
  assert.not.ok(isUnder('/etc/etcd', '/etc/etcd'));
});

test('unit files and drop-ins need a daemon-reload; other files do not', () => {
  assert.ok(isUnitFilePath('/etc/systemd/system/etcd.service'));
  assert.ok(isUnitFilePath('/etc/systemd/system/etcd.service.d/override.conf'));
  assert.ok(isUnitFilePath('/lib/systemd/system/etcd.service'));
  assert.not.ok(isUnitFilePath('/etc/etcd/etcd.env'));
  assert.not.ok(isUnitFilePath('/etc/systemd/network/10-host0.network'));
});

test('supplementary groups drop the primary one, dedupe and sort', () => {
  assert.equal(supplementaryGroups(['etcd', 'ssl-cert', 'adm', 'ssl-cert'], 'etcd'), ['adm', 'ssl-cert']);
});

test('a unit the facts did not list reads as not found', () => {
  assert.equal(unitOrNotFound({}, 'x.service'), { unit: 'x.service', loadState: 'not-found', activeState: 'inactive', unitFileState: '', needDaemonReload: false });
});

test.run();
