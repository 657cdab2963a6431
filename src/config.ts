/** Settings, all from `RUSTCBUILDX_*` environment variables: read once, validated, typed. */
import { homedir } from 'node:os';
import { join } from 'node:path';

export const RUNNERS = ['docker', 'docker-build', 'podman', 'none'] as const;
export type RunnerName = (typeof RUNNERS)[number];
export type LogLevel = 'off' | 'info' | 'debug';

export interface Config {
  /** undefined: pick the first engine that works (docker buildx, then `docker build`, then podman) */
  runner: RunnerName | undefined;
  /** base image chosen by the user; wins over the local toolchain image */
  baseImage: string | undefined;
  log: LogLevel;
  /** the docker / podman client binaries to call */
  dockerClient: string;
  podmanClient: string;
  /** extra environment variables the sandboxed rustc may see (names only; values come from the caller) */
  setEnvs: string[];
  /** hand builds to a long-lived broker holding one BuildKit connection (RUSTCBUILDX_BROKER=off: the CLI) */
  broker: boolean;
  /** how long an idle broker waits for work before it exits */
  brokerIdleSeconds: number;
  /**
   * Where a unit cargo compiles incrementally is compiled again after an edit (RUSTCBUILDX_INCREMENTAL):
   * `sandbox`, incrementally in the engine; `local`, with the local rustc and cargo's own incremental
   * state; `auto` (the default), local when the engine runs on this machine, else the sandbox.
   */
  incremental: IncrementalMode;
  /**
   * Where build scripts run (RUSTCBUILDX_BUILD_SCRIPTS): `sandbox`, in the engine like a compile, their
   * results cached; `host` (the default for now), as cargo runs them.
   */
  buildScripts: BuildScriptMode;
}

export const BUILD_SCRIPT_MODES = ['host', 'sandbox'] as const;
export type BuildScriptMode = (typeof BUILD_SCRIPT_MODES)[number];

export const INCREMENTAL_MODES = ['auto', 'local', 'sandbox'] as const;
export type IncrementalMode = (typeof INCREMENTAL_MODES)[number];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const runner = env.RUSTCBUILDX_RUNNER?.trim() || undefined;
  if (runner !== undefined && !(RUNNERS as readonly string[]).includes(runner)) {
    throw new ConfigError(`RUSTCBUILDX_RUNNER=${runner} is not a runner: use one of ${RUNNERS.join(', ')} (or unset it to auto-detect)`);
  }
  const log = env.RUSTCBUILDX_LOG?.trim() || 'off';
  if (log !== 'off' && log !== 'info' && log !== 'debug') {
    throw new ConfigError(`RUSTCBUILDX_LOG=${log} is not a log level: use off, info or debug`);
  }
  const setEnvs = (env.RUSTCBUILDX_SET_ENVS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const badName = setEnvs.find((n) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(n));
  if (badName !== undefined) {
    throw new ConfigError(`RUSTCBUILDX_SET_ENVS: "${badName}" is not an environment variable name (expected A,B,C)`);
  }
  const broker = env.RUSTCBUILDX_BROKER?.trim() || 'on';
  if (broker !== 'on' && broker !== 'off') throw new ConfigError(`RUSTCBUILDX_BROKER=${broker}: use on or off`);
  const idle = env.RUSTCBUILDX_BROKER_IDLE?.trim() || '600';
  if (!/^[1-9][0-9]{0,6}$/.test(idle)) throw new ConfigError(`RUSTCBUILDX_BROKER_IDLE=${idle} is not a number of seconds (e.g. 600)`);
  const incremental = env.RUSTCBUILDX_INCREMENTAL?.trim() || 'auto';
  if (!(INCREMENTAL_MODES as readonly string[]).includes(incremental)) {
    throw new ConfigError(`RUSTCBUILDX_INCREMENTAL=${incremental}: use ${INCREMENTAL_MODES.join(', ')}`);
  }
  const buildScripts = env.RUSTCBUILDX_BUILD_SCRIPTS?.trim() || 'sandbox';
  if (!(BUILD_SCRIPT_MODES as readonly string[]).includes(buildScripts)) {
    throw new ConfigError(`RUSTCBUILDX_BUILD_SCRIPTS=${buildScripts}: use ${BUILD_SCRIPT_MODES.join(', ')}`);
  }
  return {
    runner: runner as RunnerName | undefined,
    baseImage: env.RUSTCBUILDX_BASE_IMAGE?.trim() || undefined,
    log,
    dockerClient: env.RUSTCBUILDX_DOCKER?.trim() || 'docker',
    podmanClient: env.RUSTCBUILDX_PODMAN?.trim() || 'podman',
    setEnvs,
    broker: broker === 'on',
    brokerIdleSeconds: Number(idle),
    incremental: incremental as IncrementalMode,
    buildScripts: buildScripts as BuildScriptMode,
  };
}

/** RUSTCBUILDX_CACHE_DIR, else `rustcbuildx` in the user's cache dir. */
export function cacheBaseDir(env: Record<string, string | undefined> = process.env): string {
  return env.RUSTCBUILDX_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'rustcbuildx');
}
