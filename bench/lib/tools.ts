/**
 * The three ways of building one project that the scenarios compare, each a measured `cargo build
 * --locked` with its own target dir (plain and rustcbuildx share the sources, so an edit reaches both).
 */
import { join } from 'node:path';
import { baseEnv, BenchError, capture, RUSTCBUILDX, timed } from './proc.ts';
import { remoteEnv, type RemoteEngine } from './remote.ts';
import type { Reproducible, RunCounts } from './types.ts';
import { appendFileSync } from 'node:fs';

export interface BuildContext {
  /** the project's sources (cargo's cwd) */
  dir: string;
  logFile: string;
}

export async function plainBuild(ctx: BuildContext, targetDir: string, label: string): Promise<number> {
  return timed(['cargo', 'build', '--locked'], { cwd: ctx.dir, env: baseEnv({ CARGO_TARGET_DIR: targetDir }), logFile: ctx.logFile, label });
}

export interface RcbxRun {
  seconds: number;
  /** the run id rustcbuildx recorded, when this cargo run compiled anything */
  runId: string | undefined;
  counts: RunCounts;
}

export interface RcbxSettings {
  /** a value no BuildKit cache or memo has seen gives a cold build; the same value finds them again */
  nonce: string;
  /** the local memo of engine results: the harness's own, never the user's */
  memoDir: string;
  /** memo off: every unit asks the engine */
  engineOnly?: boolean;
  /** the docker CLI per unit, as before the build broker (RUSTCBUILDX_BROKER=off): the "before" figure */
  cliOnly?: boolean;
  debugLog?: boolean;
  /** build on the remote engine (its DOCKER_HOST, its ssh first on PATH) instead of the local one */
  remote?: RemoteEngine;
  /** `cargo build` with cargo's config naming the wrapper (what `rustcbuildx enable` sets), not `cargo buildx build` */
  enabled?: boolean;
  /** RUSTCBUILDX_INCREMENTAL: `sandbox` compiles an edited crate in the engine even when it runs here */
  incremental?: 'sandbox';
  /** CARGO_INCREMENTAL=0: cargo asks for no incremental state (with `sandbox`: rustcbuildx as before issue 11) */
  noIncremental?: boolean;
  /**
   * The nonce as `--cfg` in RUSTFLAGS instead of a variable the sandbox is given: a value of the user's
   * environment keeps every unit from a shared store (team-warm)
   */
  nonceInRustflags?: boolean;
  /** RUSTCBUILDX_CACHE: the shared stores */
  store?: string;
  /** another CARGO_HOME (a second machine's) */
  cargoHome?: string;
}

/**
 * The environment of a rustcbuildx build. The nonce is sent into every sandbox (RUSTCBUILDX_SET_ENVS
 * puts a set variable into the rustc step's `env -i` list, so into the Dockerfile text, BuildKit's cache
 * key and the memo's key): a new nonce gives these units an empty cache without pruning anyone else's.
 */
export function rcbxEnv(targetDir: string, s: RcbxSettings): Record<string, string | undefined> {
  const cfg = `rcbx_bench_${s.nonce}`;
  const extra = {
    CARGO_TARGET_DIR: targetDir,
    ...(s.nonceInRustflags ? { RUSTFLAGS: `--cfg ${cfg} --check-cfg cfg(${cfg})` } : { RUSTCBUILDX_SET_ENVS: 'RCBX_BENCH_NONCE', RCBX_BENCH_NONCE: s.nonce }),
    RUSTCBUILDX_CACHE_DIR: s.memoDir,
    ...(s.store ? { RUSTCBUILDX_CACHE: s.store } : {}),
    ...(s.cargoHome ? { CARGO_HOME: s.cargoHome } : {}),
    ...(s.engineOnly ? { RUSTCBUILDX_LOCAL_CACHE: 'off' } : {}),
    ...(s.cliOnly ? { RUSTCBUILDX_BROKER: 'off' } : {}),
    ...(s.debugLog ? { RUSTCBUILDX_LOG: 'debug' } : {}),
    ...(s.incremental ? { RUSTCBUILDX_INCREMENTAL: s.incremental } : {}),
    ...(s.noIncremental ? { CARGO_INCREMENTAL: '0' } : {}),
    // the environment's spelling of build.rustc-wrapper, which `rustcbuildx enable` writes into a config
    // file (with build scripts in the sandbox, `cargo buildx` adds nothing else to cargo's environment)
    ...(s.enabled ? { CARGO_BUILD_RUSTC_WRAPPER: RUSTCBUILDX } : {}),
  };
  return s.remote ? remoteEnv(s.remote, extra) : baseEnv(extra);
}

/** `cargo buildx build --locked` (or `cargo build --locked`, enabled), then what `rustcbuildx stats --json` says about that run. */
export async function rcbxBuild(ctx: BuildContext, targetDir: string, settings: RcbxSettings, label: string): Promise<RcbxRun> {
  const before = await latestRun(ctx.dir, targetDir);
  const seconds = await timed(['cargo', ...(settings.enabled ? [] : ['buildx']), 'build', '--locked'], { cwd: ctx.dir, env: rcbxEnv(targetDir, settings), logFile: ctx.logFile, label });
  const after = await latestRun(ctx.dir, targetDir);
  // A run that compiled nothing (noop) leaves no record, so stats still shows the previous run.
  if (!after || after.run === before?.run) return { seconds, runId: undefined, counts: { units: 0, cached: 0, built: 0, local: 0, fallback: 0 } };
  const { run, ...counts } = after;
  return { seconds, runId: run, counts };
}

interface StatsJson extends RunCounts {
  run: string;
  from?: { memo: number; store: number; engine: number };
}

async function latestRun(dir: string, targetDir: string): Promise<StatsJson | undefined> {
  const res = await capture([RUSTCBUILDX, 'stats', '--json'], { cwd: dir, env: baseEnv({ CARGO_TARGET_DIR: targetDir }) });
  if (res.code !== 0) return undefined; // no run recorded yet
  const parsed = JSON.parse(res.stdout) as Partial<StatsJson>;
  if (typeof parsed.run !== 'string') throw new BenchError(`rustcbuildx stats --json gave no run id: ${res.stdout.trim()}`);
  return {
    run: parsed.run,
    units: parsed.units ?? 0,
    cached: parsed.cached ?? 0,
    built: parsed.built ?? 0,
    local: parsed.local ?? 0,
    fallback: parsed.fallback ?? 0,
    scripts: parsed.scripts ?? { sandbox: 0, cached: 0, host: 0 },
    ...(parsed.from ? { store: parsed.from.store } : {}),
  };
}

/** `rustcbuildx verify --json -- --locked` against the memo the settings name: what it compared, or why it could not. */
export async function verifyProject(ctx: BuildContext, targetDir: string, settings: RcbxSettings): Promise<Reproducible | { error: string }> {
  const res = await capture([RUSTCBUILDX, 'verify', '--json', '--', '--locked'], { cwd: ctx.dir, env: rcbxEnv(targetDir, settings) });
  appendFileSync(ctx.logFile, `\n=== rustcbuildx verify: exit ${res.code}\n${res.stderr}\n`);
  let doc: { verified: Array<{ crate: string; version: string; kind: string; served: string | null; differ: string[] }>; notVerified: unknown[] };
  try {
    doc = JSON.parse(res.stdout);
  } catch {
    return { error: `rustcbuildx verify gave no report (exit ${res.code}): ${res.stderr.trim().split('\n').slice(-3).join(' / ')}` };
  }
  const compared = doc.verified.filter((v) => v.served !== null);
  const differ = compared.filter((v) => v.differ.length > 0).map((v) => `${v.crate} ${v.version} (${v.kind})`);
  return { compared: compared.length, identical: compared.length - differ.length, differ, uncached: doc.verified.length - compared.length, notVerified: doc.notVerified.length };
}

/** `cargo clean` of one target dir: not measured, it only empties what the next scenario needs empty. */
export async function cargoClean(ctx: BuildContext, targetDir: string): Promise<void> {
  await timed(['cargo', 'clean'], { cwd: ctx.dir, env: baseEnv({ CARGO_TARGET_DIR: targetDir }), logFile: ctx.logFile, label: 'cargo clean (not measured)' });
}

export function targetIn(home: string, name: string): string {
  return join(home, `target-${name}`);
}
