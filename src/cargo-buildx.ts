/** `cargo buildx <cargo command> [args]`: cargo with rustcbuildx as its RUSTC_WRAPPER, then a summary line. */
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { passthrough } from './exec.ts';
import { formatSummary, readRecords, RunState, summarize, type UnitRecord } from './run-state.ts';
import { packagesAdvised } from './plan/system-packages.ts';
import { pruneState } from './prune.ts';
import { writeStderr, writeStdout } from './io.ts';
import { ConfigError, type Config } from './config/config.ts';
import { loadProjectConfig } from './config/files.ts';
import { brokerSocketFor, dockerEndpointExists } from './engine/broker/protocol.ts';
import { warmBroker } from './engine/broker/client.ts';
import { engineInfo, jobsArgs } from './cli/jobs.ts';
import { commandWorkspace, prefixMapFlags } from './plan/cargo-env.ts';

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
  // The settings are checked here, once, so a broken file is one clear error before cargo starts.
  const workspace = commandWorkspace(args, process.cwd());
  let cfg: Config;
  try {
    cfg = await loadProjectConfig(process.env, workspace);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    await writeStderr(`cargo-buildx: error: ${err.message}\n`);
    return 1;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cargo-buildx-'));
  const summaryFile = join(dir, 'units.jsonl');
  const startedAt = Date.now();
  const started = performance.now();
  const runId = `b${process.pid}-${startedAt}`;
  const socket = await warmBrokerFor(cfg, process.env);
  try {
    const jobs = jobsArgs({ args, env: process.env, cwd: process.cwd(), cpus: availableParallelism(), engine: engineInfo(socket) });
    const code = await passthrough([process.env.CARGO || 'cargo', ...jobs, ...args], {
      ...process.env,
      // Build scripts that run in the sandbox compile their C at its fixed paths already.
      ...(cfg.buildScripts === 'sandbox' ? {} : prefixMapFlags(args, process.env, process.cwd())),
      RUSTC_WRAPPER: self,
      RUSTCBUILDX_RUN_ID: runId,
      RUSTCBUILDX_SUMMARY_FILE: summaryFile,
      // The wrappers resolve a relative path against their own working directory otherwise.
      ...(process.env.RUSTCBUILDX_CONFIG?.trim() ? { RUSTCBUILDX_CONFIG: resolve(process.env.RUSTCBUILDX_CONFIG.trim()) } : {}),
    });
    const wall = (performance.now() - started) / 1000;
    const records = readRecords(summaryFile);
    if (records.length > 0) {
      // The one measured wall time: printed here and recorded for `rustcbuildx stats`.
      const summary = summarize(records, wall);
      await writeStderr(formatSummary(summary) + '\n');
      const hint = packagesHint(records, cfg);
      if (hint) await writeStderr(hint + '\n');
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

/** The packages that units gone local asked for and base.packages lacks, as one line saying how to add them. */
export function packagesHint(records: readonly UnitRecord[], cfg: Config): string | undefined {
  const asked = records.filter((r) => r.outcome === 'fallback' || r.outcome === 'local').map((r) => packagesAdvised(r.reason ?? ''));
  const have = new Set(cfg.base.packages);
  const missing = [...new Set(asked.flat())].filter((p) => !have.has(p)).sort();
  if (missing.length === 0) return undefined;
  const units = asked.filter((a) => a.some((p) => missing.includes(p))).length;
  return `rustcbuildx: ${units} unit${units === 1 ? '' : 's'} or build script${units === 1 ? '' : 's'} left the sandbox for what the base image lacks (${missing.join(', ')}): in the project, \`rustcbuildx base build --add-suggested\` adds ${missing.length === 1 ? 'it' : 'them'} to base.packages and builds that image`;
}

/** Starts the build broker early when builds will go through it (see warmBroker); its socket. Never fails. */
async function warmBrokerFor(cfg: Config, env: Record<string, string | undefined>): Promise<string | undefined> {
  try {
    if (cfg.runner && cfg.runner !== 'docker' && cfg.runner !== 'docker-build') return undefined;
    if (!cfg.runner && !dockerEndpointExists(env)) return undefined;
    const socket = brokerSocketFor(cfg.broker, cfg.runner ?? 'docker', env);
    if (socket) await warmBroker(socket, cfg.brokerIdleSeconds);
    return socket;
  } catch {
    return undefined; // the wrappers find their engine themselves
  }
}
