/** `cargo buildx <cargo command> [args]`: cargo with rustcbuildx as its RUSTC_WRAPPER, then a summary line. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, homedir, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { passthrough } from './exec.ts';
import { SANDBOX } from './plan/sandbox-paths.ts';
import { optionValue } from './argv.ts';
import { formatSummary, readRecords, RunState, summarize } from './run-state.ts';
import { pruneState } from './prune.ts';
import { writeStderr, writeStdout } from './io.ts';
import { loadConfig } from './config.ts';
import { brokerSocketFor, dockerEndpointExists } from './engine/broker/protocol.ts';
import { warmBroker } from './engine/broker/client.ts';
import { engineInfo, jobsArgs } from './cli/jobs.ts';

export async function cargoBuildx(args: string[]): Promise<number> {
  if (args.length === 0 || args[0] === '--help' || args[0] === '-h') {
    await writeStdout('usage: cargo buildx <cargo command> [args]   e.g. cargo buildx build --release\n');
    return args.length === 0 ? 2 : 0;
  }
  const self = process.execPath;
  const existing = process.env.RUSTC_WRAPPER;
  if (existing && !existing.endsWith('rustcbuildx')) {
    await writeStderr(`cargo-buildx: error: RUSTC_WRAPPER is already set to ${existing}; unset it to build with rustcbuildx (they cannot be chained)\n`);
    return 2;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cargo-buildx-'));
  const summaryFile = join(dir, 'units.jsonl');
  const startedAt = Date.now();
  const started = performance.now();
  const runId = `b${process.pid}-${startedAt}`;
  const socket = await warmBrokerFor(process.env);
  try {
    const jobs = jobsArgs({ args, env: process.env, cwd: process.cwd(), cpus: availableParallelism(), engine: engineInfo(socket) });
    const code = await passthrough([process.env.CARGO || 'cargo', ...jobs, ...args], {
      ...process.env,
      ...prefixMapFlags(args),
      RUSTC_WRAPPER: self,
      RUSTCBUILDX_RUN_ID: runId,
      RUSTCBUILDX_SUMMARY_FILE: summaryFile,
    });
    const wall = (performance.now() - started) / 1000;
    const records = readRecords(summaryFile);
    if (records.length > 0) {
      // The one measured wall time: printed here and recorded for `rustcbuildx stats`.
      const summary = summarize(records, wall);
      await writeStderr(formatSummary(summary) + '\n');
      // cargo is done, and its lock on the target dir keeps other builds out of it: prune what this run
      // did not use (anything staged or used since it began is newer than `startedAt`).
      for (const stateDir of new Set(records.flatMap((r) => (r.stateDir ? [r.stateDir] : [])))) {
        new RunState(dirname(stateDir), runId).writeWallTime(summary.seconds);
        pruneState(stateDir, startedAt, runId);
      }
    }
    return code;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Build scripts run on the host, and C compilers write the host paths of sources into objects (DWARF's
 * comp_dir, __FILE__). A build script's OUT_DIR is an input of its crate, so those paths would make the
 * crate's key differ per CARGO_HOME, checkout and target dir. Mapping them to the sandbox's fixed paths
 * (`-ffile-prefix-map`, which cc and cmake crates pass on from CFLAGS/CXXFLAGS) keeps C outputs the same.
 */
function prefixMapFlags(args: readonly string[]): Record<string, string> {
  const maps: Array<[string, string]> = [[process.env.CARGO_HOME || join(homedir(), '.cargo'), SANDBOX.cargoHome]];
  // Found from the files, not by asking cargo (a `cargo metadata` would double a no-op build's time);
  // a wrong guess (a target-dir set in .cargo/config.toml) only makes C outputs less shared.
  const manifest = optionValue(args, '--manifest-path');
  const root = workspaceRoot(manifest ? dirname(resolve(manifest)) : process.cwd());
  if (root) {
    const target = optionValue(args, '--target-dir') ?? process.env.CARGO_TARGET_DIR ?? process.env.CARGO_BUILD_TARGET_DIR ?? join(root, 'target');
    maps.push([resolve(target), SANDBOX.target], [root, SANDBOX.workspace]);
  }
  // Longest host prefix last: gcc applies the last map that matches (checked with gcc 12). A path with
  // whitespace cannot be said in CFLAGS (cc and cmake split it on whitespace): it is left out, which
  // only makes that C less shared across checkouts.
  const flags = maps
    .filter(([host]) => !/\s/.test(host))
    .sort((a, b) => a[0].length - b[0].length)
    .map(([host, sandbox]) => `-ffile-prefix-map=${host}=${sandbox}`)
    .join(' ');
  const withUser = (name: string) => (process.env[name] ? `${process.env[name]} ${flags}` : flags);
  return { CFLAGS: withUser('CFLAGS'), CXXFLAGS: withUser('CXXFLAGS') };
}

/** The outermost directory above `from` whose Cargo.toml declares a [workspace], else the nearest package. */
function workspaceRoot(from: string): string | undefined {
  let nearest: string | undefined;
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'Cargo.toml');
    if (existsSync(manifest)) {
      nearest ??= dir;
      if (/^\s*\[workspace\]/m.test(readFileSync(manifest, 'utf8'))) return dir;
    }
    if (dirname(dir) === dir) return nearest;
  }
}

/** Starts the build broker early when builds will go through it (see warmBroker); its socket. Never fails. */
async function warmBrokerFor(env: Record<string, string | undefined>): Promise<string | undefined> {
  try {
    const cfg = loadConfig(env);
    if (cfg.runner && cfg.runner !== 'docker' && cfg.runner !== 'docker-build') return undefined;
    if (!cfg.runner && !dockerEndpointExists(env)) return undefined;
    const socket = brokerSocketFor(cfg.broker, cfg.runner ?? 'docker', env);
    if (socket) await warmBroker(socket, cfg.brokerIdleSeconds);
    return socket;
  } catch {
    return undefined; // a broken config is reported by the first wrapper
  }
}
