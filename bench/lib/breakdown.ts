/**
 * Where a unit's time goes, read from what one `RUSTCBUILDX_LOG=debug` run leaves in
 * `<target>/.rustcbuildx/`:
 * - `runs/<run>.jsonl`: per unit, the wrapper's own total (from entering `wrap()` to its record);
 * - `runs/<run>.log`: per unit, `engine exit N in S s` (the engine client's wall time) followed by
 *   BuildKit's plain progress, whose `#N DONE x.ys` lines time each step;
 * - `runs/<run>.log` again: `local cache hit` when the local memo answered instead of the engine;
 * - `runs/<run>.log` again: a unit solved in the broker's held build has a `timeline: solve A, answer B,
 *   export C-D ms` line: its solve's round trip (B − A) and the reading of its result (D − C);
 * - `units/<key>.json`: written right after the outputs were moved into place, so its mtime minus the
 *   `engine exit` (or `local cache hit`) entry's timestamp is the replay.
 * What is left of the wrapper's total is our code before the engine call (parse, plan, stage the
 * context, render the Dockerfile; on a memo hit also the memo lookup and copy, which is logged only
 * after it is done).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { BucketFigures, Breakdown, OverheadFit, ProfiledScenario, RunCounts } from './types.ts';
import type { Outcome } from '../../src/run-state.ts';
import { fitLine, median, quantile, round } from './stats.ts';

/** The buckets, in the order the report prints them; the indented ones split `engine_call`. */
export const BUCKETS = [
  'wrapper_total',
  'our_code_before_engine',
  'engine_call',
  'engine_client_and_solver',
  'context_upload',
  'definition_and_metadata',
  'rustc_run',
  'other_steps',
  'export',
  'held_solve',
  'held_result_read',
  'replay',
] as const;
export type BucketName = (typeof BUCKETS)[number];

/** One line of the per-run log: `2026-…Z [pid unit] message`, possibly followed by more lines. */
const ENTRY = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) \[(\d+) ([^\]\s]+)\] /gm;

interface LogEntry {
  at: number;
  unit: string;
  text: string;
}

function parseEntries(text: string): LogEntry[] {
  const starts = [...text.matchAll(ENTRY)];
  return starts.map((m, i) => ({
    at: Date.parse(m[1] as string),
    unit: m[3] as string,
    text: text.slice((m.index ?? 0) + m[0].length, starts[i + 1]?.index ?? text.length),
  }));
}

export interface StepTimes {
  context: number;
  definition: number;
  run: number;
  other: number;
  export: number;
  /** the unit's own rustc step was a cache hit */
  runCached: boolean;
  /** rustc steps of dependencies that were not cache hits: a sign the closure was rebuilt */
  depRunsBuilt: number;
}

/** Seconds per kind of step from BuildKit's plain progress (`#N <header>` … `#N DONE 1.2s` | `#N CACHED`). */
export function parseProgress(log: string, unitStage: string): StepTimes {
  const headers = new Map<string, string>();
  const done = new Map<string, number>();
  const cached = new Set<string>();
  for (const line of log.split('\n')) {
    const m = /^#(\d+) (.*)$/.exec(line);
    if (!m) continue;
    const [, id, rest] = m as unknown as [string, string, string];
    const d = /^DONE ([\d.]+)s$/.exec(rest);
    if (d) done.set(id, Number(d[1]));
    else if (rest === 'CACHED') cached.add(id);
    else if (!headers.has(id)) headers.set(id, rest); // the first line of a step is its header
  }
  const t: StepTimes = { context: 0, definition: 0, run: 0, other: 0, export: 0, runCached: false, depRunsBuilt: 0 };
  // `[u-key 2/2] RUN` from the Dockerfile frontend, `[u-key] RUN` from our LLB
  const own = (header: string) => header.startsWith(`[${unitStage} `) || header.startsWith(`[${unitStage}]`);
  for (const [id, header] of headers) {
    const seconds = done.get(id) ?? 0;
    if (header.startsWith('[internal] load build context')) t.context += seconds;
    else if (/^\[internal\] load (build definition|\.dockerignore|metadata)/.test(header)) t.definition += seconds;
    else if (header.startsWith('exporting to')) t.export += seconds;
    else if (own(header) && / RUN /.test(header)) {
      t.run += seconds;
      t.runCached = cached.has(id);
    } else {
      if (/^\[u-[^\]]+\] RUN /.test(header) && !cached.has(id)) t.depRunsBuilt++;
      t.other += seconds;
    }
  }
  return t;
}

/**
 * Milliseconds from the engine's (or memo's) answer to the plan file's mtime; NaN when there is no plan.
 * File mtimes come from the kernel's coarse clock, a few ms behind the log's, so a small negative is 0.
 */
function replayOf(planFile: string, answeredAt: number): number {
  if (!existsSync(planFile)) return NaN;
  const ms = statSync(planFile).mtimeMs - answeredAt;
  return ms < -10 ? NaN : Math.max(0, ms);
}

interface Rec {
  unit: string;
  outcome: Outcome;
  seconds: number;
}

/** Everything one profiled run says about its units, reduced to per-bucket figures. */
export function breakdownOfRun(targetDir: string, runId: string, scenario: ProfiledScenario, wallSeconds: number): Breakdown {
  const stateDir = join(targetDir, '.rustcbuildx');
  const recordsFile = join(stateDir, 'runs', `${runId}.jsonl`);
  const logFile = join(stateDir, 'runs', `${runId}.log`);
  const records = existsSync(recordsFile) ? readFileSync(recordsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Rec) : [];
  const entries = existsSync(logFile) ? parseEntries(readFileSync(logFile, 'utf8')) : [];
  const caveats: string[] = [];
  if (entries.length === 0) caveats.push(`no debug log at ${logFile}: run with RUSTCBUILDX_LOG=debug`);

  const byUnit = new Map<string, LogEntry[]>();
  for (const e of entries) byUnit.set(e.unit, [...(byUnit.get(e.unit) ?? []), e]);

  const perBucket = new Map<BucketName, number[]>(BUCKETS.map((b) => [b, []]));
  const add = (b: BucketName, ms: number) => perBucket.get(b)?.push(ms);
  let overlapping = 0;
  let noReplayStamp = 0;
  let depRebuilt = 0;
  let memoHits = 0;
  const sizeVsOverhead: Array<[number, number]> = [];
  for (const rec of records) {
    if (rec.outcome === 'fallback' || rec.outcome === 'local') continue;
    const mine = byUnit.get(rec.unit) ?? [];
    const exits = mine.map((e) => ({ e, m: /^engine exit -?\d+ in ([\d.]+) s/.exec(e.text) })).filter((x) => x.m);
    const hit = mine.filter((e) => e.text.startsWith('local cache hit')).at(-1);
    if (hit) memoHits++;
    if (exits.length === 0 && !hit) continue;
    const engineMs = exits.reduce((s, x) => s + Number(x.m?.[1]) * 1000, 0);
    const steps = exits.map((x) => parseProgress(x.e.text, `u-${rec.unit}`.toLowerCase()));
    const sum = (f: (t: StepTimes) => number) => steps.reduce((s, t) => s + f(t) * 1000, 0);
    const stepMs = { context: sum((t) => t.context), definition: sum((t) => t.definition), run: sum((t) => t.run), other: sum((t) => t.other), export: sum((t) => t.export) };
    depRebuilt += steps.reduce((s, t) => s + t.depRunsBuilt, 0);
    const stepsTotal = stepMs.context + stepMs.definition + stepMs.run + stepMs.other + stepMs.export;
    // Steps can run side by side (the context upload beside the metadata load), so their sum may exceed the call.
    if (stepsTotal > engineMs) overlapping++;
    // Replay starts when the engine (or the memo) has answered: whichever was logged last.
    const lastExit = Math.max(exits.at(-1)?.e.at ?? -Infinity, hit?.at ?? -Infinity);
    const plan = join(stateDir, 'units', `${rec.unit}.json`);
    const replayMs = replayOf(plan, lastExit);
    const totalMs = rec.seconds * 1000;
    add('wrapper_total', totalMs);
    add('engine_call', engineMs);
    add('engine_client_and_solver', Math.max(0, engineMs - stepsTotal));
    const dockerfile = mine.filter((e) => /^build [\w-]+: /.test(e.text)).at(-1);
    if (dockerfile && exits.length === 1) sizeVsOverhead.push([(dockerfile.text.match(/^FROM /gm) ?? []).length, Math.max(0, engineMs - stepsTotal)]);
    for (const x of exits) {
      const t = /^timeline: solve (\d+), answer (\d+), export (\d+)-(\d+) ms$/m.exec(x.e.text);
      if (!t) continue;
      const [solve, answer, from, to] = t.slice(1).map(Number) as [number, number, number, number];
      add('held_solve', answer - solve);
      add('held_result_read', to - from);
    }
    add('context_upload', stepMs.context);
    add('definition_and_metadata', stepMs.definition);
    add('rustc_run', stepMs.run);
    add('other_steps', stepMs.other);
    add('export', stepMs.export);
    if (Number.isFinite(replayMs)) {
      add('replay', replayMs);
      add('our_code_before_engine', Math.max(0, totalMs - engineMs - replayMs));
    } else {
      noReplayStamp++;
      add('our_code_before_engine', Math.max(0, totalMs - engineMs));
    }
  }
  if (overlapping > 0) caveats.push(`${overlapping} unit(s): BuildKit steps overlapped, so engine_client_and_solver was clamped at 0 for them`);
  if (noReplayStamp > 0) caveats.push(`${noReplayStamp} unit(s) have no usable plan-file stamp (failed compile?): their replay is counted in our_code_before_engine`);
  if (depRebuilt > 0) caveats.push(`${depRebuilt} dependency rustc step(s) ran again inside a dependent's build (closure not cached)`);
  if (memoHits > 0) caveats.push(`${memoHits} unit(s) answered by the local memo without an engine call: their memo lookup and copy are in our_code_before_engine`);
  caveats.push('BuildKit prints step durations to 0.1 s: steps under 0.05 s read as 0');

  const totalSum = (perBucket.get('wrapper_total') ?? []).reduce((s, v) => s + v, 0);
  const buckets: Record<string, BucketFigures> = {};
  for (const [name, values] of perBucket) {
    if (values.length === 0) continue; // e.g. no engine call at all when the memo answered every unit
    const s = values.reduce((a, v) => a + v, 0);
    buckets[name] = { sum_s: round(s / 1000, 2), median_ms: round(median(values), 0), p90_ms: round(quantile(values, 0.9), 0), share: totalSum > 0 ? round(s / totalSum, 3) : 0 };
  }
  const count = (o: Rec['outcome']) => records.filter((r) => r.outcome === o).length;
  const outcomes: RunCounts = { units: records.length, cached: count('cached'), built: count('built'), local: count('local'), fallback: count('fallback') };
  const line = fitLine(sizeVsOverhead);
  const sizes = sizeVsOverhead.map(([x]) => x);
  const overhead_fit: OverheadFit | null = line
    ? { per_stage_ms: round(line.slope, 1), intercept_ms: round(line.intercept, 0), units: sizeVsOverhead.length, min_stages: Math.min(...sizes), max_stages: Math.max(...sizes) }
    : null;
  return { scenario, wall_s: round(wallSeconds, 2), units: records.length, outcomes, memo_hits: memoHits, buckets, overhead_fit, caveats };
}
