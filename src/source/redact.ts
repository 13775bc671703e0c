/**
 * Keeping Git credentials out of every message: a URL is shown without its
 * user-info, query or fragment (tokens hide in all three), and any text that
 * came from elsewhere is scrubbed of the secret values themselves.
 */

/** The URL as it may be shown to a person: no credentials, no query string. */
export function displayUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Not a URL (a local path, or garbage): cut anything that looks like user-info.
    return url.replace(/^([^/]*\/\/)[^/@]*@/, '$1');
  }
  u.username = '';
  u.password = '';
  u.search = '';
  u.hash = '';
  return u.toString();
}

/** Replace every occurrence of each secret (and its URL-encoded form) with `***`. */
export function scrub(text: string, secrets: readonly (string | undefined)[]): string {
  let out = text;
  for (const s of secrets) {
    if (s === undefined || s.length < 3) continue;
    for (const form of new Set([s, encodeURIComponent(s)])) out = out.split(form).join('***');
  }
  return out;
}
