/**
 * `base push` and `base pull` with the local docker engine and a real registry (scripts/registry.sh):
 * the image's ID survives the round trip (it is in every memo key), and a blob damaged in the registry
 * is refused with nothing loaded. Only images and tags made here are removed.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { basePull, basePush } from '../../src/cli/base-transfer.ts';
import { UsageError } from '../../src/cli/usage.ts';
import { localToolchain } from '../../src/base-image.ts';
import { run } from '../../src/exec.ts';
import { parseImageRef, RegistryClient, RegistryError } from '../../src/store/registry.ts';
import { sha256, toolchainTag } from '../../src/toolchain.ts';
import { BASE_BUILD_TIMEOUT, ensureBaseImage, ROOT, RUSTCBUILDX, TEST_CACHE_DIR, testEnv } from './harness.ts';

const LONG = 900_000;
const work = mkdtempSync(join(tmpdir(), 'rcbx-transfer-'));
const registryDir = join(work, 'registry');
let port = 0;
let registry = '';
/** docker tags this file made: removed at the end (never the base image's own) */
const made: string[] = [];
const savedCacheDir = process.env.RUSTCBUILDX_CACHE_DIR;

beforeAll(async () => {
  // The commands run in this process: their memos go to the test's cache dir, as the binary's do.
  process.env.RUSTCBUILDX_CACHE_DIR = TEST_CACHE_DIR;
  await ensureBaseImage('docker');
  const probe = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response() });
  port = probe.port as number;
  probe.stop(true);
  const started = await run(['bash', join(ROOT, 'scripts/registry.sh'), 'start', registryDir, String(port)], { timeoutMs: 300_000 });
  if (started.code !== 0) throw new Error(`registry.sh start failed:\n${started.stderr}`);
  registry = `127.0.0.1:${port}`;
}, BASE_BUILD_TIMEOUT);

afterAll(async () => {
  if (made.length > 0) await run(['docker', 'rmi', ...made]);
  await run(['bash', join(ROOT, 'scripts/registry.sh'), 'stop', registryDir], { timeoutMs: 60_000 });
  rmSync(work, { recursive: true, force: true });
  if (savedCacheDir === undefined) delete process.env.RUSTCBUILDX_CACHE_DIR;
  else process.env.RUSTCBUILDX_CACHE_DIR = savedCacheDir;
}, 120_000);

async function imageId(ref: string, env?: Record<string, string | undefined>): Promise<string | undefined> {
  const res = await run(['docker', 'image', 'inspect', '--format', '{{.Id}}', ref], env ? { env } : {});
  return res.code === 0 ? res.stdout.trim() : undefined;
}

/** A small image of this file's own (a file and a label), in docker's store under `tag`; its ID. */
async function smallImage(tag: string, content: string): Promise<string> {
  const dir = join(work, `rootfs-${sha256(tag).slice(0, 8)}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hello.txt'), content);
  writeFileSync(join(dir, 'filler.bin'), new Uint8Array(2_000_000).map((_, i) => (i * 31) % 253));
  const tar = join(work, `${sha256(tag).slice(0, 8)}.tar`);
  expect((await run(['tar', '-C', dir, '-cf', tar, '.'])).code).toBe(0);
  const imported = await run(['docker', 'import', '--change', 'LABEL org.rustcbuildx.test=transfer', tar, tag]);
  expect(imported.code).toBe(0);
  made.push(tag);
  return (await imageId(tag)) as string;
}

/** The file in the registry's storage that holds a blob. */
function blobFile(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return join(registryDir, 'data/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

async function manifestOf(ref: string): Promise<{ config: { digest: string }; layers: Array<{ digest: string; size: number; mediaType: string }> }> {
  const { repo, reference } = parseImageRef(ref);
  const fetched = await new RegistryClient(repo).getManifest(reference);
  return JSON.parse(new TextDecoder().decode(fetched?.bytes)) as Awaited<ReturnType<typeof manifestOf>>;
}

async function failure(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

describe('base push / base pull', () => {
  test("the toolchain image, pushed and pulled under a new name, keeps its ID: the pushed config's digest", async () => {
    const { toolchain } = await localToolchain();
    const original = await imageId(toolchainTag(toolchain));
    expect(original).toMatch(/^sha256:[0-9a-f]{64}$/);
    const ref = `${registry}/rcbx/base:test`;
    expect(await basePush([ref])).toBe(0);
    const manifest = await manifestOf(ref);
    expect(manifest.config.digest).toBe(original as string);
    expect(manifest.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+gzip')).toBe(true);

    made.push(ref);
    expect(await basePull([ref])).toBe(0);
    expect(await imageId(ref)).toBe(original as string);
    // It holds the local toolchain: the wrapper's tag names it too (the same image it already was).
    expect(await imageId(toolchainTag(toolchain))).toBe(original as string);
  }, LONG);

  test('an image the store does not have is loaded whole from the registry, with the same ID', async () => {
    const local = 'rcbx-transfer-test/small:one';
    const id = await smallImage(local, 'one');
    const ref = `${registry}/rcbx/small:one`;
    expect(await basePush([ref, '--image', local, '--runner', 'docker'])).toBe(0);
    expect((await run(['docker', 'rmi', local])).code).toBe(0);
    made.splice(made.indexOf(local), 1);
    expect(await imageId(id)).toBeUndefined();

    made.push(ref);
    expect(await basePull([ref])).toBe(0);
    // The same ID is the same configuration, which names every layer's content: the same image.
    expect(await imageId(ref)).toBe(id);
  }, LONG);

  test('a layer damaged in the registry is refused, and nothing is loaded', async () => {
    const local = 'rcbx-transfer-test/small:two';
    const id = await smallImage(local, 'two');
    const ref = `${registry}/rcbx/small:two`;
    expect(await basePush([ref, '--image', local])).toBe(0);
    expect((await run(['docker', 'rmi', local])).code).toBe(0);
    made.splice(made.indexOf(local), 1);

    const [layer] = (await manifestOf(ref)).layers;
    const file = blobFile(layer?.digest as string);
    const bytes = readFileSync(file);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = (bytes[middle] as number) ^ 0xff;
    writeFileSync(file, bytes);

    const err = await failure(basePull([ref]));
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toContain(`${registry}/rcbx/small served a damaged blob ${layer?.digest}: its content hashes to sha256:`);
    expect(err.message).toContain('refused. Push it again from a good copy');
    expect(await imageId(ref)).toBeUndefined();
    expect(await imageId(id)).toBeUndefined();
  }, LONG);

  test("a layer that is intact but not the one the image's configuration names is refused, and nothing is loaded", async () => {
    const good = await manifestOf(`${registry}/rcbx/small:one`);
    const client = new RegistryClient(parseImageRef(`${registry}/rcbx/small`).repo);
    // A valid gzip blob (its digest is right) of another tar than the configuration's diff_id.
    const other = gzipSync(new Uint8Array(1024));
    const digest = `sha256:${sha256(other)}`;
    await client.putBlob(digest, other);
    const manifest = { ...good, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: other.length }] };
    await client.putManifest('swapped', new TextEncoder().encode(JSON.stringify(manifest)), 'application/vnd.oci.image.manifest.v1+json');

    const ref = `${registry}/rcbx/small:swapped`;
    const err = await failure(basePull([ref]));
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toMatch(/layer 1 \(sha256:[0-9a-f]{64}\) unpacks to sha256:[0-9a-f]{64}, not to the sha256:[0-9a-f]{64} its image's configuration names; refused/);
    expect(await imageId(ref)).toBeUndefined();
  }, LONG);

  test('what cannot work is said before anything is moved', async () => {
    expect(await failure(basePush(['rcbx/base:test']))).toBeInstanceOf(UsageError);
    expect((await failure(basePush([`${registry}/rcbx/base@sha256:${'a'.repeat(64)}`]))).message).toContain('push to a tag');
    expect((await failure(basePull([]))).message).toStartWith('usage: base pull ');
    expect((await failure(basePull([`${registry}/rcbx/base:test`, '--image', 'x']))).message).toStartWith('unexpected argument "--image"');

    const absent = await failure(basePull([`${registry}/rcbx/base:absent`]));
    expect(absent.message).toBe(`${registry}/rcbx/base has no image absent: push one with \`rustcbuildx base push ${registry}/rcbx/base:TAG\``);

    const probe = Bun.serve({ port: 0, hostname: '127.0.0.1', fetch: () => new Response() });
    const down = `127.0.0.1:${probe.port}`;
    probe.stop(true);
    const err = await failure(basePush([`${down}/rcbx/base:test`]));
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toStartWith(`${down}/rcbx/base (http://${down}) is not answering: `);
  }, LONG);
});

/**
 * The case the transfer goes through this machine for: an engine elsewhere (DOCKER_HOST=ssh://, in a
 * network namespace of its own: scripts/remote-engine.sh) that cannot reach the registry at all.
 */
describe('into an engine that cannot reach the registry', () => {
  const SCRIPT = join(ROOT, 'scripts/remote-engine.sh');
  let remote: Record<string, string | undefined> = {};
  let tag = '';
  /** what the remote store's toolchain tag named before: put back at the end */
  let before: string | undefined;
  const ref = () => `${registry}/rcbx/remote:test`;

  beforeAll(async () => {
    const started = await run(['bash', SCRIPT, 'start'], { timeoutMs: 600_000 });
    if (started.code !== 0) throw new Error(`remote-engine.sh start failed:\n${started.stderr}`);
    const host = /^DOCKER_HOST=(.+)$/m.exec(started.stdout)?.[1];
    remote = testEnv({ DOCKER_HOST: host, PATH: `${join('/var/lib/rcbx-remote', 'bin')}:${testEnv().PATH}` });
    tag = toolchainTag((await localToolchain()).toolchain);
    before = await imageId(tag, remote);
  }, 600_000);

  afterAll(async () => {
    await run(['docker', 'rmi', ref()], { env: remote });
    await run(before ? ['docker', 'tag', before, tag] : ['docker', 'rmi', tag], { env: remote });
    await run(['bash', SCRIPT, 'stop'], { timeoutMs: 120_000 });
  }, 300_000);

  test('pulled through this machine, it has the same ID there, and the wrapper there chooses it with no setting', async () => {
    const { toolchain } = await localToolchain();
    const original = await imageId(toolchainTag(toolchain));
    expect(await basePush([ref()])).toBe(0);
    // The commands are not on the executable's command line yet: the module, in a process of its own
    // (the engine client's environment is worked out once per process).
    const pull = `import { basePull } from ${JSON.stringify(join(ROOT, 'src/cli/base-transfer.ts'))}; process.exit(await basePull(${JSON.stringify([ref()])}));`;
    const pulled = await run([process.execPath, '-e', pull], { env: remote, timeoutMs: LONG });
    expect(pulled.stderr).toBe('');
    expect(pulled.code).toBe(0);
    expect(pulled.stdout).toContain('into docker (DOCKER_HOST=ssh://rcbx-remote) as');
    expect(await imageId(ref(), remote)).toBe(original as string);
    const show = await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: remote });
    expect(show.code).toBe(0);
    expect(JSON.parse(show.stdout)).toMatchObject({ image: tag, id: original as string, reason: 'local-toolchain' });
  }, LONG);
});
