/** Choosing a base image not made by us: only after its `rustc -vV` equals the local one. */
import { endpointOf } from '../../src/engine/endpoint';
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extrasId, MissingBaseImage, renderBaseDockerfile, resolveBaseImage, versionDiff } from '../../src/base-image';
import { loadConfig } from '../../src/config/config.ts';
import type { BuildRequest, Engine, ImageInfo } from '../../src/engine/engine';
import { parseRustcVersion, toolchainTag } from '../../src/toolchain';

const LOCAL = `rustc 1.95.0 (59807616e 2026-04-14)
binary: rustc
commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860
commit-date: 2026-04-14
host: x86_64-unknown-linux-gnu
release: 1.95.0
LLVM version: 22.1.2`;
const OTHER = LOCAL.replace(/59807616e/g, '000000000');
const TC = parseRustcVersion(LOCAL);
const OFFICIAL = 'docker.io/library/rust:1.95.0-slim';

/**
 * An engine whose store holds `images` (ref → the `rustc -vV` its check build reports), whose registry
 * serves `registry`, and which counts what it was asked to do.
 */
class StubEngine implements Engine {
  readonly runner = 'docker';
  readonly endpoint = endpointOf('docker', { DOCKER_CONFIG: '/nonexistent/docker-config' });
  readonly description = 'stub';
  builds = 0;
  pulls: string[] = [];
  constructor(
    private readonly images: Map<string, string>,
    private readonly registry: Map<string, string> = new Map(),
  ) {}

  async build(req: BuildRequest) {
    this.builds++;
    const from = /^FROM (\S+)/.exec(await Bun.file(req.dockerfile).text())?.[1] ?? '';
    mkdirSync(req.outputDir as string, { recursive: true });
    writeFileSync(join(req.outputDir as string, 'rustc-vV'), `${this.images.get(from) ?? 'sh: rustc: not found'}\n`);
    return { code: 0, log: '', seconds: 0 };
  }
  async inspectImage(ref: string): Promise<ImageInfo | undefined> {
    return this.images.has(ref) ? { id: `sha256:${Bun.hash(`${ref}\0${this.images.get(ref)}`).toString(16).padStart(64, '0')}`, labels: {}, config: { env: [], user: '' } } : undefined;
  }
  async answers() {
    return true;
  }
  async registryHas(ref: string) {
    return this.registry.has(ref);
  }
  async pull(ref: string) {
    this.pulls.push(ref);
    const vv = this.registry.get(ref);
    if (vv === undefined) return { code: 1, stdout: '', stderr: `Error response from daemon: pull access denied for ${ref}` };
    this.images.set(ref, vv);
    return { code: 0, stdout: '', stderr: '' };
  }
  async importRootfs() {
    return { code: 1, stdout: '', stderr: 'not here' };
  }
  async saveImage() {
    return { code: 1, stdout: '', stderr: 'not here' };
  }
  async loadImage() {
    return { code: 1, stdout: '', stderr: 'not here' };
  }
}

describe('resolveBaseImage for images not made by us', () => {
  let cacheDir = '';
  const saved = process.env.RUSTCBUILDX_CACHE_DIR;
  beforeAll(() => {
    cacheDir = mkdtempSync(join(tmpdir(), 'rcbx-base-check-'));
    process.env.RUSTCBUILDX_CACHE_DIR = cacheDir;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.RUSTCBUILDX_CACHE_DIR;
    else process.env.RUSTCBUILDX_CACHE_DIR = saved;
    rmSync(cacheDir, { recursive: true, force: true });
  });
  const configured = (image: string) => loadConfig({ RUSTCBUILDX_BASE_IMAGE: image });

  test('RUSTCBUILDX_BASE_IMAGE with the same rustc: used, and checked once per content ID', async () => {
    const engine = new StubEngine(new Map([['mine:1', LOCAL]]));
    const choice = await resolveBaseImage(engine, configured('mine:1'), TC);
    expect(choice).toMatchObject({ image: 'mine:1', reason: 'configured' });
    expect(choice.id).toMatch(/^sha256:/);
    expect(await resolveBaseImage(engine, configured('mine:1'), TC)).toEqual(choice);
    expect(engine.builds).toBe(1);
  });

  test('RUSTCBUILDX_BASE_IMAGE with another rustc: an error naming the image, both versions and the fix', async () => {
    const engine = new StubEngine(new Map([['theirs:1', OTHER]]));
    const err = await resolveBaseImage(engine, configured('theirs:1'), TC).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MissingBaseImage);
    const message = (err as Error).message;
    expect(message).toContain('base-image = theirs:1 (environment RUSTCBUILDX_BASE_IMAGE)');
    expect(message).toContain('image: rustc 1.95.0 (000000000 2026-04-14)');
    expect(message).toContain('local: rustc 1.95.0 (59807616e 2026-04-14)');
    expect(message).toContain('image: commit-hash: 000000000');
    expect(message).toContain('rustcbuildx base build');
    // A mismatch is not remembered: the next run checks again.
    await resolveBaseImage(engine, configured('theirs:1'), TC).catch(() => undefined);
    expect(engine.builds).toBe(2);
  });

  test('a configured image missing everywhere: the pull\'s error', async () => {
    const engine = new StubEngine(new Map());
    const err = await resolveBaseImage(engine, configured('nowhere:1'), TC).catch((e: unknown) => e);
    expect((err as Error).message).toContain('base-image = nowhere:1 (environment RUSTCBUILDX_BASE_IMAGE): not in the store of docker (local default), and pulling it failed');
    expect((err as Error).message).toContain('pull access denied');
  });

  test('the official image is pulled, then checked like any other', async () => {
    const engine = new StubEngine(new Map(), new Map([[OFFICIAL, LOCAL]]));
    const choice = await resolveBaseImage(engine, loadConfig({}), TC);
    expect(choice).toMatchObject({ image: OFFICIAL, reason: 'official' });
    expect(choice.id).toMatch(/^sha256:/);
    expect(engine.pulls).toEqual([OFFICIAL]);
    expect(engine.builds).toBe(1);
  });

  test('an official image with another rustc is refused', async () => {
    const engine = new StubEngine(new Map([[OFFICIAL, OTHER]]));
    const err = await resolveBaseImage(engine, loadConfig({}), TC).catch((e: unknown) => e);
    expect((err as Error).message).toContain(`the official image ${OFFICIAL}`);
    expect(engine.pulls).toEqual([]);
  });
});

test('versionDiff: the version lines, then only the lines that differ', () => {
  expect(versionDiff(OTHER, LOCAL)).toBe(
    [
      '  image: rustc 1.95.0 (000000000 2026-04-14)',
      '  local: rustc 1.95.0 (59807616e 2026-04-14)',
      '  image: commit-hash: 0000000001fa2540724bfbac14d7976d7e4a3860',
      '  local: commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860',
    ].join('\n'),
  );
  expect(versionDiff('sh: rustc: not found', LOCAL).split('\n').length).toBe(14);
});

describe('base image extras (base.packages, base.dockerfile)', () => {
  const withExtras = (env: Record<string, string>) => loadConfig(env);

  test('the extras get a tag of their own, which the wrapper looks for; none: the plain toolchain tag', async () => {
    const plain = toolchainTag(TC);
    const cfg = withExtras({ RUSTCBUILDX_BASE_PACKAGES: 'pkg-config,libssl-dev' });
    const tagged = toolchainTag(TC, extrasId(cfg.base));
    expect(tagged).toStartWith(`${plain}-x`);
    expect(extrasId(loadConfig({}).base)).toBe('');
    // the order of the packages does not matter; a Dockerfile snippet does
    expect(extrasId(withExtras({ RUSTCBUILDX_BASE_PACKAGES: 'libssl-dev,pkg-config' }).base)).toBe(extrasId(cfg.base));
    expect(extrasId(withExtras({ RUSTCBUILDX_BASE_PACKAGES: 'libssl-dev,pkg-config', RUSTCBUILDX_BASE_DOCKERFILE: 'RUN true' }).base)).not.toBe(extrasId(cfg.base));
    // only the plain toolchain image exists: the extras' image is missing, and the error says what to run
    const engine = new StubEngine(new Map([[plain, LOCAL]]));
    const err = await resolveBaseImage(engine, cfg, TC).catch((e: Error) => e);
    expect(err).toBeInstanceOf(MissingBaseImage);
    expect((err as Error).message).toContain('with base.packages ["libssl-dev","pkg-config"]');
    expect((err as Error).message).toContain('base build');
  });

  test('with base-image set, extras are an error saying they apply to the image base build makes', async () => {
    const cfg = withExtras({ RUSTCBUILDX_BASE_PACKAGES: 'libssl-dev', RUSTCBUILDX_BASE_IMAGE: 'team/rust:1' });
    const err = await resolveBaseImage(new StubEngine(new Map()), cfg, TC).catch((e: Error) => e);
    expect((err as Error).message).toContain('apply to the image `base build` makes, not to base-image team/rust:1');
  });

  test('the Dockerfile: the user\'s lines after the toolchain, and the extras\' label', () => {
    const text = renderBaseDockerfile('rootfs', TC, 'rootfs@sha256:1', { id: 'abc', dockerfile: 'RUN curl -o /usr/local/bin/x https://example.com/x\n' });
    expect(text).toContain('ENV PATH=/opt/rust/bin:');
    expect(text.indexOf('RUN curl')).toBeGreaterThan(text.indexOf('COPY lib'));
    expect(text).toContain('org.rustcbuildx.extras="abc"');
    expect(renderBaseDockerfile('rootfs', TC, 'rootfs@sha256:1')).not.toContain('org.rustcbuildx.extras');
  });
});
