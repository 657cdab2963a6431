/**
 * `rustcbuildx verify` inside the wrapper: with RUSTCBUILDX_VERIFY set, a unit is built by the engine
 * whatever its cache holds, and each output's sha256 is compared with what the memo or a shared store
 * would have served for the same key. One line per unit goes to the verify file; the build goes on with
 * the fresh result, and neither the memo nor a store takes it.
 */
import { appendFileSync } from 'node:fs';
import type { EntryMeta, ManifestFile } from '../store/local-cache.ts';
import { namedToShare } from '../plan/provenance.ts';

export interface VerifyRecord {
  /** the step's key: the unit (`serde-0123…`), or a build script's run (`run-serde-4567…`) */
  unit: string;
  crate: string;
  version: string;
  kind: string;
  key: string;
  /** what the cache would have served, if it held the key */
  served: 'memo' | 'store' | null;
  /** files whose bytes differ (or that one side lacks), by their path in the result */
  differ: string[];
}

/** The verify file this unit reports to, or undefined when the run does not verify it. */
export function verifyFile(meta: EntryMeta, env: Record<string, string | undefined> = process.env): string | undefined {
  const file = env.RUSTCBUILDX_VERIFY;
  // Incremental results depend on the state they were built from: not byte-comparable by design.
  if (!file || meta.incremental) return undefined;
  const only = (env.RUSTCBUILDX_VERIFY_CRATES ?? '').split(',').filter(Boolean);
  return only.length === 0 || namedToShare([meta.crate], only) ? file : undefined;
}

/** The paths whose bytes differ between the served result and the fresh one. */
export function differingFiles(served: readonly ManifestFile[], fresh: readonly ManifestFile[]): string[] {
  const a = new Map(served.map((f) => [f.path, f.sha256]));
  const b = new Map(fresh.map((f) => [f.path, f.sha256]));
  return [...new Set([...a.keys(), ...b.keys()])].filter((p) => a.get(p) !== b.get(p)).sort();
}

export function recordVerified(file: string, rec: VerifyRecord): void {
  // One short O_APPEND write per unit: concurrent wrappers never interleave within a line.
  appendFileSync(file, JSON.stringify(rec) + '\n');
}
