/**
 * The engine a cargo run builds on: detected once per run by its first wrapper (through the broker when
 * it can say, else the CLI) with the base image, and shared with the run's other wrappers; builds go
 * through the broker when the engine allows it, and whatever fails there is said once per run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/config.ts';
import type { RunState } from '../run-state.ts';
import type { Logger } from '../log.ts';
import { buildxVersion, detectEngine, dockerBuildxEngine, makeEngine, type Engine, type EngineRunner } from '../engine/engine.ts';
import { describeEndpoint, endpointOf } from '../engine/endpoint.ts';
import { brokerSocketFor, dockerEndpointExists } from '../engine/broker/protocol.ts';
import { BrokeredEngine, engineFacts, type BrokerHooks } from '../engine/broker/client.ts';
import { extrasId, localToolchainVersion, resolveBaseImage, type KnownImages } from '../base-image.ts';
import { toolchainTag, type Toolchain } from '../toolchain.ts';
import type { ImageConfig } from '../render/dockerfile.ts';
import { writeStderr } from '../io.ts';

export interface RunEngine {
  engine: Engine;
  baseImage: string;
  /** content ID of the base image */
  baseImageId: string;
  baseImageConfig: ImageConfig;
}

export interface CachedSetup {
  runner?: EngineRunner;
  description?: string;
  baseImage?: string;
  baseImageId?: string;
  baseImageConfig?: ImageConfig;
  unavailable?: string;
}

/** Engine and base image, detected by the first wrapper of a cargo run and reused by the rest. */
export async function engineForRun(state: RunState, cfg: Config, rustc: string, log: Logger): Promise<RunEngine | { unavailable: string }> {
  const runEngine = (s: KnownSetup): RunEngine => ({
    engine: brokered(makeEngine(cfg, s.runner, s.description), cfg, state, log),
    baseImage: s.baseImage,
    baseImageId: s.baseImageId,
    baseImageConfig: s.baseImageConfig,
  });
  const setup = await state.shared<CachedSetup>('engine', async () => {
    try {
      const toolchain = await localToolchainVersion(rustc);
      const asked = await setupViaBroker(cfg, toolchain, state, log);
      const engine = asked?.engine ?? (await detectEngine(cfg));
      const base = await resolveBaseImage(engine, cfg, toolchain, asked?.images);
      log.debug(`engine: ${engine.description}; base image ${base.image} (${base.reason})`);
      return { runner: engine.runner, description: engine.description, baseImage: base.image, baseImageId: base.id, baseImageConfig: base.config };
    } catch (err) {
      return { unavailable: (err as Error).message };
    }
  });
  return isKnown(setup) ? runEngine(setup) : { unavailable: setup.unavailable ?? 'no engine' };
}

/**
 * The docker engine and the run's candidate base image, asked of the broker on its open connection
 * instead of through docker CLI calls (each a new ssh channel and process over a remote link). Undefined
 * when the broker is not the route or cannot say: the CLI's detection then says what is wrong.
 */
async function setupViaBroker(cfg: Config, tc: Toolchain, state: RunState, log: Logger): Promise<{ engine: Engine; images: KnownImages } | undefined> {
  if (cfg.runner ? cfg.runner !== 'docker' : !dockerEndpointExists()) return undefined;
  const socket = brokerSocketFor(cfg.broker, 'docker');
  const hooks = brokerHooks(state, log, endpointOf('docker'));
  if (!socket || hooks.skip()) return undefined;
  try {
    const [facts, buildx] = await Promise.all([engineFacts(socket, [cfg.baseImage ?? toolchainTag(tc, extrasId(cfg.base))], cfg.brokerIdleSeconds), buildxVersion(cfg)]);
    // A broker that cannot be had is said once, as a build would say it; the run's builds then skip it.
    if ('lost' in facts) await hooks.lost(facts.lost);
    if ('unsupported' in facts) hooks.unsupported(facts.unsupported);
    if (!('server' in facts) || typeof buildx !== 'string') return undefined;
    return { engine: dockerBuildxEngine(cfg, facts.server, buildx), images: facts.images };
  } catch (err) {
    // Our bug, not the engine's: the docker CLI's detection decides.
    log.debug(`asking the broker about the engine failed: ${(err as Error).stack ?? err}`);
    return undefined;
  }
}

type KnownSetup = Required<Omit<CachedSetup, 'unavailable'>>;

/** A setup that names everything a build needs (a cache file of an older version may lack some). */
function isKnown(s: CachedSetup | undefined): s is KnownSetup {
  return Boolean(s?.runner && s.description && s.baseImage && s.baseImageId && s.baseImageConfig);
}

interface BrokerFate {
  lost?: string;
  unsupported?: string;
}

/** Builds go through the broker when the engine allows it; its failure is said once per run. */
function brokered(engine: Engine, cfg: Config, state: RunState, log: Logger): Engine {
  const socket = brokerSocketFor(cfg.broker, engine.runner);
  if (!socket) return engine;
  return new BrokeredEngine(engine, socket, cfg.brokerIdleSeconds, brokerHooks(state, log, engine.endpoint));
}

function brokerHooks(state: RunState, log: Logger, endpoint: Engine['endpoint']): BrokerHooks {
  return {
    skip: () => state.readCached<BrokerFate>('broker') !== undefined,
    lost: async (reason) => {
      log.debug(`broker: ${reason}`);
      state.writeCached('broker', { lost: reason } satisfies BrokerFate);
      // One warning per run, whichever part of the engine path said it first.
      if (state.firstTime('warned')) await writeStderr(`rustcbuildx: warning: ${reason}; building through the docker CLI for the rest of this cargo run\n`);
    },
    unsupported: (reason) => {
      log.debug(`broker: ${reason}; building through the docker CLI`);
      state.writeCached('broker', { unsupported: reason } satisfies BrokerFate);
    },
    interrupted: async (reason) => {
      log.debug(`broker: ${reason}; trying the unit once more`);
      if (state.firstTime('warned')) await writeStderr(`rustcbuildx: warning: ${describeEndpoint(endpoint)}: ${reason} during a build; reconnecting\n`);
    },
  };
}

export function keepBugReport(state: RunState, key: string, dockerfile: string, log: string): void {
  const dir = state.path('failures');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${key}.Dockerfile`), dockerfile);
  writeFileSync(join(dir, `${key}.log`), log);
}

