/**
 * A build script's run, as cargo starts it through the shim (src/plan/build-script.ts): in the sandbox
 * like a compile, from the memo or BuildKit's cache when these exact inputs ran before, with OUT_DIR,
 * stdout (cargo's directives), stderr and the exit code given back as a run here leaves them. Anything of
 * ours that fails, and a script that fails inside (the network, a tool or library the image lacks, a
 * file outside its crate), ends in the run here: the script's own answer, never a failed build of ours.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { ConfigError, type Config, type CrateSettings } from '../config/config.ts';
import { crateConfig, runConfig, runWorkspace } from './run-config.ts';
import { pkgConfigDisagrees } from './system-probe.ts';
import { currentRunId, RunState, targetRootOf, writeAtomic } from '../run-state.ts';
import { fileLogger, silentLogger, type Logger } from '../log.ts';
import { passthrough } from '../exec.ts';
import { jobserverFds } from './compiler-call.ts';
import { isSelf } from './dispatch.ts';
import { LocalCache, PROVENANCE_RULES, type EntryMeta } from '../store/local-cache.ts';
import { RunStores } from './run-stores.ts';
import { depMetadataPrivate, originPrivate, outputsPrivate, recordRunPrivacy, userEnvPrivate } from '../plan/provenance.ts';
import { readPlanAsWritten } from '../plan/plans.ts';
import { sha256 } from '../toolchain.ts';
import { RenderError } from '../render/dockerfile.ts';
import { SourceError } from '../plan/sources.ts';
import { planBuildScriptRun, runKey, type PlannedRun } from '../plan/build-script.ts';
import { removeScratch } from '../scratch.ts';
import { writeStderr, writeStdout } from '../io.ts';
import { engineForRun, keepBugReport, type RunEngine } from './engine-run.ts';
import { buildInSandbox, renderStep, type Rendered, type SandboxBuilt } from './sandbox-build.ts';
import { SECRET_NAME } from './secrets.ts';
import { editsCompileHere } from './edits.ts';
import { SANDBOX } from '../plan/sandbox-paths.ts';
import { cFlagsWithMaps } from '../plan/cargo-env.ts';
import { LocalOnly, sourceKind } from '../plan/unit.ts';

/** `__build-script --workspace DIR PROGRAM ARGS…`, as the shim passes it. */
export async function runBuildScript(argv: readonly string[]): Promise<number> {
  const [flag, workspace, programArg, ...args] = argv;
  if (flag !== '--workspace' || workspace === undefined || programArg === undefined) {
    await writeStderr('rustcbuildx: __build-script is what a build script\'s shim runs: --workspace DIR PROGRAM [ARGS…]\n');
    return 2;
  }
  const program = resolve(programArg);
  // The script runs here at most once, whatever fails after it started; and once its answer is written,
  // that answer stands.
  let ran: Promise<number> | undefined;
  const here = (env: Record<string, string> = {}) => (ran ??= passthrough([program, ...args], { ...process.env, ...env }, jobserverFds(process.env.CARGO_MAKEFLAGS)));
  const answered: { code?: number } = {};
  try {
    return await runInSandbox(workspace, program, args, here, answered);
  } catch (err) {
    if (answered.code !== undefined) return answered.code;
    if (ran) return ran;
    await writeStderr(`rustcbuildx: internal error: ${(err as Error).message}; running the build script here\n`);
    return here();
  }
}

async function runInSandbox(workspace: string, program: string, args: readonly string[], here: (env?: Record<string, string>) => Promise<number>, answered: { code?: number }): Promise<number> {
  const started = Date.now();
  const outDirValue = process.env.OUT_DIR;
  const targetRoot = outDirValue ? targetRootOf(join(outDirValue, '..')) : undefined;
  // cargo without us (the wrapper unset since the script was compiled): its build scripts run here.
  if (!outDirValue || !targetRoot || !wrappedByUs(process.env.RUSTC_WRAPPER)) return here();
  const state = new RunState(targetRoot, currentRunId());
  const key = runKey(outDirValue);
  const crate = process.env.CARGO_PKG_NAME;
  // Private until a sandboxed answer is in place: a run that ends any other way shares nothing.
  const runDir = resolve(outDirValue, '..');
  const links = process.env.CARGO_MANIFEST_LINKS || undefined;
  recordRunPrivacy(state, runDir, 'which did not finish through rustcbuildx', undefined, links);
  let log: Logger = silentLogger;
  let sandboxMode = false;
  // A crate of the workspace (not a registry or git dependency): for the edit loop and the prefix maps.
  const cargoHome = process.env.CARGO_HOME || join(homedir(), '.cargo');
  const local = process.env.CARGO_MANIFEST_DIR !== undefined && sourceKind(cargoHome, process.env.CARGO_MANIFEST_DIR) === 'local';
  const onHost = async (reason: string, warn = false, outcome: 'fallback' | 'local' = 'fallback'): Promise<number> => {
    log.debug(`build script on the host: ${reason}`);
    if (warn && state.firstTime('warned')) await writeStderr(`rustcbuildx: warning: ${reason}\nrustcbuildx: running build scripts here for this cargo run\n`);
    // cargo buildx gave cargo no C prefix maps (scripts were to run inside): C compiled here gets them,
    // so the crates using it are still the same from every checkout.
    // Only a crate of the workspace gets the workspace's map (a registry crate's cwd is its own dir).
    const code = await here(sandboxMode ? cFlagsWithMaps(process.env, { cargoHome, target: targetRoot, ...(local ? { workspace } : {}) }) : {});
    // What it wrote answers to this machine, not to a key: what uses it stays here.
    recordRunPrivacy(state, runDir, `which ran on this machine (${reason.slice(0, 120)})`, undefined, links);
    state.recordOutcome(key, crate, outcome, started, code, { reason, kind: 'build-script' });
    return code;
  };

  let cfg: Config;
  let crateSettings: CrateSettings;
  let crateSources: string[];
  try {
    const ws = runWorkspace(process.env, workspace, targetRoot);
    const runCfg = await runConfig(state, process.env, ws);
    // The run's own setting says whether cargo buildx gave cargo C prefix maps (it gives none when
    // scripts run in the sandbox): a script this crate's setting keeps here then needs them from us.
    sandboxMode = runCfg.buildScripts === 'sandbox';
    ({ cfg, crate: crateSettings, sources: crateSources } = await crateConfig(runCfg, process.env, ws));
  } catch (err) {
    if (err instanceof ConfigError) return onHost(err.message, true);
    throw err;
  }
  if (cfg.log === 'debug') log = fileLogger(state.logFile(), key);
  if (crateSettings.local) return onHost(`local = true for this crate (${crateSources.join(', ')})`, false, 'local');
  if (cfg.buildScripts !== 'sandbox') return onHost(`build-scripts = host (${crateSettings.buildScripts ? crateSources.join(', ') : cfg.sources['build-scripts']})`);
  if (cfg.runner === 'none') return onHost(`runner = none (${cfg.sources.runner})`);
  // A workspace crate's script that ran before in this target dir runs again because of an edit (cargo
  // reruns a script without rerun-if-changed whenever a file of its crate changes): with an engine on
  // this machine it runs here, as the edit loop compiles that crate here.
  if (local && existsSync(join(outDirValue, '..', 'output')) && editsCompileHere(cfg)) {
    return onHost('run again in this target dir (an edit): here, as the edit loop compiles its crate (RUSTCBUILDX_INCREMENTAL)', false, 'local');
  }
  const setup = await engineForRun(state, cfg, process.env.RUSTC ?? 'rustc', log);
  if ('unavailable' in setup) return onHost(setup.unavailable, true);

  const hintsFile = state.path('scripts', `${key}.json`);
  const learned = readHints(hintsFile);
  const secret = (names: readonly string[]) => names.find((n) => SECRET_NAME.test(n) && !cfg.setEnvs.includes(n) && process.env[n] !== undefined);
  const secretHere = (name: string) => onHost(`the build script of ${crate ?? key} reads $${name}; it looks like a secret, so the script runs here (name it in RUSTCBUILDX_SET_ENVS to send it)`);
  const knownSecret = secret(learned);
  if (knownSecret) return secretHere(knownSecret);
  const stores = { memo: LocalCache.fromEnv(), shared: await RunStores.forRun(cfg, state, log) };
  let setEnvs = [...cfg.setEnvs, ...learned];
  let attempt = await attemptRun(setEnvs);
  try {
    if ('fallback' in attempt) return onHost(attempt.fallback, attempt.warn);
    // The script says which variables it reads (rerun-if-env-changed): one it was not given but that is
    // set here would make its answer differ from a run here. Pass it, and run again.
    let declared = envReadBy(attempt.result.stdout);
    const passed = new Set(attempt.planned.spec.env.map(([name]) => name));
    const missing = declared.filter((name) => !passed.has(name) && !HELD_BACK.has(name) && process.env[name] !== undefined);
    if (missing.length > 0) {
      const secretName = secret(missing);
      if (secretName) return secretHere(secretName);
      log.debug(`${key} reads ${missing.join(', ')}: running again with them`);
      removeScratch(attempt.work);
      setEnvs = [...setEnvs, ...missing];
      attempt = await attemptRun(setEnvs);
      if ('fallback' in attempt) return onHost(attempt.fallback, attempt.warn);
      declared = envReadBy(attempt.result.stdout);
    }
    const remembered = [...new Set([...learned, ...declared])].sort();
    if (remembered.join() !== learned.join()) writeAtomic(hintsFile, JSON.stringify({ envNames: remembered }));
    const { planned, result } = attempt;
    const exported = join(attempt.work, 'export', 'out');
    // A run that succeeded inside but whose answer a run here would not give: here decides.
    const differs = reportedError(result.stdout) ?? (await pkgConfigDisagrees(declared, result.stdout.toString(), cfg.base)) ?? watchedButNotGiven(result.stdout, planned) ?? sandboxPathsIn(exported);
    if (differs) return onHost(differs);
    await attempt.share();
    // From here on the answer is this run's: whatever fails after, the script does not run again.
    answered.code = result.status;
    replaceOutDir(exported, planned.outDir);
    // Plain text both (cargo reads directives from stdout): sandbox paths become host paths again.
    const directives = planned.map.toHostText(result.stdout.toString());
    await writeStdout(directives);
    await writeStderr(planned.map.toHostText(result.stderr.toString()));
    recordRunPrivacy(state, runDir, attempt.meta.private, { outDir: planned.outDir, stdout: directives }, links);
    state.recordOutcome(key, crate, attempt.source === 'built' ? 'built' : 'cached', started, result.status, { kind: 'build-script', ...(attempt.source === 'built' ? {} : { from: attempt.source }) });
    return result.status;
  } finally {
    if ('work' in attempt) removeScratch(attempt.work);
  }

  async function attemptRun(setEnvs: readonly string[]): Promise<(SandboxBuilt & { planned: PlannedRun; meta: EntryMeta }) | { fallback: string; warn: boolean }> {
    const engine = setup as RunEngine;
    let planned: PlannedRun;
    let rendered: Rendered;
    try {
      planned = planBuildScriptRun({ program, args, env: process.env, workspace, state, baseImage: engine.baseImage, baseImageConfig: engine.baseImageConfig, setEnvs });
      rendered = renderStep(planned.spec, [], () => [], log);
    } catch (err) {
      if (err instanceof LocalOnly || err instanceof SourceError || err instanceof RenderError) return { fallback: err.message, warn: false };
      keepBugReport(state, key, '', String((err as Error).stack ?? err));
      return { fallback: `internal error while planning the build script of ${crate ?? key}: ${(err as Error).message}`, warn: true };
    }
    const why =
      originPrivate(cargoHome, planned.manifestDir) ??
      programPrivate(state, program) ??
      outputsPrivate(state, planned.treeDirs) ??
      depMetadataPrivate(state, runDir, planned.spec.env.map(([name]) => name)) ??
      userEnvPrivate(planned.userEnv);
    const meta: EntryMeta = { crate: crate ?? key, version: process.env.CARGO_PKG_VERSION ?? '', kind: 'build-script-run', rules: PROVENANCE_RULES, ...(why ? { private: why } : {}) };
    const spec = planned.spec;
    const built = await buildInSandbox(
      {
        key: planned.key,
        unit: `the build script of ${crate ?? key}`,
        ...rendered,
        fresh: (nonce) => renderStep({ ...spec, fresh: nonce }, [], () => [], log),
        meta,
        program: 'the build script',
        decides: 'it runs here',
        explain,
      },
      engine,
      state,
      stores,
      log,
    );
    return 'fallback' in built ? built : { ...built, planned, meta };
  }
}

/**
 * Why a script's program makes its run private: the compile that made these very bytes was (the unit's
 * plan records it, with the program's digest), or it was compiled on this machine.
 */
function programPrivate(state: RunState, program: string): string | undefined {
  const plan = readPlanAsWritten(state, basename(program));
  const made = plan?.outputs.find((o) => o.name === basename(program));
  // Moved beside its shim by a rename, the program keeps the inode and times its plan stamped: then its
  // bytes are those; otherwise they are hashed.
  const st = statSync(program, { throwIfNoEntry: false });
  const same = made && st && st.size === made.size && (st.ino === made.ino && st.mtimeMs === made.mtimeMs ? true : sha256(readFileSync(program)) === made.sha256);
  if (!plan || !same) return 'its program was compiled on this machine';
  return plan.private === false ? undefined : `its program ${typeof plan.private === 'string' ? plan.private : 'was built before rustcbuildx recorded where units come from'}`;
}

/** Whether cargo runs us as its rustc wrapper: cargo tells build scripts which wrapper it uses. */
function wrappedByUs(wrapper: string | undefined): boolean {
  return wrapper !== undefined && wrapper !== '' && (basename(wrapper).startsWith('rustcbuildx') || isSelf(wrapper));
}

/** `cargo:rerun-if-env-changed=NAME` (and `cargo::`), the variables a script says it reads. */
export function envReadBy(stdout: Buffer): string[] {
  const names = new Set<string>();
  for (const m of stdout.toString().matchAll(/^cargo::?rerun-if-env-changed=(.+?)\r?$/gm)) if (m[1]) names.add(m[1]);
  return [...names].sort();
}

function readHints(file: string): string[] {
  try {
    const { envNames } = JSON.parse(readFileSync(file, 'utf8')) as { envNames?: unknown };
    // Names as scripts spell them: `CC_x86_64-unknown-linux-gnu` holds dashes.
    return Array.isArray(envNames) ? envNames.filter((n): n is string => typeof n === 'string' && /^[^=\0\s]+$/.test(n)) : [];
  } catch {
    return [];
  }
}

/** What a run here leaves in OUT_DIR: only what this run wrote (as after `cargo clean`). */
function replaceOutDir(exported: string, outDir: string): void {
  mkdirSync(outDir, { recursive: true });
  for (const name of readdirSync(outDir)) rmSync(join(outDir, name), { recursive: true, force: true });
  let names: string[] = [];
  try {
    names = readdirSync(exported);
  } catch {
    // the script wrote nothing
  }
  for (const name of names) renameSync(join(exported, name), join(outDir, name));
}

/** The errors that say a script wanted the network, which the sandbox does not have. */
const NO_NETWORK = /Connection refused|Network is unreachable|Temporary failure in name resolution|failed to lookup address|dns error|Could not resolve host|No route to host/i;

/** A failed script's reason: its panic message (else its last line), and whether it wanted the network. */
export function explain(tail: readonly string[]): string | undefined {
  const lines = tail.map((l) => l.trim()).filter(Boolean);
  const panic = lines.findIndex((l) => /panicked at/.test(l));
  const message = panic >= 0 ? (lines[panic + 1] ?? lines[panic]) : lines.filter((l) => !/^note: run with `RUST_BACKTRACE/.test(l)).at(-1);
  const network = lines.some((l) => NO_NETWORK.test(l)) ? 'the sandbox has no network' : undefined;
  // Plain cargo lets a script write into its own crate's sources; the sandbox gives them read-only.
  const sources = lines.some((l) => /Read-only file system|os error 30\b/.test(l)) ? "it writes into its crate's sources, which the sandbox gives read-only" : undefined;
  return [message, network, sources].filter(Boolean).join('; ') || undefined;
}

/** `cargo::error=…`: the script failed its build while exiting 0; inside, that may be the sandbox's doing. */
function reportedError(stdout: Buffer): string | undefined {
  const error = /^cargo::error=(.*)$/m.exec(stdout.toString())?.[1];
  return error === undefined ? undefined : `the build script reported an error in the sandbox (${error.slice(0, 200)}); it runs here`;
}

/**
 * A file the script watches (`rerun-if-changed`) in the workspace or CARGO_HOME but outside what the
 * sandbox was given (a sibling dir, `.git`): it looked for it and did not find it, where a run here would.
 */
function watchedButNotGiven(stdout: Buffer, planned: PlannedRun): string | undefined {
  for (const m of stdout.toString().matchAll(/^cargo::?rerun-if-changed=(.+?)\r?$/gm)) {
    const value = planned.map.toHostText(m[1] as string);
    const path = resolve(planned.manifestDir, value);
    const roots = [planned.map.roots.workspace, planned.map.roots.cargoHome].filter((r): r is string => r !== undefined);
    const inRoot = roots.some((r) => !relative(r, path).startsWith('..'));
    const inTarget = !relative(planned.map.roots.target, path).startsWith('..');
    const given = !relative(planned.sourceDir, path).startsWith('..') && !relative(planned.sourceDir, path).split('/').includes('.git');
    if (inRoot && !inTarget && !given) return `the build script watches ${value}, which the sandbox was not given; it runs here`;
  }
  return undefined;
}

/**
 * A text file in OUT_DIR naming a sandbox path (a generated source that includes by absolute path, a
 * pkg-config file): it would not work here, where a dependent may be compiled or its script run.
 * Dep-info (`*.d`) is left out: a script that probes rustc (proc-macro2, thiserror, anyhow before
 * mid-2024) leaves its probe's, and nothing reads it. It keeps the sandbox's paths, so a dependent's key
 * stays the same from every checkout; a run here would have written this machine's.
 */
export function sandboxPathsIn(dir: string): string | undefined {
  const walk = (at: string): string | undefined => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) {
        const found = walk(path);
        if (found) return found;
      } else if (entry.isFile() && !entry.name.endsWith('.d') && statSync(path).size <= TEXT_SCAN_MAX) {
        const data = readFileSync(path);
        if (!data.subarray(0, 8000).includes(0) && data.includes(SANDBOX_ROOT)) return relative(dir, path);
      }
    }
    return undefined;
  };
  const found = existsSync(dir) ? walk(dir) : undefined;
  return found === undefined ? undefined : `the build script's OUT_DIR holds sandbox paths (${found}); it runs here`;
}

const TEXT_SCAN_MAX = 4 * 1024 * 1024;
const SANDBOX_ROOT = Buffer.from(`${SANDBOX.root}/`);

/**
 * Names a script may declare that the sandbox sets its own way, or never passes: a second run to pass
 * them would put this machine's `-j` or its wrapper's path into the key. (The toolchain's RUSTC, RUSTDOC
 * and CARGO are always passed, as the image's.)
 */
const HELD_BACK = new Set(['NUM_JOBS', 'RUSTC_WRAPPER', 'RUSTC_WORKSPACE_WRAPPER', 'CARGO_MAKEFLAGS', 'MAKEFLAGS', 'MFLAGS']);

