/**
 * The RUSTC_WRAPPER: `rustcbuildx RUSTC ARGS…`. Probes go straight to the local rustc; compiles are
 * planned, rendered, built by the engine and replayed. Anything that is not the user's compile error
 * (no engine, an unsupported call, an engine failure) ends in the local rustc: never a broken build.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseRustcArgs, RustcArgsError, withTargetCpu, type RustcCall } from '../rustc/args.ts';
import { runLocal, type CompilerCall } from './compiler-call.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { currentRunId, RunState, targetRootOf, type Outcome } from '../run-state.ts';
import { fileLogger, silentLogger, type Logger } from '../log.ts';
import { buildxVersion, detectEngine, dockerBuildxEngine, makeEngine, type Engine, type EngineRunner } from '../engine/engine.ts';
import { describeEndpoint, endpointOf } from '../engine/endpoint.ts';
import { editsCompileHere } from './edits.ts';
import { brokerSocketFor, dockerEndpointExists } from '../engine/broker/protocol.ts';
import { BrokeredEngine, engineFacts, type BrokerHooks } from '../engine/broker/client.ts';
import { LocalCache, manifestOf, type ManifestFile } from '../store/local-cache.ts';
import { localToolchainVersion, resolveBaseImage, type KnownImages } from '../base-image.ts';
import { toolchainTag, type Toolchain } from '../toolchain.ts';
import { renderBuildDockerfile, renderUnitStages, RenderError, stageName, type ImageConfig } from '../render/dockerfile.ts';
import { LlbError, renderUnitLlb, type LlbGraph } from '../render/llb.ts';
import { SHARED_CONTEXT_DIRS, SourceError, STAGING_GLOBS } from '../plan/sources.ts';
import { directDependencyKeys, readPlanHints, replacedSince, writePlan } from '../plan/plans.ts';
import { closureEntries, hostPathRead, LocalOnly, planUnit, type PlannedUnit } from '../plan/unit.ts';
import { envDepsOf, hostStderr, placeOutputs, readSandboxResult, sandboxFailure, servedFromCache, type SandboxResult } from './replay.ts';
import { removeScratch, scratch } from '../scratch.ts';
import { pruneRunFiles, pruneState } from '../prune.ts';
import { nativeCpuFor } from './native-cpu.ts';
import { writeStderr, writeStdout } from '../io.ts';
import { optionValue } from '../argv.ts';

export async function wrap(compiler: CompilerCall): Promise<number> {
  try {
    return await wrapCompile(compiler);
  } catch (err) {
    // Our bug or the machine's (a full disk): say so, and let the local rustc decide the outcome.
    await writeStderr(`rustcbuildx: internal error: ${(err as Error).message}; compiling with the local rustc\n`);
    return runLocal(compiler.argv);
  }
}

async function wrapCompile(compiler: CompilerCall): Promise<number> {
  const started = Date.now();
  const { argv, driver, rustcArgs } = compiler;
  const local = () => runLocal(argv);

  let call: RustcCall | undefined;
  let unsupported: string | undefined;
  try {
    call = parseRustcArgs(rustcArgs, (p) => readFileSync(p, 'utf8'));
  } catch (err) {
    if (!(err instanceof RustcArgsError)) throw err;
    unsupported = err.message; // a shape we do not know: rustc itself decides, and the log says so
  }
  const outDir = call?.outDir ?? optionValue(rustcArgs, '--out-dir');
  const targetRoot = outDir ? targetRootOf(outDir) : undefined;
  if (!targetRoot) return local();

  const state = new RunState(targetRoot, currentRunId());
  const crateName = call?.crateName ?? optionValue(rustcArgs, '--crate-name');
  const unit = `${crateName ?? '?'}${call?.extraFilename ?? ''}`;
  let log: Logger = silentLogger;
  const fallBack = async (reason: string, warn = false): Promise<number> => {
    log.debug(`fallback: ${reason}`);
    if (warn && state.firstTime('warned')) await writeStderr(`rustcbuildx: warning: ${reason}\nrustcbuildx: compiling with the local rustc for this cargo run\n`);
    const code = await local();
    record(state, unit, crateName, 'fallback', started, code, reason);
    return code;
  };
  const compileHere = async (reason: string): Promise<number> => {
    log.debug(`compiled here: ${reason}`);
    const code = await local();
    record(state, unit, crateName, 'local', started, code, reason);
    // Such runs may never reach the full prune below (nothing of theirs goes to the engine).
    if (!process.env.RUSTCBUILDX_SUMMARY_FILE && state.firstTime('pruned-runs')) pruneRunFiles(state.stateDir, state.runId);
    return code;
  };

  let cfg: Config;
  try {
    cfg = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) return fallBack(err.message, true);
    throw err;
  }
  if (cfg.log === 'debug') log = fileLogger(state.logFile(), unit);
  if (unsupported !== undefined || !call) return fallBack(`rustc arguments not understood: ${unsupported}`);
  if (cfg.runner === 'none') return fallBack('RUSTCBUILDX_RUNNER=none');

  // What this unit read at compile time on an earlier build is given as it needs from the start.
  const known = readPlanHints(state, unit);
  // A crate cargo compiles incrementally and this target dir built before (an edit), or one whose
  // dependency was compiled here since: with an engine on this machine, the local rustc and cargo's own
  // incremental state beat the sandbox's fixed cost per unit (a container, its commit, the result read
  // back). Nothing of ours is needed, not even the engine.
  if (call.incremental !== undefined && editsCompileHere(cfg)) {
    if (known.builtBefore) return compileHere('rebuilt in this target dir (an edit): the local rustc with cargo\'s incremental state (RUSTCBUILDX_INCREMENTAL)');
    if (replacedSince(state, directDependencyKeys(call))) return compileHere('a dependency was compiled here since its last sandboxed build: the local rustc (RUSTCBUILDX_INCREMENTAL)');
  }

  const setup = await engineForRun(state, cfg, compiler.rustc, log);
  if ('unavailable' in setup) return fallBack(setup.unavailable, true);
  // `cargo buildx` prunes when cargo is done; a bare RUSTC_WRAPPER run cannot know its end, so its first
  // wrapper prunes what nothing used for an hour.
  if (!process.env.RUSTCBUILDX_SUMMARY_FILE && state.firstTime('pruned')) pruneState(state.stateDir, Date.now() - BARE_RUN_PRUNE_AGE_MS, state.runId);

  // In the sandbox, native would mean the builder's CPU (and the key would not say which): compile
  // for the named CPU and features that equal this machine's, or here.
  if (call.targetCpu === 'native') {
    const native = await nativeCpuFor({ rustc: compiler.rustc, target: call.target, features: call.targetFeatures });
    if (native.kind === 'local') {
      const reason = `-C target-cpu=native: ${native.reason}`;
      if (state.firstTime('native-cpu')) await writeStderr(`rustcbuildx: note: ${reason}; compiling such units with the local rustc\n`);
      return fallBack(reason);
    }
    call = withTargetCpu(call, native.cpu, native.features);
  }

  // A variable that looks like a credential is never sent unless named: a unit that reads one that is
  // set is compiled locally, so its result still equals plain cargo's.
  const secretRead = (names: readonly string[]) => names.find((n) => SECRET_NAME.test(n) && !cfg.setEnvs.includes(n) && process.env[n] !== undefined);
  const secretFallback = (name: string) => fallBack(`${unit} reads $${name} at compile time; it looks like a secret, so it is compiled locally (name it in RUSTCBUILDX_SET_ENVS to send it)`);
  const memo = LocalCache.fromEnv();
  const knownSecret = secretRead(known.envDeps);
  if (knownSecret) return secretFallback(knownSecret);
  let setEnvs = [...cfg.setEnvs, ...known.envDeps];
  let hostPathVars = known.hostPathVars;
  let attempt = await sandboxAttempt(setEnvs, hostPathVars);
  try {
    if ('fallback' in attempt) return fallBack(attempt.fallback, attempt.warn);
    // rustc's dep-info names every variable the crate read (env!, option_env!). One the sandbox lacked
    // but the user has would make the result differ from plain cargo's: pass it and build again. So
    // does a path variable read with its sandbox value: give it the host value and build again.
    let read = envDepsOf(join(attempt.work, 'export'));
    const passed = new Set(attempt.planned.spec.env.map(([name]) => name));
    const missing = read.filter((name) => !passed.has(name) && process.env[name] !== undefined);
    const pathsRead = hostPathRead(attempt.planned.translated, read, process.env, state.targetRoot);
    if (missing.length > 0 || pathsRead.length > 0) {
      const secret = secretRead(missing);
      if (secret) return secretFallback(secret);
      if (missing.length > 0) {
        await writeStderr(`rustcbuildx: note: ${call.crateName} reads ${missing.map((n) => `$${n}`).join(', ')} at compile time; passing ${missing.length > 1 ? 'them' : 'it'} to the sandbox\n`);
      }
      if (pathsRead.length > 0) log.debug(`${unit} reads ${pathsRead.join(', ')}: building again with their host values`);
      removeScratch(attempt.work);
      setEnvs = [...setEnvs, ...missing];
      hostPathVars = [...hostPathVars, ...pathsRead];
      attempt = await sandboxAttempt(setEnvs, hostPathVars);
      if ('fallback' in attempt) return fallBack(attempt.fallback, attempt.warn);
      read = envDepsOf(join(attempt.work, 'export'));
    }
    const { planned, snippet, result, digests } = attempt;
    const exportDir = join(attempt.work, 'export');
    const envDeps = read.filter((name) => !CARGO_SET.test(name));
    const outputs = placeOutputs(exportDir, planned.map, planned.outDir, digests);
    writePlan(state, {
      version: 2,
      key: planned.key,
      crate: call.crateName ?? planned.key,
      snippet,
      spec: planned.spec,
      closure: planned.closure.map((p) => p.key),
      hostOutDir: planned.outDir,
      outputs,
      envDeps,
      hostPathVars,
    });
    await writeStdout(result.stdout);
    await writeStderr(hostStderr(result.stderr, planned.map));
    const outcome: Outcome = attempt.fromCache ? 'cached' : 'built';
    record(state, unit, call.crateName, outcome, started, result.status);
    return result.status;
  } finally {
    if ('work' in attempt) removeScratch(attempt.work);
  }

  /** Plans, renders and builds the unit once; a fallback reason when it cannot or should not be used. */
  async function sandboxAttempt(setEnvs: readonly string[], hostPathVars: readonly string[]): Promise<Attempt | { fallback: string; warn: boolean }> {
    if ('unavailable' in setup || !call) throw new Error('unreachable: sandboxAttempt without an engine or a call');
    let planned: PlannedUnit;
    let snippet: string;
    let dockerfileText: string;
    let llb: LlbGraph | undefined;
    try {
      planned = planUnit({ call, driver, env: process.env, cwd: process.cwd(), state, baseImage: setup.baseImage, baseImageConfig: setup.baseImageConfig, setEnvs, hostPathVars });
      snippet = renderUnitStages(planned.spec);
      const closure = closureEntries(planned.closure, state.path('ctx'));
      dockerfileText = renderBuildDockerfile(planned.key, closure, snippet);
      // A dependency on this run's base image runs with its configuration as it is now (the tag may
      // name a rebuilt image), as the Dockerfile's FROM would; others with what their plan recorded.
      const current = closure.map((e) => (e.kind === 'recipe' && e.spec.baseImage === setup.baseImage ? { ...e, spec: { ...e.spec, baseImageConfig: setup.baseImageConfig } } : e));
      try {
        llb = renderUnitLlb(current, planned.spec, { noNetwork: true });
      } catch (err) {
        // Our bug, not the unit's: the broker builds the Dockerfile instead, as the CLI does.
        if (!(err instanceof LlbError)) throw err;
        log.debug(`no LLB for ${planned.key}: ${err.message}`);
      }
    } catch (err) {
      if (err instanceof LocalOnly || err instanceof SourceError || err instanceof RenderError) return { fallback: err.message, warn: false };
      keepBugReport(state, unit, '', String((err as Error).stack ?? err));
      return { fallback: `internal error while planning ${unit}: ${(err as Error).message}`, warn: true };
    }
    const memoKey = memo && setup.baseImageId ? memo.key(dockerfileText, setup.baseImageId) : undefined;
    const failedBefore = memoKey ? memo?.failedRecently(memoKey) : undefined;
    if (failedBefore) return { fallback: `these exact inputs failed in the sandbox before: ${failedBefore}`, warn: false };
    const work = scratch(state.path('tmp', `${planned.key}-${process.pid}-${Date.now()}`));
    mkdirSync(work, { recursive: true });
    const exportDir = join(work, 'export');
    const dockerfile = join(work, 'Dockerfile');
    writeFileSync(dockerfile, dockerfileText);
    const restored = memoKey ? memo?.restore(memoKey, exportDir, (damage) => log.debug(damage)) : undefined;
    if (restored) {
      const result = readSandboxResult(exportDir);
      log.debug(`local cache hit ${memoKey} for ${dockerfile}`);
      if (result) return { planned, snippet, result, work, fromCache: true, digests: digestsOf(restored) };
    }
    log.debug(`build ${setup.engine.runner}: ${dockerfile}\n${dockerfileText}`);
    const built = await setup.engine.build({
      dockerfile,
      context: state.path('ctx'),
      target: stageName.export(planned.key),
      outputDir: exportDir,
      noNetwork: true,
      keepSynced: { dirs: SHARED_CONTEXT_DIRS, except: STAGING_GLOBS },
      ...(llb ? { llb } : {}),
      ...(setup.baseImageId ? { imageIds: { [setup.baseImage]: setup.baseImageId } } : {}),
    });
    log.debug(`engine exit ${built.code} in ${built.seconds.toFixed(2)} s\n${built.log}`);
    const result = built.code === 0 ? readSandboxResult(exportDir) : undefined;
    if (!result) {
      removeScratch(work);
      // rustc failed inside: maybe the crate's error, maybe the sandbox's (a file or variable it was not
      // given, memory, disk). The step failed, so BuildKit kept nothing; the local rustc decides.
      const failure = sandboxFailure(built.log);
      if (failure) {
        const reason = `rustc exited with status ${failure.status} in the sandbox${failure.firstError ? ` (${failure.firstError.slice(0, 200)})` : ''}; the local rustc decides`;
        if (memoKey) memo?.rememberFailure(memoKey, reason);
        return { fallback: reason, warn: false };
      }
      keepBugReport(state, planned.key, dockerfileText, built.log);
      const failed = `the build of ${unit} on ${describeEndpoint(setup.engine.endpoint)} failed (exit ${built.code}); kept as a bug report in ${state.path('failures')}`;
      // An engine that has gone (a remote that died, a dropped connection) would fail every unit after
      // this one, each after its own wait: the rest of the run uses the local rustc, said once.
      if (await setup.engine.answers()) return { fallback: failed, warn: false };
      const gone = `${describeEndpoint(setup.engine.endpoint)} stopped answering during the build (${failed})`;
      state.writeCached('engine', { unavailable: gone } satisfies CachedSetup);
      return { fallback: gone, warn: true };
    }
    if (result.status !== 0) {
      removeScratch(work);
      return { fallback: `rustc exited with status ${result.status} in the sandbox; the local rustc decides`, warn: false };
    }
    const files = memoKey && memo ? memo.store(memoKey, exportDir, { incremental: planned.spec.incremental !== undefined }) : manifestOf(exportDir);
    return { planned, snippet, result, work, fromCache: servedFromCache(built.log, stageName.unit(planned.key)), digests: digestsOf(files) };
  }
}

function digestsOf(files: readonly ManifestFile[]): Map<string, string> {
  return new Map(files.map((f) => [f.path, f.sha256]));
}

interface Attempt {
  planned: PlannedUnit;
  snippet: string;
  result: SandboxResult;
  /** served by BuildKit's cache or the local memo of it, not compiled */
  fromCache: boolean;
  /** holds the Dockerfile and the export; removed by the caller */
  work: string;
  /** sha256 of each exported file, by its path in the export (`out/<name>`) */
  digests: Map<string, string>;
}

const BARE_RUN_PRUNE_AGE_MS = 3_600_000;

/** Names that look like credentials are never sent to an engine unless the user names them. */
const SECRET_NAME = /TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH/i;
/** Variables cargo sets for every compile: they are always passed and need no remembering. */
const CARGO_SET = /^(CARGO_PKG_|CARGO_MANIFEST_|CARGO_CRATE_NAME$|CARGO_BIN_|CARGO_PRIMARY_PACKAGE$|OUT_DIR$|CARGO$)/;

interface RunEngine {
  engine: Engine;
  baseImage: string;
  /** content ID of the base image */
  baseImageId: string;
  baseImageConfig: ImageConfig;
}

interface CachedSetup {
  runner?: EngineRunner;
  description?: string;
  baseImage?: string;
  baseImageId?: string;
  baseImageConfig?: ImageConfig;
  unavailable?: string;
}

/** Engine and base image, detected by the first wrapper of a cargo run and reused by the rest. */
async function engineForRun(state: RunState, cfg: Config, rustc: string, log: Logger): Promise<RunEngine | { unavailable: string }> {
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
    const [facts, buildx] = await Promise.all([engineFacts(socket, [cfg.baseImage ?? toolchainTag(tc)], cfg.brokerIdleSeconds), buildxVersion(cfg)]);
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

function record(state: RunState, unit: string, crate: string | undefined, outcome: Outcome, started: number, code: number, reason?: string): void {
  const end = Date.now();
  state.record({ unit, crate: crate ?? unit, outcome, seconds: (end - started) / 1000, start: started, end, code, ...(reason ? { reason } : {}) });
}

function keepBugReport(state: RunState, key: string, dockerfile: string, log: string): void {
  const dir = state.path('failures');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${key}.Dockerfile`), dockerfile);
  writeFileSync(join(dir, `${key}.log`), log);
}

