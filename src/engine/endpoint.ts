/**
 * Which engine a message talks about. The runner alone does not say it: DOCKER_HOST=ssh://big-box and a
 * local daemon are both "docker", with separate stores and caches. So messages name the settings that
 * choose the endpoint, and a command we suggest carries them, so it acts on the same engine.
 */
import { shQuote } from '../argv.ts';
import type { RunnerName } from '../config.ts';

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
  return { runner, settings };
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
