/**
 * The facts probe: one fixed POSIX sh script per node that gathers every
 * fact in one exec. What to look at (paths, accounts, units) travels as data
 * on stdin, one base64 value per line, and reaches the tools as arguments
 * through xargs -0: no value from the desired state is ever part of the
 * script text. The output is a stream of NUL-terminated tokens (see
 * parse.ts). Needs GNU findutils (find -printf, -newerct) and coreutils
 * (sha256sum -z, base64 -w0, date +%N), mawk or gawk, getent, id and
 * systemctl.
 *
 * Every process costs a fork and an exec (several ms on a small VM), and the
 * probe runs on every pass, so the script starts as few as it can: one awk
 * reads the request, the managed-paths list and the inventory; one find
 * stats every path; sha256sum reads only the files whose inode, size, mtime
 * and ctime are not those the digest cache recorded (hashing the etcd
 * binaries on every pass was a third of the probe's CPU).
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
  // one list for both lookups: getent is cheap, a process is not; the parser keeps what was asked
  for (const name of new Set([...r.users, ...r.groups])) {
    checkValue(name, 'account name');
    add('a', name);
  }
  for (const n of r.units) {
    checkValue(n, 'unit name');
    add('n', n);
  }
  lines.push('.');
  return Buffer.from(`${lines.join('\n')}\n`, 'latin1');
}

/**
 * Reads, in one process: the request on stdin ("TAG BASE64" lines ended by a
 * "." line; values go NUL-terminated into one file per tag), then the
 * operands after `mode=managed` (bare base64 lines: absolute paths are added
 * to the paths to stat and printed as the @M section; those no longer
 * requested are also listed, so that pruning a directory can see what else
 * it holds) and `mode=inventory` (printed as the V token). Values with a
 * NUL byte are refused.
 */
const READ_AWK = String.raw`
BEGIN {
  b = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for (i = 0; i < 64; i++) v[substr(b, i + 1, 1)] = i
  re = "^([A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/])*([A-Za-z0-9+/][A-Za-z0-9+/][A-Za-z0-9+/=]=)?$"
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
function close_section() {
  if (open == "managed") printf "@.%c", 0
  else if (open == "inventory") printf "%c", 0
  open = ""
}
mode == "" && NF == 1 && $1 == "." { done = 1; next }
mode == "" && NF == 2 && $1 ~ /^[pwdan]$/ && $2 ~ re {
  s = dec($2)
  if (s == "") { bad = 1; next }
  printf "%s%c", s, 0 > $1
  if ($1 == "p") wanted[s] = 1
  next
}
mode == "" { bad = 1; next }
mode == "managed" {
  if (FNR == 1) { close_section(); printf "@M%c", 0; open = mode }
  if (NF == 1 && $1 ~ re) {
    s = dec($1)
    if (substr(s, 1, 1) != "/") next
    printf "%s%c", s, 0 > "p"; printf "%s%c", s, 0
    if (!(s in wanted)) printf "%s%c", s, 0 > "d"
  }
  next
}
mode == "inventory" {
  if (FNR == 1) { close_section(); printf "V%c", 0; open = mode }
  print
}
END {
  close_section()
  if (bad || !done) exit 3
}
`;

/**
 * How long a file must have been unchanged when the probe begins for its
 * digest to be recorded, on a filesystem whose timestamps have sub-second
 * resolution (digest-cache.ts says why); a second on one without.
 */
export const SETTLE_MS = 50;

/**
 * Reads the digest cache (if any: "key path sha256" triples that apply
 * wrote, see digest-cache.ts) and then file o, the find output: stat records
 * (a path and 8 fields) each followed, for a regular file, by a key record
 * ("=dev:inode:size:mtime:ctime" when it has not changed for a second, "^…"
 * when not for SETTLE_MS, "~…" otherwise, then the path). Copies o to
 * stdout, a "^" key as "=" when its ctime has a fraction of a second (the
 * filesystem keeps sub-second timestamps) and as "~" when not; a file
 * whose key is the cached one gets its cached digest as a "sha256  path"
 * record in file s, any other goes to file h to be hashed. Ends with
 * "#records hits" (the cache's size, how many it answered).
 */
const KEYS_AWK = String.raw`
BEGIN { RS = "\0" }
FILENAME != "o" {
  i = FNR % 3
  if (i == 1) k = $0
  else if (i == 2) p = $0
  else if (k ~ /^=/ && p ~ /^\// && $0 ~ /^[0-9a-f]+$/ && length($0) == 64) { ck[p] = k; cs[p] = $0; recs++ }
  next
}
left > 0 { printf "%s%c", $0, 0; left--; next }
path {
  path = 0; printf "%s%c", $0, 0
  if ($0 in seen) next
  seen[$0] = 1
  if (($0 in ck) && ck[$0] == key) { printf "%s  %s%c", cs[$0], $0, 0 > "s"; hits++ }
  else printf "%s%c", $0, 0 > "h"
  next
}
/^[=~^]/ {
  key = "=" substr($0, 2); path = 1
  t = substr($0, 1, 1)
  if (t == "^") { n = split($0, f, ":"); t = (f[n] ~ /\.[0-9]*[1-9]/) ? "=" : "~" }
  printf "%s%s%c", t, substr($0, 2), 0
  next
}
{ printf "%s%c", $0, 0; left = 8 }
END { printf "#%d %d%c", recs, hits, 0 }
`;

/**
 * Reads the "sha256  path" records (file s) and the wanted text digests,
 * NUL-separated; copies the former to stdout and writes to file c the paths
 * whose wanted record was not found.
 */
const CHANGED_AWK = String.raw`
BEGIN { RS = "\0" }
FILENAME == "s" { printf "%s%c", $0, 0; seen[$0] = 1; next }
!($0 in seen) { printf "%s%c", substr($0, 67), 0 > "c" }
`;

/**
 * Output tokens (each NUL-terminated):
 *   header: PROBE_FORMAT
 *   @M path… @.            managed paths listed on the node
 *   V json                 inventory.json
 *   @L (dir path type user group uid gid mode size target)… @.   entries of listed directories
 *                          (listDirs, and managed paths no longer requested)
 *   @S … @.                records (path type user group uid gid mode size target), each
 *                          regular file's key ("=dev:inode:size:mtime:ctime" path, "~…"
 *                          when it is not yet settled, see SETTLE_MS),
 *                          "sha256  path" (sha256sum -z or the digest cache), in any
 *                          order, and "#records hits" (the digest cache)
 *   T path base64          current content of a changed small text file
 *   P text                 getent passwd output
 *   G text                 getent group output
 *   I user text            id -Gn output, per user found
 *   U text                 systemctl show output
 *   X step code stderr     a step failed
 *   Z                      end
 */
const SCRIPT_BODY = String.raw`
export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 077
T=$(mktemp -d -t converge-probe.XXXXXXXX) || exit 90
trap 'cd /; rm -rf "$T"' EXIT
# A dropped connection (converge killed, link cut) must not leave the folder behind: sh runs the EXIT trap only on exit.
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
cd "$T" || exit 90
: > p; : > w; : > d; : > a; : > n; : > c; : > e; : > s; : > h
fail() { printf 'X\0%s\0%s\0' "$1" "$2"; head -c 4000 e; printf '\0'; }
printf '%s\0' "$FORMAT"
set -- -
[ -f "$ST/managed-paths" ] && set -- "$@" mode=managed "$ST/managed-paths"
[ -f "$ST/inventory.json" ] && set -- "$@" mode=inventory "$ST/inventory.json"
awk "$READ" "$@" || { echo 'converge probe: malformed or truncated request on stdin, or unreadable state files' >&2; exit 91; }
F='%y\0%u\0%g\0%U\0%G\0%m\0%s\0%l\0'
if [ -s d ]; then
  printf '@L\0'
  xargs -0 sh -c 'exec find -P "$@" -mindepth 1 -printf "%H\0%p\0$0"' "$F" < d 2>/dev/null
  printf '@.\0'
fi
now=$(date +%s%N) || exit 90
ago() { t=$((now - $1)); printf '@%d.%09d' $((t / 1000000000)) $((t % 1000000000)); }
K='%D:%i:%s:%T@:%C@\0%p\0'
xargs -0 -r sh -c 'k=$1 r1=$2 r2=$3; shift 3; exec find -P "$@" -maxdepth 0 -printf "%p\0$0" -type f \( -newerct "$r1" \( -newerct "$r2" -printf "~$k" -o -printf "^$k" \) -o -printf "=$k" \)' "$F" "$K" "$(ago 1000000000)" "$(ago $SETTLE)" < p > o 2>/dev/null
printf '@S\0'
set --
[ -f "$ST/digests" ] && set -- "$ST/digests"
awk "$KEYS" "$@" o || exit 92
[ -s h ] && xargs -0 sha256sum -z -- < h >> s 2>/dev/null
awk "$CHANGED" s w || exit 92
printf '@.\0'
if [ -s c ]; then
  xargs -0 sh -c '
    for f do
      [ -f "$f" ] && [ ! -h "$f" ] || continue
      s=$(wc -c < "$f") || continue
      [ "$s" -le "$0" ] || continue
      printf "T\0%s\0" "$f"; base64 -w0 < "$f"; printf "\0"
    done' "$MAXTEXT" < c
fi
if [ -s a ]; then
  xargs -0 sh -c '
    getent passwd -- "$@" > pw; r=$?
    printf "P\0"; while IFS= read -r l; do printf "%s\n" "$l"; done < pw; printf "\0"
    printf "G\0"; getent group -- "$@"; s=$?; printf "\0"
    while IFS=: read -r u x; do printf "I\0%s\0" "$u"; id -Gn -- "$u" 2>/dev/null; printf "\0"; done < pw
    [ "$r" -eq 0 ] || [ "$r" -eq 2 ] || exit "$r"
    [ "$s" -eq 0 ] || [ "$s" -eq 2 ] || exit "$s"' sh < a 2>e || fail getent $?
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
export function buildProbe(request: ProbeRequest, settleMs = SETTLE_MS): Probe {
  if (!Number.isSafeInteger(settleMs) || settleMs < 0 || settleMs > 1000) throw new ProbeRequestError(`settle time out of range: ${settleMs} ms`);
  checkPath(request.stateDir, 'state dir');
  const script = [
    `READ=${shellQuote(READ_AWK)}`,
    `KEYS=${shellQuote(KEYS_AWK)}`,
    `CHANGED=${shellQuote(CHANGED_AWK)}`,
    `FORMAT=${shellQuote(PROBE_FORMAT)}`,
    `ST=${shellQuote(request.stateDir)}`,
    `MAXTEXT=${MAX_TEXT_BYTES}`,
    `SETTLE=${settleMs * 1_000_000}`,
    SCRIPT_BODY,
  ].join('\n');
  return { script, stdin: encodeRequest(request) };
}
