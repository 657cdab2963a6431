/**
 * Which results may leave this machine for a shared store. Default-deny: only a unit that comes, with its
 * whole closure, from crates.io (checksum-verified tarballs) and read nothing from the user's environment.
 * Workspace members, path and git dependencies, other registries, what depends on any of them, what a
 * private build script generated, and incremental builds stay home unless the user names the crate
 * (RUSTCBUILDX_SHARE). Each rule yields the reason, for `cache ls` and the log.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { writeAtomic, type RunState } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import { snapshotTree } from './sources.ts';
import { sourceKind } from './unit.ts';
import type { UnitPlan } from './plans.ts';
import { globMatch } from '../config/config.ts';

/** crates.io's index dir under CARGO_HOME/registry: the sparse protocol's, and the git index's of old cargo. */
const CRATES_IO = /^(index\.crates\.io-[0-9a-f]+|github\.com-1ecc6299db9ec823)$/;

/** Why a crate in this manifest dir is private by where it comes from; undefined for crates.io. */
export function originPrivate(cargoHome: string, manifestDir: string): string | undefined {
  switch (sourceKind(cargoHome, manifestDir)) {
    case 'local':
      return 'a crate of the workspace or a path dependency';
    case 'git':
      return 'a git dependency';
    case 'registry': {
      const index = relative(join(cargoHome, 'registry', 'src'), manifestDir).split('/')[0] ?? '';
      return CRATES_IO.test(index) ? undefined : `from the registry ${index.replace(/-[0-9a-f]+$/, '')}, not crates.io`;
    }
  }
}

/** The first dependency whose results are private (or were built before provenance was recorded). */
export function closurePrivate(closure: readonly UnitPlan[]): string | undefined {
  const dep = closure.find((p) => p.private !== false);
  if (!dep) return undefined;
  return `depends on ${dep.crate}, ${typeof dep.private === 'string' ? dep.private : 'built before rustcbuildx recorded where units come from'}`;
}

/** Variables passed because the user or an earlier build named them: their values are the user's. */
export function userEnvPrivate(names: readonly string[]): string | undefined {
  return names.length > 0 ? `reads ${names.map((n) => `$${n}`).join(', ')} from your environment` : undefined;
}

/** `<target>/[<triple>/]<profile>/build/<pkg>-<hash>/…`: the build script run that made a file there. */
const BUILD_DIR = /^((?:[^/]+\/)?[^/]+\/build\/([^/]+))(\/|$)/;

/**
 * Why the files under these dirs (build scripts' outputs: OUT_DIR, native libraries) are private: the
 * run that made them was, or its OUT_DIR or its directives are no longer what that run gave back (the
 * script ran again since, without us: plain cargo), or it ran before it was recorded. Dirs outside a
 * build dir say nothing.
 */
export function outputsPrivate(state: RunState, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    const m = BUILD_DIR.exec(relative(state.targetRoot, dir));
    if (!m?.[1] || !m[2]) continue;
    const why = runPrivacy(state, join(state.targetRoot, m[1]));
    if (why !== undefined) return `uses what the build script of ${pkgOf(m[2])} made, ${why}`;
  }
  return undefined;
}

/**
 * Why the `DEP_<LINKS>_*` values the build script run in `runDir` is given are private: a run of a crate
 * with that `links` name in the same profile dir was (every such run counts: a package built for the
 * host and the target runs twice), or none is recorded.
 */
export function depMetadataPrivate(state: RunState, runDir: string, names: readonly string[]): string | undefined {
  const deps = names.filter((n) => n.startsWith('DEP_'));
  if (deps.length === 0) return undefined;
  const records = linksRecords(state, runDir);
  for (const name of deps) {
    // The longest name that prefixes it: DEP_FOO_BAR_X is foo-bar's, not foo's.
    const from = records.filter((l) => name.startsWith(l.prefix)).sort((a, b) => b.prefix.length - a.prefix.length)[0];
    if (!from) return `receives $${name} from a build script rustcbuildx has no record of`;
    for (const dir of from.runDirs) {
      const why = runPrivacy(state, dir);
      if (why !== undefined) return `receives $${name} from the build script of ${pkgOf(basename(dir))}, ${why}`;
    }
  }
  return undefined;
}

/** `links` records, one file per name and profile dir (`<target>/[<triple>/]<profile>`), listing its runs. */
function linksFile(state: RunState, runDir: string, links: string): string {
  return state.path('scripts', `links-${links}@${sha256(dirname(dirname(runDir))).slice(0, 12)}.json`);
}

function linksRecords(state: RunState, runDir: string): Array<{ prefix: string; runDirs: string[] }> {
  const dir = state.path('scripts');
  const profile = `@${sha256(dirname(dirname(runDir))).slice(0, 12)}.json`;
  return (existsSync(dir) ? readdirSync(dir) : []).flatMap((f) => {
    const m = /^links-(.+)@[0-9a-f]{12}\.json$/.exec(f);
    if (!m?.[1] || !f.endsWith(profile)) return [];
    const runDirs = readRunDirs(join(dir, f));
    return runDirs.length > 0 ? [{ prefix: `DEP_${m[1].toUpperCase().replace(/-/g, '_')}_`, runDirs }] : [];
  });
}

function readRunDirs(file: string): string[] {
  try {
    const { runDirs } = JSON.parse(readFileSync(file, 'utf8')) as { runDirs?: unknown };
    return Array.isArray(runDirs) ? runDirs.filter((d): d is string => typeof d === 'string') : [];
  } catch {
    return [];
  }
}

/** What a run gave back, to tell later whether its OUT_DIR and directives are still that. */
export interface RunEvidence {
  outDir: string;
  /** the stdout given to cargo, which cargo keeps as `output` beside OUT_DIR */
  stdout: string;
}

interface RunRecord {
  /** why it is private; null: shareable */
  why: string | null;
  /** OUT_DIR's snapshot (content-named) and sha256 of the directives, as the run left them */
  tree?: string;
  output?: string;
}

/**
 * What a build script's run was, for the units that use its outputs. Written as "running" before the
 * run, so one that ends any other way than through us (a crash, an internal error) counts as private.
 * `links`: its crate's `links` name, whose `DEP_*` values dependents receive.
 */
export function recordRunPrivacy(state: RunState, runDir: string, why: string | undefined, evidence?: RunEvidence, links?: string): void {
  const record: RunRecord = why !== undefined || !evidence ? { why: why ?? 'which gave no evidence of its outputs' } : { why: null, tree: snapshotTree(state.path('ctx'), 'dirs', evidence.outDir).ctxPath, output: sha256(evidence.stdout) };
  writeAtomic(privacyFile(state, runDir), JSON.stringify(record));
  if (links) {
    const file = linksFile(state, runDir, links);
    const runDirs = readRunDirs(file);
    if (!runDirs.includes(runDir)) writeAtomic(file, JSON.stringify({ runDirs: [...runDirs, runDir].sort() }));
  }
}

function runPrivacy(state: RunState, runDir: string): string | undefined {
  let record: RunRecord;
  try {
    record = JSON.parse(readFileSync(privacyFile(state, runDir), 'utf8')) as RunRecord;
  } catch {
    return 'which ran before rustcbuildx recorded where its results come from';
  }
  if (record.why !== null) return record.why;
  const output = (() => {
    try {
      return sha256(readFileSync(join(runDir, 'output')));
    } catch {
      return undefined;
    }
  })();
  const outDir = join(runDir, 'out');
  const tree = existsSync(outDir) ? snapshotTree(state.path('ctx'), 'dirs', outDir).ctxPath : undefined;
  return output === record.output && tree === record.tree ? undefined : 'which ran again since its sandboxed run, not through rustcbuildx';
}

function privacyFile(state: RunState, runDir: string): string {
  return state.path('scripts', `run-${basename(runDir)}.provenance.json`);
}

/** `zstd-sys-0123abcd` → `zstd-sys` */
function pkgOf(dirName: string): string {
  return dirName.replace(/-[0-9a-f]+$/, '');
}

/** Whether the user named this crate (its package or crate name) in RUSTCBUILDX_SHARE. */
export function namedToShare(names: readonly string[], globs: readonly string[]): boolean {
  // `-` and `_` alike: a package and its crate name are spelled either way.
  const same = (s: string) => s.replaceAll('_', '-');
  return globs.some((glob) => names.some((n) => globMatch(same(glob), same(n))));
}
