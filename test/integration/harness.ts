/** Shared pieces of the integration tests: real cargo, real rustc, the real engine, temp copies of fixtures. */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { expect } from 'bun:test';
import { atEnd } from '../preload.ts';
import { run, type Captured } from '../../src/exec.ts';
import { readRecords, type UnitRecord } from '../../src/run-state.ts';
import type { BrokerStatus } from '../../src/engine/broker/protocol.ts';

export const ROOT = resolve(import.meta.dir, '../..');
export const DIST = join(ROOT, 'dist');
export const RUSTCBUILDX = join(DIST, 'rustcbuildx');
/** The local result memo of this test process: never the user's, and empty at the start. */
export const TEST_CACHE_DIR = mkdtempSync(join(tmpdir(), 'rcbx-test-memo-'));
atEnd(() => rmSync(TEST_CACHE_DIR, { recursive: true, force: true }));
/**
 * The runtime dir of this test process: its build brokers are its own (never the user's, never an earlier
 * run's), and are stopped when the test run ends.
 */
export const TEST_RUNTIME_DIR = mkdtempSync(join(tmpdir(), 'rcbx-test-runtime-'));
atEnd(() => {
  spawnSync(RUSTCBUILDX, ['broker', 'stop', '--all'], { env: { ...process.env, XDG_RUNTIME_DIR: TEST_RUNTIME_DIR }, timeout: 30_000 });
  rmSync(TEST_RUNTIME_DIR, { recursive: true, force: true });
});
/** The user config file of this test process: empty, so the user's own never applies to a test. */
export const TEST_CONFIG_FILE = join(TEST_RUNTIME_DIR, 'config.toml');
writeFileSync(TEST_CONFIG_FILE, '');
/** For tests about the engine itself: every unit must reach it. */
export const ENGINE_ONLY = { RUSTCBUILDX_LOCAL_CACHE: 'off' } as const;

/** A fresh copy of a fixture (or example) project, without any target dir. */
export function copyProject(relPath: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'rcbx-it-'));
  cpSync(join(ROOT, relPath), dir, { recursive: true, filter: (src) => !src.includes('/target') });
  return dir;
}

/** How long removing a project may take: a target dir holds gigabytes, and the machine may be busy. */
export const CLEANUP_TIMEOUT = 300_000;

export function removeProject(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** The environment the tests run cargo in: the built executable first on PATH, nothing of ours leaking in. */
export function testEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env, PATH: `${DIST}:${process.env.PATH}`, CARGO_TERM_COLOR: 'never' };
  for (const key of Object.keys(env)) if (key.startsWith('RUSTCBUILDX_') || key === 'RUSTC_WRAPPER' || key === 'CARGO_TARGET_DIR') delete env[key];
  // Brokers the tests start outlive nothing by much, whatever happens to this process. Edits go to the
  // sandbox: what the tests are about (the edit loop's local route has tests of its own, which say so).
  return { ...env, RUSTCBUILDX_CACHE_DIR: TEST_CACHE_DIR, XDG_RUNTIME_DIR: TEST_RUNTIME_DIR, RUSTCBUILDX_BROKER_IDLE: '30', RUSTCBUILDX_INCREMENTAL: 'sandbox', RUSTCBUILDX_CONFIG: TEST_CONFIG_FILE, ...extra };
}

export function cargo(dir: string, args: string[], extra: Record<string, string | undefined> = {}): Promise<Captured> {
  return run(['cargo', ...args], { cwd: dir, env: testEnv(extra), timeoutMs: 1_200_000 });
}

/** How long making a base image from nothing may take (mmdebstrap + toolchain copy), with room for a slow machine. */
export const BASE_BUILD_TIMEOUT = 1_800_000;

const ensured = new Map<string, Promise<void>>();

/**
 * Makes sure the runner's toolchain image is in its store (an idempotent `rustcbuildx base build`), so no
 * test depends on which file ran first or on what an earlier session left. The docker-build runner
 * shares docker's store. Call it from `beforeAll(…, BASE_BUILD_TIMEOUT)` of every suite that builds.
 */
export function ensureBaseImage(runner: 'docker' | 'podman' = 'docker'): Promise<void> {
  let done = ensured.get(runner);
  if (!done) {
    done = run([RUSTCBUILDX, 'base', 'build', '--runner', runner], { env: testEnv(), timeoutMs: BASE_BUILD_TIMEOUT }).then((res) => {
      if (res.code !== 0) throw new Error(`rustcbuildx base build --runner ${runner} failed (exit ${res.code}):\n${res.stdout}${res.stderr}`);
    });
    ensured.set(runner, done);
  }
  return done;
}

export function buildx(dir: string, args: string[], extra: Record<string, string | undefined> = {}): Promise<Captured> {
  return cargo(dir, ['buildx', ...args], extra);
}

export interface Stats {
  units: number;
  cached: number;
  built: number;
  /** units of the edit loop compiled with the local rustc by choice (RUSTCBUILDX_INCREMENTAL) */
  local: number;
  fallback: number;
  /** build scripts' runs: in the sandbox, from its cache, on the host */
  scripts: { sandbox: number; cached: number; host: number };
  /** the run's wall time */
  seconds: number;
  unitSeconds: number;
}

export async function stats(dir: string): Promise<Stats> {
  const res = await run([RUSTCBUILDX, 'stats', '--json'], { cwd: dir, env: testEnv() });
  if (res.code !== 0) throw new Error(`stats failed: ${res.stderr}`);
  return JSON.parse(res.stdout) as Stats;
}

/** How many real compiles (`rustc --crate-name …`) plain cargo makes for a project, counted from `cargo build -v`. */
export async function plainCompileCount(dir: string, targetDir: string, args: string[] = ['build', '--locked']): Promise<number> {
  const res = await cargo(dir, [...args, '-v'], { CARGO_TARGET_DIR: targetDir });
  if (res.code !== 0) throw new Error(`plain cargo failed: ${res.stderr}`);
  return res.stderr.split('\n').filter((l) => l.trim().startsWith('Running `') && l.includes('--crate-name')).length;
}

/** File names cargo left in a profile's deps/ and build/ dirs (two levels deep), sorted. */
export function artifactNames(targetDir: string, profile = 'debug'): string[] {
  const names: string[] = [];
  for (const sub of ['deps', 'build']) {
    const dir = join(targetDir, profile, sub);
    for (const name of readdirSync(dir)) {
      names.push(`${sub}/${name}`);
      if (sub === 'build') for (const inner of readdirSync(join(dir, name))) names.push(`${sub}/${name}/${inner}`);
    }
  }
  return names.sort();
}

/** sha256 of every file cargo keeps in a profile's deps/ dir (the rlibs, rmetas, the binary): what "identical artifacts" compares. */
export function depsDigests(target: string, profile = 'debug'): Record<string, string> {
  const deps = join(target, profile, 'deps');
  const out: Record<string, string> = {};
  for (const name of readdirSync(deps).filter((n) => !n.endsWith('.d')).sort()) out[name] = new Bun.CryptoHasher('sha256').update(readFileSync(join(deps, name))).digest('hex');
  return out;
}

/** The compiles a records file holds: its build scripts' runs are counted apart (see build-scripts.test.ts). */
export function compileRecords(file: string): UnitRecord[] {
  return readRecords(file).filter((r) => r.kind === undefined);
}

/** Every compile's record of the cargo runs in this target dir. */
export function runRecords(target: string): UnitRecord[] {
  const runs = join(target, '.rustcbuildx', 'runs');
  return readdirSync(runs)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => compileRecords(join(runs, f)));
}

/** The brokers that answer in this test process's runtime dir, for the engine `extra` chooses. */
export async function brokerStatuses(extra: Record<string, string> = {}): Promise<BrokerStatus[]> {
  const res = await run([RUSTCBUILDX, 'broker', 'status', '--json'], { env: testEnv(extra) });
  if (res.code !== 0) throw new Error(`rustcbuildx broker status failed: ${res.stderr}`);
  return (JSON.parse(res.stdout) as Array<{ status?: BrokerStatus }>).flatMap((b) => (b.status ? [b.status] : []));
}

/**
 * Starts `cargo buildx build` of `dir` with nothing cached (a fresh cfg, memo off) on the engine `extra`
 * chooses, and waits until its broker has a build in flight: the moment to break something.
 */
export async function busyBuild(dir: string, target: string, extra: Record<string, string> = {}): Promise<{ job: Bun.Subprocess<'ignore', 'pipe', 'pipe'>; broker: BrokerStatus }> {
  const job = Bun.spawn(['cargo', 'buildx', 'build', '--locked'], {
    cwd: dir,
    env: testEnv({ ...extra, ...ENGINE_ONLY, CARGO_TARGET_DIR: target, RUSTFLAGS: `--cfg rcbx_busy_${crypto.randomUUID().slice(0, 8)}` }),
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const deadline = Date.now() + 120_000;
  for (;;) {
    const busy = (await brokerStatuses(extra)).find((b) => b.inFlight > 0);
    if (busy) return { job, broker: busy };
    if (Date.now() > deadline) throw new Error('the broker never had a build in flight');
    await Bun.sleep(50);
  }
}

/** examples/demo's binary in `target` runs, and plain cargo accepts the target dir as it is. */
export async function plainCargoAgrees(dir: string, target: string): Promise<void> {
  const bin = await run([join(target, 'debug', 'rustcbuildx-demo')]);
  expect(bin.stdout).toContain('hello');
  const plain = await run(['cargo', 'build', '--locked'], { cwd: dir, env: testEnv({ CARGO_TARGET_DIR: target, RUSTFLAGS: '' }) });
  expect(plain.code).toBe(0);
}
