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
  /** shared result stores beside the local memo, tried in order (RUSTCBUILDX_CACHE) */
  stores: StoreSpec[];
  /** crate-name globs whose results may be shared though private (RUSTCBUILDX_SHARE) */
  share: string[];
}

/**
 * A shared store of results: a directory (a CI cache dir, a network mount) or an OCI registry
 * repository. `writable`: results built here are offered to it (`ro:` in front makes it read-only).
 */
export interface StoreSpec {
  kind: 'dir' | 'oci';
  /** the directory, or `host[:port]/repository` */
  location: string;
  /** an `oci+http://` registry: plain HTTP though not on loopback */
  http: boolean;
  writable: boolean;
  /** as the setting spells it, for messages */
  text: string;
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
  const stores = parseStores(env.RUSTCBUILDX_CACHE ?? '');
  const share = (env.RUSTCBUILDX_SHARE ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const badGlob = share.find((g) => !/^[A-Za-z0-9_*?-]+$/.test(g));
  if (badGlob !== undefined) throw new ConfigError(`RUSTCBUILDX_SHARE: "${badGlob}" is not a crate name or glob (letters, digits, _, -, * and ?; e.g. my-crate,acme-*)`);
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
    stores,
    share,
  };
}

const STORE_USAGE = 'a comma-separated list of dir:/ABSOLUTE/PATH and oci://HOST[:PORT]/REPOSITORY (oci+http:// for a registry without TLS), each optionally prefixed by ro: (read-only)';

/** `RUSTCBUILDX_CACHE`: e.g. `ro:oci://registry.example.com/team/rcbx,dir:/ci/cache`. */
export function parseStores(text: string): StoreSpec[] {
  const specs: StoreSpec[] = [];
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const writable = !item.startsWith('ro:');
    const rest = item.replace(/^r[ow]:/, '');
    const bad = (why: string) => new ConfigError(`RUSTCBUILDX_CACHE: "${item}" ${why}; the setting is ${STORE_USAGE}`);
    if (rest.startsWith('dir:')) {
      const location = rest.slice(4);
      if (!location.startsWith('/')) throw bad('is not an absolute directory');
      specs.push({ kind: 'dir', location: location.replace(/(.)\/+$/, '$1'), http: false, writable, text: item });
      continue;
    }
    const oci = /^oci(\+http)?:\/\/([^/\s]+)\/([^\s]+)$/.exec(rest);
    if (oci) {
      const [, http, host, repository] = oci as unknown as [string, string | undefined, string, string];
      const port = /:(\d+)$/.exec(host)?.[1];
      if (!/^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/.test(host) || Number(port ?? 0) > 65535) {
        throw bad(`names the host "${host}", which is not HOST or HOST:PORT`);
      }
      if (!/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(repository)) throw bad(`names the repository "${repository}", which is not a valid repository name (lowercase letters, digits, . _ - and /)`);
      specs.push({ kind: 'oci', location: `${host}/${repository}`, http: http !== undefined, writable, text: item });
      continue;
    }
    throw bad('is neither a dir: nor an oci:// store');
  }
  return specs;
}

/** RUSTCBUILDX_CACHE_DIR, else `rustcbuildx` in the user's cache dir. */
export function cacheBaseDir(env: Record<string, string | undefined> = process.env): string {
  return env.RUSTCBUILDX_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'rustcbuildx');
}
