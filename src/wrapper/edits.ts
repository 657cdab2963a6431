/** Where an edited crate that cargo compiles incrementally is compiled again (RUSTCBUILDX_INCREMENTAL). */
import type { Config } from '../config/config.ts';
import { engineOnThisMachine } from '../engine/endpoint.ts';

/**
 * RUSTCBUILDX_INCREMENTAL: whether an edited incremental unit is compiled here rather than in the sandbox.
 * `auto` asks where the engine is without detecting it (that costs a round trip to the engine): the
 * chosen runner's endpoint, or, when auto-detected, every runner's.
 */
export function editsCompileHere(cfg: Pick<Config, 'incremental' | 'runner'>, env: Record<string, string | undefined> = process.env): boolean {
  if (cfg.incremental !== 'auto') return cfg.incremental === 'local';
  return cfg.runner ? engineOnThisMachine(cfg.runner, env) : engineOnThisMachine('docker', env) && engineOnThisMachine('podman', env);
}
