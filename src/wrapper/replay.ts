/**
 * Replay: turn an exported sandbox build back into exactly what a local rustc would have left. Outputs
 * move into cargo's out-dir atomically (rename, same filesystem) with fresh mtimes; dep-info and
 * diagnostics get host paths back; rustc's streams and exit code are handed to cargo as they were.
 */
import { existsSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonEscape, type PathMap } from '../plan/sandbox-paths.ts';
import type { FileStamp } from '../plan/plans.ts';

export interface SandboxResult {
  status: number;
  stdout: Buffer;
  stderr: Buffer;
}

/** Exit codes of the sandbox itself, never of rustc: the step could not run rustc at all. */
const SANDBOX_FAILURES = new Set([97, 126, 127]);

export function readSandboxResult(exportDir: string): SandboxResult | undefined {
  const meta = join(exportDir, 'meta');
  const statusText = existsSync(join(meta, 'status')) ? readFileSync(join(meta, 'status'), 'utf8').trim() : '';
  if (!/^\d+$/.test(statusText)) return undefined;
  return {
    status: Number(statusText),
    stdout: readFileSync(join(meta, 'stdout')),
    stderr: readFileSync(join(meta, 'stderr')),
  };
}

/**
 * Why a failed sandboxed compile should be retried with the local rustc, if it should: the failure
 * comes from what the sandbox lacks (a system library to link, a file or variable outside what was
 * sent), not from the user's code, so plain cargo would have succeeded.
 */
export function localRetryReason(result: SandboxResult): string | undefined {
  if (SANDBOX_FAILURES.has(result.status)) return `the sandbox could not run rustc (exit ${result.status}): ${result.stderr.toString().slice(0, 300)}`;
  if (result.status === 0) return undefined;
  const text = result.stderr.toString();
  if (/linking with `[^`]*` failed|error: linker `[^`]*` not found|could not find native static library/.test(text)) return 'linking failed in the sandbox';
  if (/couldn't read `?[^`\n]*|No such file or directory \(os error 2\)/.test(text)) return 'rustc read a file that was not sent to the sandbox';
  if (/environment variable `[^`]+` not defined at compile time/.test(text)) return 'rustc read an environment variable the sandbox does not pass';
  return undefined;
}

/** The variables rustc's dep-info says the crate read at compile time (`# env-dep:NAME[=value]`). */
export function envDepsOf(exportDir: string): string[] {
  const out = join(exportDir, 'out');
  if (!existsSync(out)) return [];
  const names = new Set<string>();
  for (const file of readdirSync(out)) {
    if (!file.endsWith('.d')) continue;
    for (const m of readFileSync(join(out, file), 'utf8').matchAll(/^# env-dep:([^=\n]+)/gm)) if (m[1]) names.add(m[1]);
  }
  return [...names].sort();
}

/** Moves the unit's outputs into place; returns their stamps for the unit's plan. */
export function placeOutputs(exportDir: string, map: PathMap, outDir: string): FileStamp[] {
  const from = join(exportDir, 'out');
  if (!existsSync(from)) return [];
  const now = new Date();
  const stamps: FileStamp[] = [];
  for (const name of readdirSync(from).sort()) {
    const src = join(from, name);
    // Make-style dep-info escapes spaces in paths; host roots may have them.
    if (name.endsWith('.d') && statSync(src).isFile()) writeFileSync(src, map.toHostText(readFileSync(src, 'utf8'), (p) => p.replace(/ /g, '\\ ')));
    // Fresh mtimes: cargo compares outputs against sources and the invocation time, as after a real compile.
    utimesSync(src, now, now);
    const dest = join(outDir, name);
    renameSync(src, dest);
    const st = statSync(dest);
    stamps.push({ name, size: st.size, ino: st.ino });
  }
  return stamps;
}

/** rustc's stderr with host paths: JSON diagnostics and artifact notices name local files again. */
export function hostStderr(stderr: Buffer, map: PathMap): string {
  return map.toHostText(stderr.toString(), jsonEscape);
}

/** Whether BuildKit (or podman) served the unit's rustc step from its cache, read from the progress log. */
export function servedFromCache(log: string, unitStage: string): boolean {
  // BuildKit plain progress: `#12 [u-key 2/2] RUN …` … `#12 CACHED`
  const vertex = new RegExp(`^#(\\d+) \\[${unitStage.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\d+/\\d+\\] RUN `, 'm').exec(log);
  if (vertex) return new RegExp(`^#${vertex[1]} CACHED$`, 'm').test(log);
  // podman: the last RUN step of the file is the unit's; `--> Using cache` follows it when cached.
  const steps = [...log.matchAll(/STEP \d+\/\d+: RUN /g)];
  const last = steps.at(-1);
  if (last?.index === undefined) return false;
  const after = log.slice(last.index).split('\n').slice(1, 3).join('\n');
  return after.includes('Using cache');
}
