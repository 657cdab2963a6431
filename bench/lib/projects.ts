/**
 * The projects the benchmark builds, and how each gets a fresh copy in the work dir. Third-party sources
 * never live in this repo: a crates.io package is fetched by cargo itself (a throw-away project that
 * depends on `=version`, then `cargo fetch`), and only its Cargo.lock is kept here, so every run builds the
 * same dependency versions.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { baseEnv, BenchError, must, ROOT } from './proc.ts';

export interface ProjectDef {
  name: string;
  description: string;
  source: { kind: 'repo'; path: string } | { kind: 'crate'; crate: string; version: string };
  /** the leaf crate's source file (relative to the project), where `edit` appends one line */
  leafFile: string;
}

export const PROJECTS: readonly ProjectDef[] = [
  {
    name: 'demo',
    description: 'small: examples/demo of this repo (serde derive, serde_json, anyhow, itoa), ~20 units',
    source: { kind: 'repo', path: 'examples/demo' },
    leafFile: 'src/main.rs',
  },
  {
    name: 'workspace-c',
    description: 'C build scripts: test/fixtures/workspace (3 members, build script, proc-macro, zstd-sys compiling C with cc), ~40 units',
    source: { kind: 'repo', path: 'test/fixtures/workspace' },
    leafFile: 'crates/app/src/main.rs',
  },
  {
    name: 'hyperfine',
    description: 'medium: the hyperfine 1.20.0 crate from crates.io (clap, serde derive, rust_decimal, nix, csv), ~95 units',
    source: { kind: 'crate', crate: 'hyperfine', version: '1.20.0' },
    leafFile: 'src/main.rs',
  },
];

export function cargoHome(): string {
  return process.env.CARGO_HOME || join(homedir(), '.cargo');
}

/** Where cargo unpacked `name-version` from crates.io, if it has. */
function registrySource(crate: string, version: string): string | undefined {
  const src = join(cargoHome(), 'registry', 'src');
  if (!existsSync(src)) return undefined;
  for (const index of readdirSync(src)) {
    const dir = join(src, index, `${crate}-${version}`);
    if (existsSync(join(dir, 'Cargo.toml'))) return dir;
  }
  return undefined;
}

/** Has cargo download and unpack one crates.io package, by depending on exactly that version. */
export async function fetchCrate(crate: string, version: string, scratch: string): Promise<string> {
  const found = registrySource(crate, version);
  if (found) return found;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(join(scratch, 'src'), { recursive: true });
  writeFileSync(join(scratch, 'Cargo.toml'), `[package]\nname = "rcbx-bench-fetch"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n${crate} = "=${version}"\n`);
  writeFileSync(join(scratch, 'src', 'main.rs'), 'fn main() {}\n');
  await must(['cargo', 'fetch'], { cwd: scratch, env: baseEnv() });
  const dir = registrySource(crate, version);
  if (!dir) throw new BenchError(`cargo fetch did not unpack ${crate}-${version} under ${cargoHome()}/registry/src`);
  return dir;
}

export interface PreparedProject {
  def: ProjectDef;
  /** the project's own work dir: sources in `src/`, target dirs and logs beside it */
  home: string;
  dir: string;
  leafPath: string;
  leafOriginal: string;
}

/**
 * A fresh copy of the project under `work/<name>/src`, its pinned Cargo.lock in place and every
 * dependency downloaded (`cargo fetch --locked`), so no measured build touches the network.
 */
export async function prepareProject(def: ProjectDef, work: string): Promise<PreparedProject> {
  const home = join(work, def.name);
  const dir = join(home, 'src');
  rmSync(home, { recursive: true, force: true });
  mkdirSync(home, { recursive: true });
  const from = def.source.kind === 'repo' ? join(ROOT, def.source.path) : await fetchCrate(def.source.crate, def.source.version, join(work, '_fetch', def.name));
  cpSync(from, dir, { recursive: true, filter: (src) => !/\/target(\/|$)/.test(src.slice(from.length)) });
  const pinned = join(ROOT, 'bench', 'projects', def.name, 'Cargo.lock');
  if (existsSync(pinned)) cpSync(pinned, join(dir, 'Cargo.lock'));
  if (!existsSync(join(dir, 'Cargo.lock'))) throw new BenchError(`${def.name}: no Cargo.lock to pin its dependencies (add bench/projects/${def.name}/Cargo.lock)`);
  await must(['cargo', 'fetch', '--locked'], { cwd: dir, env: baseEnv() });
  const leafPath = join(dir, def.leafFile);
  return { def, home, dir, leafPath, leafOriginal: readFileSync(leafPath, 'utf8') };
}
