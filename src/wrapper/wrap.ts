/**
 * The RUSTC_WRAPPER: `rustcbuildx RUSTC ARGS…`. Probes go straight to the local rustc; compiles are
 * planned, rendered, built by the engine and replayed. Anything that is not the user's compile error
 * (no engine, an unsupported call, an engine failure) ends in the local rustc: never a broken build.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { buildScriptProgram, installShim, realProgram } from '../plan/build-script.ts';
import { parseRustcArgs, RustcArgsError, withTargetCpu, type RustcCall } from '../rustc/args.ts';
import { runLocal, type CompilerCall } from './compiler-call.ts';
import { ConfigError, type Config, type CrateSettings } from '../config/config.ts';
import { crateConfig, runConfig, runWorkspace } from './run-config.ts';
import { cannotLinkInSandbox, systemLibs } from './image-libs.ts';
import { currentRunId, RunState, STATE_DIR_NAME, targetRootOf, type Outcome } from '../run-state.ts';
import { fileLogger, silentLogger, type Logger } from '../log.ts';
import { editsCompileHere } from './edits.ts';
import { LocalCache, PROVENANCE_RULES, type EntryMeta } from '../store/local-cache.ts';
import { RunStores } from './run-stores.ts';
import { closurePrivate, originPrivate, outputsPrivate, userEnvPrivate } from '../plan/provenance.ts';
import { RenderError, type ClosureEntry, type UnitSpec } from '../render/dockerfile.ts';
import { SourceError } from '../plan/sources.ts';
import { directDependencyKeys, readPlanHints, replacedSince, writePlan } from '../plan/plans.ts';
import { byOutputs, closureEntries, hostPathRead, LocalOnly, planUnit, type PlannedUnit } from '../plan/unit.ts';
import { envDepsOf, hostStderr, placeOutputs } from './replay.ts';
import { removeScratch } from '../scratch.ts';
import { pruneRunFiles, pruneState } from '../prune.ts';
import { nativeCpuFor } from './native-cpu.ts';
import { writeStderr, writeStdout } from '../io.ts';
import { optionValue } from '../argv.ts';
import { engineForRun, keepBugReport } from './engine-run.ts';
import { buildInSandbox, engineId, renderStep, type SandboxBuilt } from './sandbox-build.ts';
import { SECRET_NAME } from './secrets.ts';

export async function wrap(compiler: CompilerCall): Promise<number> {
  let code: number;
  try {
    code = await wrapCompile(compiler);
  } catch (err) {
    // Our bug or the machine's (a full disk): say so, and let the local rustc decide the outcome.
    await writeStderr(`rustcbuildx: internal error: ${(err as Error).message}; compiling with the local rustc\n`);
    code = await runLocal(compiler.argv);
  }
  if (code === 0) shimBuildScript(compiler);
  return code;
}

/**
 * A build script just compiled, by us or here, is run by cargo through a shim, which hands the run to
 * rustcbuildx (src/wrapper/build-script.ts decides there whether it goes to the sandbox). Anything in
 * the way leaves the program as cargo made it: run here.
 */
function shimBuildScript(compiler: CompilerCall): void {
  // Every successful compile ends here: only a build script's (or one whose arguments are in a file) is parsed again.
  const named = optionValue(compiler.rustcArgs, '--crate-name');
  if (!named?.startsWith('build_script_') && !compiler.rustcArgs.some((a) => a.startsWith('@'))) return;
  try {
    const program = buildScriptProgram(parseRustcArgs(compiler.rustcArgs, (p) => readFileSync(p, 'utf8')), process.cwd());
    const targetRoot = program ? targetRootOf(dirname(program)) : undefined;
    if (!program || !targetRoot || !existsSync(program)) return;
    installShim(program, realProgram(join(targetRoot, STATE_DIR_NAME), targetRoot, program), process.cwd());
  } catch {
    // the script runs here, as cargo runs it
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
    state.recordOutcome(unit, crateName, 'fallback', started, code, { reason });
    return code;
  };
  const compileHere = async (reason: string): Promise<number> => {
    log.debug(`compiled here: ${reason}`);
    const code = await local();
    state.recordOutcome(unit, crateName, 'local', started, code, { reason });
    // Such runs may never reach the full prune below (nothing of theirs goes to the engine).
    if (!process.env.RUSTCBUILDX_SUMMARY_FILE && state.firstTime('pruned-runs')) pruneRunFiles(state.stateDir, state.runId);
    return code;
  };

  let cfg: Config;
  let crate: CrateSettings;
  let crateSources: string[];
  try {
    const workspace = runWorkspace(process.env, process.cwd(), targetRoot);
    ({ cfg, crate, sources: crateSources } = await crateConfig(await runConfig(state, process.env, workspace), process.env, workspace));
  } catch (err) {
    if (err instanceof ConfigError) return fallBack(err.message, true);
    throw err;
  }
  if (cfg.log === 'debug') log = fileLogger(state.logFile(), unit);
  if (unsupported !== undefined || !call) return fallBack(`rustc arguments not understood: ${unsupported}`);
  if (cfg.runner === 'none') return fallBack(`runner = none (${cfg.sources.runner})`);
  if (crate.local) return compileHere(`local = true for this crate (${crateSources.join(', ')})`);

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
  const stores = { memo: LocalCache.fromEnv(), shared: await RunStores.forRun(cfg, state, log) };
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
    await attempt.share();
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
      private: attempt.meta.private ?? (attempt.meta.incremental ? 'built incrementally' : false),
      ...(attempt.onEngine ? { onEngine: attempt.onEngine } : {}),
      nativeLibs: systemLibs(call, planned.map),
    });
    await writeStdout(result.stdout);
    await writeStderr(hostStderr(result.stderr, planned.map));
    const outcome: Outcome = attempt.source === 'built' ? 'built' : 'cached';
    state.recordOutcome(unit, call.crateName, outcome, started, result.status, attempt.source === 'built' ? {} : { from: attempt.source });
    return result.status;
  } finally {
    if ('work' in attempt) removeScratch(attempt.work);
  }

  /** Plans, renders and builds the unit once; a fallback reason when it cannot or should not be used. */
  async function sandboxAttempt(setEnvs: readonly string[], hostPathVars: readonly string[]): Promise<Attempt | { fallback: string; warn: boolean }> {
    if ('unavailable' in setup || !call) throw new Error('unreachable: sandboxAttempt without an engine or a call');
    let planned: PlannedUnit;
    let rendered: ReturnType<typeof renderStep>;
    let render: (spec: UnitSpec) => ReturnType<typeof renderStep>;
    try {
      planned = planUnit({ call, driver, env: process.env, cwd: process.cwd(), state, baseImage: setup.baseImage, baseImageConfig: setup.baseImageConfig, setEnvs, hostPathVars });
      // A link the image cannot do is known from the libraries asked for: no compile in the sandbox to learn it.
      const cannotLink = await cannotLinkInSandbox(call, planned.map, planned.closure.flatMap((p) => p.nativeLibs ?? []), setup);
      if (cannotLink) return { fallback: cannotLink, warn: false };
      const closure = closureEntries(planned.closure, state.path('ctx'));
      // A dependency on this run's base image runs with its configuration as it is now (the tag may
      // name a rebuilt image), as the Dockerfile's FROM would; others with what their plan recorded. One
      // this engine never built nor served (from the memo or a shared store) is given by its outputs,
      // here on disk, instead of a recipe the engine would run again: the same bytes, and the key (the
      // Dockerfile's text) stays the recipe's, so it is one key on every machine.
      // A recipe stays only when its own closure is all there too (else its step would differ, and run).
      // Made only when the engine is called: staging outputs hashes them.
      const engine = engineId(setup);
      const ctx = state.path('ctx');
      const units = planned.closure;
      let current: ClosureEntry[] | undefined;
      const forLlb = () =>
        (current ??= (() => {
          const there = new Set<string>();
          for (const p of units) if (p.onEngine === engine && p.closure.every((k) => there.has(k))) there.add(p.key);
          const byPlan = new Map(units.map((p) => [p.key, p]));
          return closure.map((e) => {
            if (e.kind !== 'recipe') return e;
            const plan = byPlan.get(e.spec.key);
            if (plan && !there.has(plan.key)) return byOutputs(plan, ctx);
            return e.spec.baseImage === setup.baseImage ? { ...e, spec: { ...e.spec, baseImageConfig: setup.baseImageConfig } } : e;
          });
        })());
      render = (spec) => renderStep(spec, closure, forLlb, log);
      rendered = render(planned.spec);
    } catch (err) {
      if (err instanceof LocalOnly || err instanceof SourceError || err instanceof RenderError) return { fallback: err.message, warn: false };
      keepBugReport(state, unit, '', String((err as Error).stack ?? err));
      return { fallback: `internal error while planning ${unit}: ${(err as Error).message}`, warn: true };
    }
    const meta = compileMeta(call, planned, state, hostPathVars);
    const spec = planned.spec;
    const step = { key: planned.key, unit, ...rendered, fresh: (nonce: string) => render({ ...spec, fresh: nonce }), meta, accept: ownOutputs(planned.key), program: 'rustc', decides: 'the local rustc decides' };
    const built = await buildInSandbox(step, setup, state, stores, log);
    return 'fallback' in built ? built : { ...built, planned, snippet: rendered.snippet, meta };
  }
}

interface Attempt extends SandboxBuilt {
  planned: PlannedUnit;
  snippet: string;
  meta: EntryMeta;
}

/**
 * A served result is placed into cargo's out dir by name: only this unit's own names (rustc's outputs
 * all start with the crate name and extra-filename), never another unit's files.
 */
function ownOutputs(key: string): (paths: readonly string[]) => string | undefined {
  const own = (name: string) => name === key || name.startsWith(`${key}.`) || name.startsWith(`lib${key}.`);
  return (paths) => {
    const foreign = paths.find((p) => p.startsWith('out/') && !own(p.slice(4)));
    return foreign ? `holds ${foreign}, not an output of ${key}` : undefined;
  };
}

/** What a compile's result is of, and why it must stay on this machine if it must (src/plan/provenance.ts). */
function compileMeta(call: RustcCall, planned: PlannedUnit, state: RunState, hostPathVars: readonly string[]): EntryMeta {
  const env = process.env;
  const cargoHome = env.CARGO_HOME || join(homedir(), '.cargo');
  const crate = env.CARGO_PKG_NAME ?? call.crateName ?? planned.key;
  const kind = call.test ? 'test' : call.crateName?.startsWith('build_script_') ? 'build-script' : call.crateTypes.join(',') || 'lib';
  const why =
    originPrivate(cargoHome, env.CARGO_MANIFEST_DIR ?? process.cwd()) ??
    closurePrivate(planned.closure) ??
    outputsPrivate(state, [...(env.OUT_DIR ? [resolve(env.OUT_DIR)] : []), ...call.libSearchPaths.map((l) => resolve(l.path))]) ??
    userEnvPrivate(planned.userEnv) ??
    (hostPathVars.length > 0 ? `reads ${hostPathVars.map((n) => `$${n}`).join(', ')} as a path on this machine` : undefined);
  return {
    crate,
    version: env.CARGO_PKG_VERSION ?? '',
    kind,
    rules: PROVENANCE_RULES,
    ...(why ? { private: why } : {}),
    ...(planned.spec.incremental ? { incremental: true as const } : {}),
  };
}

const BARE_RUN_PRUNE_AGE_MS = 3_600_000;

/** Variables cargo sets for every compile: they are always passed and need no remembering. */
const CARGO_SET = /^(CARGO_PKG_|CARGO_MANIFEST_|CARGO_CRATE_NAME$|CARGO_BIN_|CARGO_PRIMARY_PACKAGE$|OUT_DIR$|CARGO$)/;



