/**
 * The sh scripts apply runs on a node, built as plain strings (pure, no I/O).
 * Every value from the desired state reaches the shell through shellQuote()
 * as one literal word, or as a positional parameter of a function defined
 * here; nothing is ever interpolated unquoted. The scripts use only POSIX sh
 * and the coreutils, shadow and systemd tools of a Debian node.
 */
import { shellQuote as q } from '../connect/transport.js';
import { CONVERGE_STATE_DIR } from '../facts/probe.js';
import type { HostAction } from '../plan/types.js';

/** converge's own state on each node (shared with the facts probe); root-only. */
export const STATE_DIR = CONVERGE_STATE_DIR;
/** Replaced file contents, content-addressed: BACKUP_DIR/<sha256 hex>. */
export const BACKUP_DIR = `${STATE_DIR}/backup/sha256`;

/** A bad value in an action: the step fails before anything runs on the node. */
export class ScriptValueError extends Error {}

/** An absolute, normalised path: no empty, `.` or `..` components, no trailing slash. */
export function checkPath(path: string): string {
  if (path.includes('\0')) throw new ScriptValueError('path contains a NUL byte');
  if (!path.startsWith('/') || path === '/') throw new ScriptValueError(`not an absolute file path: ${JSON.stringify(path)}`);
  for (const part of path.slice(1).split('/')) {
    if (part === '' || part === '.' || part === '..') throw new ScriptValueError(`path is not normalised: ${JSON.stringify(path)}`);
  }
  return path;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

export function baseOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Every ancestor of an absolute path, outermost first, without `/` itself. */
export function ancestorsOf(path: string): string[] {
  const out: string[] = [];
  for (let p = parentOf(path); p !== '/'; p = parentOf(p)) out.unshift(p);
  return out;
}

/** A mode for chmod with an explicit leading zero, so that set-id bits of directories are set or cleared exactly. */
export function chmodMode(mode: string): string {
  if (!/^[0-7]{3,4}$/.test(mode)) throw new ScriptValueError(`not an octal mode: ${JSON.stringify(mode)}`);
  return `0${mode.padStart(4, '0')}`;
}

/** An account name for chown and the shadow tools. */
export function checkName(name: string, what: string): string {
  if (name === '' || /[:\s\0,]/.test(name) || name.startsWith('-')) throw new ScriptValueError(`not a valid ${what} name: ${JSON.stringify(name)}`);
  return name;
}

function ownerGroup(owner: string, group: string): string {
  return `${checkName(owner, 'owner')}:${checkName(group, 'group')}`;
}

/** Truncate to at most `max` UTF-8 bytes without splitting a character. */
function truncateUtf8(s: string, max: number): string {
  let out = '';
  let bytes = 0;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/**
 * Name prefix of the temporary files for a target: `.<base>.converge-`, in the
 * target's directory. A temporary file left by a killed pass matches it and is
 * removed by the next write or removal of the same target.
 */
export function tempPrefix(path: string): string {
  return `.${truncateUtf8(baseOf(path), 96)}.converge-`;
}

/**
 * Shell functions shared by the write scripts. `put` writes one file
 * atomically; its arguments are positional so no value is ever parsed as
 * code:
 *   put TARGET DIR PREFIX OWNER:GROUP MODE SHA256 BACKUP SOURCE
 * SOURCE is `-` (all of stdin), `+N` (the next N bytes of stdin) or an
 * absolute path on the node. On success it sets $bk to the digest of the
 * replaced content (empty when there was none). Any failure removes the
 * temporary file, leaves the target untouched and exits the script with 1.
 */
const PUT_LIB = `umask 077
tmp=
bknew=
cleanup() {
  if [ -n "$tmp" ]; then rm -f -- "$tmp"; fi
  if [ -n "$bknew" ]; then rm -f -- "$bknew"; fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
die() { printf 'converge: %s\\n' "$1" >&2; exit 1; }
sum() { s=$(sha256sum < "$1") || die "cannot compute the sha256 of $1"; printf '%s' "\${s%% *}"; }
put() {
  t=$1 d=$2 pre=$3 own=$4 mode=$5 want=$6 backup=$7 src=$8
  bk=
  [ -d "$d" ] || die 'the parent directory does not exist'
  [ -L "$t" ] && die 'the target is a symlink: refusing to write through it'
  [ -d "$t" ] && die 'the target is a directory'
  # stale temporary files of this target, from a killed pass; tested first, so that no rm runs when there are none
  for x in "$d/$pre"*; do
    if [ -e "$x" ] || [ -L "$x" ]; then rm -f -- "$x"; fi
  done
  tmp=$(mktemp -- "$d/\${pre}XXXXXXXX") || { tmp=; die 'cannot create a temporary file'; }
  case $src in
    -) cat > "$tmp" || die 'writing the content failed' ;;
    +*) head -c "\${src#+}" > "$tmp" || die 'writing the content failed' ;;
    *) [ -f "$src" ] || die "no such file on the node: $src"
       cat -- "$src" > "$tmp" || die 'copying the content failed' ;;
  esac
  got=$(sum "$tmp")
  [ "$got" = "$want" ] || die "the content on the node has sha256 $got, expected $want (incomplete or changed upload)"
  # the target's owner and mode only once the content is verified: until then the temporary file is root-only
  chown -- "$own" "$tmp" || die 'setting the owner failed'
  chmod -- "$mode" "$tmp" || die 'setting the mode failed'
  sync -- "$tmp" || die 'fsync of the temporary file failed'
  if [ "$backup" = 1 ] && [ -f "$t" ] && [ ! -L "$t" ]; then
    b=${BACKUP_DIR}
    mkdir -p -- "$b" && chmod 0700 -- "${STATE_DIR}/backup" "$b" || die 'cannot create the backup directory'
    bt="$b/.new-$$"
    rm -f -- "$bt"
    linked=
    if ln -- "$t" "$bt" 2>/dev/null; then linked=1
    else cp -- "$t" "$bt" && chmod 0600 -- "$bt" && sync -- "$bt" || { rm -f -- "$bt"; die 'cannot back up the current content'; }
    fi
    bk=$(sum "$bt")
    if [ -e "$b/$bk" ]; then rm -f -- "$bt"
    else
      mv -fT -- "$bt" "$b/$bk" || { rm -f -- "$bt"; die 'cannot back up the current content'; }
      if [ -n "$linked" ]; then bknew="$b/$bk"; fi
      sync -- "$b" 2>/dev/null
    fi
  fi
  [ -L "$t" ] && die 'the target is a symlink: refusing to write through it'
  [ -d "$t" ] && die 'the target is a directory'
  mv -fT -- "$tmp" "$t" || die 'renaming the temporary file over the target failed'
  tmp=
  if [ -n "$bknew" ]; then
    # the backup was a hard link to the old file, which is no longer live: make it root-only
    chown 0:0 -- "$bknew" && chmod 0600 -- "$bknew"
    bknew=
  fi
  sync -- "$d" || printf 'converge: warning: fsync of %s failed\\n' "$d" >&2
}
`;

export interface PutArgs {
  path: string;
  owner: string;
  group: string;
  mode: string;
  sha256: string;
  /** Keep the replaced content under BACKUP_DIR. */
  backup: boolean;
  /** `stdin`: all of stdin; a number: that many bytes of stdin; `{ nodePath }`: a file on the node. */
  source: 'stdin' | number | { nodePath: string };
}

function putCall(a: PutArgs): string {
  const path = checkPath(a.path);
  if (!/^[0-9a-f]{64}$/.test(a.sha256)) throw new ScriptValueError(`not a sha256 digest: ${JSON.stringify(a.sha256)}`);
  let src: string;
  if (a.source === 'stdin') src = '-';
  else if (typeof a.source === 'number') {
    if (!Number.isSafeInteger(a.source) || a.source < 0) throw new ScriptValueError(`bad size ${a.source}`);
    src = `+${a.source}`;
  } else src = checkPath(a.source.nodePath);
  const args = [path, parentOf(path), tempPrefix(path), ownerGroup(a.owner, a.group), chmodMode(a.mode), a.sha256, a.backup ? '1' : '0', src];
  return `put ${args.map(q).join(' ')}`;
}

/**
 * One atomic write (one exec). Prints `ok <sha256 of the replaced content>`
 * (or `ok -`) on success; on failure exits 1 with the reason on stderr.
 */
export function writeFileScript(a: PutArgs): string {
  return `${PUT_LIB}${putCall(a)}\nprintf 'ok %s\\n' "\${bk:--}"\n`;
}

/** Several atomic writes in one exec, in order, each reading its own part of stdin. */
export function writeFilesScript(files: PutArgs[], prelude = ''): string {
  return `${PUT_LIB}${prelude}${files.map(putCall).join('\n')}\nprintf 'ok\\n'\n`;
}

/** Parse the success line of writeFileScript: the digest of the replaced content, or null. */
export function parseWriteOutput(stdout: string): { ok: boolean; backupSha256: string | null } {
  const m = /^ok ([0-9a-f]{64}|-)$/m.exec(stdout);
  if (!m) return { ok: false, backupSha256: null };
  return { ok: true, backupSha256: m[1] === '-' ? null : (m[1] ?? null) };
}

/**
 * Runs each step in a subshell and reports it on stdout as a line starting
 * with the nonce (which no output of a command can predict):
 *   N ok I | N fail I <base64 output> | N parent I K | N unit I <base64 state> <base64 journal>
 * and each write (put, in the script's own shell) as N wrote I <sha256 of
 * the replaced content, or ->. The first failing step or write ends the
 * script. Its `die` also serves put: a write's reason goes to stderr.
 */
const BATCH_LIB = `exec 3>&1
b64() { base64 | tr -d '\\n'; }
die() { printf '%s\\n' "$1" >&2; exit 1; }
step() {
  i=$1
  shift
  if out=$([ -z "$um" ] || umask "$um"; "$@" 2>&1 </dev/null); then printf '%s ok %s\\n' "$N" "$i"
  else printf '%s fail %s %s\\n' "$N" "$i" "$(printf '%s' "$out" | b64)"; exit 1
  fi
}
unit_report() {
  st=$(systemctl show -p ActiveState -p SubState -p Result -- "$2" 2>&1 | tr '\\n' ' ')
  printf '%s unit %s %s %s\\n' "$N" "$1" "$(printf '%s' "$st" | b64)" "$(journalctl -u "$2" -n 20 --no-pager -o cat 2>&1 | b64)" >&3
}
wait_active() {
  sleep 1
  n=0
  while :; do
    s=$(systemctl is-active -- "$1")
    case $s in
      active) return 0 ;;
      activating|reloading)
        case $(systemctl show -p SubState --value -- "$1") in auto-restart) return 1 ;; esac ;;
      *) return 1 ;;
    esac
    n=$((n + 1))
    [ "$n" -ge 120 ] && return 1
    sleep 0.5
  done
}
`;

/** The body of one batch step: a sh function body for `action`. `reloadFollows`: a later step of the batch is a daemon-reload. */
function stepBody(index: number, a: Exclude<HostAction, { type: 'file.write' }>, reloadFollows: boolean): string[] {
  switch (a.type) {
    case 'group.create': {
      const opts = [a.system ? '--system' : null, a.gid === undefined ? null : `--gid ${q(String(a.gid))}`].filter(Boolean);
      return [`groupadd ${opts.join(' ')}${opts.length ? ' ' : ''}-- ${q(checkName(a.name, 'group'))}`];
    }
    case 'group.remove':
      return [`n=${q(checkName(a.name, 'group'))}`, 'getent group "$n" >/dev/null || exit 0', 'groupdel -- "$n"'];
    case 'user.create': {
      const opts = [
        a.system ? '--system --no-create-home' : '--create-home',
        a.uid === undefined ? null : `--uid ${q(String(a.uid))}`,
        `--gid ${q(checkName(a.group, 'group'))}`,
        a.groups.length ? `--groups ${q(a.groups.map((g) => checkName(g, 'group')).join(','))}` : null,
        `--home-dir ${q(checkPath(a.home))}`,
        `--shell ${q(checkPath(a.shell))}`,
        a.comment === undefined ? null : `--comment ${q(a.comment)}`,
      ].filter(Boolean);
      return [`useradd ${opts.join(' ')} -- ${q(checkName(a.name, 'user'))}`];
    }
    case 'user.modify': {
      const opts: string[] = [];
      for (const c of a.changes) {
        if (c.field === 'group') opts.push(`--gid ${q(checkName(a.group, 'group'))}`);
        else if (c.field === 'groups') opts.push(`--groups ${q(a.groups.map((g) => checkName(g, 'group')).join(','))}`);
        else if (c.field === 'home') opts.push(`--home ${q(checkPath(a.home))}`);
        else if (c.field === 'shell') opts.push(`--shell ${q(checkPath(a.shell))}`);
        else {
          if (a.uid === undefined) throw new ScriptValueError(`user.modify ${a.name} changes the uid but gives none`);
          opts.push(`--uid ${q(String(a.uid))}`);
        }
      }
      if (!opts.length) throw new ScriptValueError(`user.modify ${a.name} changes nothing`);
      return [`usermod ${opts.join(' ')} -- ${q(checkName(a.name, 'user'))}`];
    }
    case 'user.remove':
      return [
        `n=${q(checkName(a.name, 'user'))}`,
        'getent passwd "$n" >/dev/null || exit 0',
        'g=$(getent group "$n") || g=',
        'userdel -- "$n" || exit 1',
        // userdel also deletes the group of the same name (USERGROUPS_ENAB); that group is a resource of its own: put it back as it was
        'if [ -n "$g" ] && ! getent group "$n" >/dev/null; then',
        '  groupadd --gid "$(printf %s "$g" | cut -d: -f3)" -- "$n" || die "userdel removed the group $n and it could not be put back"',
        'fi',
      ];
    case 'dir.create': {
      const p = q(checkPath(a.path));
      const lines = [
        `p=${p}`,
        `[ -L "$p" ] && die 'the path is a symlink'`,
        `if [ -e "$p" ] && [ ! -d "$p" ]; then die 'the path exists and is not a directory'; fi`,
      ];
      ancestorsOf(a.path).forEach((anc, k) => {
        lines.push(`if [ ! -e ${q(anc)} ]; then mkdir -m 0755 -- ${q(anc)} || exit 1; printf '%s parent %s %s\\n' "$N" ${index} ${k} >&3; fi`);
      });
      lines.push(
        `[ -d "$p" ] || mkdir -m 0700 -- "$p" || exit 1`,
        `chown -- ${q(ownerGroup(a.owner, a.group))} "$p" || exit 1`,
        `chmod -- ${q(chmodMode(a.mode))} "$p" || exit 1`,
      );
      return lines;
    }
    case 'path.chown':
      return [
        `p=${q(checkPath(a.path))}`,
        `[ -L "$p" ] && die 'the path is a symlink: refusing to follow it'`,
        `[ -e "$p" ] || die 'the path does not exist'`,
        `m=$(stat -c %a -- "$p") || exit 1`,
        `chown -- ${q(ownerGroup(a.owner, a.group))} "$p" || exit 1`,
        // chown clears the set-id bits of a file: put the mode back as it was
        `chmod -- "0$(printf %04d "$m")" "$p" || exit 1`,
      ];
    case 'path.chmod':
      return [
        `p=${q(checkPath(a.path))}`,
        `[ -L "$p" ] && die 'the path is a symlink: refusing to follow it'`,
        `[ -e "$p" ] || die 'the path does not exist'`,
        `chmod -- ${q(chmodMode(a.mode))} "$p" || exit 1`,
      ];
    case 'path.remove': {
      const path = checkPath(a.path);
      const p = q(path);
      if (a.pathType === 'file') {
        return [
          `p=${p}`,
          `if [ -d "$p" ] && [ ! -L "$p" ]; then die 'the path is a directory, expected a file'; fi`,
          `rm -f -- "$p" || exit 1`,
          `rm -f -- ${q(parentOf(path))}/${q(tempPrefix(path))}*`,
        ];
      }
      return [
        `p=${p}`,
        `[ -L "$p" ] && die 'the path is a symlink, expected a directory'`,
        `[ -e "$p" ] || exit 0`,
        `rmdir -- "$p" || die 'the directory is not empty: files converge does not manage are left in it'`,
      ];
    }
    case 'systemd.daemon-reload':
      return ['systemctl daemon-reload || exit 1'];
    case 'service.enable':
    case 'service.disable':
      // systemctl reloads systemd after enabling unless told not to: skipped when a daemon-reload follows anyway.
      return [`systemctl ${a.type.slice('service.'.length)}${reloadFollows ? ' --no-reload' : ''} -- ${q(a.unit)} || exit 1`];
    case 'service.stop':
      return [`systemctl stop -- ${q(a.unit)} || exit 1`];
    case 'service.start':
    case 'service.restart': {
      const verb = a.type.slice('service.'.length);
      return [
        `u=${q(a.unit)}`,
        // A failed unit's past starts count against its start limit (5 in 10 s by default): quick rollbacks and
        // retries reach it, and systemd would then refuse this deliberate start with 'start-limit-hit'.
        `if systemctl is-failed --quiet -- "$u"; then systemctl reset-failed -- "$u"; fi`,
        `if systemctl ${verb} -- "$u" && wait_active "$u"; then exit 0; fi`,
        `unit_report ${index} "$u"`,
        `die "$u did not become active after ${verb}"`,
      ];
    }
  }
}

export type BatchAction = Exclude<HostAction, { type: 'file.write' }>;

/** Creates converge's state folder, root-only, before its files are written. */
export const STATE_DIR_PRELUDE = `mkdir -p -- ${q(STATE_DIR)} && chmod 0700 -- ${q(STATE_DIR)} || die 'cannot create ${STATE_DIR}'\n`;

/**
 * A step of a steps script: an action; an atomic write of the next
 * `put.source` bytes of stdin; or converge's own records on the node (its
 * inventory), written the same way and reported as `N recorded <what>`.
 */
export type ScriptStep = { index: number; action: BatchAction } | { index: number; put: PutArgs } | { record: 'intent' | 'final'; puts: PutArgs[] };

function stepEntry(s: ScriptStep, reloadFollows: boolean): string {
  if ('record' in s) return `${STATE_DIR_PRELUDE}${s.puts.map((p) => `${putCall(p)}\n`).join('')}printf '%s recorded %s\\n' "$N" ${s.record}\n`;
  if ('put' in s) return `${putCall(s.put)}\nprintf '%s wrote %s %s\\n' "$N" ${s.index} "\${bk:--}"\n`;
  const body = stepBody(s.index, s.action, reloadFollows).map((l) => `  ${l}\n`).join('');
  return `s${s.index}() {\n${body}}\nstep ${s.index} s${s.index}\n`;
}

/**
 * One exec for a run of consecutive steps: actions that need no upload, and
 * small writes whose contents follow one another on stdin. Each action runs
 * in its own subshell (so `exit` in it ends only that step) with the node's
 * umask; the writes run under umask 077, their temporary files root-only.
 */
export function stepsScript(steps: ScriptStep[], nonce: string): string {
  if (!/^[0-9a-f]{8,}$/.test(nonce)) throw new ScriptValueError('bad nonce');
  const writes = steps.some((s) => 'put' in s || 'puts' in s);
  const parts = [`N=${nonce}\n`, writes ? `um=$(umask)\n${PUT_LIB}` : 'um=\n', BATCH_LIB];
  for (const [k, step] of steps.entries()) {
    const reloadFollows = steps.slice(k + 1).some((s) => 'action' in s && s.action.type === 'systemd.daemon-reload');
    parts.push(stepEntry(step, reloadFollows));
  }
  return parts.join('');
}

/**
 * The bytes one step adds to a steps script once the script is quoted as
 * the remote shell's argument (each ' becomes 4 bytes); 0 for values the
 * script refuses, which fail before anything is sent.
 */
export function stepBytes(s: ScriptStep): number {
  try {
    const entry = stepEntry(s, true);
    return Buffer.byteLength(entry) + 3 * (entry.split("'").length - 1);
  } catch (e) {
    if (e instanceof ScriptValueError) return 0;
    throw e;
  }
}

export interface BatchLine {
  /** -1 for a `recorded` line. */
  index: number;
  kind: 'ok' | 'wrote' | 'fail' | 'parent' | 'unit' | 'recorded';
  /** recorded: which record (intent, final). */
  record?: string;
  /** wrote: the digest of the replaced content, null when there was none. */
  backup?: string | null;
  /** fail: the step's output; unit: its state. */
  text?: string;
  /** parent: which ancestor (index into ancestorsOf). */
  ancestor?: number;
  /** unit: the last journal lines. */
  journal?: string[];
}

const unb64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

/** The report lines of a batch script, in order; anything else on stdout is ignored. */
export function parseBatchOutput(stdout: string, nonce: string): BatchLine[] {
  const out: BatchLine[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.split(' ');
    if (f[0] !== nonce || f.length < 3) continue;
    if (f[1] === 'recorded') {
      out.push({ index: -1, kind: 'recorded', record: f[2] as string });
      continue;
    }
    const index = Number(f[2]);
    if (!Number.isInteger(index)) continue;
    switch (f[1]) {
      case 'ok':
        out.push({ index, kind: 'ok' });
        break;
      case 'wrote':
        if (f[3] === '-' || /^[0-9a-f]{64}$/.test(f[3] ?? '')) out.push({ index, kind: 'wrote', backup: f[3] === '-' ? null : (f[3] as string) });
        break;
      case 'fail':
        out.push({ index, kind: 'fail', text: unb64(f[3]).trim() });
        break;
      case 'parent':
        out.push({ index, kind: 'parent', ancestor: Number(f[3]) });
        break;
      case 'unit': {
        const journal = unb64(f[4]).split('\n');
        while (journal.length && journal[journal.length - 1] === '') journal.pop();
        out.push({ index, kind: 'unit', text: unb64(f[3]).trim(), journal });
        break;
      }
    }
  }
  return out;
}

/** The useful part of a failed script's stderr, one line. */
export function reasonOf(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => l.replace(/^converge: /, ''));
  const text = lines.join('; ');
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

/** An error's message without the node prefix that NodeError adds, for wrapping it in another one. */
export function bare(e: unknown, node: string): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.startsWith(`${node}: `) ? m.slice(node.length + 2) : m;
}
