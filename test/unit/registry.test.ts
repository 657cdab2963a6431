/**
 * The registry client: reference parsing, then every call against a real registry (Debian's
 * docker-registry, started here through scripts/registry.sh), and what a fake one shows that a stock
 * registry does not (bearer tokens, tag pages, deletion disabled, silence).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run } from '../../src/exec';
import { parseImageRef, RegistryClient, RegistryError, repositoryOf } from '../../src/store/registry';
import { sha256 } from '../../src/toolchain';

const SCRIPT = resolve(import.meta.dir, '../../scripts/registry.sh');
const work = mkdtempSync(join(tmpdir(), 'rcbx-registry-'));
/** No docker login at all: the machine's own config must not leak in. */
const NO_LOGIN = { DOCKER_CONFIG: join(work, 'no-docker-config') };

function freePort(): number {
  const probe = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response() });
  const port = probe.port as number;
  probe.stop(true);
  return port;
}

async function startRegistry(dir: string, htpasswd?: string): Promise<number> {
  const port = freePort();
  const res = await run(['bash', SCRIPT, 'start', dir, String(port), ...(htpasswd ? [htpasswd] : [])], { timeoutMs: 120_000 });
  if (res.code !== 0) throw new Error(`registry.sh start failed: ${res.stderr}`);
  return port;
}

const digestOf = (bytes: Uint8Array | string) => `sha256:${sha256(bytes)}`;
const enc = (s: string) => new TextEncoder().encode(s);

function blobFile(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(dataDir, 'data/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

async function refusal(p: Promise<unknown>): Promise<RegistryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(RegistryError);
  return err as RegistryError;
}

const plain = join(work, 'plain');
const guarded = join(work, 'guarded');
let plainPort = 0;
let guardedPort = 0;

beforeAll(async () => {
  const htpasswd = join(work, 'htpasswd');
  writeFileSync(htpasswd, `ci:${await Bun.password.hash('s3cret', { algorithm: 'bcrypt', cost: 4 })}\n`);
  [plainPort, guardedPort] = await Promise.all([startRegistry(plain), startRegistry(guarded, htpasswd)]);
}, 180_000);

afterAll(async () => {
  await Promise.all([plain, guarded].map((dir) => run(['bash', SCRIPT, 'stop', dir], { timeoutMs: 30_000 })));
  rmSync(work, { recursive: true, force: true });
});

describe('references', () => {
  test('loopback registries are plain http, as docker treats them; others https unless forced', () => {
    for (const ref of ['localhost/a', 'localhost:5000/a', '127.0.0.1:5000/team/rcbx', '127.9.8.7/x', '[::1]:5000/x']) {
      expect(repositoryOf(ref).scheme).toBe('http');
    }
    expect(repositoryOf('registry.example.com/team/rcbx')).toEqual({ scheme: 'https', host: 'registry.example.com', name: 'team/rcbx' });
    expect(repositoryOf('localhost.example.com:443/a').scheme).toBe('https');
    expect(repositoryOf('128.0.0.1/a').scheme).toBe('https');
    expect(repositoryOf('cache.lan:5000/a/b/', { forceHttp: true })).toEqual({ scheme: 'http', host: 'cache.lan:5000', name: 'a/b' });
  });

  test('a repository needs a host and a lowercase path', () => {
    for (const bad of ['registry.example.com', 'registry.example.com/', '/team/rcbx', 'registry.example.com/Team', 'registry.example.com/a//b', 'bad_host!/a', 'reg.io/a-']) {
      expect(() => repositoryOf(bad)).toThrow(RegistryError);
    }
  });

  test('image references: tag, digest, default tag', () => {
    const digest = `sha256:${'ab'.repeat(32)}`;
    expect(parseImageRef('127.0.0.1:5000/rcbx/base:test')).toEqual({ repo: { scheme: 'http', host: '127.0.0.1:5000', name: 'rcbx/base' }, reference: 'test' });
    expect(parseImageRef('127.0.0.1:5000/rcbx/base').reference).toBe('latest');
    expect(parseImageRef('localhost/rcbx').repo.host).toBe('localhost');
    expect(parseImageRef(`reg.example.com/team/rcbx@${digest}`)).toEqual({ repo: { scheme: 'https', host: 'reg.example.com', name: 'team/rcbx' }, reference: digest });
    expect(parseImageRef(`reg.example.com/team/rcbx:v1@${digest}`).reference).toBe(digest);
    expect(parseImageRef('reg.example.com/team/rcbx:v1', { forceHttp: true }).repo.scheme).toBe('http');
  });

  test('a reference without a registry host, or with a bad tag or digest, is refused with the form to use', () => {
    expect(() => parseImageRef('rust:1.95-slim')).toThrow(/names no registry: write its host in full/);
    expect(() => parseImageRef('team/rcbx:v1')).toThrow(/names no registry/);
    expect(() => parseImageRef('reg.example.com/team/rcbx:bad tag')).toThrow(/not a valid tag/);
    expect(() => parseImageRef('reg.example.com/team/rcbx@sha256:abc')).toThrow(/not a sha256:<64 hex digits> digest/);
  });
});

describe('against a real registry', () => {
  const client = () => new RegistryClient(repositoryOf(`127.0.0.1:${plainPort}/rcbx/unit`), { env: NO_LOGIN });

  test('ping; blobs up and down, from memory and from a file; an upload that is present is not sent again', async () => {
    const c = client();
    expect(c.display).toBe(`127.0.0.1:${plainPort}/rcbx/unit`);
    await c.ping();
    const small = enc('hello registry');
    expect(await c.hasBlob(digestOf(small))).toBe(false);
    await c.putBlob(digestOf(small), small);
    await c.putBlob(digestOf(small), small);
    expect(await c.hasBlob(digestOf(small))).toBe(true);
    expect(new TextDecoder().decode(await c.getBlob(digestOf(small)))).toBe('hello registry');

    const big = new Uint8Array(3_000_000).map((_, i) => (i * 7919) % 251);
    const file = join(work, 'big.bin');
    writeFileSync(file, big);
    await c.putBlob(digestOf(big), { file, size: big.length });
    const back = join(work, 'big.back');
    await c.getBlobToFile(digestOf(big), back);
    expect(sha256(readFileSync(back))).toBe(sha256(big));
  });

  test('a blob whose bytes do not match its digest is refused both ways, and a refused download leaves no file', async () => {
    const c = client();
    const bytes = enc('the real content');
    const wrongUpload = await refusal(c.putBlob(digestOf('something else'), bytes));
    expect(wrongUpload.message).toMatch(/uploading sha256:[0-9a-f]{64} failed \(HTTP 400: DIGEST_INVALID/);

    await c.putBlob(digestOf(bytes), bytes);
    const stored = blobFile(plain, digestOf(bytes));
    writeFileSync(stored, enc('the real c0ntent'));
    const refused = await refusal(c.getBlob(digestOf(bytes)));
    expect(refused.message).toContain(`served a damaged blob ${digestOf(bytes)}: its content hashes to ${digestOf('the real c0ntent')}; refused`);
    const file = join(work, 'damaged.out');
    await refusal(c.getBlobToFile(digestOf(bytes), file));
    expect(existsSync(file)).toBe(false);
  });

  test('manifests by tag and by digest, tags listed, deletion', async () => {
    const c = new RegistryClient(repositoryOf(`127.0.0.1:${plainPort}/rcbx/manifests`), { env: NO_LOGIN });
    expect(await c.listTags()).toEqual([]);
    const config = enc('{}');
    const layer = enc('layer bytes');
    await c.putBlob(digestOf(config), config);
    await c.putBlob(digestOf(layer), layer);
    const mediaType = 'application/vnd.oci.image.manifest.v1+json';
    const manifest = enc(
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digestOf(layer), size: layer.length }],
      }),
    );
    const digest = await c.putManifest('one', manifest, mediaType);
    expect(digest).toBe(digestOf(manifest));
    await c.putManifest('two', manifest, mediaType);
    expect((await c.listTags()).sort()).toEqual(['one', 'two']);
    for (const ref of ['one', digest]) {
      const got = await c.getManifest(ref);
      expect(got?.digest).toBe(digest);
      expect(got?.mediaType).toBe(mediaType);
      expect(sha256(got?.bytes ?? new Uint8Array())).toBe(sha256(manifest));
    }
    expect(await c.getManifest('absent')).toBeUndefined();
    await c.deleteManifest(digest);
    expect(await c.getManifest('one')).toBeUndefined();
    expect(await c.listTags()).toEqual([]);
    await c.deleteManifest(digest);
  });

  test('a registry that is down is a RegistryError naming it', async () => {
    const port = freePort();
    const err = await refusal(new RegistryClient(repositoryOf(`127.0.0.1:${port}/x`), { env: NO_LOGIN }).ping());
    expect(err.message).toStartWith(`127.0.0.1:${port}/x (http://127.0.0.1:${port}) is not answering: `);
  });
});

describe('basic auth (htpasswd)', () => {
  function dockerConfig(name: string, config: object): Record<string, string> {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    return { DOCKER_CONFIG: dir };
  }
  const repo = () => repositoryOf(`127.0.0.1:${guardedPort}/rcbx/auth`);
  const login = (pass: string) => ({ auths: { [`127.0.0.1:${guardedPort}`]: { auth: Buffer.from(`ci:${pass}`).toString('base64') } } });

  test('without a login: the error says to run docker login for that host', async () => {
    const err = await refusal(new RegistryClient(repo(), { env: NO_LOGIN }).ping());
    expect(err.message).toBe(`127.0.0.1:${guardedPort}/rcbx/auth needs credentials: run \`docker login 127.0.0.1:${guardedPort}\``);
  });

  test("with the docker client's login (a key with a scheme too): every call works", async () => {
    const c = new RegistryClient(repo(), { env: dockerConfig('good', { auths: { [`http://127.0.0.1:${guardedPort}/v1/`]: login('s3cret').auths[`127.0.0.1:${guardedPort}`] } }) });
    await c.ping();
    const bytes = enc('guarded');
    await c.putBlob(digestOf(bytes), bytes);
    expect(new TextDecoder().decode(await c.getBlob(digestOf(bytes)))).toBe('guarded');
  });

  test('a wrong password says the login was refused', async () => {
    const err = await refusal(new RegistryClient(repo(), { env: dockerConfig('bad', login('wrong')) }).ping());
    expect(err.message).toContain(`refused the credentials of ${join(work, 'bad', 'config.json')} for 127.0.0.1:${guardedPort}`);
    expect(err.message).toContain(`run \`docker login 127.0.0.1:${guardedPort}\` again`);
  });

  test('a login kept by a credential helper is not read, and the error says what to do', async () => {
    const err = await refusal(new RegistryClient(repo(), { env: dockerConfig('helper', { auths: { [`127.0.0.1:${guardedPort}`]: {} }, credsStore: 'pass' }) }).ping());
    expect(err.message).toContain('leaves them to the credential helper docker-credential-pass, which rustcbuildx does not read');
    expect(err.message).toContain(`run \`docker login 127.0.0.1:${guardedPort}\` so that it keeps a plain "auths" entry`);
  });
});

describe('against a fake registry', () => {
  const token = 'tok-123';
  let hits: string[] = [];
  const fake = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(req): Promise<Response> {
      const url = new URL(req.url);
      hits.push(`${req.method} ${url.pathname}${url.search}`);
      if (url.pathname === '/token') {
        const ok = req.headers.get('authorization') === `Basic ${Buffer.from('ci:pw').toString('base64')}`;
        return ok ? Response.json({ token }) : new Response('no', { status: 401 });
      }
      if (url.pathname.startsWith('/v2/silent/')) return new Promise<Response>(() => undefined);
      if (req.headers.get('authorization') !== `Bearer ${token}`) {
        const challenge = `Bearer realm="http://127.0.0.1:${fake.port}/token",service="fake",scope="repository:team/rcbx:pull"`;
        return new Response('{"errors":[{"code":"UNAUTHORIZED"}]}', { status: 401, headers: { 'WWW-Authenticate': challenge } });
      }
      if (url.pathname === '/v2/team/rcbx/tags/list') {
        const last = url.searchParams.get('last');
        if (!last) return Response.json({ name: 'team/rcbx', tags: ['a', 'b'] }, { headers: { Link: '</v2/team/rcbx/tags/list?n=2&last=b>; rel="next"' } });
        return Response.json({ name: 'team/rcbx', tags: ['c'] });
      }
      if (req.method === 'DELETE') return Response.json({ errors: [{ code: 'UNSUPPORTED', message: 'The operation is unsupported.' }] }, { status: 405 });
      return new Response('{}');
    },
  });
  afterAll(() => fake.stop(true));
  const host = `127.0.0.1:${fake.port}`;
  const withLogin = () => {
    const dir = join(work, 'fake-login');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [host]: { auth: Buffer.from('ci:pw').toString('base64') } } }));
    return { DOCKER_CONFIG: dir };
  };

  test('a bearer challenge: one token from the realm with the login, kept for the next calls; tag pages followed', async () => {
    hits = [];
    const c = new RegistryClient(repositoryOf(`${host}/team/rcbx`), { env: withLogin() });
    expect(await c.listTags()).toEqual(['a', 'b', 'c']);
    expect(hits.filter((h) => h.startsWith('GET /token'))).toEqual(['GET /token?service=fake&scope=repository%3Ateam%2Frcbx%3Apull']);
    expect(hits.filter((h) => h.includes('tags/list'))).toEqual(['GET /v2/team/rcbx/tags/list?n=1000', 'GET /v2/team/rcbx/tags/list?n=1000', 'GET /v2/team/rcbx/tags/list?n=2&last=b']);
  });

  test('a token service that refuses an anonymous client: run docker login', async () => {
    const err = await refusal(new RegistryClient(repositoryOf(`${host}/team/rcbx`), { env: NO_LOGIN }).listTags());
    expect(err.message).toBe(`${host}/team/rcbx needs credentials: run \`docker login ${host}\``);
  });

  test('deletion disabled (405) says so and how to enable it', async () => {
    const err = await refusal(new RegistryClient(repositoryOf(`${host}/team/rcbx`), { env: withLogin() }).deleteManifest(digestOf('x')));
    expect(err.message).toContain('has deletion disabled (HTTP 405)');
    expect(err.message).toContain('storage.delete.enabled: true');
  });

  test('a registry that accepts the connection and never answers times out as not answering', async () => {
    const err = await refusal(new RegistryClient({ scheme: 'http', host, name: 'silent' }, { timeoutMs: 300, env: NO_LOGIN }).hasBlob(digestOf('x')));
    expect(err.message).toBe(`${host}/silent (http://${host}) is not answering: no answer within 0.3 s`);
  });
});
