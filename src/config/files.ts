/**
 * The config files as layers: the user's file, the workspace's `[workspace.metadata.rustcbuildx]` and a
 * crate's `[package.metadata.rustcbuildx]`. TOML is parsed by smol-toml, loaded only when a file exists
 * and names us, so a unit of a project without any config pays one stat and one small read.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { workspaceRoot } from '../plan/cargo-env.ts';
import { ConfigError, crateSettingsOf, layerOf, resolveConfig, type Config, type CrateRule, type Layer, type RunnerName } from './config.ts';

/** RUSTCBUILDX_CONFIG, else $XDG_CONFIG_HOME/rustcbuildx/config.toml, else ~/.config/… (HOME from `env`). */
export function userConfigFile(env: Record<string, string | undefined>): string | undefined {
  if (env.RUSTCBUILDX_CONFIG?.trim()) return env.RUSTCBUILDX_CONFIG.trim();
  const base = env.XDG_CONFIG_HOME || (env.HOME ? join(env.HOME, '.config') : env === process.env ? join(homedir(), '.config') : undefined);
  return base ? join(base, 'rustcbuildx', 'config.toml') : undefined;
}

export async function parseToml(file: string, text: string): Promise<Record<string, unknown>> {
  const { parse, TomlError } = await import('smol-toml');
  try {
    return parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) throw new ConfigError(`${file}: not valid TOML (line ${err.line}, column ${err.column}): ${err.message.split('\n')[0]}`);
    throw err;
  }
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw new ConfigError(`${file}: cannot be read: ${(err as Error).message}`);
  }
}

/** The user's file as a layer; none when it does not exist. An explicit RUSTCBUILDX_CONFIG must exist. */
export async function userLayer(env: Record<string, string | undefined>): Promise<Layer | undefined> {
  const file = userConfigFile(env);
  if (!file) return undefined;
  const content = readText(file);
  if (content === undefined) {
    if (env.RUSTCBUILDX_CONFIG?.trim()) throw new ConfigError(`RUSTCBUILDX_CONFIG=${file}: no such file`);
    return undefined;
  }
  return layerOf(await parseToml(file, content), file, { profiles: true });
}

/** `metadata.rustcbuildx` of a manifest's `workspace` or `package` table, if it has one. */
async function metadataTable(manifest: string, table: 'workspace' | 'package'): Promise<Record<string, unknown> | undefined> {
  const content = readText(manifest);
  // Most manifests never name us: no parser for them.
  if (content === undefined || !content.includes('rustcbuildx')) return undefined;
  const doc = await parseToml(manifest, content);
  const section = doc[table] as { metadata?: { rustcbuildx?: unknown } } | undefined;
  const ours = section?.metadata?.rustcbuildx;
  if (ours === undefined) return undefined;
  if (typeof ours !== 'object' || ours === null || Array.isArray(ours)) throw new ConfigError(`${manifest}: ${table}.metadata.rustcbuildx must be a table`);
  return ours as Record<string, unknown>;
}

export async function workspaceLayer(root: string): Promise<Layer | undefined> {
  const manifest = join(root, 'Cargo.toml');
  const table = await metadataTable(manifest, 'workspace');
  return table ? layerOf(table, `${manifest} [workspace.metadata.rustcbuildx]`, { profiles: true }) : undefined;
}

/**
 * A crate's own settings, from its manifest: only for the workspace's own crates (a crate from a
 * registry does not configure the build that uses it).
 */
export async function packageRule(manifestDir: string, pkg: string): Promise<CrateRule | undefined> {
  const manifest = join(manifestDir, 'Cargo.toml');
  const table = await metadataTable(manifest, 'package');
  if (!table) return undefined;
  const where = `${manifest} [package.metadata.rustcbuildx]`;
  return { pattern: pkg, settings: crateSettingsOf(table, where), source: where };
}

/** Every layer that applies to a project: the user's file, then its workspace's, then the environment. */
export async function loadProjectConfig(env: Record<string, string | undefined>, workspace: string | undefined): Promise<Config> {
  const layers = [await userLayer(env), workspace && existsSync(join(workspace, 'Cargo.toml')) ? await workspaceLayer(workspace) : undefined].filter((l) => l !== undefined);
  return resolveConfig(layers, env);
}

/**
 * The settings a command run in the current directory uses (its workspace's file, the user's, the
 * environment), with a runner its command line names (`--runner`) over all of them.
 */
export async function cliConfig(runner?: RunnerName): Promise<Config> {
  const cfg = await loadProjectConfig(process.env, workspaceRoot(process.cwd()));
  return runner ? { ...cfg, runner, sources: { ...cfg.sources, runner: 'the command line (--runner)' } } : cfg;
}
