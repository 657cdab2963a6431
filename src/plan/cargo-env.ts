/** What `cargo buildx` adds to cargo's environment beside the wrapper, and how it finds the workspace. */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SANDBOX } from './sandbox-paths.ts';
import { optionValue } from '../argv.ts';

/**
 * C compiled by a build script that runs here writes the host paths of sources into objects (DWARF's
 * comp_dir, __FILE__). A build script's OUT_DIR is an input of its crate, so those paths would make the
 * crate's key differ per CARGO_HOME, checkout and target dir. Mapping them to the sandbox's fixed paths
 * (`-ffile-prefix-map`, which cc and cmake crates pass on from CFLAGS/CXXFLAGS) keeps C outputs the same.
 */
export function prefixMapFlags(args: readonly string[], env: Record<string, string | undefined>, cwd: string): Record<string, string> {
  // Found from the files, not by asking cargo (a `cargo metadata` would double a no-op build's time);
  // a wrong guess (a target-dir set in .cargo/config.toml) only makes C outputs less shared.
  const root = commandWorkspace(args, cwd);
  const target = root ? (optionValue(args, '--target-dir') ?? env.CARGO_TARGET_DIR ?? env.CARGO_BUILD_TARGET_DIR ?? join(root, 'target')) : undefined;
  return cFlagsWithMaps(env, { cargoHome: env.CARGO_HOME || join(homedir(), '.cargo'), ...(root && target ? { workspace: root, target: resolve(cwd, target) } : {}) });
}

/** CFLAGS and CXXFLAGS with a prefix map for each root given (the user's own flags first). */
export function cFlagsWithMaps(env: Record<string, string | undefined>, roots: { cargoHome: string; workspace?: string; target?: string }): Record<string, string> {
  const maps: Array<[string, string]> = [[roots.cargoHome, SANDBOX.cargoHome]];
  if (roots.target) maps.push([roots.target, SANDBOX.target]);
  if (roots.workspace) maps.push([roots.workspace, SANDBOX.workspace]);
  // Longest host prefix last: gcc applies the last map that matches (checked with gcc 12). A path with
  // whitespace cannot be said in CFLAGS (cc and cmake split it on whitespace): it is left out, which
  // only makes that C less shared across checkouts.
  const flags = maps
    .filter(([host]) => !/\s/.test(host))
    .sort((a, b) => a[0].length - b[0].length)
    .map(([host, sandbox]) => `-ffile-prefix-map=${host}=${sandbox}`)
    .join(' ');
  const withUser = (name: string) => (env[name] ? `${env[name]} ${flags}` : flags);
  return { CFLAGS: withUser('CFLAGS'), CXXFLAGS: withUser('CXXFLAGS') };
}

/** The workspace a cargo command line works on: its --manifest-path's, else the one around `cwd`. */
export function commandWorkspace(args: readonly string[], cwd: string): string | undefined {
  const manifest = optionValue(args, '--manifest-path');
  return workspaceRoot(manifest ? dirname(resolve(cwd, manifest)) : cwd);
}

/** The nearest directory at or above `from` whose Cargo.toml declares a [workspace] (cargo's own search), else the nearest package. */
export function workspaceRoot(from: string): string | undefined {
  let nearest: string | undefined;
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'Cargo.toml');
    if (existsSync(manifest)) {
      nearest ??= dir;
      if (/^\s*\[workspace[\].]/m.test(readFileSync(manifest, 'utf8'))) return dir;
    }
    if (dirname(dir) === dir) return nearest;
  }
}
