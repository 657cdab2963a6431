/**
 * Unit plans: what each compiled unit leaves (under `<target>/.rustcbuildx/units/`) so that a dependent's
 * Dockerfile can rebuild it from scratch, plus the digests of the outputs it placed, so a plan whose
 * outputs were since replaced (by a plain `cargo build`) is never trusted.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { writeAtomic, type RunState } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import type { UnitSpec } from '../render/dockerfile.ts';
import type { RustcCall } from '../rustc/args.ts';

/**
 * An output we placed, identified by its content. Inode, size and mtime only memoise the check: while
 * they are what they were when the content was last verified, the file was not replaced (rustc and cargo
 * replace outputs by renaming a new file over them, which gives the path another inode and mtime); when
 * any differs (cargo re-times some outputs, an inode number is reused), the file is hashed again.
 */
export interface FileStamp {
  name: string;
  size: number;
  sha256: string;
  ino: number;
  mtimeMs: number;
}

export interface UnitPlan {
  version: 2;
  key: string;
  crate: string;
  /** the unit's Dockerfile stages (see dockerfile.ts) */
  snippet: string;
  /** what the snippet was rendered from, for the LLB route (absent in plans of older versions) */
  spec?: UnitSpec;
  /** every unit it depends on, transitively, dependencies before dependents */
  closure: string[];
  hostOutDir: string;
  outputs: FileStamp[];
  /** variables it read at compile time beyond those cargo sets (from rustc's dep-info) */
  envDeps: string[];
  /** path variables it read, given their host values (see hostPathRead in unit.ts) */
  hostPathVars: string[];
  /**
   * Why its results must stay on this machine (src/plan/provenance.ts), or false when a shared store may
   * have them; absent in plans of older versions, which count as private.
   */
  private?: string | false;
  /**
   * The engine (a hash of where it is) that built or served this unit's result from its own cache:
   * there a dependent's build may rebuild it from its recipe for free. Elsewhere (a result from the memo
   * or a shared store) the engine is given its outputs, not a recipe it would have to run.
   */
  onEngine?: string;
  /** the native libraries its own `-l` asked for that its `-L` dirs lack: the system's (a linking dependent needs them too); absent in older plans */
  nativeLibs?: string[];
}

/** A unit is named like its output files: crate name + cargo's extra-filename. */
export function unitKey(crateName: string, extraFilename: string | undefined): string {
  return `${crateName}${extraFilename ?? ''}`;
}

/** `…/libserde-0123abcd.rlib` → `serde-0123abcd`; a unit's outputs all share this stem. */
export function keyOfArtifact(path: string): string {
  const name = basename(path);
  const stem = name.replace(/\.(rlib|rmeta|so|dylib|dll|a|lib)$/, '');
  return stem.startsWith('lib') && stem !== name ? stem.slice(3) : stem;
}

/** The units a call names as its direct dependencies: each `--extern` with a path, by its artifact. */
export function directDependencyKeys(call: RustcCall): string[] {
  return call.externs.flatMap((e) => (e.path !== undefined ? [keyOfArtifact(e.path)] : []));
}

function planPath(state: RunState, key: string): string {
  return state.path('units', `${key}.json`);
}

export function writePlan(state: RunState, plan: UnitPlan): void {
  writeAtomic(planPath(state, plan.key), JSON.stringify(plan));
}

/**
 * What a unit read when it was last built, whether or not its outputs are still current: passed from the
 * start. `builtBefore`: this target dir has a plan of the unit, so this compile is a rebuild (an edit).
 */
export function readPlanHints(state: RunState, key: string): Pick<UnitPlan, 'envDeps' | 'hostPathVars'> & { builtBefore: boolean } {
  try {
    const plan = JSON.parse(readFileSync(planPath(state, key), 'utf8')) as Partial<UnitPlan>;
    return { envDeps: plan.envDeps ?? [], hostPathVars: plan.hostPathVars ?? [], builtBefore: true };
  } catch {
    return { envDeps: [], hostPathVars: [], builtBefore: false };
  }
}

/** The plan as it was written, whether or not its outputs are still in place (they may have moved: a build script's program). */
export function readPlanAsWritten(state: RunState, key: string): UnitPlan | undefined {
  try {
    const plan = JSON.parse(readFileSync(planPath(state, key), 'utf8')) as UnitPlan;
    return plan.version === 2 ? plan : undefined;
  } catch {
    return undefined;
  }
}

/** The stamp of a file as it is now (hashing it unless its digest is given). */
export function stampOf(dir: string, name: string, digest?: string): FileStamp {
  const path = join(dir, name);
  const st = statSync(path);
  return { name, size: st.size, sha256: digest ?? sha256(readFileSync(path)), ino: st.ino, mtimeMs: st.mtimeMs };
}

/** The plan for a unit, only if its outputs on disk still hold the bytes it produced. */
export function readTrustedPlan(state: RunState, key: string): UnitPlan | undefined {
  const plan = readPlanAsWritten(state, key);
  if (!plan) return undefined;
  let restamped = false;
  for (const [i, out] of plan.outputs.entries()) {
    try {
      const st = statSync(join(plan.hostOutDir, out.name));
      if (st.size !== out.size) return undefined;
      if (st.ino === out.ino && st.mtimeMs === out.mtimeMs) continue;
      const now = stampOf(plan.hostOutDir, out.name);
      if (now.sha256 !== out.sha256) return undefined;
      plan.outputs[i] = now;
      restamped = true;
    } catch {
      return undefined;
    }
  }
  // Same bytes under a new stat: remember it, so the next reader need not hash again.
  if (restamped) writePlan(state, plan);
  return plan;
}

/**
 * Whether one of these units was built by us in this target dir but its outputs have been replaced since
 * (compiled here after an edit): its dependents are then compiled here too, as plain cargo would.
 */
export function replacedSince(state: RunState, keys: readonly string[]): boolean {
  return keys.some((key) => existsSync(planPath(state, key)) && !readTrustedPlan(state, key));
}

export type Closure = { ok: true; order: UnitPlan[] } | { ok: false; missing: string };

/** The plans of every unit the given direct dependencies need, dependencies first. */
export function resolveClosure(state: RunState, directKeys: readonly string[]): Closure {
  const seen = new Map<string, UnitPlan>();
  const order: UnitPlan[] = [];
  const load = (key: string): UnitPlan | undefined => {
    const cached = seen.get(key);
    if (cached) return cached;
    const plan = readTrustedPlan(state, key);
    if (plan) seen.set(key, plan);
    return plan;
  };
  const added = new Set<string>();
  for (const direct of directKeys) {
    const plan = load(direct);
    if (!plan) return { ok: false, missing: direct };
    for (const key of [...plan.closure, direct]) {
      if (added.has(key)) continue;
      const p = load(key);
      if (!p) return { ok: false, missing: key };
      added.add(key);
      order.push(p);
    }
  }
  return { ok: true, order };
}
