/**
 * The settings as one cargo run's wrappers see them: resolved (files read, TOML parsed) by the first
 * wrapper of the run and kept in the run's state, so every later unit reads one small JSON file. Every
 * wrapper of a run finds the same workspace: cargo's own (its working directory and --manifest-path,
 * read from the parent process), whichever crate the wrapper compiles.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { homedir } from 'node:os';
import { settingsForCrate, type Config, type CrateSettings } from '../config/config.ts';
import { loadProjectConfig, packageRule } from '../config/files.ts';
import { commandWorkspace, workspaceRoot } from '../plan/cargo-env.ts';
import { sha256 } from '../toolchain.ts';
import type { RunState } from '../run-state.ts';

/**
 * cargo's working directory and arguments. cargo starts rustc (so us) and build scripts' shims, which
 * exec us; a build script that runs here and probes rustc through $RUSTC_WRAPPER (proc-macro2, autocfg)
 * is our parent instead, cargo its: so the nearest ancestor whose program is cargo, else the parent.
 */
function cargoProcess(): { cwd: string; args: string[] } | undefined {
  const of = (pid: number) => ({
    cwd: readlinkSync(`/proc/${pid}/cwd`),
    args: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '').split('\0').slice(1),
  });
  try {
    let pid = process.ppid;
    for (let depth = 0; depth < 4 && pid > 1; depth++) {
      if (/^cargo(\.exe)?$/.test(basename(readlinkSync(`/proc/${pid}/exe`)))) return of(pid);
      pid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) \S+ /s, '').split(' ')[0]);
    }
  } catch {
    // an ancestor we may not look at: the parent, as below
  }
  try {
    return of(process.ppid);
  } catch {
    return undefined; // not Linux
  }
}

/** Where the run's relative paths (CARGO_HOME, RUSTCBUILDX_CONFIG) are relative to: cargo's working directory. */
export function cargoCwd(fallback: string): string {
  return cargoProcess()?.cwd ?? fallback;
}

/**
 * The workspace whose `[workspace.metadata.rustcbuildx]` applies: cargo's, from its working directory and
 * --manifest-path. Without /proc: the working directory of a crate of the workspace (cargo runs their
 * rustc there), else the directory above the default target dir.
 */
export function runWorkspace(env: Record<string, string | undefined>, cwd: string, targetRoot: string): string | undefined {
  const cargo = cargoProcess();
  if (cargo) return commandWorkspace(cargo.args, cargo.cwd);
  const manifestDir = env.CARGO_MANIFEST_DIR;
  if (manifestDir && isWorkspaceCrate(manifestDir, cwd, env, () => cwd)) return workspaceRoot(cwd);
  const above = dirname(targetRoot);
  return existsSync(join(above, 'Cargo.toml')) ? workspaceRoot(above) : undefined;
}

/** The variables settings are read from: a change among them (a nested cargo with others) is another config. */
function settingsEnv(env: Record<string, string | undefined>): string {
  return Object.keys(env)
    .filter((k) => k.startsWith('RUSTCBUILDX_') || k === 'CI' || k === 'XDG_CONFIG_HOME' || k === 'HOME')
    .sort()
    .map((k) => `${k}=${env[k]}`)
    .join('\0');
}

export async function runConfig(state: RunState, env: Record<string, string | undefined>, workspace: string | undefined): Promise<Config> {
  const name = `config-${sha256(`${workspace ?? ''}\0${settingsEnv(env)}`).slice(0, 12)}`;
  const cached = state.readCached<Config>(name);
  if (cached) return cached;
  const config = env.RUSTCBUILDX_CONFIG?.trim();
  const cfg = await loadProjectConfig(config && !isAbsolute(config) ? { ...env, RUSTCBUILDX_CONFIG: resolve(cargoCwd(process.cwd()), config) } : env, workspace);
  state.writeCached(name, cfg);
  return cfg;
}

/**
 * This unit's settings: `[crate.NAME]` rules matching its package, and, for a crate of the workspace, its
 * own `[package.metadata.rustcbuildx]`. The crate's variables join the run's `setEnvs`.
 */
export async function crateConfig(cfg: Config, env: Record<string, string | undefined>, workspace: string | undefined): Promise<{ cfg: Config; crate: CrateSettings; sources: string[] }> {
  const pkg = env.CARGO_PKG_NAME;
  if (!pkg) return { cfg, crate: {}, sources: [] };
  const manifestDir = env.CARGO_MANIFEST_DIR;
  const own = manifestDir && workspace && isWorkspaceCrate(manifestDir, workspace, env, () => cargoCwd(process.cwd())) ? await packageRule(manifestDir, pkg) : undefined;
  const { settings, sources } = settingsForCrate(cfg, pkg, own);
  if (sources.length === 0) return { cfg, crate: settings, sources };
  const merged: Config = {
    ...cfg,
    setEnvs: [...new Set([...cfg.setEnvs, ...(settings.setEnvs ?? [])])],
    buildScripts: settings.buildScripts ?? cfg.buildScripts,
  };
  return { cfg: merged, crate: settings, sources };
}

/**
 * A crate of the workspace, whose own manifest may configure the build: inside it, not from CARGO_HOME
 * (relative to cargo's working directory when relative), and not vendored (`cargo vendor` leaves a
 * `.cargo-checksum.json` in each crate it copies).
 */
function isWorkspaceCrate(manifestDir: string, workspace: string, env: Record<string, string | undefined>, cargoDir: () => string): boolean {
  if (!isWithin(manifestDir, workspace)) return false;
  const cargoHome = resolve(cargoDir(), env.CARGO_HOME || join(homedir(), '.cargo'));
  return !isWithin(manifestDir, cargoHome) && !existsSync(join(manifestDir, '.cargo-checksum.json'));
}

function isWithin(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
