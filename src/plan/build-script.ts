/**
 * Build scripts in the sandbox. cargo compiles a build script through the wrapper, then runs the program
 * itself. So the wrapper leaves a shim where cargo will look, with the program kept in the target dir's
 * state dir, and the shim hands the run to `rustcbuildx __build-script`, which plans it here like a
 * unit: its crate's sources, its program by content, the environment cargo gave it in sandbox paths, and
 * OUT_DIR as the step's outputs.
 */
import { chmodSync, existsSync, linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { shQuote } from '../argv.ts';
import type { RustcCall } from '../rustc/args.ts';
import { PathMap, SANDBOX } from './sandbox-paths.ts';
import { snapshotTree } from './sources.ts';
import { LocalOnly, sourceKind, stageSource } from './unit.ts';
import type { ImageConfig, UnitInput, UnitSpec } from '../render/dockerfile.ts';
import { SANDBOX_TOOLCHAIN_DIR } from '../base-image.ts';
import { sha256 } from '../toolchain.ts';
import type { RunState } from '../run-state.ts';
import { keepScratch, scratch } from '../scratch.ts';
import { BUILD_SCRIPT_COMMAND } from '../build-script-command.ts';

/**
 * Where the shim's program is kept: in the target dir's state dir (`programs/<its path in the target
 * dir>`), so cargo's build dir holds the files plain cargo leaves there, and a target dir moved or
 * restored elsewhere keeps its programs.
 */
export function realProgram(stateDir: string, targetRoot: string, program: string): string {
  return join(stateDir, 'programs', relative(targetRoot, program));
}

/** The program cargo runs for the build script this call compiles (`build/<pkg>-<hash>/build_script_build-<hash>`), or undefined if it compiles something else. */
export function buildScriptProgram(call: RustcCall, cwd: string): string | undefined {
  if (!call.crateName?.startsWith('build_script_') || !call.outDir || !call.crateTypes.includes('bin')) return undefined;
  const outDir = resolve(cwd, call.outDir);
  if (basename(dirname(outDir)) !== 'build') return undefined;
  return join(outDir, `${call.crateName}${call.extraFilename ?? ''}`);
}

/**
 * Puts the shim where the program was, the program moved to `real`, each step leaving something cargo
 * can run: the program linked to its new name first, then the shim renamed over the old one. The shim
 * finds the program relative to itself, and rustcbuildx as cargo's wrapper (which cargo tells build
 * scripts in RUSTC_WRAPPER); under a cargo without us it runs the program itself. Whether a run goes
 * to the sandbox is decided then (RUSTCBUILDX_BUILD_SCRIPTS), so a shim is right in either mode.
 */
export function installShim(program: string, real: string, workspace: string): void {
  mkdirSync(dirname(real), { recursive: true });
  const staged = scratch(`${real}.tmp-${process.pid}`);
  rmSync(staged, { force: true });
  linkSync(program, staged);
  renameSync(staged, real);
  keepScratch(staged);
  const text = [
    '#!/bin/sh',
    '# Written by rustcbuildx: cargo runs this build script through rustcbuildx, which runs it in the sandbox',
    "# (RUSTCBUILDX_BUILD_SCRIPTS). The program is kept in the target dir's .rustcbuildx/programs.",
    `p="$(dirname "$0")"/${shQuote(relative(dirname(program), real))}`,
    `[ -x "$p" ] || { echo "rustcbuildx: this build script's program ($p) is gone: the target dir's .rustcbuildx was removed; run cargo clean" >&2; exit 1; }`,
    `case "\${RUSTC_WRAPPER##*/}" in rustcbuildx*) exec "$RUSTC_WRAPPER" ${BUILD_SCRIPT_COMMAND} --workspace ${shQuote(workspace)} "$p" "$@" ;; esac`,
    'exec "$p" "$@"',
    '',
  ].join('\n');
  const shim = scratch(`${program}.shim-${process.pid}`);
  writeFileSync(shim, text);
  chmodSync(shim, 0o755);
  renameSync(shim, program);
  keepScratch(shim);
}

/**
 * What cargo sets for a build script (cargo's reference, "Environment variables Cargo sets for build
 * scripts"), passed as given with host paths translated. Not RUSTC_WRAPPER (we are not inside), nor the
 * jobserver (CARGO_MAKEFLAGS: no pipe reaches the sandbox). NUM_JOBS is the builder's cores, set as the
 * step runs: cargo's is this machine's `-j`, and would make every machine's key differ.
 */
const SCRIPT_ENV_EXACT = new Set([
  'CARGO_MANIFEST_DIR', 'CARGO_MANIFEST_PATH', 'CARGO_MANIFEST_LINKS', 'CARGO_PRIMARY_PACKAGE', 'OUT_DIR', 'TARGET', 'HOST',
  'OPT_LEVEL', 'DEBUG', 'PROFILE', 'RUSTC_LINKER', 'CARGO_ENCODED_RUSTFLAGS', 'RUSTC_BOOTSTRAP',
]);
/** Package metadata, cfg values and features: never paths, so a description naming a root stays as written. */
const NEVER_PATHS = ['CARGO_PKG_', 'CARGO_CFG_', 'CARGO_FEATURE_'];
const SCRIPT_ENV_PREFIXES = [...NEVER_PATHS, 'DEP_'];
/**
 * Variables cargo does not set that build scripts commonly read (the cc, cmake and pkg-config crates
 * read these): passed when set. Others by RUSTCBUILDX_SET_ENVS, or learned from the script's
 * `rerun-if-env-changed` (the caller's hints).
 */
export const SCRIPT_ENV_READ = /^((HOST|TARGET)_)?(CC|CXX|AR|RANLIB|CFLAGS|CXXFLAGS|CPPFLAGS|LDFLAGS|ARFLAGS)(_[A-Za-z0-9_.-]+)?$|^CRATE_CC_NO_DEFAULTS$|^PKG_CONFIG(_[A-Za-z0-9_]+)?$|^SOURCE_DATE_EPOCH$|^CMAKE_[A-Z_]+$/;

export interface RunRequest {
  /** the build script's program, as the shim names it (`…/.rustcbuildx/programs/…/build_script_build-<hash>`) */
  program: string;
  args: readonly string[];
  env: Record<string, string | undefined>;
  /** the workspace root (cargo's cwd for the compile), which the shim carries */
  workspace: string;
  state: RunState;
  baseImage: string;
  baseImageConfig: ImageConfig;
  /** names passed beyond cargo's and the common ones: RUSTCBUILDX_SET_ENVS and what the script said it reads */
  setEnvs: readonly string[];
}

export interface PlannedRun {
  key: string;
  spec: UnitSpec;
  map: PathMap;
  /** the host OUT_DIR, which the step's outputs replace */
  outDir: string;
  /** the crate's manifest dir, and the host dir whose files the sandbox was given (the crate, or a git checkout) */
  manifestDir: string;
  sourceDir: string;
  /** variables passed only because the user or an earlier run named them (set here): the user's values */
  userEnv: string[];
  /** other scripts' output dirs the run was given (DEP_*_INCLUDE…) */
  treeDirs: string[];
}

/** The key of a build script's run: its OUT_DIR's package dir (`run-zstd-sys-0123abcd`). */
export function runKey(outDir: string): string {
  return `run-${basename(dirname(outDir))}`;
}

export function planBuildScriptRun(req: RunRequest): PlannedRun {
  const { env, state } = req;
  const manifestDir = env.CARGO_MANIFEST_DIR;
  const outDirValue = env.OUT_DIR;
  if (!manifestDir || !outDirValue) throw new LocalOnly('CARGO_MANIFEST_DIR or OUT_DIR is not set (not run by cargo)');
  const outDir = resolve(outDirValue);
  const cargoHome = env.CARGO_HOME || join(homedir(), '.cargo');
  const kind = sourceKind(cargoHome, manifestDir);
  const map = new PathMap({ workspace: kind === 'local' ? req.workspace : undefined, cargoHome, target: state.targetRoot, outDir });
  const toSandbox = (hostPath: string): string => {
    const mapped = map.toSandbox(resolve(hostPath));
    if (mapped === undefined) throw new LocalOnly(`${hostPath} lies outside the workspace, CARGO_HOME and the target dir`);
    return mapped;
  };
  const cwd = toSandbox(manifestDir);
  const ctxDir = state.path('ctx');
  const staged = stageSource(kind, ctxDir, cargoHome, manifestDir, state.targetRoot);
  const source = { staged: staged.source, mountTarget: toSandbox(staged.hostDir) };
  const outputsAt = toSandbox(outDir);
  if (!outputsAt.startsWith(`${SANDBOX.target}/`)) throw new LocalOnly(`OUT_DIR ${outDir} is outside the target dir`);

  // The program, by content: the same script from any checkout is the same input. Its dir holds it alone,
  // and a tree's snapshot is a copy with fixed times: the engine's copy of it, made for another target
  // dir, needs none of its bytes again (a link to the program would carry this build's mtime).
  const program = snapshotTree(ctxDir, 'dirs', dirname(req.program));
  const inputs: UnitInput[] = [{ kind: 'tree', ctxPath: program.ctxPath, target: SANDBOX.program }];

  const names = new Set<string>();
  for (const name of Object.keys(env)) {
    if (SCRIPT_ENV_EXACT.has(name) || SCRIPT_ENV_PREFIXES.some((p) => name.startsWith(p)) || SCRIPT_ENV_READ.test(name)) names.add(name);
  }
  const named = req.setEnvs.filter((name) => env[name] !== undefined && !names.has(name));
  for (const name of named) names.add(name);
  // The C toolchain's settings are this machine's (`-I/home/…`, a define; cc prints them, gcc records
  // them in its objects): passed, and the run's results stay home. Not cargo's rustflags, which are the
  // compiles' own arguments too, nor a timestamp or a switch.
  const toolchain = [...names].filter((n) => (SCRIPT_ENV_READ.test(n) || n === 'RUSTC_LINKER') && !/^(SOURCE_DATE_EPOCH|CRATE_CC_NO_DEFAULTS)$/.test(n) && env[n] !== '');
  const userEnv = [...new Set([...named, ...toolchain])].sort();
  // The builder's CPU is not this one, and the key would not say which (cc turns rustc's target-cpu into -march).
  const native = [...names].find((n) => /(^|[\s\x1f=])-m(arch|cpu|tune)=native\b|target-cpu=native\b/.test(env[n] as string));
  if (native) throw new LocalOnly(`$${native} asks for this machine's CPU (native), which the builder's may not be`);
  // The toolchain inside is the one in the base image; cargo's are host paths.
  const tools: Array<[string, string]> = [
    ['CARGO', `${SANDBOX_TOOLCHAIN_DIR}/bin/cargo`],
    ['RUSTC', `${SANDBOX_TOOLCHAIN_DIR}/bin/rustc`],
    ['RUSTDOC', `${SANDBOX_TOOLCHAIN_DIR}/bin/rustdoc`],
  ];
  for (const [name] of tools) names.delete(name);
  const sandboxEnv: Array<[string, string]> = [...tools];
  if (env.CARGO_HOME) sandboxEnv.push(['CARGO_HOME', SANDBOX.cargoHome]);
  // Another build script's output that a value names (DEP_Z_INCLUDE=…/build/libz-sys-…/out/include) is
  // mounted where the value says, from its content.
  const trees = new Set<string>();
  for (const name of [...names].sort()) {
    const value = env[name] as string;
    sandboxEnv.push([name, NEVER_PATHS.some((p) => name.startsWith(p)) ? value : translateValue(value, map, state.targetRoot, trees)]);
  }
  for (const dir of [...trees].sort()) {
    if (dir === outDir) continue;
    inputs.push({ kind: 'tree', ctxPath: snapshotTree(ctxDir, 'dirs', dir).ctxPath, target: toSandbox(dir) });
  }
  const key = runKey(outDir);
  const spec: UnitSpec = {
    key,
    baseImage: req.baseImage,
    baseImageConfig: req.baseImageConfig,
    source,
    inputs,
    cwd,
    env: sandboxEnv,
    program: [`${SANDBOX.program}/${basename(req.program)}`],
    args: [...req.args],
    mkdirs: [],
    outputsAt,
    guardWrites: SANDBOX.target,
    jobsVar: 'NUM_JOBS',
    inputsDigest: sha256(JSON.stringify([staged.source.ctxPath, inputs.map((i) => (i.kind === 'tree' ? i.ctxPath : i.key))])),
  };
  return { key, spec, map, outDir, manifestDir, sourceDir: staged.hostDir, userEnv, treeDirs: [...trees].filter((d) => d !== outDir).sort() };
}

/** `<target>/[<triple>/]<profile>/build/<dir>/out`, where one build script leaves its files. */
const SCRIPT_OUT = /^(([^/]+\/)?[^/]+\/build\/[^/]+\/out)(\/|$)/;

/**
 * A value with every host path under a root given as its sandbox path (a value may hold several: flags,
 * lists). A path into another build script's OUT_DIR adds that dir to `trees`. Other paths are only
 * translated (a prefix map names the target dir itself): a script that reads what the sandbox lacks
 * fails there, and runs here.
 */
function translateValue(value: string, map: PathMap, targetRoot: string, trees: Set<string>): string {
  const target = resolve(targetRoot);
  let at = value.indexOf(target);
  while (at >= 0) {
    // The path ends at a separator after the root (whose own name may hold one: `/home/u/my proj`).
    const end = /[\s:;,="'\x1f]/.exec(value.slice(at + target.length))?.index;
    const path = value.slice(at, end === undefined ? undefined : at + target.length + end);
    const out = path.startsWith(`${target}/`) ? SCRIPT_OUT.exec(relative(target, path)) : undefined;
    if (out?.[1] && existsSync(join(target, out[1]))) trees.add(join(target, out[1]));
    at = value.indexOf(target, at + 1);
  }
  return isAbsolute(value) || value.includes('/') ? map.toSandboxText(value) : value;
}
