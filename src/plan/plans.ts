/**
 * Unit plans: what each compiled unit leaves (under `<target>/.rustcbuildx/units/`) so that a dependent's
 * Dockerfile can rebuild it from scratch, plus the stamps of the outputs it placed, so a plan whose
 * outputs were since replaced (by a plain `cargo build`) is never trusted.
 */
import { readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { writeAtomic, type RunState } from '../run-state.ts';

/**
 * Identifies an output we placed. Not mtime: cargo re-times outputs after a compile (e.g. a check
 * build's .rmeta). rustc writes every output to a temporary file and renames it over the old one, so a
 * rebuild by plain cargo always gives the path a new inode.
 */
export interface FileStamp {
  name: string;
  size: number;
  ino: number;
}

export interface UnitPlan {
  version: 1;
  key: string;
  crate: string;
  /** the unit's Dockerfile stages (see dockerfile.ts) */
  snippet: string;
  /** every unit it depends on, transitively, dependencies before dependents */
  closure: string[];
  hostOutDir: string;
  outputs: FileStamp[];
  /** variables it read at compile time beyond those cargo sets (from rustc's dep-info) */
  envDeps: string[];
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

function planPath(state: RunState, key: string): string {
  return state.path('units', `${key}.json`);
}

export function writePlan(state: RunState, plan: UnitPlan): void {
  writeAtomic(planPath(state, plan.key), JSON.stringify(plan));
}

/** The variables a unit read when it was last built, whether or not its outputs are still current. */
export function readPlanEnvDeps(state: RunState, key: string): string[] {
  try {
    return (JSON.parse(readFileSync(planPath(state, key), 'utf8')) as Partial<UnitPlan>).envDeps ?? [];
  } catch {
    return [];
  }
}

/** The plan for a unit, only if its outputs on disk are still the ones it produced. */
export function readTrustedPlan(state: RunState, key: string): UnitPlan | undefined {
  let plan: UnitPlan;
  try {
    plan = JSON.parse(readFileSync(planPath(state, key), 'utf8')) as UnitPlan;
  } catch {
    return undefined;
  }
  if (plan.version !== 1) return undefined;
  for (const out of plan.outputs) {
    try {
      const st = statSync(join(plan.hostOutDir, out.name));
      if (st.size !== out.size || st.ino !== out.ino) return undefined;
    } catch {
      return undefined;
    }
  }
  return plan;
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
