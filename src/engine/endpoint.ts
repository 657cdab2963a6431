/**
 * Which engine a message talks about. The runner alone does not say it: DOCKER_HOST=ssh://big-box and a
 * local daemon are both "docker", with separate stores and caches. So messages name the settings that
 * choose the endpoint, and a command we suggest carries them, so it acts on the same engine.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { shQuote } from '../argv.ts';
import { sha256 } from '../toolchain.ts';
import type { RunnerName } from '../config/config.ts';

export type EngineRunner = Exclude<RunnerName, 'none'>;

/** The variables that decide where each runner's client goes (and which client it is). */
const SETTINGS: Record<EngineRunner, readonly string[]> = {
  docker: ['DOCKER_HOST', 'DOCKER_CONTEXT', 'BUILDX_BUILDER', 'RUSTCBUILDX_DOCKER'],
  'docker-build': ['DOCKER_HOST', 'DOCKER_CONTEXT', 'RUSTCBUILDX_DOCKER'],
  podman: ['CONTAINER_HOST', 'CONTAINER_CONNECTION', 'RUSTCBUILDX_PODMAN'],
};

export interface Endpoint {
  runner: EngineRunner;
  /** the settings that were set, in a fixed order */
  settings: Array<[name: string, value: string]>;
}

export function endpointOf(runner: EngineRunner, env: Record<string, string | undefined> = process.env): Endpoint {
  const settings: Array<[string, string]> = [];
  for (const name of SETTINGS[runner]) {
    const value = env[name]?.trim();
    if (value) settings.push([name, value]);
  }
  // A context chosen with `docker context use` is in the config, not the environment: name it the way a
  // command can carry it.
  const context = runner !== 'podman' && !env.DOCKER_HOST && !env.DOCKER_CONTEXT ? dockerContext(env) : undefined;
  if (context !== undefined) settings.push(['DOCKER_CONTEXT', context]);
  return { runner, settings };
}

/** Whether an endpoint (`unix:///…`, `ssh://host`, `tcp://host:port`) reaches another machine. */
export function endpointElsewhere(host: string): boolean {
  return !/^(unix|npipe):/.test(host) && !/^tcp:\/\/(localhost|127\.[\d.]+|\[::1\])(:\d+)?\/?$/.test(host);
}

/**
 * Whether a runner's engine, as the environment chooses it, is known to run on this machine (its cores are
 * ours). A named podman connection or buildx builder may be anywhere: not known.
 */
export function engineOnThisMachine(runner: RunnerName, env: Record<string, string | undefined> = process.env): boolean {
  if (runner === 'podman' ? env.CONTAINER_CONNECTION : chosenBuildxBuilder(env)) return false;
  const host = runner === 'podman' ? env.CONTAINER_HOST : dockerHost(env);
  return host === undefined || !endpointElsewhere(host);
}

/**
 * A buildx builder other than the daemon's own (BUILDX_BUILDER, or `docker buildx use`), said as a reason,
 * or undefined: it has its own BuildKit and cache, and may run anywhere.
 */
export function chosenBuildxBuilder(env: Record<string, string | undefined> = process.env): string | undefined {
  if (env.BUILDX_BUILDER) return `BUILDX_BUILDER=${env.BUILDX_BUILDER} names a buildx builder`;
  try {
    const current = JSON.parse(readFileSync(join(dockerConfigDir(env), 'buildx', 'current'), 'utf8')) as { Name?: unknown };
    const name = typeof current.Name === 'string' ? current.Name : '';
    if (name && name !== 'default' && name !== (dockerContext(env) ?? 'default')) return `\`docker buildx use ${name}\` chose a buildx builder`;
  } catch {
    // no builder chosen: the daemon's own BuildKit
  }
  return undefined;
}

/**
 * Where the docker client will go, resolved as it resolves it: DOCKER_HOST, else the context named by
 * DOCKER_CONTEXT or the config's `currentContext` (its endpoint in `contexts/meta/<sha256 of the name>/`
 * under DOCKER_CONFIG or ~/.docker). Read from the files: asking `docker context inspect` would cost a
 * client start in every wrapper.
 */
export function dockerHost(env: Record<string, string | undefined>): string | undefined {
  if (env.DOCKER_HOST) return env.DOCKER_HOST;
  const context = dockerContext(env);
  if (context === undefined) return undefined;
  const meta = readJson<{ Endpoints?: { docker?: { Host?: unknown } } }>(join(dockerConfigDir(env), 'contexts', 'meta', sha256(context), 'meta.json'));
  const host = meta?.Endpoints?.docker?.Host;
  return typeof host === 'string' ? host : undefined;
}

function readJson<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** The docker context in use, unless it is the default one: DOCKER_CONTEXT, else the config's `currentContext`. */
export function dockerContext(env: Record<string, string | undefined>): string | undefined {
  const context = env.DOCKER_CONTEXT || readJson<{ currentContext?: unknown }>(join(dockerConfigDir(env), 'config.json'))?.currentContext;
  return typeof context === 'string' && context !== '' && context !== 'default' ? context : undefined;
}

export function dockerConfigDir(env: Record<string, string | undefined>): string {
  return env.DOCKER_CONFIG || join(env.HOME || homedir(), '.docker');
}

/** `docker (DOCKER_HOST=ssh://u@big-box)`, or `docker (local default)` when nothing chooses another. */
export function describeEndpoint(e: Endpoint): string {
  const where = e.settings.length > 0 ? e.settings.map(([k, v]) => `${k}=${v}`).join(', ') : 'local default';
  return `${e.runner} (${where})`;
}

/** A `rustcbuildx …` command line that acts on this same engine, whatever the user's next shell has set. */
export function commandFor(e: Endpoint, args: readonly string[]): string {
  const prefix = e.settings.map(([k, v]) => shQuote(`${k}=${v}`));
  const runner = e.runner === 'docker' ? [] : ['--runner', e.runner];
  return [...prefix, 'rustcbuildx', ...args, ...runner].map((w, i) => (i < prefix.length ? w : shQuote(w))).join(' ');
}
