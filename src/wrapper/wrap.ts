/**
 * The RUSTC_WRAPPER: `rustcbuildx RUSTC ARGS…`. Probes go straight to the local rustc; compiles are
 * planned, rendered, built by the engine and replayed. Anything that is not the user's compile error
 * (no engine, an unsupported call, an engine failure) ends in the local rustc: never a broken build.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseRustcArgs, RustcArgsError } from '../rustc/args.ts';
import { runLocal, type CompilerCall } from './dispatch.ts';
import { ConfigError, loadConfig, type Config } from '../config.ts';
import { currentRunId, RunState, targetRootOf, type Outcome } from '../run-state.ts';
import { fileLogger, silentLogger, type Logger } from '../log.ts';
import { detectEngine, makeEngine, type Engine, type EngineRunner } from '../engine/engine.ts';
import { localToolchain, resolveBaseImage } from '../base-image.ts';
import { renderBuildDockerfile, renderUnitStages, RenderError, stageName } from '../dockerfile.ts';
import { SourceError } from '../sources.ts';
import { writePlan } from '../plan.ts';
import { LocalOnly, planUnit } from './unit.ts';
import { hostStderr, localRetryReason, placeOutputs, readSandboxResult, servedFromCache } from './replay.ts';
import { writeStderr, writeStdout } from '../io.ts';

export async function wrap(compiler: CompilerCall): Promise<number> {
  const started = performance.now();
  const { argv, driver, rustcArgs } = compiler;
  const local = () => runLocal(argv);

  let call;
  try {
    call = parseRustcArgs(rustcArgs, (p) => readFileSync(p, 'utf8'));
  } catch (err) {
    if (err instanceof RustcArgsError) return local(); // a shape we do not know: rustc itself decides
    throw err;
  }
  const targetRoot = call.outDir ? targetRootOf(call.outDir) : undefined;
  if (!targetRoot) return local();

  const state = new RunState(targetRoot, currentRunId());
  const unit = `${call.crateName ?? '?'}${call.extraFilename ?? ''}`;
  let cfg: Config | undefined;
  let log: Logger = silentLogger;
  const fallBack = async (reason: string, warn = false): Promise<number> => {
    log.debug(`fallback: ${reason}`);
    if (warn && state.firstTime('warned')) await writeStderr(`rustcbuildx: warning: ${reason}\nrustcbuildx: compiling with the local rustc for this cargo run\n`);
    const code = await local();
    record(state, unit, call.crateName, 'fallback', started, code, reason);
    return code;
  };

  try {
    cfg = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) return fallBack(err.message, true);
    throw err;
  }
  if (cfg.log === 'debug') log = fileLogger(state.logFile(), unit);
  if (cfg.runner === 'none') return fallBack('RUSTCBUILDX_RUNNER=none');

  const setup = await engineForRun(state, cfg, compiler.rustc, log);
  if ('unavailable' in setup) return fallBack(setup.unavailable, true);

  let planned;
  let snippet: string;
  try {
    planned = planUnit({ call, driver, env: process.env, cwd: process.cwd(), state, baseImage: setup.baseImage, setEnvs: cfg.setEnvs });
    snippet = renderUnitStages(planned.spec, setup.engine.caps);
  } catch (err) {
    if (err instanceof LocalOnly || err instanceof SourceError || err instanceof RenderError) return fallBack(err.message);
    keepBugReport(state, unit, '', String((err as Error).stack ?? err));
    return fallBack(`internal error while planning ${unit}: ${(err as Error).message}`, true);
  }
  const dockerfileText = renderBuildDockerfile(planned.key, planned.closure.map((p) => p.snippet), snippet);
  const work = state.path('tmp', `${planned.key}-${process.pid}-${Date.now()}`);
  mkdirSync(work, { recursive: true });
  try {
    const dockerfile = join(work, 'Dockerfile');
    writeFileSync(dockerfile, dockerfileText);
    const exportDir = join(work, 'export');
    log.debug(`build ${setup.engine.runner}: ${dockerfile}\n${dockerfileText}`);
    const built = await setup.engine.build({
      dockerfile,
      context: state.path('ctx'),
      target: stageName.export(planned.key),
      outputDir: exportDir,
      noNetwork: true,
    });
    log.debug(`engine exit ${built.code} in ${built.seconds.toFixed(2)} s\n${built.log}`);
    const result = built.code === 0 ? readSandboxResult(exportDir) : undefined;
    if (!result) {
      keepBugReport(state, planned.key, dockerfileText, built.log);
      return fallBack(`the ${setup.engine.runner} build of ${unit} failed (exit ${built.code}); kept as a bug report in ${state.path('failures')}`);
    }
    const retry = localRetryReason(result);
    if (retry) return fallBack(retry);

    const outputs = placeOutputs(exportDir, planned.map, planned.outDir);
    if (result.status === 0) {
      writePlan(state, {
        version: 1,
        key: planned.key,
        crate: call.crateName ?? planned.key,
        snippet,
        closure: planned.closure.map((p) => p.key),
        sandboxOutDir: planned.sandboxOutDir,
        hostOutDir: planned.outDir,
        outputs,
      });
    }
    await writeStdout(result.stdout);
    await writeStderr(hostStderr(result.stderr, planned.map));
    const outcome: Outcome = servedFromCache(built.log, stageName.unit(planned.key)) ? 'cached' : 'built';
    record(state, unit, call.crateName, outcome, started, result.status);
    return result.status;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

interface RunEngine {
  engine: Engine;
  baseImage: string;
}

interface CachedSetup {
  runner?: EngineRunner;
  description?: string;
  baseImage?: string;
  unavailable?: string;
}

/** Engine and base image, detected by the first wrapper of a cargo run and reused by the rest. */
async function engineForRun(state: RunState, cfg: Config, rustc: string, log: Logger): Promise<RunEngine | { unavailable: string }> {
  const cached = state.readCached<CachedSetup>('engine');
  if (cached?.unavailable) return { unavailable: cached.unavailable };
  if (cached?.runner && cached.description && cached.baseImage) {
    return { engine: makeEngine(cfg, cached.runner, cached.description), baseImage: cached.baseImage };
  }
  let setup: CachedSetup;
  try {
    const engine = await detectEngine(cfg);
    const { toolchain } = await localToolchain(rustc);
    const base = await resolveBaseImage(engine, cfg, toolchain);
    setup = { runner: engine.runner, description: engine.description, baseImage: base.image };
    log.debug(`engine: ${engine.description}; base image ${base.image} (${base.reason})`);
  } catch (err) {
    setup = { unavailable: (err as Error).message };
  }
  state.writeCached('engine', setup);
  if (setup.unavailable) return { unavailable: setup.unavailable };
  return { engine: makeEngine(cfg, setup.runner as EngineRunner, setup.description as string), baseImage: setup.baseImage as string };
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

