/**
 * Keeps `<target>/.rustcbuildx` bounded: every edit stages a new snapshot of the edited crate and every
 * run leaves records, so without pruning the directory grows with each build. What is removed:
 * - run files beyond the newest KEEP_RUNS runs, and bug reports beyond the newest KEEP_FAILURES;
 * - context snapshots no unit plan names and no memo used since `before` points at;
 * - stat memos unused since `before`, and work dirs older than `before` (left by killed wrappers).
 * `before` is when the pruning run began: whatever a concurrent build staged or used since is kept.
 * A snapshot removed under a build that was about to reuse it only costs that build a fallback.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const KEEP_RUNS = 20;
export const KEEP_FAILURES = 20;

/** Context kinds named by content that builds add to over time (crates/ are hard links to cargo's cache). */
const SNAPSHOT_KINDS = ['ws', 'git', 'dirs', 'outs', 'crates'];

export interface PruneReport {
  removed: number;
}

export function pruneState(stateDir: string, before: number, keepRun?: string): PruneReport {
  const report = { removed: 0 };
  const remove = (path: string) => {
    rmSync(path, { recursive: true, force: true });
    report.removed++;
  };
  const mtime = (path: string) => statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Number.POSITIVE_INFINITY;

  pruneRuns(join(stateDir, 'runs'), keepRun, remove);
  newestFirst(join(stateDir, 'failures')).slice(KEEP_FAILURES * 2).forEach(remove);
  for (const name of list(join(stateDir, 'tmp'))) if (mtime(join(stateDir, 'tmp', name)) < before) remove(join(stateDir, 'tmp', name));

  const ctx = join(stateDir, 'ctx');
  const used = new Set<string>(referencedByPlans(join(stateDir, 'units')));
  const statDir = join(ctx, '.stat');
  for (const shard of list(statDir)) {
    for (const name of list(join(statDir, shard))) {
      const memo = join(statDir, shard, name);
      if (mtime(memo) < before) remove(memo);
      else used.add(readText(memo));
    }
  }
  for (const kind of SNAPSHOT_KINDS) {
    for (const name of list(join(ctx, kind))) {
      const ctxPath = `${kind}/${name}`;
      if (!used.has(ctxPath) && mtime(join(ctx, ctxPath)) < before) remove(join(ctx, ctxPath));
    }
  }
  return report;
}

/**
 * Only the run files beyond the newest KEEP_RUNS runs: a few directory entries, cheap enough for a run
 * that never reaches the full prune (an edit loop compiled here, run after run).
 */
export function pruneRunFiles(stateDir: string, keepRun: string): void {
  pruneRuns(join(stateDir, 'runs'), keepRun, (path) => rmSync(path, { force: true }));
}

/** Keeps the newest KEEP_RUNS runs' files (`<run>.jsonl`, `.log`, …) and the current run's. */
function pruneRuns(runsDir: string, keepRun: string | undefined, remove: (path: string) => void): void {
  const byRun = new Map<string, { files: string[]; newest: number }>();
  for (const name of list(runsDir)) {
    const run = name.slice(0, name.indexOf('.') > 0 ? name.indexOf('.') : undefined);
    const entry = byRun.get(run) ?? { files: [], newest: 0 };
    entry.files.push(join(runsDir, name));
    entry.newest = Math.max(entry.newest, statSync(join(runsDir, name), { throwIfNoEntry: false })?.mtimeMs ?? 0);
    byRun.set(run, entry);
  }
  const runs = [...byRun.entries()].filter(([run]) => run !== keepRun).sort((a, b) => b[1].newest - a[1].newest);
  for (const [, { files }] of runs.slice(keepRun ? KEEP_RUNS - 1 : KEEP_RUNS)) files.forEach(remove);
}

/** The context paths (`ws/<hash>`, `crates/<sha>.crate`, …) the unit plans' Dockerfile snippets name. */
function referencedByPlans(unitsDir: string): string[] {
  const out: string[] = [];
  for (const name of list(unitsDir)) {
    const text = readText(join(unitsDir, name));
    for (const m of text.matchAll(/(?:COPY|ADD) ((?:ws|git|dirs|outs|crates)\/[^\s\\"]+) \//g)) if (m[1]) out.push(m[1]);
  }
  return out;
}

function newestFirst(dir: string): string[] {
  return list(dir)
    .map((name) => ({ path: join(dir, name), t: statSync(join(dir, name), { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
    .sort((a, b) => b.t - a.t)
    .map((e) => e.path);
}

function list(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
