/**
 * The RUSTC_WRAPPER: `rustcbuildx RUSTC ARGS…`. Probes go straight to the local rustc; compiles are
 * planned, rendered, built by the engine and replayed. Anything that is not the user's compile error
 * (no engine, an unsupported call, an engine failure) ends in the local rustc: never a broken build.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseRustcArgs, RustcArgsError, withTargetCpu, type RustcCall } from '../rustc/args.ts';
import { runLocal, type CompilerCall } from './dispatch.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { currentRunId, RunState, targetRootOf, type Outcome } from '../run-state.ts';
import { fileLogger, silentLogger, type Logger } from '../log.ts';
import { detectEngine, makeEngine, type Engine, type EngineRunner } from '../engine/engine.ts';
import { LocalCache } from '../local-cache.ts';
import { localToolchain, resolveBaseImage } from '../base-image.ts';
import { renderBuildDockerfile, renderUnitStages, RenderError, stageName } from '../dockerfile.ts';
import { SourceError } from '../sources.ts';
import { readPlanEnvDeps, writePlan } from '../plan.ts';
import { closureStages, LocalOnly, planUnit, type PlannedUnit } from './unit.ts';
import { nativeCpuFor } from './native-cpu.ts';
import { envDepsOf, hostStderr, localRetryReason, placeOutputs, readSandboxResult, servedFromCache, type SandboxResult } from './replay.ts';
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
  const started = performance.now();
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

  const setup = await engineForRun(state, cfg, compiler.rustc, log);
  if ('unavailable' in setup) return fallBack(setup.unavailable, true);

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
  // Variables this unit read at compile time on an earlier build are passed from the start.
  const knownEnvDeps = readPlanEnvDeps(state, unit);
  const knownSecret = secretRead(knownEnvDeps);
  if (knownSecret) return secretFallback(knownSecret);
  let attempt = await sandboxAttempt([...cfg.setEnvs, ...knownEnvDeps]);
  try {
    if ('fallback' in attempt) return fallBack(attempt.fallback, attempt.warn);
    // rustc's dep-info names every variable the crate read (env!, option_env!). One the sandbox lacked
    // but the user has would make the result differ from plain cargo's: pass it and build again.
    const passed = new Set(attempt.planned.spec.env.map(([name]) => name));
    const missing = envDepsOf(join(attempt.work, 'export')).filter((name) => !passed.has(name) && process.env[name] !== undefined);
    if (missing.length > 0) {
      const secret = secretRead(missing);
      if (secret) return secretFallback(secret);
      await writeStderr(`rustcbuildx: note: ${call.crateName} reads ${missing.map((n) => `$${n}`).join(', ')} at compile time; passing ${missing.length > 1 ? 'them' : 'it'} to the sandbox\n`);
      rmSync(attempt.work, { recursive: true, force: true });
      attempt = await sandboxAttempt([...cfg.setEnvs, ...knownEnvDeps, ...missing]);
      if ('fallback' in attempt) return fallBack(attempt.fallback, attempt.warn);
    }
    const { planned, snippet, result } = attempt;
    const exportDir = join(attempt.work, 'export');
    const envDeps = envDepsOf(exportDir).filter((name) => !CARGO_SET.test(name));
    const outputs = placeOutputs(exportDir, planned.map, planned.outDir);
    if (result.status === 0) {
      writePlan(state, {
        version: 1,
        key: planned.key,
        crate: call.crateName ?? planned.key,
        snippet,
        closure: planned.closure.map((p) => p.key),
        hostOutDir: planned.outDir,
        outputs,
        envDeps,
      });
    }
    await writeStdout(result.stdout);
    await writeStderr(hostStderr(result.stderr, planned.map));
    const outcome: Outcome = attempt.fromCache ? 'cached' : 'built';
    record(state, unit, call.crateName, outcome, started, result.status);
    return result.status;
  } finally {
    if ('work' in attempt) rmSync(attempt.work, { recursive: true, force: true });
  }

  /** Plans, renders and builds the unit once; a fallback reason when it cannot or should not be used. */
  async function sandboxAttempt(setEnvs: readonly string[]): Promise<Attempt | { fallback: string; warn: boolean }> {
    if ('unavailable' in setup || !call) throw new Error('unreachable: sandboxAttempt without an engine or a call');
    let planned: PlannedUnit;
    let snippet: string;
    let dockerfileText: string;
    try {
      planned = planUnit({ call, driver, env: process.env, cwd: process.cwd(), state, baseImage: setup.baseImage, setEnvs });
      snippet = renderUnitStages(planned.spec);
      dockerfileText = renderBuildDockerfile(planned.key, closureStages(planned.closure, state.path('ctx')), snippet);
    } catch (err) {
      if (err instanceof LocalOnly || err instanceof SourceError || err instanceof RenderError) return { fallback: err.message, warn: false };
      keepBugReport(state, unit, '', String((err as Error).stack ?? err));
      return { fallback: `internal error while planning ${unit}: ${(err as Error).message}`, warn: true };
    }
    const work = state.path('tmp', `${planned.key}-${process.pid}-${Date.now()}`);
    mkdirSync(work, { recursive: true });
    const dockerfile = join(work, 'Dockerfile');
    writeFileSync(dockerfile, dockerfileText);
    const memoKey = memo?.key(dockerfileText, setup.baseImageId);
    if (memoKey && memo?.restore(memoKey, join(work, 'export'))) {
      const result = readSandboxResult(join(work, 'export'));
      log.debug(`local cache hit ${memoKey} for ${dockerfile}`);
      if (result) return { planned, snippet, result, work, fromCache: true };
    }
    log.debug(`build ${setup.engine.runner}: ${dockerfile}\n${dockerfileText}`);
    const built = await setup.engine.build({
      dockerfile,
      context: state.path('ctx'),
      target: stageName.export(planned.key),
      outputDir: join(work, 'export'),
      noNetwork: true,
    });
    log.debug(`engine exit ${built.code} in ${built.seconds.toFixed(2)} s\n${built.log}`);
    const result = built.code === 0 ? readSandboxResult(join(work, 'export')) : undefined;
    if (!result) {
      keepBugReport(state, planned.key, dockerfileText, built.log);
      rmSync(work, { recursive: true, force: true });
      return { fallback: `the ${setup.engine.runner} build of ${unit} failed (exit ${built.code}); kept as a bug report in ${state.path('failures')}`, warn: false };
    }
    const retry = localRetryReason(result);
    if (retry) {
      rmSync(work, { recursive: true, force: true });
      return { fallback: retry, warn: false };
    }
    if (memoKey) memo?.store(memoKey, join(work, 'export'));
    return { planned, snippet, result, work, fromCache: servedFromCache(built.log, stageName.unit(planned.key)) };
  }
}

interface Attempt {
  planned: PlannedUnit;
  snippet: string;
  result: SandboxResult;
  /** served by BuildKit's cache or the local memo of it, not compiled */
  fromCache: boolean;
  /** holds the Dockerfile and the export; removed by the caller */
  work: string;
}

/** Names that look like credentials are never sent to an engine unless the user names them. */
const SECRET_NAME = /TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH/i;
/** Variables cargo sets for every compile: they are always passed and need no remembering. */
const CARGO_SET = /^(CARGO_PKG_|CARGO_MANIFEST_|CARGO_CRATE_NAME$|CARGO_BIN_|CARGO_PRIMARY_PACKAGE$|OUT_DIR$|CARGO$)/;

interface RunEngine {
  engine: Engine;
  baseImage: string;
  /** content ID of the base image */
  baseImageId: string;
}

interface CachedSetup {
  runner?: EngineRunner;
  description?: string;
  baseImage?: string;
  baseImageId?: string;
  unavailable?: string;
}

/** Engine and base image, detected by the first wrapper of a cargo run and reused by the rest. */
async function engineForRun(state: RunState, cfg: Config, rustc: string, log: Logger): Promise<RunEngine | { unavailable: string }> {
  const cached = state.readCached<CachedSetup>('engine');
  if (cached?.unavailable) return { unavailable: cached.unavailable };
  if (cached?.runner && cached.description && cached.baseImage && cached.baseImageId) {
    return { engine: makeEngine(cfg, cached.runner, cached.description), baseImage: cached.baseImage, baseImageId: cached.baseImageId };
  }
  let setup: CachedSetup;
  try {
    const engine = await detectEngine(cfg);
    const { toolchain } = await localToolchain(rustc);
    const base = await resolveBaseImage(engine, cfg, toolchain);
    setup = { runner: engine.runner, description: engine.description, baseImage: base.image, baseImageId: base.id };
    log.debug(`engine: ${engine.description}; base image ${base.image} (${base.reason})`);
  } catch (err) {
    setup = { unavailable: (err as Error).message };
  }
  state.writeCached('engine', setup);
  if (setup.unavailable) return { unavailable: setup.unavailable };
  return { engine: makeEngine(cfg, setup.runner as EngineRunner, setup.description as string), baseImage: setup.baseImage as string, baseImageId: setup.baseImageId as string };
}

function record(state: RunState, unit: string, crate: string | undefined, outcome: Outcome, started: number, code: number, reason?: string): void {
  state.record({ unit, crate: crate ?? unit, outcome, seconds: (performance.now() - started) / 1000, code, ...(reason ? { reason } : {}) });
}

function keepBugReport(state: RunState, key: string, dockerfile: string, log: string): void {
  const dir = state.path('failures');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${key}.Dockerfile`), dockerfile);
  writeFileSync(join(dir, `${key}.log`), log);
}

