/**
 * The test workspace (test/fixtures/workspace): a lib with a build script, a proc-macro crate, a bin with
 * tests and an example, and crates.io dependencies with derive macros, rustc-probing build scripts and C
 * compiled by cc (zstd-sys). Real cargo, rustc and engine throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import type { UnitRecord } from '../../src/run-state.ts';
import { artifactNames, BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ENGINE_ONLY, ensureBaseImage, plainCompileCount, removeProject, ROOT, stats, compileRecords } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => Promise.all([ensureBaseImage('docker'), ensureBaseImage('podman')]), BASE_BUILD_TIMEOUT);

const LONG = 1_800_000;
const EXPECTED = 'hello plain Widget {"x":1,"y":2} generated=42 built_by=build.rs data=data read with include_str! pid_positive=true';

/** The units of the latest run, from the per-run records stats reads. */
function latestRecords(targetDir: string): UnitRecord[] {
  const runs = join(targetDir, '.rustcbuildx', 'runs');
  const files = readdirSync(runs).filter((f) => f.endsWith('.jsonl'));
  const newest = files.map((f) => ({ f, t: Bun.file(join(runs, f)).lastModified })).sort((a, b) => b.t - a.t)[0];
  if (!newest) return [];
  return compileRecords(join(runs, newest.f));
}

async function app(targetDir: string, profile = 'debug'): Promise<string> {
  const res = await run([join(targetDir, profile, 'app')]);
  expect(res.code).toBe(0);
  return res.stdout.trim();
}

describe('cargo buildx on the test workspace', () => {
  let dir = '';
  let target = '';
  beforeAll(() => {
    dir = copyProject('test/fixtures/workspace');
    target = join(dir, 'target');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  for (const cmd of [['build', '--all-targets'], ['test'], ['check', '--all-targets'], ['clippy', '--all-targets']]) {
    test(`\`cargo buildx ${cmd.join(' ')}\`: succeeds, every unit sandboxed, units == rustc compile calls`, async () => {
      const ours = join(dir, `t-${cmd[0]}`);
      const res = await buildx(dir, [...cmd, '--locked'], { CARGO_TARGET_DIR: ours });
      expect(res.code).toBe(0);
      if (cmd[0] === 'test') expect(res.stdout).toContain('test result: ok. 2 passed');
      // stats reads the project's own target dir; this run used another, so its records are read directly.
      const records = latestRecords(ours);
      expect(records.filter((r) => r.outcome === 'fallback')).toEqual([]);
      const plainArgs = cmd[0] === 'test' ? ['test', '--no-run'] : cmd;
      expect(records.length).toBe(await plainCompileCount(dir, join(dir, `p-${cmd[0]}`), [...plainArgs, '--locked']));
    }, LONG);
  }

  test('build: the binary runs; file names under deps/ and build/ equal plain cargo\'s', async () => {
    const res = await buildx(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    expect(await app(target)).toBe(EXPECTED);
    expect((await stats(dir)).fallback).toBe(0);
    const plain = join(dir, 'p-names');
    expect((await cargo(dir, ['build', '--locked'], { CARGO_TARGET_DIR: plain })).code).toBe(0);
    expect(artifactNames(target)).toEqual(artifactNames(plain));
  }, LONG);

  test('cargo clean, then build: every unit from the cache', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    const s = await stats(dir);
    expect(s).toMatchObject({ built: 0, fallback: 0, cached: s.units });
    expect(await app(target)).toBe(EXPECTED);
  }, LONG);

  test('edit one workspace source: exactly that crate and its dependents rebuild', async () => {
    // A new edit every run: BuildKit's cache outlives test runs, and an edit seen before is a cache hit.
    appendFileSync(join(dir, 'crates/core-lib/src/lib.rs'), `\npub fn edited() -> u32 { 7 } // ${crypto.randomUUID()}\n`);
    const res = await buildx(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    const compiled = latestRecords(target).map((r) => r.crate).sort();
    expect(compiled).toEqual(['app', 'core_lib']);
    expect(latestRecords(target).every((r) => r.outcome === 'built')).toBe(true);
    expect(await app(target)).toBe(EXPECTED);
  }, LONG);

  test('an edited file read by include_str! is never served stale', async () => {
    writeFileSync(join(dir, 'crates/core-lib/data.txt'), 'changed data\n');
    expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    expect(await app(target)).toContain('data=changed data ');
    writeFileSync(join(dir, 'crates/core-lib/data.txt'), 'data read with include_str!\n');
    expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    expect(await app(target)).toBe(EXPECTED);
    expect(latestRecords(target).find((r) => r.crate === 'core_lib')?.outcome).toBe('cached');
  }, LONG);

  test('a feature, the profile and RUSTFLAGS change what is built, and nothing stale is served', async () => {
    expect((await buildx(dir, ['build', '--locked', '--features', 'core-lib/loud'])).code).toBe(0);
    expect(await app(target)).toStartWith('HELLO plain ');
    expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    expect(await app(target)).toBe(EXPECTED);

    expect((await buildx(dir, ['build', '--locked', '--release'])).code).toBe(0);
    expect(latestRecords(target).filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(await app(target, 'release')).toBe(EXPECTED);

    expect((await buildx(dir, ['build', '--locked'], { RUSTFLAGS: '--cfg rcbx_flavour' })).code).toBe(0);
    expect(latestRecords(target).length).toBeGreaterThan(10); // RUSTFLAGS rebuild every unit
    expect(await app(target)).toStartWith('hello flavoured ');
    expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    expect(await app(target)).toBe(EXPECTED);
  }, LONG);

  test('the edit loop (local engine, RUSTCBUILDX_INCREMENTAL=auto): the edited lib and its dependents are compiled here, tests too, nothing falls back', async () => {
    const auto = { RUSTCBUILDX_INCREMENTAL: 'auto' };
    const ours = join(dir, 't-edit-loop');
    expect((await buildx(dir, ['build', '--locked'], { ...auto, CARGO_TARGET_DIR: ours })).code).toBe(0);
    appendFileSync(join(dir, 'crates/core-lib/src/lib.rs'), `\npub fn looped() -> u32 { 8 } // ${crypto.randomUUID()}\n`);
    expect((await buildx(dir, ['build', '--locked'], { ...auto, CARGO_TARGET_DIR: ours })).code).toBe(0);
    expect(latestRecords(ours).map((r) => [r.crate, r.outcome]).sort()).toEqual([['app', 'local'], ['core_lib', 'local']]);
    expect(await app(ours)).toBe(EXPECTED);
    // Test harnesses never built here depend on the lib compiled here: compiled here too, not fallbacks.
    const tests = await buildx(dir, ['test', '--locked'], { ...auto, CARGO_TARGET_DIR: ours });
    expect(tests.code).toBe(0);
    expect(tests.stdout).toContain('test result: ok. 2 passed');
    const records = latestRecords(ours);
    expect(records.filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(records.some((r) => r.outcome === 'local')).toBe(true);
  }, LONG);

  test('plain cargo build in the same target dir afterwards works', async () => {
    const res = await cargo(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    expect(await app(target)).toBe(EXPECTED);
  }, LONG);

  test('engine stopped (daemon unreachable): local rustc, one warning, the binary runs', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked'], { RUSTCBUILDX_RUNNER: 'docker', DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    expect(res.code).toBe(0);
    expect(res.stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
    expect(res.stderr).toContain('docker (DOCKER_HOST=unix:///nonexistent/docker.sock) does not answer');
    const s = await stats(dir);
    expect(s.fallback).toBe(s.units);
    expect(await app(target)).toBe(EXPECTED);
  }, LONG);

  for (const [runner, extra] of [
    ['podman', {}],
    ['docker-build', { RUSTCBUILDX_DOCKER: join(ROOT, '.cache/docker-20.10/docker') }],
  ] as const) {
    test(`RUSTCBUILDX_RUNNER=${runner}: builds with every unit sandboxed and the binary runs`, async () => {
      const ours = join(dir, `t-${runner}`);
      const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_RUNNER: runner, CARGO_TARGET_DIR: ours, ...extra });
      expect(res.code).toBe(0);
      const records = latestRecords(ours);
      expect(records.length).toBeGreaterThan(20);
      expect(records.filter((r) => r.outcome === 'fallback')).toEqual([]);
      expect(await app(ours)).toBe(EXPECTED);
    }, LONG);
  }
});
