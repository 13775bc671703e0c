/**
 * Turning whatever a clone or fetch threw into a SourceError that says what
 * went wrong and what to do, naming the URL without its credentials.
 */
import { SourceError } from '../errors/index.js';
import { HttpTransportError } from './http.js';
import { displayUrl, scrub } from './redact.js';

export interface FailureContext {
  /** The URL as given (it may hold credentials: only its display form is used). */
  url: string;
  branch: string;
  /** Whether credentials were configured, to tell "missing" from "wrong". */
  hasCredentials: boolean;
  /** Secret values to scrub from any foreign text. */
  secrets: readonly (string | undefined)[];
}

const NOT_GIT = new Set(['SmartHttpError', 'ParseError', 'EmptyServerResponseError', 'UnknownTransportError']);

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return displayUrl(url);
  }
}

export function sourceFailure(e: unknown, ctx: FailureContext): SourceError {
  if (e instanceof SourceError) return e;
  const url = displayUrl(ctx.url);
  const err = e as { code?: string; data?: { statusCode?: number; what?: string }; message?: string };
  const code = err.code ?? '';
  if (code === 'HttpError') {
    const status = err.data?.statusCode ?? 0;
    if (status === 401) {
      return new SourceError(`authentication failed for ${url}`, {
        hint: ctx.hasCredentials
          ? 'the Git server refused the credentials: check the token (CONVERGE_GIT_TOKEN or --git-token-file) or the password, and that it may read this repository'
          : 'the Git server wants credentials: set CONVERGE_GIT_TOKEN or --git-token-file (or CONVERGE_GIT_USERNAME and CONVERGE_GIT_PASSWORD)',
      });
    }
    if (status === 403) {
      return new SourceError(`access denied to ${url} (HTTP 403)`, { hint: 'the credentials are valid but may not read this repository' });
    }
    if (status === 404) {
      return new SourceError(`no Git repository at ${url} (HTTP 404)`, {
        hint: 'check --repo: it must be the repository URL (e.g. https://host/org/repo.git); a private repository also answers 404 to credentials that cannot see it',
      });
    }
    if (status >= 500) {
      return new SourceError(`the Git server at ${hostOf(ctx.url)} failed (HTTP ${status}) for ${url}`, { hint: 'the server is having trouble; converge tries again' });
    }
    return new SourceError(`the Git server answered HTTP ${status} for ${url}`, { hint: 'check --repo and the server' });
  }
  if (e instanceof HttpTransportError) {
    if (e.code === 'EREDIRECT') {
      const to = e.location === undefined ? 'another address' : displayUrl(new URL(e.location, ctx.url).toString());
      return new SourceError(`${url} redirects to ${to}`, {
        hint: 'set --repo to the final URL (redirects are not followed, so credentials never go to another host)',
      });
    }
    if (e.code === 'ETIMEDOUT') return new SourceError(`no answer from the Git server at ${hostOf(ctx.url)}: ${e.message}`, { hint: 'is the server up and reachable from here?' });
    return new SourceError(`fetching ${url} failed: ${e.message}`, { hint: 'the repository is larger than converge accepts; keep artifacts out of Git' });
  }
  if (code === 'ECONNREFUSED') {
    return new SourceError(`cannot connect to the Git server at ${hostOf(ctx.url)}: connection refused`, { hint: 'is the Git server running? check the host and port in --repo' });
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new SourceError(`cannot resolve the Git server's host name ${hostOf(ctx.url)}`, { hint: 'check the host in --repo and the DNS of this machine' });
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return new SourceError(`the connection to the Git server at ${hostOf(ctx.url)} failed (${code})`, { hint: 'check the network path to the server; converge tries again' });
  }
  if (code.startsWith('HPE_') || NOT_GIT.has(code)) {
    return new SourceError(`${url} did not answer as a Git server`, {
      hint: 'check that --repo is a Git repository URL served over smart HTTP; a web page or a proxy may be answering instead',
    });
  }
  if (code === 'NotFoundError' && err.data?.what === ctx.branch) {
    return new SourceError(`branch ${ctx.branch} not found at ${url}`, { hint: 'check --branch' });
  }
  if (code.startsWith('CERT_') || code.includes('CERT') || code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' || code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new SourceError(`the TLS certificate of ${hostOf(ctx.url)} is not trusted (${code})`, { hint: 'give Node the CA: set NODE_EXTRA_CA_CERTS to its PEM file' });
  }
  const detail = scrub(err.message ?? String(e), [...ctx.secrets, ctx.url]);
  return new SourceError(`fetching ${url} failed: ${detail}`, { hint: 'check --repo and the Git server' });
}
