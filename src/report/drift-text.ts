/**
 * `converge drift` output: text for terminals, JSON for machines, Markdown
 * for issues and chat. Secrets are redacted here too, whatever the item holds.
 */
import type { DriftItem, DriftReport, NodeDrift } from '../plan/drift.js';
import { driftCount } from '../plan/drift.js';
import { createTwoFilesPatch } from 'diff/lib/patch/create.js';
import { abbreviateDigest } from './plan-text.js';

const HEX64 = /[0-9a-f]{64}/;

/** A secret item keeps only placeholders, even if a digest slipped into it. */
function redact(i: DriftItem): DriftItem {
  if (!i.secret) return i;
  const safe = (v: string | null, placeholder: string): string | null => (v === null ? null : v.startsWith('(') && !HEX64.test(v) ? v : placeholder);
  const { text: _dropped, ...rest } = i;
  return { ...rest, applied: safe(i.applied, '(secret)'), desired: safe(i.desired, '(secret)'), actual: safe(i.actual, '(secret)') ?? '(secret)' };
}

function value(v: string | null): string {
  return v === null ? '(not declared)' : v === '' ? '(none)' : abbreviateDigest(v);
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function short(commit: string | null): string {
  return commit === null ? '(no commit)' : commit.slice(0, 12);
}

function sentence(raw: DriftItem): string {
  const i = redact(raw);
  const parts = [`node has ${value(i.actual)}`];
  if (i.label === 'corrective') {
    parts.push(`last applied ${value(i.applied)}`);
    if (i.desired !== i.applied) parts.push(`current commit wants ${value(i.desired)}`);
  } else {
    parts.push(i.desired === null ? 'current commit no longer declares it (to be removed)' : `current commit wants ${value(i.desired)}`);
  }
  return `${i.field}: ${parts.join(', ')}`;
}

/** How to get from what the node has to what is wanted, as `converge plan` shows it. */
function unified(path: string, t: { have: string; want: string }): string[] {
  const patch = createTwoFilesPatch(`${path} (node)`, `${path} (wanted)`, t.have, t.want, undefined, undefined, { context: 3 });
  return patch.split('\n').slice(1).filter((l, idx, all) => !(idx === all.length - 1 && l === ''));
}

function nodeHeader(n: NodeDrift): string {
  if (n.appliedCommit === null && n.appliedAt === null) return `${n.node} (never applied)`;
  return `${n.node} (last applied ${short(n.appliedCommit)}${n.appliedAt ? ` at ${n.appliedAt}` : ''})`;
}

function summary(report: DriftReport): string {
  const unreachable = report.nodes.filter((n) => !n.reachable).length;
  const tail = unreachable > 0 ? ` (${plural(unreachable, 'node', 'nodes')} unreachable)` : '';
  if (driftCount(report) === 0) {
    return unreachable > 0 ? `No drift on the nodes that could be checked${tail}` : `No drift. The nodes match what was last applied and ${short(report.commit)} has nothing new to roll out.`;
  }
  const nodes = report.nodes.filter((n) => n.items.length > 0).length;
  return `Drift: ${report.counts.corrective} corrective, ${report.counts.intentional} intentional on ${plural(nodes, 'node', 'nodes')}${tail}`;
}

export function renderDriftText(report: DriftReport): string {
  const out: string[] = [];
  for (const n of report.nodes) {
    if (!n.reachable) {
      out.push(`${n.node}: unreachable: ${n.error?.startsWith(`${n.node}: `) ? n.error.slice(n.node.length + 2) : (n.error ?? 'no facts')}`);
      continue;
    }
    if (n.items.length === 0) {
      out.push(`${nodeHeader(n)}: no drift`);
      continue;
    }
    out.push(`${nodeHeader(n)}:`);
    const width = Math.max(...n.items.map((i) => i.label.length));
    for (const i of n.items) {
      out.push(`  ${i.label.padEnd(width)}  ${i.resource} ${i.target}  ${sentence(i)}`);
      if (i.text && !i.secret) out.push(...unified(i.target, i.text).map((l) => `      ${l}`));
    }
  }
  out.push('', summary(report));
  return out.join('\n') + '\n';
}

/** The report as JSON, with secret items reduced to placeholders once more. */
export function driftToJson(report: DriftReport): string {
  const nodes = report.nodes.map((n) => ({ ...n, items: n.items.map(redact) }));
  return JSON.stringify({ ...report, nodes }, null, 2);
}

function cell(v: string | null): string {
  const text = value(v).replace(/\|/g, '\\|').replace(/`/g, "'");
  return `\`${text}\``;
}

export function renderDriftMarkdown(report: DriftReport): string {
  const out = [`## Drift at \`${short(report.commit)}\``, '', `**${summary(report)}**`, ''];
  for (const n of report.nodes) {
    out.push(`### ${n.node}`, '');
    if (!n.reachable) {
      out.push(`Unreachable: ${(n.error ?? 'no facts').replace(/\|/g, '\\|')}`, '');
      continue;
    }
    out.push(n.appliedCommit === null && n.appliedAt === null ? 'Never applied.' : `Last applied \`${short(n.appliedCommit)}\`${n.appliedAt ? ` at ${n.appliedAt}` : ''}.`, '');
    if (n.items.length === 0) {
      out.push('No drift.', '');
      continue;
    }
    out.push('| drift | resource | target | field | last applied | current commit | on the node |', '| --- | --- | --- | --- | --- | --- | --- |');
    for (const raw of n.items) {
      const i = redact(raw);
      out.push(`| ${i.label} | ${i.resource} | ${cell(i.target)} | ${i.field} | ${cell(i.applied)} | ${cell(i.desired)} | ${cell(i.actual)} |`);
    }
    out.push('');
    for (const i of n.items) {
      if (i.text && !i.secret) out.push(`\`${i.target}\` on ${n.node}:`, '', '```diff', ...unified(i.target, i.text), '```', '');
    }
  }
  return out.join('\n');
}
