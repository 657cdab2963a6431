/**
 * Build scripts run in the sandbox (RUSTCBUILDX_BUILD_SCRIPTS=sandbox): test/fixtures/build-scripts has
 * one that writes generated Rust into OUT_DIR from a variable it declares, one that compiles C with cc,
 * and one that wants the network when told where to look; the test workspace adds zstd-sys, serde's and
 * libc's probes. Real cargo, rustc and engine throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { run } from '../../src/exec.ts';
import { readRecords, type UnitRecord } from '../../src/run-state.ts';
import { buildx, cargo, CLEANUP_TIMEOUT, copyProject, ensureBaseImage, BASE_BUILD_TIMEOUT, removeProject, RUSTCBUILDX, stats, testEnv, depsDigests } from './harness.ts';

beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 1_800_000;
const SANDBOXED = { RUSTCBUILDX_BUILD_SCRIPTS: 'sandbox' } as const;

/** Every file below each build script's OUT_DIR, by its path from `build/`, with its sha256. */
function outDirs(target: string): Record<string, string> {
  const build = join(target, 'debug', 'build');
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else out[relative(build, path)] = new Bun.CryptoHasher('sha256').update(readFileSync(path)).digest('hex');
    }
  };
  for (const pkg of readdirSync(build)) if (existsSync(join(build, pkg, 'out'))) walk(join(build, pkg, 'out'));
  return out;
}

/** What cargo kept of each script's stdout (`build/<pkg>/output`), with the target dir's path said alike. */
function outputs(target: string): Record<string, string> {
  const build = join(target, 'debug', 'build');
  const out: Record<string, string> = {};
  for (const pkg of readdirSync(build)) {
    const file = join(build, pkg, 'output');
    if (existsSync(file)) out[pkg] = readFileSync(file, 'utf8').replaceAll(target, '<target>');
  }
  return out;
}

/** The records of the newest cargo run in a target dir. */
function latestRun(target: string): UnitRecord[] {
  const runs = join(target, '.rustcbuildx', 'runs');
  const newest = readdirSync(runs)
    .filter((f) => f.endsWith('.jsonl'))
    .map((f) => ({ f, t: statSync(join(runs, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t)[0];
  return newest ? readRecords(join(runs, newest.f)) : [];
}

async function app(target: string): Promise<string> {
  const res = await run([join(target, 'debug', 'app')]);
  expect(res.code).toBe(0);
  return res.stdout.trim();
}

describe('build scripts in the sandbox (test/fixtures/build-scripts)', () => {
  let dir = '';
  let target = '';
  beforeAll(() => {
    dir = copyProject('test/fixtures/build-scripts');
    target = join(dir, 'target');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test('each script runs in the sandbox; the program, OUT_DIR and what cargo kept of each script\'s output equal plain cargo\'s', async () => {
    const plainTarget = join(dir, 'plain-target');
    expect((await cargo(dir, ['build', '--locked'], { CARGO_TARGET_DIR: plainTarget })).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    // Run, or found in BuildKit's cache when an earlier build anywhere ran these exact inputs.
    const { scripts } = await stats(dir);
    expect(scripts.host).toBe(0);
    expect(scripts.sandbox + scripts.cached).toBe(3);
    expect(res.stderr).toContain(`build scripts: ${scripts.sandbox} run in the sandbox, ${scripts.cached} from cache, 0 on the host`);
    expect(await app(target)).toBe('hello 225 offline 11e60398 made by gen\'s build script');
    expect(await app(target)).toBe(await app(plainTarget));
    // cargo runs the shim, which keeps the script's program beside it.
    const shim = readdirSync(join(target, 'debug', 'build')).find((d) => existsSync(join(target, 'debug', 'build', d, 'build-script-build')) && d.startsWith('gen-'));
    expect(readFileSync(join(target, 'debug', 'build', shim as string, 'build-script-build'), 'utf8')).toStartWith('#!/bin/sh\n# Written by rustcbuildx');
    expect(outputs(target)).toEqual(outputs(plainTarget));
    // The C objects name the directory they were compiled in (DWARF's comp_dir): /rcbx/ws/csum inside,
    // the checkout here. Every other file is byte for byte plain cargo's.
    const ours = outDirs(target);
    const plain = outDirs(plainTarget);
    const noC = (files: Record<string, string>) => Object.fromEntries(Object.entries(files).filter(([path]) => !/\.(o|a)$/.test(path)));
    expect(Object.keys(ours).sort()).toEqual(Object.keys(plain).sort());
    expect(noC(ours)).toEqual(noC(plain));
    expect(Object.keys(noC(ours)).length).toBeGreaterThanOrEqual(4);
  }, LONG);

  test('after cargo clean every script\'s run comes from the cache, with the same OUT_DIR', async () => {
    const before = outDirs(target);
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    expect((await stats(dir)).scripts).toEqual({ sandbox: 0, cached: 3, host: 0 });
    expect(outDirs(target)).toEqual(before);
    expect(await app(target)).toBe('hello 225 offline 11e60398 made by gen\'s build script');
  }, LONG);

  test('a variable the script declares: changed, cargo runs it again and the sandbox gets the new value; changed back, the cache answers', async () => {
    // A value no build anywhere has run with: the engine must run the script.
    const greeting = `bonjour-${crypto.randomUUID().slice(0, 8)}`;
    let res = await buildx(dir, ['build', '--locked'], { ...SANDBOXED, GEN_GREETING: greeting });
    expect(res.code).toBe(0);
    expect((await stats(dir)).scripts).toEqual({ sandbox: 1, cached: 0, host: 0 });
    expect(await app(target)).toStartWith(`${greeting} 225`);
    res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    expect((await stats(dir)).scripts).toEqual({ sandbox: 0, cached: 1, host: 0 });
    expect(await app(target)).toStartWith('hello 225');
  }, LONG);

  test('a variable set from the first build on, which the script declares only as it runs: it is passed, and run again', async () => {
    const fresh = join(dir, 'fresh-target');
    const res = await buildx(dir, ['build', '--locked'], { ...SANDBOXED, GEN_GREETING: 'hola', CARGO_TARGET_DIR: fresh });
    expect(res.code).toBe(0);
    expect(await app(fresh)).toStartWith('hola 225');
    const gen = latestRun(fresh).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-gen-'));
    expect(gen?.outcome).toMatch(/^(built|cached)$/);
  }, LONG);

  test('a script that needs the network runs here, and the record says why', async () => {
    const server = Bun.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        open(socket) {
          socket.end('online\n');
        },
        data() {},
      },
    });
    try {
      const res = await buildx(dir, ['build', '--locked'], { ...SANDBOXED, RCBX_TEST_NET_ADDR: `127.0.0.1:${server.port}` });
      expect(res.code).toBe(0);
      expect(await app(target)).toBe('hello 225 online 11e60398 made by gen\'s build script');
      const net = latestRun(target).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-net-'));
      expect(net).toMatchObject({ outcome: 'fallback', code: 0 });
      expect(net?.reason).toMatch(/^the build script exited with status 101 in the sandbox \(cannot reach 127\.0\.0\.1:\d+: Connection refused .*; the sandbox has no network\); it runs here$/);
      // stats says which script ran here, and why
      const said = await run([RUSTCBUILDX, 'stats'], { cwd: dir, env: testEnv() });
      expect(said.stdout).toContain(`  build script of net on the host: ${net?.reason}\n`);
      expect((await stats(dir)).scripts).toMatchObject({ host: 1 });
    } finally {
      server.stop(true);
    }
  }, LONG);

  test('plain cargo afterwards runs the scripts here, through the shims, as it would without us', async () => {
    const everyRecord = () => readdirSync(join(target, '.rustcbuildx', 'runs')).filter((f) => f.endsWith('.jsonl')).flatMap((f) => readRecords(join(target, '.rustcbuildx', 'runs', f)));
    const recorded = everyRecord().length;
    const res = await cargo(dir, ['build', '--locked'], { GEN_GREETING: 'hallo' });
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('Compiling gen'); // cargo ran gen's script again, for the new value
    expect(await app(target)).toStartWith('hallo 225');
    // Nothing of ours took part: no record, no warning.
    expect(everyRecord().length).toBe(recorded);
    expect(res.stderr).not.toContain('rustcbuildx');
  }, LONG);

  test('the edit loop (local engine, RUSTCBUILDX_INCREMENTAL=auto): a workspace crate\'s script run again runs here, as its crate is compiled', async () => {
    const res = await buildx(dir, ['build', '--locked'], { ...SANDBOXED, RUSTCBUILDX_INCREMENTAL: 'auto', GEN_GREETING: 'salut' });
    expect(res.code).toBe(0);
    expect(await app(target)).toStartWith('salut 225');
    const gen = latestRun(target).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-gen-'));
    expect(gen).toMatchObject({ outcome: 'local', reason: 'run again in this target dir (an edit): here, as the edit loop compiles its crate (RUSTCBUILDX_INCREMENTAL)' });
    expect((await stats(dir)).scripts).toEqual({ sandbox: 0, cached: 0, host: 1 });
  }, LONG);

  test('RUSTCBUILDX_BUILD_SCRIPTS=host: every script runs here, as cargo runs it, and stats says so', async () => {
    const hostTarget = join(dir, 'host-target');
    const res = await buildx(dir, ['build', '--locked'], { RUSTCBUILDX_BUILD_SCRIPTS: 'host', CARGO_TARGET_DIR: hostTarget });
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('build scripts: 0 run in the sandbox, 0 from cache, 3 on the host');
    expect(latestRun(hostTarget).filter((r) => r.kind === 'build-script').map((r) => r.reason)).toEqual(Array(3).fill('build-scripts = host (environment RUSTCBUILDX_BUILD_SCRIPTS)'));
    expect(await app(hostTarget)).toBe('hello 225 offline 11e60398 made by gen\'s build script');
  }, LONG);

  test('a script that writes outside its OUT_DIR runs here: what it wrote there would not come back', async () => {
    writeFileSync(join(dir, 'gen', 'build.rs'), readFileSync(join(dir, 'gen', 'build.rs'), 'utf8').replace('fn main() {', 'fn main() {\n    std::fs::write(std::path::Path::new(&env::var("OUT_DIR").unwrap()).join("../../../beside.txt"), "x").unwrap();'));
    const res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    const gen = latestRun(target).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-gen-'));
    expect(gen?.outcome).toBe('fallback');
    expect(gen?.reason).toMatch(/^the build script exited with status 0 in the sandbox \(it wrote \/rcbx\/t\/debug\/beside\.txt, outside its OUT_DIR, which is all a run there gives back\); it runs here$/);
    expect(readFileSync(join(target, 'debug', 'beside.txt'), 'utf8')).toBe('x');
  }, LONG);

  test('a script that leaves a symlink in its OUT_DIR runs here: the link would not point at the same thing', async () => {
    writeFileSync(join(dir, 'gen', 'build.rs'), readFileSync(join(dir, 'gen', 'build.rs'), 'utf8').replace(/^    std::fs::write.*beside.*\n/m, '    std::os::unix::fs::symlink(env::var("CARGO_MANIFEST_DIR").unwrap(), std::path::Path::new(&env::var("OUT_DIR").unwrap()).join("crate")).ok();\n'));
    const res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    const gen = latestRun(target).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-gen-'));
    expect(gen?.outcome).toBe('fallback');
    expect(gen?.reason).toMatch(/^the build script exited with status 0 in the sandbox \(its OUT_DIR holds a symlink, \/rcbx\/t\/debug\/build\/gen-[0-9a-f]+\/out\/crate, which would not point at the same thing here\); it runs here$/);
  }, LONG);

  test('a script that watches a file beside its crate, which the sandbox was not given, runs here', async () => {
    writeFileSync(join(dir, 'shared.txt'), 'shared\n');
    writeFileSync(join(dir, 'gen', 'build.rs'), readFileSync(join(dir, 'gen', 'build.rs'), 'utf8').replace(/^    std::os::unix::fs::symlink.*\n/m, '    println!("cargo:rerun-if-changed=../shared.txt");\n'));
    const res = await buildx(dir, ['build', '--locked'], SANDBOXED);
    expect(res.code).toBe(0);
    const gen = latestRun(target).find((r) => r.kind === 'build-script' && r.unit.startsWith('run-gen-'));
    expect(gen).toMatchObject({ outcome: 'fallback', reason: 'the build script watches ../shared.txt, which the sandbox was not given; it runs here' });
    expect(await app(target)).toStartWith('hello 225');
  }, LONG);
});

describe('the test workspace\'s build scripts in the sandbox: zstd-sys\'s C, serde\'s and libc\'s probes', () => {
  test('all run in the sandbox; after cargo clean, and in a second checkout, every run is a cache hit and the artifacts are the same', async () => {
    const first = copyProject('test/fixtures/workspace');
    const second = copyProject('test/fixtures/workspace');
    try {
      let res = await buildx(first, ['build', '--locked'], SANDBOXED);
      expect(res.code).toBe(0);
      const cold = await stats(first);
      expect(cold.scripts.host).toBe(0);
      expect(cold.scripts.sandbox + cold.scripts.cached).toBeGreaterThanOrEqual(4);
      expect(cold.fallback).toBe(0);
      const digests = depsDigests(join(first, 'target'));
      expect((await cargo(first, ['clean'])).code).toBe(0);
      res = await buildx(first, ['build', '--locked'], SANDBOXED);
      expect(res.code).toBe(0);
      expect((await stats(first)).scripts).toEqual({ sandbox: 0, cached: cold.scripts.sandbox + cold.scripts.cached, host: 0 });
      expect(depsDigests(join(first, 'target'))).toEqual(digests);
      res = await buildx(second, ['build', '--locked'], SANDBOXED);
      expect(res.code).toBe(0);
      expect((await stats(second)).scripts).toEqual({ sandbox: 0, cached: cold.scripts.sandbox + cold.scripts.cached, host: 0 });
      expect(depsDigests(join(second, 'target'))).toEqual(digests);
    } finally {
      removeProject(first);
      removeProject(second);
    }
  }, LONG);
});

describe('-sys crates whose scripts compile C: ring, libsqlite3-sys with bundled SQLite (test/fixtures/sys-crates)', () => {
  test('their scripts run in the sandbox, the program equals plain cargo\'s, and after cargo clean every run is a cache hit', async () => {
    const dir = copyProject('test/fixtures/sys-crates');
    try {
      const plainTarget = join(dir, 'plain-target');
      expect((await cargo(dir, ['build', '--locked'], { CARGO_TARGET_DIR: plainTarget })).code).toBe(0);
      const program = async (target: string) => (await run([join(target, 'debug', 'sys-crates')])).stdout;
      const expected = await program(plainTarget);
      expect(expected).toMatch(/^sha256=[0-9a-f]{64} sqlite=3\.\d+\.\d+\n$/);
      let res = await buildx(dir, ['build', '--locked'], SANDBOXED);
      expect(res.code).toBe(0);
      const cold = await stats(dir);
      expect(cold.scripts.host).toBe(0);
      const runs = latestRun(join(dir, 'target')).filter((r) => r.kind === 'build-script').map((r) => r.crate);
      expect(runs).toEqual(expect.arrayContaining(['ring', 'libsqlite3-sys']));
      expect(await program(join(dir, 'target'))).toBe(expected);
      expect((await cargo(dir, ['clean'])).code).toBe(0);
      res = await buildx(dir, ['build', '--locked'], SANDBOXED);
      expect(res.code).toBe(0);
      expect((await stats(dir)).scripts).toEqual({ sandbox: 0, cached: runs.length, host: 0 });
      expect(await program(join(dir, 'target'))).toBe(expected);
    } finally {
      removeProject(dir);
    }
  }, LONG);
});
