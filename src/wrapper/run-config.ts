/**
 * The settings as one cargo run's wrappers see them: resolved (files read, TOML parsed) by the first
 * wrapper of the run and kept in the run's state, so every later unit reads one small JSON file.
 */
import { existsSync } from 'node:fs';
import { dirname, join, relative, isAbsolute } from 'node:path';
import { homedir } from 'node:os';
import { settingsForCrate, type Config, type CrateSettings } from '../config/config.ts';
import { loadProjectConfig, packageRule } from '../config/files.ts';
import { workspaceRoot } from '../plan/cargo-env.ts';
import { sha256 } from '../toolchain.ts';
import type { RunState } from '../run-state.ts';

/**
 * The workspace whose `[workspace.metadata.rustcbuildx]` applies: what `cargo buildx` found, else cargo's
 * working directory for a crate of the workspace (cargo runs their rustc there), else the directory
 * above the default target dir. A registry crate built first, with a target dir elsewhere, finds none.
 */
export function runWorkspace(env: Record<string, string | undefined>, cwd: string, targetRoot: string): string | undefined {
  if (env.RUSTCBUILDX_WORKSPACE) return env.RUSTCBUILDX_WORKSPACE;
  const manifestDir = env.CARGO_MANIFEST_DIR;
  if (manifestDir && isWithin(manifestDir, cwd) && !isWithin(manifestDir, cargoHome(env))) return workspaceRoot(cwd);
  const above = dirname(targetRoot);
  return existsSync(join(above, 'Cargo.toml')) ? workspaceRoot(above) : undefined;
}

export async function runConfig(state: RunState, env: Record<string, string | undefined>, workspace: string | undefined): Promise<Config> {
  const name = `config-${sha256(workspace ?? '').slice(0, 12)}`;
  const cached = state.readCached<Config>(name);
  if (cached) return cached;
  const cfg = await loadProjectConfig(env, workspace);
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
  const own = manifestDir && workspace && isWithin(manifestDir, workspace) && !isWithin(manifestDir, cargoHome(env)) ? await packageRule(manifestDir, pkg) : undefined;
  const { settings, sources } = settingsForCrate(cfg, pkg, own);
  if (sources.length === 0) return { cfg, crate: settings, sources };
  const merged: Config = {
    ...cfg,
    setEnvs: [...new Set([...cfg.setEnvs, ...(settings.setEnvs ?? [])])],
    buildScripts: settings.buildScripts ?? cfg.buildScripts,
  };
  return { cfg: merged, crate: settings, sources };
}

function cargoHome(env: Record<string, string | undefined>): string {
  return env.CARGO_HOME || join(homedir(), '.cargo');
}

function isWithin(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
