/**
 * A small client of the OCI distribution API (registry HTTP API v2), over Bun's fetch: what moving base
 * images and shared results needs. Credentials are the docker client's (`docker login`), plain entries
 * only. Everything read is checked against its digest: a registry is trusted for nothing.
 */
import { open, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dockerConfigDir } from '../engine/endpoint.ts';
import { sha256 } from '../toolchain.ts';

/** Bytes in memory as a stream of 64 KiB chunks. */
function slices(data: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= data.length) return controller.close();
      controller.enqueue(data.subarray(at, at + 65_536));
      at += 65_536;
    },
  });
}

/** What failed, against which registry, and how to fix it. */
export class RegistryError extends Error {
  override name = 'RegistryError';
}

/** The registry answered, with bytes that are not what their digest says: damage, not an outage. */
export class DamagedContent extends RegistryError {
  override name = 'DamagedContent';
}

export interface Repository {
  scheme: 'http' | 'https';
  /** host or host:port */
  host: string;
  /** repository path, e.g. team/rcbx */
  name: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  bytes: Uint8Array;
}

// The distribution spec's grammar for a repository name (lowercase path components), a tag and a host.
const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^\w[\w.-]{0,127}$/;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
];

/** `host[:port]/path` (no scheme): http on loopback (docker's default insecure registries) or with `forceHttp`, else https. */
export function repositoryOf(hostAndPath: string, opts: { forceHttp?: boolean } = {}): Repository {
  const slash = hostAndPath.indexOf('/');
  const host = hostAndPath.slice(0, Math.max(slash, 0));
  const name = hostAndPath.slice(slash + 1).replace(/\/+$/, '');
  if (!HOST.test(host) || !NAME.test(name)) {
    throw new RegistryError(`"${hostAndPath}" is not HOST[:PORT]/REPOSITORY with a lowercase path, e.g. registry.example.com/team/rcbx`);
  }
  const hostname = host.replace(/:\d+$/, '');
  const loopback = hostname === 'localhost' || hostname === '[::1]' || /^127(\.\d{1,3}){3}$/.test(hostname);
  return { scheme: opts.forceHttp || loopback ? 'http' : 'https', host, name };
}

/** `host[:port]/path[:tag][@sha256:…]`: the repository, and the digest, else the tag (default `latest`). */
export function parseImageRef(ref: string, opts: { forceHttp?: boolean } = {}): { repo: Repository; reference: string } {
  const [named = '', digest] = ref.split('@', 2);
  const first = named.split('/')[0] ?? '';
  if (!named.includes('/') || !(/[.:]/.test(first) || first === 'localhost')) {
    throw new RegistryError(`"${ref}" names no registry: write its host in full, e.g. registry.example.com/team/rcbx:TAG or 127.0.0.1:5000/rcbx/base:TAG`);
  }
  const colon = named.lastIndexOf(':');
  const tag = colon > named.lastIndexOf('/') ? named.slice(colon + 1) : undefined;
  if (tag !== undefined && !TAG.test(tag)) throw new RegistryError(`"${ref}": "${tag}" is not a valid tag (letters, digits, _ . -; at most 128)`);
  if (digest !== undefined && !DIGEST.test(digest)) throw new RegistryError(`"${ref}": "${digest}" is not a sha256:<64 hex digits> digest`);
  return { repo: repositoryOf(tag === undefined ? named : named.slice(0, colon), opts), reference: digest ?? tag ?? 'latest' };
}

type Env = Record<string, string | undefined>;

/**
 * An abort that fires when nothing moved for `ms`: a 2 GB layer may take minutes, a stalled one should
 * not. It also bounds reading a small answer's body after the call returned; firing once all is read
 * does nothing, and it never keeps the process alive.
 */
class Idle {
  private readonly controller = new AbortController();
  private timer: Timer | undefined;
  readonly signal = this.controller.signal;
  constructor(private readonly ms: number) {
    this.touch();
  }
  touch(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.controller.abort(new DOMException(`no answer within ${this.ms / 1000} s`, 'TimeoutError')), this.ms);
    this.timer.unref();
  }
}

interface Call {
  headers?: Record<string, string>;
  /** made anew for a retry (a stream is read once) */
  body?: (idle: Idle) => Bun.BodyInit;
}

export class RegistryClient {
  /** e.g. "127.0.0.1:5000/team/rcbx" */
  readonly display: string;
  private readonly origin: string;
  private readonly base: string;
  private readonly timeoutMs: number;
  private readonly env: Env;
  /** the Authorization header the registry accepted last: reused, so each call is one round trip */
  private authorization: string | undefined;

  constructor(
    private readonly repo: Repository,
    opts: { timeoutMs?: number; env?: Env } = {},
  ) {
    this.display = `${repo.host}/${repo.name}`;
    this.origin = `${repo.scheme}://${repo.host}`;
    this.base = `${this.origin}/v2/${repo.name}`;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.env = opts.env ?? process.env;
  }

  async ping(): Promise<void> {
    await this.expect('GET', `${this.origin}/v2/`, [200], 'GET /v2/');
  }

  async hasBlob(digest: string): Promise<boolean> {
    return (await this.expect('HEAD', `${this.base}/blobs/${digest}`, [200, 404], `looking for blob ${digest}`)).status === 200;
  }

  async putBlob(digest: string, data: Uint8Array | { file: string; size: number }): Promise<void> {
    if (await this.hasBlob(digest)) return;
    const started = await this.expect('POST', `${this.base}/blobs/uploads/`, [202], `starting the upload of ${digest}`);
    const location = started.headers.get('location');
    if (!location) throw new RegistryError(`${this.display} started an upload without saying where to send it (no Location header)`);
    const url = new URL(location, this.origin).href;
    // Streamed either way, each chunk counting as progress: the timeout is for a stalled upload, not a long one.
    const source = () => (data instanceof Uint8Array ? slices(data) : Bun.file(data.file).stream());
    const call: Call = {
      headers: { 'Content-Length': String(data instanceof Uint8Array ? data.length : data.size) },
      body: (idle) => source().pipeThrough(new TransformStream({ transform: (chunk, out) => (idle.touch(), out.enqueue(chunk)) })),
    };
    call.headers = { ...call.headers, 'Content-Type': 'application/octet-stream' };
    await this.expect('PUT', `${url}${url.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, [201], `uploading ${digest}`, call);
  }

  async getBlob(digest: string): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    await this.readBlob(digest, (chunk) => void chunks.push(chunk));
    return Buffer.concat(chunks);
  }

  async getBlobToFile(digest: string, file: string): Promise<void> {
    const out = await open(file, 'w');
    try {
      await this.readBlob(digest, async (chunk) => void (await out.write(chunk)));
      await out.close();
    } catch (err) {
      await out.close().catch(() => undefined);
      await rm(file, { force: true });
      throw err;
    }
  }

  async putManifest(reference: string, bytes: Uint8Array, mediaType: string): Promise<string> {
    await this.expect('PUT', `${this.base}/manifests/${reference}`, [201], `storing manifest ${reference}`, { headers: { 'Content-Type': mediaType }, body: () => bytes });
    return `sha256:${sha256(bytes)}`;
  }

  async getManifest(reference: string): Promise<FetchedManifest | undefined> {
    const res = await this.expect('GET', `${this.base}/manifests/${reference}`, [200, 404], `fetching manifest ${reference}`, { headers: { Accept: MANIFEST_TYPES.join(', ') } });
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    const bytes = new Uint8Array(await this.read(res.arrayBuffer()));
    const digest = `sha256:${sha256(bytes)}`;
    if (DIGEST.test(reference) && digest !== reference) throw this.damaged(`manifest ${reference}`, digest);
    return { mediaType: res.headers.get('content-type')?.split(';')[0]?.trim() || declaredType(bytes), digest, bytes };
  }

  async listTags(): Promise<string[]> {
    const tags: string[] = [];
    let next: string | undefined = `${this.base}/tags/list?n=1000`;
    while (next) {
      const res: Response = await this.expect('GET', next, [200, 404], 'listing tags');
      // Only the first page may be missing: the repository does not exist (yet).
      if (res.status === 404) {
        await res.body?.cancel();
        return [];
      }
      tags.push(...((await this.read(res.json() as Promise<{ tags?: string[] | null }>)).tags ?? []));
      const link = /<([^>]+)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '')?.[1];
      next = link ? new URL(link, this.origin).href : undefined;
    }
    return tags;
  }

  /** A manifest already gone is not an error: two machines may prune the same entry. */
  async deleteManifest(digest: string): Promise<void> {
    await this.delete('manifests', digest);
  }

  /** DELETE a blob (a damaged copy, so that an upload of the good one is not skipped as present). */
  async deleteBlob(digest: string): Promise<void> {
    await this.delete('blobs', digest);
  }

  private async delete(kind: 'manifests' | 'blobs', digest: string): Promise<void> {
    const res = await this.expect('DELETE', `${this.base}/${kind}/${digest}`, [200, 202, 404, 405], `deleting ${kind.slice(0, -1)} ${digest}`);
    await res.body?.cancel();
    if (res.status === 405) {
      throw new RegistryError(`${this.display} has deletion disabled (HTTP 405): enable it in the registry's configuration (distribution: storage.delete.enabled: true, or REGISTRY_STORAGE_DELETE_ENABLED=true)`);
    }
  }

  /** Streams a blob to `sink`, and fails unless its sha256 is the digest (the sink has seen the bytes by then: it must discard them). */
  private async readBlob(digest: string, sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void> {
    if (!DIGEST.test(digest)) throw new RegistryError(`"${digest}" is not a sha256 digest`);
    const idle = new Idle(this.timeoutMs);
    const res = await this.expect('GET', `${this.base}/blobs/${digest}`, [200], `fetching blob ${digest}`, {}, idle);
    const hasher = new Bun.CryptoHasher('sha256');
    const reader = (res.body ?? new Blob().stream()).getReader();
    for (;;) {
      const next = await this.read(reader.read());
      if (next.done) break;
      idle.touch();
      hasher.update(next.value);
      await sink(next.value);
    }
    const got = `sha256:${hasher.digest('hex')}`;
    if (got !== digest) throw this.damaged(`blob ${digest}`, got);
  }

  /** A call whose answer must be one of `statuses`; anything else is a RegistryError saying what failed. */
  private async expect(method: string, url: string, statuses: number[], what: string, call: Call = {}, idle = new Idle(this.timeoutMs)): Promise<Response> {
    let res = await this.send(method, url, call, idle);
    if (res.status === 401) {
      await res.body?.cancel();
      this.authorization = await this.authorize(res.headers.get('www-authenticate') ?? '', idle);
      res = await this.send(method, url, call, idle);
      if (res.status === 401) throw new RegistryError(`${this.display} refused the credentials of ${this.credentials().file} for ${this.repo.host} (${what}): run \`docker login ${this.repo.host}\` again`);
    }
    if (statuses.includes(res.status)) return res;
    throw await this.failure(res, what);
  }

  /** One request; redirects (a blob store in front of the registry) are followed without our credentials when they leave this origin. */
  private async send(method: string, url: string, call: Call, idle: Idle): Promise<Response> {
    let target = url;
    for (let hop = 0; hop < 5; hop++) {
      const sameOrigin = new URL(target).origin === this.origin;
      const headers = { ...call.headers, ...(this.authorization && sameOrigin ? { Authorization: this.authorization } : {}) };
      let res: Response;
      try {
        res = await fetch(target, { method, headers, body: call.body?.(idle), redirect: 'manual', signal: idle.signal });
      } catch (err) {
        throw this.unreachable(err);
      }
      const location = res.headers.get('location');
      if (!(res.status >= 301 && res.status <= 308 && location && (method === 'GET' || method === 'HEAD'))) return res;
      await res.body?.cancel();
      target = new URL(location, target).href;
    }
    throw new RegistryError(`${this.display}: too many redirects for ${method} ${url}`);
  }

  /** The Authorization header a 401's challenge asks for: basic credentials, or a token got with them (or anonymously). */
  private async authorize(challenge: string, idle: Idle): Promise<string> {
    const creds = this.credentials();
    const scheme = challenge.trim().split(/\s+/)[0]?.toLowerCase();
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (scheme === 'basic') {
      if (!creds.auth) throw this.loginNeeded(creds);
      return `Basic ${creds.auth}`;
    }
    if (scheme !== 'bearer' || !params.realm) throw new RegistryError(`${this.display} asks for an authentication rustcbuildx does not speak: "${challenge}"`);
    const url = new URL(params.realm);
    for (const key of ['service', 'scope'] as const) if (params[key]) url.searchParams.set(key, params[key]);
    let res: Response;
    try {
      res = await fetch(url, { headers: creds.auth ? { Authorization: `Basic ${creds.auth}` } : {}, signal: idle.signal });
    } catch (err) {
      throw new RegistryError(`the token service of ${this.display} (${url.origin}) is not answering: ${reason(err)}`);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      if (!creds.auth) throw this.loginNeeded(creds);
      throw new RegistryError(`the token service of ${this.display} refused the credentials of ${creds.file} for ${this.repo.host} (HTTP ${res.status}): run \`docker login ${this.repo.host}\` again`);
    }
    if (!res.ok) throw await this.failure(res, `getting a token from ${url.origin}`);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token || body.access_token;
    if (!token) throw new RegistryError(`the token service of ${this.display} (${url.origin}) answered without a token`);
    return `Bearer ${token}`;
  }

  /** The docker client's login for this host: `auths[host].auth` in its config.json (the key may carry a scheme). */
  private credentials(): { file: string; auth?: string; helper?: string } {
    const file = join(dockerConfigDir(this.env), 'config.json');
    interface DockerConfig {
      auths?: Record<string, { auth?: string }>;
      credsStore?: string;
      credHelpers?: Record<string, string>;
    }
    let config: DockerConfig;
    try {
      config = JSON.parse(readFileSync(file, 'utf8')) as DockerConfig;
    } catch {
      return { file };
    }
    for (const [key, entry] of Object.entries(config.auths ?? {})) {
      if (entry.auth && key.replace(/^https?:\/\//, '').replace(/\/.*$/, '') === this.repo.host) return { file, auth: entry.auth };
    }
    const helper = config.credHelpers?.[this.repo.host] ?? config.credsStore;
    return helper ? { file, helper } : { file };
  }

  private loginNeeded(creds: { file: string; helper?: string }): RegistryError {
    const host = this.repo.host;
    if (creds.helper) {
      return new RegistryError(
        `${this.display} needs credentials, and ${creds.file} leaves them to the credential helper docker-credential-${creds.helper}, which rustcbuildx does not read: ` +
          `remove "credsStore"/"credHelpers" for ${host} from it and run \`docker login ${host}\` so that it keeps a plain "auths" entry`,
      );
    }
    return new RegistryError(`${this.display} needs credentials: run \`docker login ${host}\``);
  }

  private async failure(res: Response, what: string): Promise<RegistryError> {
    const text = await res.text().catch(() => '');
    let detail = text.trim().slice(0, 300);
    try {
      const errors = (JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> }).errors;
      if (errors?.length) detail = errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    } catch {
      // not the registry's JSON error: its text as it is
    }
    const hint = res.status === 403 ? `; the credentials for ${this.repo.host} lack the permission (${this.credentials().file})` : '';
    return new RegistryError(`${this.display}: ${what} failed (HTTP ${res.status}${detail ? `: ${detail}` : ''})${hint}`);
  }

  private damaged(what: string, got: string): RegistryError {
    return new DamagedContent(`${this.display} served a damaged ${what}: its content hashes to ${got}; refused. Push it again from a good copy`);
  }

  /** An answer's body: a connection that breaks (or stalls) while it comes is the registry not answering. */
  private read<T>(body: Promise<T>): Promise<T> {
    return body.catch((err: unknown) => Promise.reject(this.unreachable(err)));
  }

  private unreachable(err: unknown): RegistryError {
    if (err instanceof RegistryError) return err;
    return new RegistryError(`${this.display} (${this.origin}) is not answering: ${reason(err)}`);
  }
}

function reason(err: unknown): string {
  const e = err as { name?: string; code?: string; message?: string };
  return e.name === 'TimeoutError' ? e.message ?? 'timed out' : [e.code, e.message].filter(Boolean).join(': ') || String(err);
}


/** The media type a manifest declares in itself, for a registry that does not send it as Content-Type. */
function declaredType(bytes: Uint8Array): string {
  try {
    return (JSON.parse(new TextDecoder().decode(bytes)) as { mediaType?: string }).mediaType ?? '';
  } catch {
    return '';
  }
}
