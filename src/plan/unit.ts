/**
 * From one parsed rustc call to the spec of its sandboxed build: where its sources come from, which
 * units and directories it needs, the environment cargo gave it (and nothing else), and its argv with
 * every host path translated into the sandbox layout.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { mapRemapFrom, mapRustcPaths, renderRustcArgs, withIncremental, withOutDir, withoutCodegen, type RustcCall } from '../rustc/args.ts';
import { PathMap, SANDBOX } from './sandbox-paths.ts';
import { snapshotFiles, snapshotTree, stageRegistryCrate, type StagedSource } from './sources.ts';
import { directDependencyKeys, keyOfArtifact, resolveClosure, unitKey, type UnitPlan } from './plans.ts';
import type { ClosureEntry, ImageConfig, UnitInput, UnitSpec } from '../render/dockerfile.ts';
import { SANDBOX_TOOLCHAIN_DIR } from '../base-image.ts';
import { sha256 } from '../toolchain.ts';
import type { RunState } from '../run-state.ts';

/** Why a call must run with the local rustc: not an error, a limit of what can be sandboxed. */
export class LocalOnly extends Error {
  override name = 'LocalOnly';
}

export interface UnitRequest {
  call: RustcCall;
  /** `clippy-driver` when cargo clippy put a driver before rustc */
  driver: string | undefined;
  env: Record<string, string | undefined>;
  cwd: string;
  state: RunState;
  baseImage: string;
  baseImageConfig: ImageConfig;
  /** names the user allowed through (RUSTCBUILDX_SET_ENVS) */
  setEnvs: readonly string[];
  /** path variables the crate reads (from an earlier build's dep-info): given their host values, see hostPathRead */
  hostPathVars: readonly string[];
}

export interface PlannedUnit {
  key: string;
  spec: UnitSpec;
  closure: UnitPlan[];
  map: PathMap;
  outDir: string;
  /** variables whose host-path values were translated into the sandbox layout */
  translated: string[];
  /** variables passed only because the user or an earlier build named them (set here): the user's values */
  userEnv: string[];
}

/**
 * The engine's cache mount for a unit's incremental state: one per unit identity (toolchain, as the base
 * image's name says it; driver; package; crate, its types and target; cargo's `-C metadata`, which
 * covers the profile and features), never a host path, so a second checkout and a remote builder use
 * it too. rustc itself checks that a session fits the call (version, options, sources by hash) and starts
 * over when not: the id only keeps unrelated units out of each other's way.
 */
export function incrementalCacheId(call: RustcCall, req: Pick<UnitRequest, 'baseImage' | 'driver' | 'env'>): string {
  const identity = [
    req.baseImage,
    req.driver ?? 'rustc',
    req.env.CARGO_PKG_NAME ?? '',
    call.crateName ?? '',
    call.crateTypes.join(','),
    // a custom target's JSON file by its name: its path is the host's
    call.target?.endsWith('.json') ? basename(call.target) : (call.target ?? ''),
    call.test ? 'test' : '',
    ...call.codegen.filter(([k]) => k === 'metadata').map(([, v]) => v ?? ''),
  ];
  return `rcbx-inc-${sha256(JSON.stringify(identity)).slice(0, 32)}`;
}

/** Variables cargo sets for rustc; values that are host paths are translated. */
const CARGO_ENV_EXACT = new Set([
  'CARGO_MANIFEST_DIR', 'CARGO_MANIFEST_PATH', 'CARGO_MANIFEST_LINKS', 'CARGO_CRATE_NAME', 'CARGO_BIN_NAME',
  'CARGO_PRIMARY_PACKAGE', 'CARGO_TARGET_TMPDIR', 'CARGO_RUSTC_CURRENT_DIR', 'OUT_DIR', 'RUSTC_BOOTSTRAP',
  'CLIPPY_ARGS', 'CLIPPY_CONF_DIR',
]);
const CARGO_ENV_PREFIXES = ['CARGO_PKG_', 'CARGO_BIN_EXE_'];

export type SourceKind = 'registry' | 'git' | 'local';

/** `debug/build/<pkg>-<hash>/…` (or under a target triple): where build scripts leave files. */
const BUILD_OUTPUT = /^([^/]+\/)?[^/]+\/build\/[^/]+\/./;

export function planUnit(req: UnitRequest): PlannedUnit {
  const { call, env, cwd, state } = req;
  if (!call.crateName) throw new LocalOnly('no --crate-name');
  if (!call.outDir) throw new LocalOnly('no --out-dir');
  if (call.outFile) throw new LocalOnly('-o is not supported in the sandbox');
  if (call.sysroot) throw new LocalOnly('--sysroot points at a host toolchain');
  if (call.codegen.some(([k]) => k === 'linker')) throw new LocalOnly('-C linker names a host program');
  const manifestDir = env.CARGO_MANIFEST_DIR;
  if (!manifestDir) throw new LocalOnly('CARGO_MANIFEST_DIR is not set (not called by cargo)');

  const key = unitKey(call.crateName, call.extraFilename);
  const cargoHome = env.CARGO_HOME || join(homedir(), '.cargo');
  const outDir = resolve(cwd, call.outDir);
  const kind = sourceKind(cargoHome, manifestDir);
  const map = new PathMap({ workspace: kind === 'local' ? cwd : undefined, cargoHome, target: state.targetRoot, outDir });
  const toSandbox = (hostPath: string): string => {
    const mapped = map.toSandbox(resolve(cwd, hostPath));
    if (mapped === undefined) throw new LocalOnly(`${hostPath} lies outside the workspace, CARGO_HOME and the target dir`);
    return mapped;
  };

  const ctxDir = state.path('ctx');
  const staged = stageSource(kind, ctxDir, cargoHome, manifestDir, state.targetRoot);
  const source = { staged: staged.source, mountTarget: toSandbox(staged.hostDir) };

  // Dependencies: every extern must be a unit we built, and so must everything it needs.
  const closure = resolveClosure(state, directDependencyKeys(call));
  if (!closure.ok) throw new LocalOnly(`dependency ${closure.missing} was not built by rustcbuildx (or was rebuilt since)`);

  // Each dependency's outputs are mounted at /rcbx/d/<n>: rustc finds them there through one
  // `-L dependency=` each, and the externs cargo named are pointed there.
  const depDir = new Map(closure.order.map((p, n) => [p.key, { dir: `${SANDBOX.deps}/${n}`, hostOutDir: p.hostOutDir }]));
  const inputs: UnitInput[] = closure.order.map((p) => ({ kind: 'unit', key: p.key, target: (depDir.get(p.key) as { dir: string }).dir }));
  // Build-script outputs (OUT_DIR, native libraries a build script made) come from the host as trees;
  // cargo's deps dirs are not sent: the units above fill them.
  const treeDirs = new Set<string>();
  if (env.OUT_DIR) treeDirs.add(resolve(cwd, env.OUT_DIR));
  for (const lib of call.libSearchPaths) {
    const dir = resolve(cwd, lib.path);
    if (BUILD_OUTPUT.test(relative(state.targetRoot, dir))) treeDirs.add(dir);
    else if (basename(dir) !== 'deps') throw new LocalOnly(`search path ${lib.path} is not one of cargo's target dirs`);
  }
  for (const dir of treeDirs) {
    if (!existsSync(dir)) continue;
    const target = toSandbox(dir);
    if (!target.startsWith(SANDBOX.target + '/')) throw new LocalOnly(`search path ${dir} is outside the target dir`);
    inputs.push({ kind: 'tree', ctxPath: snapshotTree(ctxDir, 'dirs', dir).ctxPath, target });
  }

  // Relative paths stay relative (the sandbox's cwd mirrors cargo's) but must still lie inside a root.
  const toSandboxArg = (p: string): string => {
    const dep = depDir.get(keyOfArtifact(p));
    if (dep && resolve(cwd, dirname(p)) === dep.hostOutDir) return `${dep.dir}/${basename(p)}`;
    return isAbsolute(p) ? toSandbox(p) : (toSandbox(p), p);
  };
  const mapped = mapRemapFrom(
    mapRustcPaths(withoutCodegen(call, ['incremental']), toSandboxArg),
    // cargo's trim-paths remaps host prefixes; inside, the same sources live under sandbox paths.
    (from) => (isAbsolute(from) ? map.toSandbox(from) : undefined),
  );
  // cargo's incremental dir is a host path: inside, the state lives in a cache mount of the engine's.
  const incremental = call.incremental === undefined ? undefined : { id: incrementalCacheId(call, req) };
  // rustc writes into a fresh directory: the sandbox's target dir is a read-only view of the inputs.
  const sandboxCall = withOutDir(incremental ? withIncremental(mapped, SANDBOX.incremental) : mapped, SANDBOX.out);
  const sandboxedEnv = sandboxEnv(env, req.setEnvs, req.hostPathVars, (p) => map.toSandbox(resolve(cwd, p)));
  const spec: UnitSpec = {
    key,
    baseImage: req.baseImage,
    baseImageConfig: req.baseImageConfig,
    source,
    inputs,
    cwd: toSandbox(cwd),
    env: sandboxedEnv.env,
    program: req.driver ? [req.driver, 'rustc'] : ['rustc'],
    args: [...renderRustcArgs(sandboxCall), ...inputs.flatMap((i) => (i.kind === 'unit' ? ['-L', `dependency=${i.target}`] : []))],
    mkdirs: [...new Set(call.libSearchPaths.map((l) => toSandbox(l.path)))].filter((d) => d.startsWith(SANDBOX.target)),
    ...(sandboxedEnv.hostLinks.length > 0 ? { hostLinks: sandboxedEnv.hostLinks } : {}),
    ...(incremental ? { incremental } : {}),
    inputsDigest: sha256(JSON.stringify([staged.source.ctxPath, inputs.map((i) => (i.kind === 'tree' ? i.ctxPath : i.key)), closure.order.map((p) => sha256(p.snippet))])),
  };
  return { key, spec, closure: closure.order, map, outDir, translated: sandboxedEnv.translated, userEnv: sandboxedEnv.userEnv };
}

export function sourceKind(cargoHome: string, manifestDir: string): SourceKind {
  const under = (dir: string) => !relative(dir, manifestDir).startsWith('..');
  if (under(join(cargoHome, 'registry', 'src'))) return 'registry';
  if (under(join(cargoHome, 'git', 'checkouts'))) return 'git';
  return 'local';
}

export function stageSource(kind: SourceKind, ctxDir: string, cargoHome: string, manifestDir: string, targetRoot: string): { source: StagedSource; hostDir: string } {
  switch (kind) {
    case 'registry':
      return { source: stageRegistryCrate(ctxDir, cargoHome, manifestDir), hostDir: manifestDir };
    case 'git': {
      // The whole checkout of that revision: a crate in a git workspace may read files beside it.
      const checkouts = join(cargoHome, 'git', 'checkouts');
      const [repo, rev] = relative(checkouts, manifestDir).split('/');
      if (!repo || !rev) throw new LocalOnly(`unexpected git checkout layout: ${manifestDir}`);
      const revDir = join(checkouts, repo, rev);
      return { source: snapshotTree(ctxDir, 'git', revDir), hostDir: revDir };
    }
    case 'local':
      return { source: snapshotTree(ctxDir, 'ws', manifestDir, { excludePaths: [targetRoot] }), hostDir: manifestDir };
  }
}

interface SandboxEnv {
  env: Array<[string, string]>;
  /** names whose values were host paths, given as their sandbox paths */
  translated: string[];
  /** names passed only because they were named (setEnvs), not as cargo's */
  userEnv: string[];
  hostLinks: Array<[host: string, sandbox: string]>;
}

/**
 * What rustc sees inside: cargo's variables for this crate, a build script's rustc-env, named extras.
 * A value that is a host path under one of the roots is given as its sandbox path, so the step is the
 * same from every checkout; except for the names in `hostPathVars` (the crate reads them, see
 * hostPathRead), which get their host value, with that path made to exist inside as a link.
 */
function sandboxEnv(env: Record<string, string | undefined>, setEnvs: readonly string[], hostPathVars: readonly string[], toSandbox: (p: string) => string | undefined): SandboxEnv {
  const names = new Set<string>();
  for (const name of Object.keys(env)) {
    if (CARGO_ENV_EXACT.has(name) || CARGO_ENV_PREFIXES.some((p) => name.startsWith(p))) names.add(name);
  }
  for (const name of buildScriptEnv(env.OUT_DIR)) if (env[name] !== undefined) names.add(name);
  const userEnv = setEnvs.filter((name) => env[name] !== undefined && !names.has(name));
  for (const name of userEnv) names.add(name);
  const out: SandboxEnv = { env: [['CARGO', `${SANDBOX_TOOLCHAIN_DIR}/bin/cargo`]], translated: [], userEnv: [...new Set(userEnv)].sort(), hostLinks: [] };
  if (env.CARGO_HOME) out.env.push(['CARGO_HOME', SANDBOX.cargoHome]);
  for (const name of [...names].sort()) {
    const value = env[name] as string;
    const inside = isAbsolute(value) ? toSandbox(value) : undefined;
    if (inside === undefined) {
      out.env.push([name, value]);
    } else if (hostPathVars.includes(name)) {
      out.env.push([name, value]);
      out.hostLinks.push([value, inside]);
    } else {
      out.env.push([name, inside]);
      out.translated.push(name);
    }
  }
  return out;
}

/**
 * The translated path variables a crate read at compile time (rustc's dep-info lists them) and that
 * must therefore get their host value, as plain cargo gives it: `env!("CARGO_MANIFEST_DIR")`,
 * `env!("CARGO_BIN_EXE_app")` and the like end up in the program, and tests run them on the host.
 * Not OUT_DIR, nor a value inside a build script's output dir: those are read to `include!` generated
 * files at compile time (serde does), and giving them host values would tie every dependent of such a
 * crate to one checkout. What stays different is the same as for registry crates: the path string in a
 * panic location inside generated code and in debug info (docs/design.md).
 */
export function hostPathRead(translated: readonly string[], envDeps: readonly string[], env: Record<string, string | undefined>, targetRoot: string): string[] {
  return translated.filter((name) => {
    if (!envDeps.includes(name) || name === 'OUT_DIR') return false;
    const value = env[name];
    return value !== undefined && !BUILD_OUTPUT.test(relative(targetRoot, value));
  });
}

/** Names a build script set with `cargo:rustc-env=`: cargo records its output beside OUT_DIR. */
function buildScriptEnv(outDir: string | undefined): string[] {
  if (!outDir) return [];
  const file = join(dirname(outDir), 'output');
  if (!existsSync(file)) return [];
  const names: string[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^cargo::?rustc-env=([^=]+)=/.exec(line);
    if (m?.[1]) names.push(m[1]);
  }
  return names;
}

/**
 * A build's Dockerfile repeats its whole closure, so its size grows with the sum of the closures and
 * BuildKit refuses a definition over 4 MiB (~4x the Dockerfile text). Dependencies are rebuilt from
 * their own stages (so the Dockerfile alone rebuilds them on a fresh builder) while the text stays
 * within this budget, smallest snippets first; the rest, and plans from a version that kept no spec,
 * are given by their outputs, staged in the context by content. Either way the unit's mounts see the
 * same kind of outputs stage. The LLB route takes the same choice, so both routes build one thing.
 */
export const CLOSURE_TEXT_BUDGET = 480_000;

export function closureEntries(closure: readonly UnitPlan[], ctxDir: string, budget = CLOSURE_TEXT_BUDGET): ClosureEntry[] {
  const bySize = closure.filter((p) => p.spec?.baseImageConfig).sort((a, b) => a.snippet.length - b.snippet.length);
  const embedded = new Set<string>();
  let used = 0;
  for (const plan of bySize) {
    if (used + plan.snippet.length > budget) break;
    used += plan.snippet.length;
    embedded.add(plan.key);
  }
  return closure.map((plan) => (plan.spec && embedded.has(plan.key) ? { kind: 'recipe', spec: plan.spec, snippet: plan.snippet } : byOutputs(plan, ctxDir)));
}

/** A dependency given by the outputs it left here, staged in the context by content. */
export function byOutputs(plan: UnitPlan, ctxDir: string): ClosureEntry {
  const files = plan.outputs.map((o) => o.name).filter((name) => !name.endsWith('.d'));
  return { kind: 'outputs', key: plan.key, ctxPath: snapshotFiles(ctxDir, 'outs', plan.hostOutDir, files).ctxPath };
}
