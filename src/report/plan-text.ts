/**
 * `converge plan` for humans: per node, one line per action with its reason,
 * unified diffs for text files, digests for artifacts, and nothing but
 * "(secret changed)" for secrets. Plain text; colour only when asked for.
 */
// Only the patch module: the package's index loads every diff algorithm (25 files) on each start.
import { createTwoFilesPatch, FILE_HEADERS_ONLY } from 'diff/lib/patch/create.js';
import type { Drift, EtcdAction, HostAction, NodePlan, Plan } from '../plan/types.js';
import { nodesWithChanges, planActionCount, planHasErrors } from '../plan/plan.js';

export interface PlanTextOptions {
  /** ANSI colours; decide with useColor(). Default false. */
  color?: boolean;
  /** Lines of context around each diff hunk. Default 3. */
  context?: number;
}

/** Colour only on a terminal, and never when NO_COLOR is set (no-color.org) or TERM=dumb. */
export function useColor(stream: { isTTY?: boolean }, env: Record<string, string | undefined>): boolean {
  return stream.isTTY === true && (env.NO_COLOR ?? '') === '' && env.TERM !== 'dumb';
}

type Paint = (code: string, s: string) => string;

const GREEN = '32';
const RED = '31';
const YELLOW = '33';
const CYAN = '36';
const BOLD = '1';

/** 64 hex digits → the first 12 and an ellipsis. */
export function abbreviateDigest(value: string): string {
  return /^[0-9a-f]{64}$/.test(value) ? `${value.slice(0, 12)}…` : value;
}

function digest(sha256: string | null): string {
  return sha256 === null ? '(none)' : abbreviateDigest(sha256);
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

function shortCommit(commit: string | null): string {
  return commit === null ? 'the working tree (no commit)' : commit.slice(0, 12);
}

/** The sign and the words of one host action, without its reason. */
function describeHost(a: HostAction): [sign: '+' | '~' | '-', text: string] {
  switch (a.type) {
    case 'group.create':
      return ['+', `groupadd ${a.name}${describeList([a.gid !== undefined ? `gid ${a.gid}` : '', a.system ? 'system' : ''])}`];
    case 'group.remove':
      return ['-', `groupdel ${a.name}`];
    case 'user.create':
      return [
        '+',
        `useradd ${a.name}${describeList([
          a.uid !== undefined ? `uid ${a.uid}` : '',
          `group ${a.group}`,
          a.groups.length > 0 ? `groups ${a.groups.join(',')}` : '',
          `home ${a.home}`,
          `shell ${a.shell}`,
          a.system ? 'system' : '',
        ])}`,
      ];
    case 'user.modify':
      return ['~', `usermod ${a.name}${describeList(a.changes.map((c) => `${c.field} ${c.from || '(none)'} → ${c.to || '(none)'}`))}`];
    case 'user.remove':
      return ['-', `userdel ${a.name}`];
    case 'dir.create':
      return ['+', `mkdir ${a.path} (${a.owner}:${a.group} ${a.mode})`];
    case 'file.write':
      return [a.oldSha256 === null ? '+' : '~', `write ${a.path} (${a.owner}:${a.group} ${a.mode})`];
    case 'path.chown':
      return ['~', `chown ${a.owner}:${a.group} ${a.path}`];
    case 'path.chmod':
      return ['~', `chmod ${a.mode} ${a.path}`];
    case 'path.remove':
      return ['-', `remove ${a.path}${a.pathType === 'dir' ? '/' : ''}`];
    case 'systemd.daemon-reload':
      return ['~', 'systemctl daemon-reload'];
    case 'service.enable':
      return ['~', `enable ${a.unit}`];
    case 'service.disable':
      return ['-', `disable ${a.unit}`];
    case 'service.start':
      return ['~', `start ${a.unit}`];
    case 'service.stop':
      return ['-', `stop ${a.unit}`];
    case 'service.restart':
      return ['~', `restart ${a.unit}`];
  }
}

function describeList(parts: string[]): string {
  const kept = parts.filter(Boolean);
  return kept.length > 0 ? ` (${kept.join(', ')})` : '';
}

/** What a file write changes in the content, below its line. Never the content of a secret. */
function contentLines(a: Extract<HostAction, { type: 'file.write' }>, context: number, paint: Paint): string[] {
  if (a.contentKind === 'secret') return [a.oldSha256 === null ? '(secret, new file)' : '(secret changed)'];
  const canDiff = a.contentKind === 'text' && a.newText !== undefined && (a.oldSha256 === null || a.oldText !== undefined);
  if (!canDiff) {
    const size = a.size === null ? '' : `, ${formatSize(a.size)}`;
    return [`sha256 ${digest(a.oldSha256)} → ${digest(a.sha256)}${size}`];
  }
  const patch = createTwoFilesPatch(a.oldSha256 === null ? '/dev/null' : a.path, a.path, a.oldText ?? '', a.newText ?? '', undefined, undefined, {
    context,
    headerOptions: FILE_HEADERS_ONLY,
  });
  const lines = patch.replace(/\n$/, '').split('\n');
  if (lines.length <= 2 && a.oldSha256 === null) return ['(empty file)'];
  if (lines.length <= 2) return [`(same text, line endings or encoding differ) sha256 ${digest(a.oldSha256)} → ${digest(a.sha256)}`];
  return lines.map((l) => {
    if (l.startsWith('+++') || l.startsWith('---')) return paint(BOLD, l);
    if (l.startsWith('@@')) return paint(CYAN, l);
    if (l.startsWith('+')) return paint(GREEN, l);
    if (l.startsWith('-')) return paint(RED, l);
    return l;
  });
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function withReason(text: string, reason: string): string {
  return reason === '' || text.endsWith(reason) ? text : `${text}  ${reason}`;
}

export function renderHostAction(a: HostAction, opts: PlanTextOptions = {}): string[] {
  const paint = painter(opts.color ?? false);
  const [sign, text] = describeHost(a);
  const colour = sign === '+' ? GREEN : sign === '-' ? RED : YELLOW;
  const out = [`${paint(colour, sign)} ${withReason(text, a.reason)}`];
  if (a.type === 'file.write') out.push(...contentLines(a, opts.context ?? 3, paint).map((l) => `    ${l}`));
  return out;
}

/** Files read "… changed"; other causes (a failed unit, a restart still owed) as they are. */
function restartCauses(because: readonly string[]): string {
  const files = because.filter((b) => b.startsWith('/'));
  const other = because.filter((b) => !b.startsWith('/'));
  return [...(files.length ? [`${files.join(', ')} changed`] : []), ...other].join('; ');
}

export function describeEtcdAction(a: EtcdAction): string {
  switch (a.type) {
    case 'etcd.bootstrap':
      return withReason(`bootstrap the cluster: ${a.members.join(', ')}`, a.reason);
    case 'etcd.member.add':
      return withReason(`add member ${a.name} (peer ${a.peerUrl})`, a.reason);
    case 'etcd.member.promote':
      return withReason(`promote learner ${a.name} (id ${a.memberId})`, a.reason);
    case 'etcd.member.remove':
      return withReason(`remove member ${a.name} (id ${a.memberId})${a.moveDataDirAside ? ', move its data dir aside' : ''}`, a.reason);
    case 'etcd.leader.move':
      return withReason(`move leadership from ${a.fromMemberId} to ${a.toMemberId}`, a.reason);
    case 'etcd.member.restart':
      return withReason(`restart ${a.name}: ${restartCauses(a.because)}`, a.reason);
  }
}

function renderDrift(d: Drift): string {
  if (d.field === 'managed') return `? ${d.resource}: ${d.want}, ${d.have}`;
  return `? ${d.resource} ${d.field}: want ${abbreviateDigest(d.want)}, have ${abbreviateDigest(d.have)}`;
}

function renderNode(n: NodePlan, opts: PlanTextOptions, paint: Paint): string[] {
  if (!n.reachable) {
    // A NodeError's message already starts with the node's name.
    const error = n.error?.startsWith(`${n.node}: `) ? n.error.slice(n.node.length + 2) : (n.error ?? 'no facts');
    return [`${paint(BOLD, n.node)}: ${paint(RED, 'unreachable')}: ${error}`];
  }
  const refusals = n.refusals ?? [];
  if (n.actions.length === 0 && n.reported.length === 0 && refusals.length === 0) return [`${paint(BOLD, n.node)}: no changes`];
  const out = [`${paint(BOLD, n.node)}: ${n.actions.length === 0 ? 'no changes' : plural(n.actions.length, 'change', 'changes')}`];
  for (const a of n.actions) out.push(...renderHostAction(a, opts).map((l) => `  ${l}`));
  if (refusals.length > 0) {
    out.push('  refused:');
    for (const r of refusals) out.push(`    ${paint(RED, '!')} ${r.message}`, `      hint: ${r.hint}`);
  }
  if (n.reported.length > 0) {
    out.push('  reported, not changed:');
    for (const d of n.reported) out.push(`    ${renderDrift(d)}`);
  }
  return out;
}

function painter(color: boolean): Paint {
  return color ? (code, s) => `\u001b[${code}m${s}\u001b[0m` : (_code, s) => s;
}

export function renderPlanText(plan: Plan, opts: PlanTextOptions = {}): string {
  const paint = painter(opts.color ?? false);
  const out: string[] = [];
  for (const n of plan.nodes) out.push(...renderNode(n, opts, paint), '');
  if (plan.etcd.length > 0) {
    out.push(paint(BOLD, 'etcd:'));
    plan.etcd.forEach((a, i) => out.push(`  ${i + 1}. ${describeEtcdAction(a)}`));
    out.push('');
  }
  if (plan.refusals.length > 0) {
    out.push(paint(RED, 'Refused:'));
    for (const r of plan.refusals) out.push(`  ! ${r.message}`, `    hint: ${r.hint}`);
    out.push('');
  }
  out.push(summaryLine(plan));
  return out.join('\n') + '\n';
}

export function summaryLine(plan: Plan): string {
  const count = planActionCount(plan);
  const unreachable = plan.nodes.filter((n) => !n.reachable).length;
  const refused = plan.nodes.reduce((k, n) => k + (n.refusals?.length ?? 0), 0) + plan.refusals.length;
  const reported = plan.nodes.reduce((k, n) => k + n.reported.length, 0);
  const notes = [
    unreachable > 0 ? `${plural(unreachable, 'node', 'nodes')} unreachable` : '',
    refused > 0 ? `${plural(refused, 'change', 'changes')} refused` : '',
    reported > 0 ? `${plural(reported, 'difference', 'differences')} reported, not changed` : '',
  ].filter(Boolean);
  const tail = notes.length > 0 ? ` (${notes.join('; ')})` : '';
  if (count > 0) return `Plan: ${count} to change on ${plural(nodesWithChanges(plan).length, 'node', 'nodes')}${tail}`;
  if (planHasErrors(plan)) return `No changes on the nodes that could be planned${tail}`;
  return `No changes. The nodes match the desired state at ${shortCommit(plan.commit)}.${tail}`;
}
