/**
 * Resolution: validated documents → ResolvedState (types.ts), the per-node
 * list of concrete resources that plan/ consumes. The checks a schema cannot
 * make happen here, because most of them only mean something per node
 * (an owner that exists, a path managed twice, a template variable with no
 * value on that node). Every problem becomes a Diagnostic; none throws.
 */
import { join } from 'node:path';
import type { ContentRef, DesiredDirectory, DesiredFile, DesiredGroup, DesiredService, DesiredUser, Policy, ResolvedNode, ResolvedState, SourceRef } from './types.js';
import type { DirectoryDocument } from './generated/directory.js';
import type { FileDocument } from './generated/file.js';
import type { GroupDocument } from './generated/group.js';
import type { NodeDocument } from './generated/node.js';
import type { ServiceDocument } from './generated/service.js';
import type { UserDocument } from './generated/user.js';
import type { NodeSelector } from './generated/defs.js';
import type { Diagnostic } from '../errors/index.js';
import { Collector, fmt } from './collector.js';
import { DEFAULTS } from './defaults.js';
import { hashFile, hashSecret, sha256Text, type FileDigestCache } from './digest.js';
import { resolveEtcd } from './etcd.js';
import { byName, idOf, isDocumentFile, labelsOf, loadDocuments, specOf, where, type LoadedDocument } from './load.js';
import type { FileSource } from './source.js';
import { fieldName, type Kind } from './schema.js';
import { absolutePathProblem, repoPathProblem, SECRET_NAME } from './paths.js';
import { parseTemplate, renderTemplate, type ParsedTemplate, type TemplateContext } from './template.js';

export interface ResolveOptions {
  /** Bastion folder holding the artifacts (binaries pinned by sha256). Absent: pins are not checked. */
  artifactsDir?: string;
  /** Folder holding the secrets. Absent: secrets are referenced but not read (sha256 and size null). */
  secretsDir?: string;
  /** Commit the files were read at, when they come from Git. */
  commit?: string | null;
  /** Digests of artifacts kept from earlier runs. */
  digestCache?: FileDigestCache;
}

export interface ResolveResult {
  /** null when there is at least one error. */
  state: ResolvedState | null;
  /** Errors and warnings, sorted by file, line and column. */
  diagnostics: Diagnostic[];
}

/** Largest text payload (source file, template, payload file) carried inline in the plan. */
const MAX_TEXT_BYTES = 4 * 1024 * 1024;


function normaliseMode(m: string): string {
  return parseInt(m, 8).toString(8).padStart(4, '0');
}

interface NodeInfo {
  doc: LoadedDocument;
  name: string;
  address: string;
  labels: Record<string, string>;
  vars: Record<string, string>;
  ssh: { user: string; port: number; hostKey?: string };
}

interface TextSource {
  text: string;
}

function isIpv4Like(s: string): boolean {
  return /^[0-9]+(\.[0-9]+)*$/.test(s);
}
function isIpv4(s: string): boolean {
  const parts = s.split('.');
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

export async function resolveDesiredState(source: FileSource, opts: ResolveOptions = {}): Promise<ResolveResult> {
  const loaded = await loadDocuments(source);
  const c = new Collector(loaded.diagnostics);
  const files = new Set(loaded.files);

  // Names: unique per kind; the first declaration wins, later ones are reported.
  const byKind = new Map<Kind, Map<string, LoadedDocument>>();
  for (const d of loaded.docs) {
    if (d.name === null) continue;
    let m = byKind.get(d.kind);
    if (!m) byKind.set(d.kind, (m = new Map()));
    const first = m.get(d.name);
    if (first) {
      c.error(where(d, ['metadata', 'name']), idOf(d), `duplicate name: ${idOf(d)} is already declared at ${fmt(where(first, ['metadata', 'name']))}`, 'names are unique per kind');
      continue;
    }
    m.set(d.name, d);
  }
  const declared = (kind: Kind, name: string): boolean => byKind.get(kind)?.has(name) ?? false;
  const docsOf = (kind: Kind): LoadedDocument[] =>
    [...(byKind.get(kind)?.values() ?? [])].filter((d) => d.valid).sort((a, b) => ((a.name ?? '') < (b.name ?? '') ? -1 : 1));

  // Nodes.
  const nodes: NodeInfo[] = [];
  const byAddress = new Map<string, LoadedDocument>();
  for (const d of docsOf('Node')) {
    const s = specOf<NodeDocument>(d);
    if (isIpv4Like(s.address) && !isIpv4(s.address)) {
      c.error(where(d, ['spec', 'address']), idOf(d), `spec.address ${JSON.stringify(s.address)} is not a valid IPv4 address`);
      continue;
    }
    const other = byAddress.get(s.address);
    if (other) {
      c.error(where(d, ['spec', 'address']), idOf(d), `spec.address ${s.address} is also the address of ${idOf(other)} (${fmt(where(other, ['spec', 'address']))})`);
    } else byAddress.set(s.address, d);
    nodes.push({
      doc: d,
      name: d.name!,
      address: s.address,
      labels: labelsOf(d),
      vars: (s.vars ?? {}) as Record<string, string>,
      ssh: {
        user: s.ssh?.user ?? DEFAULTS.sshUser,
        port: s.ssh?.port ?? DEFAULTS.sshPort,
        ...(s.ssh?.hostKey ? { hostKey: s.ssh.hostKey } : {}),
      },
    });
  }
  const nodeNames = nodes.map((n) => n.name);

  // Node selection for every node-scoped resource.
  const selected = new Map<LoadedDocument, Set<string>>();
  for (const kind of ['Group', 'User', 'Directory', 'File', 'Service'] as const) {
    for (const d of docsOf(kind)) {
      const sel = (specOf<FileDocument>(d) as { nodes?: NodeSelector }).nodes;
      const picked = new Set<string>();
      if (sel === undefined) nodeNames.forEach((n) => picked.add(n));
      else if (sel.names && sel.labels) {
        c.error(where(d, ['spec', 'nodes'], true), idOf(d), 'spec.nodes takes either names or labels, not both');
      } else if (!sel.names && !sel.labels) {
        c.error(where(d, ['spec', 'nodes'], true), idOf(d), 'spec.nodes needs names or labels', 'omit spec.nodes to select every node');
      } else if (sel.names) {
        sel.names.forEach((n, i) => {
          if (!declared('Node', n)) c.error(where(d, ['spec', 'nodes', 'names', i]), idOf(d), `spec.nodes.names[${i}]: no Node named ${JSON.stringify(n)}`);
          else if (nodeNames.includes(n)) picked.add(n);
        });
      } else if (sel.labels) {
        const want = Object.entries(sel.labels as Record<string, string>);
        for (const n of nodes) if (want.every(([k, v]) => n.labels[k] === v)) picked.add(n.name);
        if (picked.size === 0 && nodes.length > 0) c.warning(where(d, ['spec', 'nodes'], true), idOf(d), 'spec.nodes.labels selects no nodes');
      }
      selected.set(d, picked);
    }
  }
  /** Declared and schema-valid: per-node checks against an invalid declaration would only repeat its error. */
  const usable = (kind: Kind, name: string): boolean => byKind.get(kind)?.get(name)?.valid ?? false;
  const presentOn = (kind: Kind, name: string, node: string): boolean => {
    const d = byKind.get(kind)?.get(name);
    if (!d || !d.valid) return false;
    const ensure = (specOf<FileDocument>(d).ensure ?? DEFAULTS.ensure) as string;
    return ensure === 'present' && (selected.get(d)?.has(node) ?? false);
  };

  /** Owner/group references: a declared account or root (whether it is on each node is checked per node). */
  const accountRef = (d: LoadedDocument, path: Array<string | number>, value: string, kind: 'User' | 'Group'): void => {
    if (value === 'root' || declared(kind, value)) return;
    c.error(where(d, path), idOf(d), `${fieldName(path)} ${JSON.stringify(value)} is not a declared ${kind}`, `declare a ${kind} named ${value}, or use root`);
  };
  const accountOnNode = (d: LoadedDocument, path: Array<string | number>, value: string, kind: 'User' | 'Group', node: string): void => {
    if (value === 'root' || !usable(kind, value) || presentOn(kind, value, node)) return;
    c.onNode(node, where(d, path), idOf(d), `account|${kind}|${value}`, (on) => `${fieldName(path)} ${JSON.stringify(value)}: ${kind}/${value} is not present ${on}`, `select these nodes in ${kind}/${value}, or use root`);
  };

  // Text payloads read from the source: cached, size-limited, UTF-8 only.
  const texts = new Map<string, Promise<TextSource | string>>();
  const readText = (path: string): Promise<TextSource | string> => {
    let p = texts.get(path);
    if (!p) {
      p = (async () => {
        const bytes = await source.read(path);
        if (bytes.length > MAX_TEXT_BYTES) return `is ${bytes.length} bytes, larger than the ${MAX_TEXT_BYTES}-byte limit for text payloads`;
        try {
          return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes) };
        } catch {
          return 'is not UTF-8 text (binaries are artifacts, pinned by sha256)';
        }
      })();
      texts.set(path, p);
    }
    return p;
  };
  /** A repo path to a payload file: well-formed, present, not a document. */
  const repoFile = (d: LoadedDocument, path: Array<string | number>, value: string): boolean => {
    const why = repoPathProblem(value);
    if (why) {
      c.error(where(d, path), idOf(d), `${fieldName(path)} ${why}`);
      return false;
    }
    if (!files.has(value)) {
      c.error(where(d, path), idOf(d), `${fieldName(path)}: ${value} does not exist in the desired state`, 'paths are relative to the desired-state root, e.g. templates/etcd.env; symbolic links are never followed, so a payload must be a regular file');
      return false;
    }
    if (isDocumentFile(value)) {
      c.error(where(d, path), idOf(d), `${fieldName(path)}: ${value} is a desired-state document, not a payload`, 'keep payloads under templates/ or files/');
      return false;
    }
    return true;
  };

  // Templates: parsed once, checked for unknown variables before any node.
  const templates = new Map<string, Promise<ParsedTemplate | null>>();
  const templateOf = (d: LoadedDocument, path: string): Promise<ParsedTemplate | null> => {
    let p = templates.get(`${idOf(d)}|${path}`);
    if (!p) {
      p = (async () => {
        const t = await readText(path);
        if (typeof t === 'string') {
          c.error(where(d, ['spec', 'template']), idOf(d), `spec.template: ${path} ${t}`);
          return null;
        }
        const parsed = parseTemplate(t.text);
        for (const pr of parsed.problems) c.error({ file: path, line: pr.line, col: pr.col }, idOf(d), pr.message, pr.hint);
        return parsed.problems.length > 0 ? null : parsed.template;
      })();
      templates.set(`${idOf(d)}|${path}`, p);
    }
    return p;
  };

  // Services: units, and which Service names exist.
  const services = docsOf('Service');
  const unitOf = new Map(services.map((d) => [d.name!, specOf<ServiceDocument>(d).unit]));
  const checkRestarts = (d: LoadedDocument, restarts: string[] | undefined): void => {
    (restarts ?? []).forEach((r, i) => {
      if (!declared('Service', r)) c.error(where(d, ['spec', 'restarts', i]), idOf(d), `spec.restarts[${i}]: no Service named ${JSON.stringify(r)}`, 'restarts names Service resources (metadata.name), not units');
    });
  };
  const restartsOnNode = (d: LoadedDocument, restarts: string[] | undefined, node: string): string[] => {
    const units = new Set<string>();
    (restarts ?? []).forEach((r, i) => {
      if (!usable('Service', r)) return;
      if (!presentOn('Service', r, node)) {
        c.onNode(node, where(d, ['spec', 'restarts', i]), idOf(d), `restarts|${r}`, (on) => `spec.restarts[${i}]: Service/${r} is not present ${on}`, `select the same nodes in Service/${r}`);
        return;
      }
      const u = unitOf.get(r);
      if (u) units.add(u);
    });
    return [...units].sort();
  };

  // Global checks of each resource kind.
  const groups = docsOf('Group');
  const users = docsOf('User');
  for (const d of users) {
    const s = specOf<UserDocument>(d);
    accountRef(d, ['spec', 'group'], s.group, 'Group');
    (s.groups ?? []).forEach((g, i) => accountRef(d, ['spec', 'groups', i], g, 'Group'));
    c.absolute(d, ['spec', 'home'], s.home);
    c.absolute(d, ['spec', 'shell'], s.shell);
  }
  const directories = docsOf('Directory');
  const payloads = new Map<LoadedDocument, string[]>();
  for (const d of directories) {
    const s = specOf<DirectoryDocument>(d);
    c.absolute(d, ['spec', 'path'], s.path);
    accountRef(d, ['spec', 'owner'], s.owner ?? DEFAULTS.owner, 'User');
    accountRef(d, ['spec', 'group'], s.group ?? DEFAULTS.group, 'Group');
    checkRestarts(d, s.restarts);
    if (s.purge && s.source === undefined) c.warning(where(d, ['spec', 'purge']), idOf(d), 'spec.purge has no effect without spec.source');
    if (s.source !== undefined) {
      const why = repoPathProblem(s.source);
      const at = where(d, ['spec', 'source']);
      if (why) c.error(at, idOf(d), `spec.source ${why}`);
      else if (!s.source.startsWith('files/')) c.error(at, idOf(d), `spec.source must be a folder under files/, not ${s.source}`, 'directory payloads live under files/ so that they are never read as documents');
      else {
        const inside = loaded.files.filter((f) => f.startsWith(`${s.source}/`)).map((f) => f.slice(s.source!.length + 1));
        const nested = inside.find((f) => f.includes('/'));
        if (inside.length === 0) c.error(at, idOf(d), `spec.source: folder ${s.source} has no files`);
        else if (nested) c.error(at, idOf(d), `spec.source: folder ${s.source} has a sub-folder (${nested}); payload folders are flat`, 'declare a Directory for each sub-folder');
        else {
          const bad = inside.find((f) => absolutePathProblem(`${s.path}/${f}`) !== null);
          if (bad) c.error(at, idOf(d), `spec.source: file name ${JSON.stringify(bad)} ${absolutePathProblem(`${s.path}/${bad}`) ?? ''}`);
          else payloads.set(d, inside);
        }
      }
    }
  }
  const fileDocs = docsOf('File');
  const CONTENT_KEYS = ['content', 'source', 'template', 'artifact', 'secret'] as const;
  const secretTemplates = new Map<LoadedDocument, ParsedTemplate>();
  for (const d of fileDocs) {
    const s = specOf<FileDocument>(d);
    c.absolute(d, ['spec', 'path'], s.path);
    accountRef(d, ['spec', 'owner'], s.owner ?? DEFAULTS.owner, 'User');
    accountRef(d, ['spec', 'group'], s.group ?? DEFAULTS.group, 'Group');
    checkRestarts(d, s.restarts);
    const given = CONTENT_KEYS.filter((k) => s[k] !== undefined);
    if ((s.ensure ?? DEFAULTS.ensure) === 'present') {
      if (given.length === 0) {
        c.error(where(d, ['spec'], true), idOf(d), 'spec needs one content source: content, source, template, artifact or secret');
      } else if (given.length > 1) {
        c.error(where(d, ['spec', given[1]!], true), idOf(d), `spec has more than one content source (${given.join(', ')}); choose one`);
      }
    }
    if (s.source !== undefined) {
      if (repoFile(d, ['spec', 'source'], s.source)) {
        const t = await readText(s.source);
        if (typeof t === 'string') c.error(where(d, ['spec', 'source']), idOf(d), `spec.source: ${s.source} ${t}`);
      }
    }
    if (s.template !== undefined && repoFile(d, ['spec', 'template'], s.template)) await templateOf(d, s.template);
    if (s.secret !== undefined) {
      const parsed = parseTemplate(s.secret.name);
      for (const pr of parsed.problems) c.error(where(d, ['spec', 'secret', 'name']), idOf(d), `spec.secret.name: ${pr.message}`, pr.hint);
      if (parsed.problems.length === 0) secretTemplates.set(d, parsed.template);
    }
  }

  // The etcd cluster.
  const cluster = await resolveEtcd({
    clusters: [...(byKind.get('EtcdCluster')?.values() ?? [])],
    nodes,
    declared,
    usable,
    presentOn,
    unitOf,
    c,
    ...(opts.secretsDir !== undefined ? { secretsDir: opts.secretsDir } : {}),
  });
  const { etcd, memberByNode } = cluster;

  // Artifacts: hashed once per run, whatever the number of nodes.
  const artifactHashes = new Map<string, Promise<{ sha256: string; size: number } | null>>();
  const artifactHash = (path: string): Promise<{ sha256: string; size: number } | null> => {
    let p = artifactHashes.get(path);
    if (!p) artifactHashes.set(path, (p = hashFile(path, opts.digestCache)));
    return p;
  };

  const base = (d: LoadedDocument, s: { ensure?: 'present' | 'absent'; policy?: Policy; prune?: boolean }) => ({
    id: idOf(d),
    name: d.name!,
    ensure: s.ensure ?? DEFAULTS.ensure,
    policy: s.policy ?? DEFAULTS.policy,
    prune: s.prune ?? DEFAULTS.prune,
    at: d.at,
  });

  const resolvedNodes: ResolvedNode[] = [];
  for (const n of [...nodes].sort(byName)) {
    const on = (d: LoadedDocument): boolean => selected.get(d)?.has(n.name) ?? false;
    const member = memberByNode.get(n.name);
    const ctx: TemplateContext = {
      node: { name: n.name, address: n.address, labels: n.labels },
      vars: n.vars,
      etcd: member && cluster.values ? { ...cluster.values, name: member.name, peerUrl: member.peerUrl, clientUrl: member.clientUrl } : null,
      etcdCluster: cluster.label,
      etcdBroken: cluster.broken,
    };
    const rn: ResolvedNode = {
      name: n.name,
      address: n.address,
      ssh: n.ssh,
      labels: n.labels,
      vars: n.vars,
      groups: [],
      users: [],
      directories: [],
      files: [],
      services: [],
    };
    const claimed = new Map<string, { id: string; at: SourceRef }>();
    const claim = (path: string, id: string, at: SourceRef, resource: string): void => {
      const prev = claimed.get(path);
      if (!prev) {
        claimed.set(path, { id, at });
        return;
      }
      c.onNode(n.name, at, resource, `path|${prev.id}|${path}`, (where) => `path ${path} is also managed by ${prev.id} (${fmt(prev.at)}) ${where}`, 'each path is managed by one resource');
    };
    if (member && etcd && cluster.initialEnvFileAt) claim(etcd.initialEnvFile, etcd.id, cluster.initialEnvFileAt, etcd.id);

    const ids = new Map<number, string>();
    for (const d of groups.filter(on)) {
      const s = specOf<GroupDocument>(d);
      const g: DesiredGroup = { ...base(d, s), kind: 'Group', system: s.system ?? false, ...(s.gid !== undefined ? { gid: s.gid } : {}) };
      if (g.gid !== undefined && g.ensure === 'present') {
        const other = ids.get(g.gid);
        if (other) c.onNode(n.name, where(d, ['spec', 'gid']), g.id, `gid|${g.gid}`, (w) => `spec.gid ${g.gid} is also the gid of ${other} ${w}`);
        else ids.set(g.gid, g.id);
      }
      rn.groups.push(g);
    }
    ids.clear();
    for (const d of users.filter(on)) {
      const s = specOf<UserDocument>(d);
      const u: DesiredUser = {
        ...base(d, s),
        kind: 'User',
        system: s.system ?? false,
        ...(s.uid !== undefined ? { uid: s.uid } : {}),
        group: s.group,
        groups: [...(s.groups ?? [])].sort(),
        home: s.home,
        shell: s.shell ?? DEFAULTS.shell,
        ...(s.comment !== undefined ? { comment: s.comment } : {}),
      };
      if (u.ensure === 'present') {
        accountOnNode(d, ['spec', 'group'], s.group, 'Group', n.name);
        (s.groups ?? []).forEach((g, i) => accountOnNode(d, ['spec', 'groups', i], g, 'Group', n.name));
        if (u.uid !== undefined) {
          const other = ids.get(u.uid);
          if (other) c.onNode(n.name, where(d, ['spec', 'uid']), u.id, `uid|${u.uid}`, (w) => `spec.uid ${u.uid} is also the uid of ${other} ${w}`);
          else ids.set(u.uid, u.id);
        }
      }
      rn.users.push(u);
    }

    for (const d of directories.filter(on)) {
      const s = specOf<DirectoryDocument>(d);
      const dir: DesiredDirectory = {
        ...base(d, s),
        kind: 'Directory',
        path: s.path,
        owner: s.owner ?? DEFAULTS.owner,
        group: s.group ?? DEFAULTS.group,
        mode: normaliseMode(s.mode ?? DEFAULTS.directoryMode),
        purge: s.purge ?? false,
      };
      if (dir.ensure === 'present') {
        accountOnNode(d, ['spec', 'owner'], dir.owner, 'User', n.name);
        accountOnNode(d, ['spec', 'group'], dir.group, 'Group', n.name);
      }
      claim(dir.path, dir.id, where(d, ['spec', 'path']), dir.id);
      rn.directories.push(dir);
      const inside = payloads.get(d);
      if (!inside) continue;
      const restarts = restartsOnNode(d, s.restarts, n.name);
      const at = where(d, ['spec', 'source']);
      for (const f of inside) {
        const repoPath = `${s.source}/${f}`;
        let content: ContentRef | undefined;
        if (dir.ensure === 'present') {
          const t = await readText(repoPath);
          if (typeof t === 'string') {
            c.error({ file: repoPath, line: 1, col: 1 }, dir.id, `payload file ${t}`);
            continue;
          }
          content = { kind: 'text', origin: 'source', text: t.text, sha256: sha256Text(t.text), size: Buffer.byteLength(t.text) };
        }
        const file: DesiredFile = {
          id: `File/${dir.name}/${f}`,
          kind: 'File',
          name: `${dir.name}/${f}`,
          ensure: dir.ensure,
          policy: dir.policy,
          prune: dir.prune,
          at,
          path: `${dir.path}/${f}`,
          owner: dir.owner,
          group: dir.group,
          mode: normaliseMode(s.fileMode ?? DEFAULTS.payloadFileMode),
          ...(content ? { content } : {}),
          restarts,
          fromDirectory: dir.id,
        };
        claim(file.path, file.id, at, dir.id);
        rn.files.push(file);
      }
    }

    for (const d of fileDocs.filter(on)) {
      const s = specOf<FileDocument>(d);
      const file: DesiredFile = {
        ...base(d, s),
        kind: 'File',
        path: s.path,
        owner: s.owner ?? DEFAULTS.owner,
        group: s.group ?? DEFAULTS.group,
        mode: normaliseMode(s.mode ?? DEFAULTS.fileMode),
        restarts: restartsOnNode(d, s.restarts, n.name),
      };
      claim(file.path, file.id, where(d, ['spec', 'path']), file.id);
      if (file.ensure === 'present') {
        accountOnNode(d, ['spec', 'owner'], file.owner, 'User', n.name);
        accountOnNode(d, ['spec', 'group'], file.group, 'Group', n.name);
        const content = await fileContent(d, s, n.name, ctx);
        if (content) file.content = content;
      }
      rn.files.push(file);
    }

    const units = new Map<string, LoadedDocument>();
    for (const d of services.filter(on)) {
      const s = specOf<ServiceDocument>(d);
      const svc: DesiredService = { ...base(d, s), kind: 'Service', unit: s.unit, enabled: s.enabled ?? true, running: s.running ?? true };
      const other = units.get(s.unit);
      if (other) {
        c.onNode(n.name, where(d, ['spec', 'unit']), svc.id, `unit|${idOf(other)}`, (w) => `unit ${s.unit} is also managed by ${idOf(other)} (${fmt(where(other, ['spec', 'unit']))}) ${w}`);
      } else units.set(s.unit, d);
      rn.services.push(svc);
    }

    rn.groups.sort(byName);
    rn.users.sort(byName);
    rn.directories.sort(byName);
    rn.files.sort(byName);
    rn.services.sort(byName);
    resolvedNodes.push(rn);
  }

  async function fileContent(d: LoadedDocument, s: FileDocument['spec'], node: string, ctx: TemplateContext): Promise<ContentRef | undefined> {
    if (s.content !== undefined) {
      return { kind: 'text', origin: 'inline', text: s.content, sha256: sha256Text(s.content), size: Buffer.byteLength(s.content) };
    }
    if (s.source !== undefined) {
      if (!files.has(s.source) || repoPathProblem(s.source)) return undefined;
      const t = await readText(s.source);
      if (typeof t === 'string') return undefined;
      return { kind: 'text', origin: 'source', text: t.text, sha256: sha256Text(t.text), size: Buffer.byteLength(t.text) };
    }
    if (s.template !== undefined) {
      const t = templates.get(`${idOf(d)}|${s.template}`);
      const parsed = t ? await t : null;
      if (!parsed) return undefined;
      const r = renderTemplate(parsed, ctx);
      for (const p of r.problems) if (!p.silent) c.error({ file: s.template, line: p.v.line, col: p.v.col }, idOf(d), p.message, p.hint);
      if (r.problems.length > 0) return undefined;
      return { kind: 'text', origin: 'template', text: r.text, sha256: sha256Text(r.text), size: Buffer.byteLength(r.text) };
    }
    if (s.artifact !== undefined) {
      const { name, sha256 } = s.artifact;
      const localPath = opts.artifactsDir !== undefined ? join(opts.artifactsDir, name) : name;
      let size: number | null = null;
      if (opts.artifactsDir !== undefined) {
        const h = await artifactHash(localPath);
        if (h === null) {
          c.error(where(d, ['spec', 'artifact', 'name']), idOf(d), `artifact ${JSON.stringify(name)} not found in the artifacts directory`, `stage it at ${localPath}`);
          return undefined;
        }
        if (h.sha256 !== sha256) {
          c.error(where(d, ['spec', 'artifact', 'sha256']), idOf(d), `artifact ${JSON.stringify(name)} has sha256 ${h.sha256}, not the pinned ${sha256}`, 'stage the pinned file, or pin the new digest in a commit');
          return undefined;
        }
        size = h.size;
      }
      return { kind: 'artifact', name, localPath, sha256, size };
    }
    if (s.secret !== undefined) {
      const t = secretTemplates.get(d);
      if (!t) return undefined;
      const at = where(d, ['spec', 'secret', 'name']);
      const r = renderTemplate(t, ctx);
      for (const p of r.problems) if (!p.silent) c.error(at, idOf(d), `spec.secret.name: ${p.message}`, p.hint);
      if (r.problems.length > 0) return undefined;
      const name = r.text;
      if (!SECRET_NAME.test(name)) {
        c.error(at, idOf(d), `spec.secret.name ${JSON.stringify(name)} (on node ${node}) must be a relative path of letters, digits, '_', '.' and '-' without '.' or '..' segments`);
        return undefined;
      }
      if (opts.secretsDir === undefined) return { kind: 'secret', name, localPath: name, sha256: null, size: null };
      const localPath = join(opts.secretsDir, name);
      const h = await hashSecret(localPath);
      if (h === null) {
        c.error(at, idOf(d), `secret ${JSON.stringify(name)} not found in the secrets directory`, `put it at ${localPath}`);
        return undefined;
      }
      if (typeof h === 'string') {
        c.error(at, idOf(d), `secret ${JSON.stringify(name)} ${h}`);
        return undefined;
      }
      return { kind: 'secret', name, localPath, sha256: h.sha256, size: h.size };
    }
    return undefined;
  }

  const diagnostics = c.finish();
  const failed = diagnostics.some((d) => d.severity === 'error');
  return {
    state: failed ? null : { root: source.root, commit: opts.commit ?? null, nodes: resolvedNodes, etcd },
    diagnostics,
  };
}
