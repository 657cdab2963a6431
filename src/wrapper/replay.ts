/**
 * Replay: turn an exported sandbox build back into exactly what a local rustc would have left. Outputs
 * move into cargo's out-dir atomically (rename, same filesystem) with fresh mtimes; dep-info and
 * diagnostics get host paths back; rustc's streams and exit code are handed to cargo as they were.
 */
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonEscape, type PathMap } from '../plan/sandbox-paths.ts';
import { RUSTC_FAILED_MARKER } from '../render/dockerfile.ts';
import { stampOf, type FileStamp } from '../plan/plans.ts';

export interface SandboxResult {
  status: number;
  stdout: Buffer;
  stderr: Buffer;
}

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

/** rustc's failure in the sandbox, as the step's log tells it (see RUSTC_FAILED_MARKER). */
export interface SandboxFailure {
  status: number;
  /** the first error rustc printed, when one can be read from the log */
  firstError: string | undefined;
  /** what the step printed after its marker: the tail of the program's stderr */
  tail: string[];
}

/**
 * Whether an engine build failed because rustc failed inside it (rather than the engine or the step),
 * read from the build's log: BuildKit prefixes each line a step prints with `#<vertex> <seconds> `.
 */
export function sandboxFailure(log: string): SandboxFailure | undefined {
  const raw = log.split('\n');
  const lines = raw.map((l) => l.replace(/^#\d+ \d+\.\d+ /, ''));
  const at = lines.findIndex((l) => l.startsWith(`${RUSTC_FAILED_MARKER} `) && /\d+$/.test(l));
  if (at < 0) return undefined;
  const status = Number(/(\d+)$/.exec(lines[at] as string)?.[1]);
  let firstError: string | undefined;
  for (const line of lines.slice(at + 1)) {
    firstError = errorMessageOf(line);
    if (firstError) break;
  }
  // The program's lines, without the engine's own. BuildKit prefixes a step's lines with its number and
  // time (other steps' lines may come between) until its status line; a program's own `Error: …` line
  // keeps the prefix. podman prints them bare, and its step status or error line ends them.
  const step = /^(#\d+) \d+\.\d+ /.exec(raw[at] ?? '')?.[1];
  if (step) {
    const rest = raw.slice(at + 1);
    const done = rest.findIndex((l) => l.startsWith(`${step} ERROR`) || l.startsWith(`${step} DONE`));
    const ours = (done < 0 ? rest : rest.slice(0, done)).filter((l) => new RegExp(`^${step} \\d+\\.\\d+ `).test(l)).map((l) => l.replace(/^#\d+ \d+\.\d+ /, ''));
    return { status, firstError, tail: ours };
  }
  const after = lines.slice(at + 1);
  const end = after.findIndex((l) => /^(#\d+ [A-Z]|------|ERROR: |Error: )/.test(l));
  return { status, firstError, tail: end < 0 ? after : after.slice(0, end) };
}

/** The message of a rustc error line: a JSON diagnostic of level error, or a human `error…: …` line. */
function errorMessageOf(line: string): string | undefined {
  if (line.startsWith('{')) {
    try {
      const d = JSON.parse(line) as { level?: unknown; message?: unknown };
      return d.level === 'error' && typeof d.message === 'string' ? d.message : undefined;
    } catch {
      return undefined;
    }
  }
  return /^error(\[E\d+\])?: /.test(line) ? line.replace(/^error(\[E\d+\])?: /, '') : undefined;
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

/**
 * Moves the unit's outputs into place; returns their stamps for the unit's plan. `digests` holds the
 * sha256 of each export file already known (`out/<name>`), so outputs are not hashed twice.
 */
export function placeOutputs(exportDir: string, map: PathMap, outDir: string, digests: ReadonlyMap<string, string>): FileStamp[] {
  const from = join(exportDir, 'out');
  if (!existsSync(from)) return [];
  const now = filesystemNow(exportDir);
  const stamps: FileStamp[] = [];
  for (const name of readdirSync(from).sort()) {
    const src = join(from, name);
    // dep-info is rewritten here, so its digest is the rewritten file's.
    const rewritten = name.endsWith('.d') && statSync(src).isFile();
    if (rewritten) writeFileSync(src, hostDepInfo(readFileSync(src, 'utf8'), map));
    // Fresh mtimes: cargo compares outputs against sources and the invocation time, as after a real compile.
    utimesSync(src, now, now);
    const dest = join(outDir, name);
    renameSync(src, dest);
    stamps.push(stampOf(outDir, name, rewritten ? undefined : digests.get(`out/${name}`)));
  }
  return stamps;
}

/**
 * Now, as the filesystem's clock has it, in whole seconds with millisecond digits, rounded down. The
 * kernel stamps files with a coarse clock that lags Date.now() by up to a tick: an output stamped with
 * Date.now() can be *newer* than the file cargo writes right after it (a build script's run), and cargo
 * then finds that run stale on every build.
 */
function filesystemNow(dir: string): number {
  const probe = join(dir, '.now');
  writeFileSync(probe, '');
  const ms = Math.floor(statSync(probe).mtimeMs);
  rmSync(probe, { force: true });
  return ms / 1000;
}

/**
 * A dep-info file with host paths, escaped the way cargo reads each part: in the make-style file lists a
 * space is `\\ `; in `# env-dep:NAME=value` lines rustc escapes only `\\`, line feeds and carriage returns,
 * and cargo rejects any other escape (a `\\ ` there fails every build in a checkout with a space).
 */
export function hostDepInfo(text: string, map: PathMap): string {
  return text
    .split('\n')
    .map((line) => (line.startsWith('# env-dep:') ? map.toHostText(line, escapeEnvDep) : map.toHostText(line, (p) => p.replace(/ /g, '\\ '))))
    .join('\n');
}

function escapeEnvDep(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
}

/** rustc's stderr with host paths: JSON diagnostics and artifact notices name local files again. */
export function hostStderr(stderr: Buffer, map: PathMap): string {
  return map.toHostText(stderr.toString(), jsonEscape);
}

/** Whether BuildKit (or podman) served the unit's rustc step from its cache, read from the progress log. */
export function servedFromCache(log: string, unitStage: string): boolean {
  // BuildKit plain progress: `#12 [u-key 2/2] RUN …` (`[u-key] RUN …` from our LLB) … `#12 CACHED`
  const vertex = new RegExp(`^#(\\d+) \\[${unitStage.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}( \\d+/\\d+)?\\] RUN `, 'm').exec(log);
  if (vertex) return new RegExp(`^#${vertex[1]} CACHED$`, 'm').test(log);
  // podman: the last RUN step of the file is the unit's; `--> Using cache` follows it when cached.
  const steps = [...log.matchAll(/STEP \d+\/\d+: RUN /g)];
  const last = steps.at(-1);
  if (last?.index === undefined) return false;
  const after = log.slice(last.index).split('\n').slice(1, 3).join('\n');
  return after.includes('Using cache');
}
