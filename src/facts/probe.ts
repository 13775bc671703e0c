/**
 * The facts probe: one fixed POSIX sh script per node that gathers every
 * fact in one exec. What to look at (paths, accounts, units) travels as data
 * on stdin, one base64 value per line, and reaches the tools as arguments
 * through xargs -0: no value from the desired state is ever part of the
 * script text. The output is a stream of NUL-terminated tokens (see
 * parse.ts). Needs GNU coreutils and findutils (find -printf, sha256sum -z,
 * sort -z, comm -z, cut -z, base64 -w0), getent, id, awk and systemctl.
 */
import { shellQuote } from '../connect/transport.js';

/** converge's own state on each node (apply writes it). */
export const CONVERGE_STATE_DIR = '/var/lib/converge';

/** Text files up to this size are sent back when their digest differs (for diffs in the plan). */
export const MAX_TEXT_BYTES = 64 * 1024;

export const PROBE_FORMAT = 'converge-probe 1';

export interface ProbeRequest {
  node: string;
  /** Absolute paths to stat (lstat semantics) and to hash when they are regular files. */
  paths: string[];
  /**
   * Text files whose current content is wanted when its digest differs from
   * `sha256` and it is at most MAX_TEXT_BYTES. Never secrets or artifacts.
   */
  textWanted: { path: string; sha256: string }[];
  users: string[];
  groups: string[];
  units: string[];
  /** Directories whose whole content is listed (recursively, not following symlinks). */
  listDirs: string[];
  /** etcd data dir whose state (exists, has member/) is wanted, or null. */
  etcdDataDir: string | null;
  /** Where inventory.json and managed-paths live on the node. */
  stateDir: string;
}

/** A request value the probe cannot carry: a bug upstream, validation should have caught it. */
export class ProbeRequestError extends Error {}

function checkValue(v: string, what: string): void {
  if (v === '') throw new ProbeRequestError(`empty ${what} in a facts request`);
  if (v.includes('\0')) throw new ProbeRequestError(`${what} contains a NUL byte: ${JSON.stringify(v)}`);
}

function checkPath(p: string, what: string): void {
  checkValue(p, what);
  if (!p.startsWith('/')) throw new ProbeRequestError(`${what} is not absolute: ${JSON.stringify(p)}`);
}

/** The request as stdin lines "TAG BASE64", ended by a "." line so that truncation is detected. */
export function encodeRequest(r: ProbeRequest): Buffer {
  const lines: string[] = [];
  const add = (tag: string, v: string) => lines.push(`${tag} ${Buffer.from(v, 'utf8').toString('base64')}`);
  for (const p of r.paths) {
    checkPath(p, 'path');
    add('p', p);
  }
  if (r.etcdDataDir !== null) {
    checkPath(r.etcdDataDir, 'etcd data dir');
    add('p', r.etcdDataDir);
    add('p', `${r.etcdDataDir.replace(/\/+$/, '')}/member`);
  }
  for (const t of r.textWanted) {
    checkPath(t.path, 'path');
    if (!/^[0-9a-f]{64}$/.test(t.sha256)) throw new ProbeRequestError(`not a sha256: ${JSON.stringify(t.sha256)}`);
    // exactly a `sha256sum -z` record, so that the script can compare with comm
    add('w', `${t.sha256}  ${t.path}`);
  }
  for (const d of r.listDirs) {
    checkPath(d, 'directory');
    add('d', d);
  }
  for (const u of r.users) {
    checkValue(u, 'user name');
    add('u', u);
  }
  for (const g of r.groups) {
    checkValue(g, 'group name');
    add('g', g);
  }
  for (const n of r.units) {
    checkValue(n, 'unit name');
    add('n', n);
  }
  lines.push('.');
  return Buffer.from(`${lines.join('\n')}\n`, 'latin1');
}

/**
 * Decodes base64 lines into NUL-terminated values, one file per tag. With
 * `tag` set, every line is a bare base64 value (the managed-paths file);
 * only absolute paths are kept, and they are also printed as the @M section.
 * Otherwise lines are "TAG BASE64" and a final "." line must be present.
 * Values with a NUL byte are refused.
 */
const DECODE_AWK = String.raw`
BEGIN {
  b = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for (i = 0; i < 64; i++) v[substr(b, i + 1, 1)] = i
  re = "^([A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/])*([A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/=]=)?$"
  if (tag != "") printf "@M%c", 0
}
function dec(s,   n, i, c3, c4, x, out, k) {
  out = ""; n = length(s)
  for (i = 1; i <= n; i += 4) {
    c3 = substr(s, i + 2, 1); c4 = substr(s, i + 3, 1)
    x = v[substr(s, i, 1)] * 262144 + v[substr(s, i + 1, 1)] * 4096 + (c3 == "=" ? 0 : v[c3] * 64) + (c4 == "=" ? 0 : v[c4])
    k = int(x / 65536); if (k == 0) return ""; out = out sprintf("%c", k)
    if (c3 != "=") { k = int(x / 256) % 256; if (k == 0) return ""; out = out sprintf("%c", k) }
    if (c4 != "=") { k = x % 256; if (k == 0) return ""; out = out sprintf("%c", k) }
  }
  return out
}
tag != "" {
  if (NF == 1 && $1 ~ re) { s = dec($1); if (substr(s, 1, 1) == "/") { printf "%s%c", s, 0 > tag; printf "%s%c", s, 0 } }
  next
}
NF == 1 && $1 == "." { done = 1; next }
NF == 2 && $1 ~ /^[pwdugn]$/ && $2 ~ re { s = dec($2); if (s == "") bad = 1; else printf "%s%c", s, 0 > $1; next }
{ bad = 1 }
END {
  if (tag != "") printf "@.%c", 0
  else if (bad || !done) exit 3
}
`;

/**
 * Output tokens (each NUL-terminated):
 *   header: PROBE_FORMAT
 *   @M path… @.            managed paths listed on the node
 *   V base64               inventory.json
 *   @L (dir path type user group uid gid mode size target)… @.   entries of listed directories
 *   @S (path type user group uid gid mode size target)… @.       requested and managed paths
 *   @H "sha256  path"… @.   (sha256sum -z records)
 *   T path base64          current content of a changed small text file
 *   P text                 getent passwd output
 *   I user text            id -Gn output, per requested user
 *   G text                 getent group output
 *   U text                 systemctl show output
 *   X step code stderr     a step failed
 *   Z                      end
 * Every tool writes straight to stdout where it can: each process costs a
 * fork, and the probe runs on every pass.
 */
const SCRIPT_BODY = String.raw`
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 077
T=$(mktemp -d) || exit 90
trap 'cd /; rm -rf "$T"' EXIT
cd "$T" || exit 90
: > p; : > w; : > d; : > u; : > g; : > n; : > m
fail() { printf 'X\0%s\0%s\0' "$1" "$2"; head -c 4000 e; printf '\0'; }
awk "$DECODE" || { echo 'converge probe: malformed or truncated request on stdin' >&2; exit 91; }
printf '%s\0' "$FORMAT"
if [ -f "$ST/managed-paths" ]; then
  awk -v tag=m "$DECODE" "$ST/managed-paths" 2>e || fail managed-paths $?
fi
if [ -f "$ST/inventory.json" ]; then
  printf 'V\0'; base64 -w0 < "$ST/inventory.json" 2>e; r=$?; printf '\0'
  [ "$r" -eq 0 ] || fail inventory "$r"
fi
F='%y\0%u\0%g\0%U\0%G\0%m\0%s\0%l\0'
if [ -s d ]; then
  printf '@L\0'
  xargs -0 sh -c 'exec find -P "$@" -mindepth 1 -printf "%H\0%p\0$0"' "$F" < d 2>/dev/null
  printf '@.\0'
fi
printf '@S\0'
cat m >> p
xargs -0 -r sh -c 'exec find -P "$@" -maxdepth 0 -printf "%p\0$0"' "$F" < p 2>/dev/null
printf '@.\0'
xargs -0 -r sh -c 'exec find -P "$@" -maxdepth 0 -type f -print0' sh < p 2>/dev/null | xargs -0 -r sha256sum -z -- > h 2>e || fail sha256sum $?
printf '@H\0'; cat h; printf '@.\0'
if [ -s w ]; then
  sort -z h > hs; sort -z w > ws
  comm -z -13 hs ws | cut -z -c 67- | xargs -0 -r sh -c '
    for f do
      [ -f "$f" ] && [ ! -h "$f" ] || continue
      s=$(wc -c < "$f") || continue
      [ "$s" -le "$0" ] || continue
      printf "T\0%s\0" "$f"; base64 -w0 < "$f"; printf "\0"
    done' "$MAXTEXT"
fi
if [ -s u ]; then
  printf 'P\0'
  xargs -0 sh -c 'getent passwd "$@"; r=$?; [ "$r" -eq 2 ] && exit 0; exit "$r"' sh < u 2>e; r=$?; printf '\0'
  [ "$r" -eq 0 ] || fail getent-passwd "$r"
  xargs -0 sh -c 'for u do printf "I\0%s\0" "$u"; id -Gn -- "$u" 2>/dev/null; printf "\0"; done' sh < u
fi
if [ -s g ]; then
  printf 'G\0'
  xargs -0 sh -c 'getent group "$@"; r=$?; [ "$r" -eq 2 ] && exit 0; exit "$r"' sh < g 2>e; r=$?; printf '\0'
  [ "$r" -eq 0 ] || fail getent-group "$r"
fi
if [ -s n ]; then
  printf 'U\0'
  xargs -0 sh -c 'exec systemctl show -p Id,Names,LoadState,ActiveState,UnitFileState,NeedDaemonReload -- "$@"' sh < n 2>e; r=$?; printf '\0'
  [ "$r" -eq 0 ] || fail systemctl "$r"
fi
printf 'Z\0'
`;

export interface Probe {
  script: string;
  stdin: Buffer;
}

/**
 * The probe for one request. The script is the fixed body plus a few
 * constants (each passed through shellQuote); everything from the desired
 * state is on stdin.
 */
export function buildProbe(request: ProbeRequest): Probe {
  checkPath(request.stateDir, 'state dir');
  const script = [
    `DECODE=${shellQuote(DECODE_AWK)}`,
    `FORMAT=${shellQuote(PROBE_FORMAT)}`,
    `ST=${shellQuote(request.stateDir)}`,
    `MAXTEXT=${MAX_TEXT_BYTES}`,
    SCRIPT_BODY,
  ].join('\n');
  return { script, stdin: encodeRequest(request) };
}
