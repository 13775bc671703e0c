// The template language substitutes variables and does nothing else.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseTemplate, renderTemplate, type TemplateContext } from '../../../src/model/template.js';

const ctx: TemplateContext = {
  node: { name: 'cp-a', address: '10.240.16.10', labels: { role: 'control-plane', 'topology.zone': 'east' } },
  vars: { motd: 'hi' },
  etcd: null,
  etcdCluster: 'EtcdCluster/main',
  etcdBroken: false,
};

test('substitutes variables with or without spaces, leaves other text alone', () => {
  const { template, problems } = parseTemplate('a {{node.name}} b {{  node.labels.topology.zone  }} { not } }} {{ vars.motd }}\n');
  assert.equal(problems, []);
  assert.is(renderTemplate(template, ctx).text, 'a cp-a b east { not } }} hi\n');
});

test('no code: expressions other than a variable name are refused with a position', () => {
  const { problems } = parseTemplate('x\n  {{ node.name | upper }} {{ process.exit() }}\n');
  assert.equal(
    problems.map((p) => `${p.line}:${p.col} ${p.message}`),
    ['2:3 invalid template expression "{{ node.name | upper }}"', '2:27 invalid template expression "{{ process.exit() }}"'],
  );
});

test('unknown variables, unclosed braces', () => {
  const { problems } = parseTemplate('{{ node.hostname }} {{ node.labels }} {{ etcd.bogus }} {{ vars }}\n{{ node.name\n');
  assert.equal(
    problems.map((p) => `${p.line}:${p.col} ${p.message}`),
    [
      '1:4 unknown template variable "node.hostname"',
      '1:24 unknown template variable "node.labels"',
      '1:42 unknown template variable "etcd.bogus"',
      '1:59 unknown template variable "vars"',
      '2:1 unclosed "{{" in template',
    ],
  );
});

test('etcd variables need membership; a value is never re-expanded', () => {
  const { template } = parseTemplate('{{ etcd.name }} {{ vars.motd }}');
  const off = renderTemplate(template, ctx);
  assert.equal(off.problems.map((p) => p.message), ['etcd.name is only defined on etcd members, and node cp-a is not a member of EtcdCluster/main']);
  const member = renderTemplate(template, {
    ...ctx,
    vars: { motd: '{{ etcd.token }}' },
    etcd: { name: 'cp-a', peerUrl: '', clientUrl: '', initialCluster: '', members: '', clientUrls: '', token: 'secret-token', dataDir: '', clientPort: '', peerPort: '', initialEnvFile: '' },
  });
  assert.is(member.text, 'cp-a {{ etcd.token }}');
});

test.run();
