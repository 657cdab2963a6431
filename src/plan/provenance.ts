/**
 * Which results may leave this machine for a shared store. Default-deny: only a unit that comes, with its
 * whole closure, from crates.io (checksum-verified tarballs) and read nothing from the user's environment.
 * Workspace members, path and git dependencies, other registries, what depends on any of them, what a
 * private build script generated, and incremental builds stay home unless the user names the crate
 * (RUSTCBUILDX_SHARE). Each rule yields the reason, for `cache ls` and the log.
 */
import { readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { writeAtomic, type RunState } from '../run-state.ts';
import { sourceKind } from './unit.ts';
import type { UnitPlan } from './plans.ts';

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
 * run that made them was, or ran before it was recorded. Dirs outside a build dir say nothing.
 */
export function outputsPrivate(state: RunState, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    const m = BUILD_DIR.exec(relative(state.targetRoot, dir));
    if (!m?.[2]) continue;
    const why = runPrivacy(state, `run-${m[2]}`);
    if (why !== undefined) return `uses what the build script of ${m[2].replace(/-[0-9a-f]+$/, '')} made, ${why}`;
  }
  return undefined;
}

/** What a build script's run was, for the units that use its outputs: "" when shareable. */
export function recordRunPrivacy(state: RunState, runKey: string, why: string | undefined): void {
  writeAtomic(privacyFile(state, runKey), why ?? '');
}

function runPrivacy(state: RunState, runKey: string): string | undefined {
  try {
    const why = readFileSync(privacyFile(state, runKey), 'utf8');
    return why === '' ? undefined : why;
  } catch {
    return 'which ran before rustcbuildx recorded where its results come from';
  }
}

function privacyFile(state: RunState, runKey: string): string {
  return state.path('scripts', `${basename(runKey)}.provenance`);
}

/** Whether the user named this crate (its package or crate name) in RUSTCBUILDX_SHARE. */
export function namedToShare(names: readonly string[], globs: readonly string[]): boolean {
  return globs.some((glob) => {
    const re = new RegExp(`^${glob.replace(/[-_]/g, '[-_]').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
    return names.some((n) => re.test(n));
  });
}
