/**
 * State one cargo run shares between its many wrapper processes: where it lives (under the target dir),
 * the run's identity, the engine detected once per run, the warn-once flag, per-unit records and the log.
 */
import { keepScratch, scratch } from './scratch.ts';
import { appendFileSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export const STATE_DIR_NAME = '.rustcbuildx';

/** `local`: compiled with the local rustc by choice (the edit loop: a rebuilt crate or its dependents, RUSTCBUILDX_INCREMENTAL), not as a fallback */
export type Outcome = 'cached' | 'built' | 'local' | 'fallback';

export type CacheSource = 'memo' | 'store' | 'engine';

export interface UnitRecord {
  /** a build script's run (`built`: in the sandbox; `fallback`: on the host), not a compile */
  kind?: 'build-script';
  unit: string;
  crate: string;
  outcome: Outcome;
  /** for `cached`: the local memo, a shared store (RUSTCBUILDX_CACHE) or BuildKit's own cache */
  from?: CacheSource;
  seconds: number;
  /** when the wrapper started and ended (ms since the epoch): a bare run's wall time is first start to last end */
  start?: number;
  end?: number;
  /** why a unit fell back to local rustc */
  reason?: string;
  /** rustc's exit code as cargo saw it */
  code: number;
  /** only in `cargo buildx`'s summary file: the run's state dir, which `cargo buildx` does not know otherwise */
  stateDir?: string;
}

/** The target dir (the one holding CACHEDIR.TAG) that an out-dir belongs to, if it is one of cargo's. */
export function targetRootOf(outDir: string): string | undefined {
  let profile: string;
  if (basename(outDir) === 'deps' || basename(outDir) === 'examples') profile = dirname(outDir);
  else if (basename(dirname(outDir)) === 'build') profile = dirname(dirname(outDir));
  else return undefined;
  // target/debug or target/<triple>/debug
  for (const candidate of [dirname(profile), dirname(dirname(profile))]) {
    if (existsSync(join(candidate, 'CACHEDIR.TAG'))) return candidate;
  }
  return dirname(profile);
}

/** Cargo is the wrapper's parent; its pid plus start time names the run when `cargo buildx` did not. */
export function currentRunId(env: Record<string, string | undefined> = process.env): string {
  if (env.RUSTCBUILDX_RUN_ID) return env.RUSTCBUILDX_RUN_ID;
  const ppid = process.ppid;
  let start = '0';
  try {
    const stat = readFileSync(`/proc/${ppid}/stat`, 'utf8');
    start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '0';
  } catch {
    // not Linux: the pid alone still separates concurrent runs
  }
  return `p${ppid}-${start}`;
}

export class RunState {
  readonly stateDir: string;
  readonly runsDir: string;

  constructor(
    readonly targetRoot: string,
    readonly runId: string,
  ) {
    this.stateDir = join(targetRoot, STATE_DIR_NAME);
    this.runsDir = join(this.stateDir, 'runs');
    mkdirSync(this.runsDir, { recursive: true });
  }

  path(...parts: string[]): string {
    return join(this.stateDir, ...parts);
  }

  private runFile(suffix: string): string {
    return join(this.runsDir, `${this.runId}${suffix}`);
  }

  readCached<T>(name: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.runFile(`.${name}.json`), 'utf8')) as T;
    } catch {
      return undefined;
    }
  }

  writeCached(name: string, value: unknown): void {
    writeAtomic(this.runFile(`.${name}.json`), JSON.stringify(value));
  }

  /**
   * The run's `name` value, made by one wrapper while the others wait for it: a `-jN` run's first
   * wrappers start together, and each making it (the engine's detection: a docker client or two each)
   * crowded the cores at every run's start. The maker holds an O_EXCL lock naming its pid; one that died
   * (Ctrl-C, killed) is replaced by the next waiter. A maker that throws leaves nothing: each waiter then
   * makes its own.
   */
  async shared<T>(name: string, make: () => Promise<T>): Promise<T> {
    const lock = this.runFile(`.${name}.lock`);
    for (;;) {
      const cached = this.readCached<T>(name);
      if (cached !== undefined) return cached;
      let fd: number;
      try {
        fd = openSync(lock, 'wx');
      } catch {
        if (!makerAlive(lock)) rmSync(lock, { force: true });
        else await Bun.sleep(SHARED_POLL_MS);
        continue;
      }
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      try {
        const value = await make();
        this.writeCached(name, value);
        return value;
      } finally {
        rmSync(lock, { force: true });
      }
    }
  }

  /** True for exactly one caller per run (an O_EXCL file), so a warning is printed once. */
  firstTime(what: string): boolean {
    try {
      closeSync(openSync(this.runFile(`.${what}`), 'wx'));
      return true;
    } catch {
      return false;
    }
  }

  record(rec: UnitRecord): void {
    const line = JSON.stringify(rec);
    // One short O_APPEND write per record: concurrent wrappers never interleave within a line.
    appendFileSync(this.runFile('.jsonl'), line + '\n');
    // `cargo buildx` learns from these where the run's state lives (it does not know the target dir).
    const summary = process.env.RUSTCBUILDX_SUMMARY_FILE;
    if (summary) appendFileSync(summary, JSON.stringify({ ...rec, stateDir: this.stateDir }) + '\n');
  }

  /** One unit's (or build script's run's) outcome, timed from `started` to now. */
  recordOutcome(unit: string, crate: string | undefined, outcome: Outcome, started: number, code: number, extra: Pick<UnitRecord, 'reason' | 'kind' | 'from'> = {}): void {
    const end = Date.now();
    this.record({
      ...(extra.kind ? { kind: extra.kind } : {}),
      unit,
      crate: crate ?? unit,
      outcome,
      ...(extra.from ? { from: extra.from } : {}),
      seconds: (end - started) / 1000,
      start: started,
      end,
      code,
      ...(extra.reason ? { reason: extra.reason } : {}),
    });
  }

  /** The run's wall time, as `cargo buildx` measured it from cargo's start to its end. */
  writeWallTime(seconds: number): void {
    writeAtomic(this.runFile('.wall.json'), JSON.stringify({ seconds }));
  }

  logFile(): string {
    return this.runFile('.log');
  }
}

const SHARED_POLL_MS = 5;

/** Whether the process named in a `shared` lock lives (a lock whose pid is not written yet counts as alive). */
function makerAlive(lock: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(lock, 'utf8'));
  } catch {
    return false; // gone: made, or given up
  }
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function writeAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  // Registered as scratch: a Ctrl-C that lands between the write and the rename (before any other
  // handler of this process is installed) would otherwise leave the temporary file behind.
  const tmp = scratch(`${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(tmp, data);
  renameSync(tmp, path);
  keepScratch(tmp);
}

export function readRecords(file: string): UnitRecord[] {
  if (!existsSync(file)) return [];
  // A run killed while writing leaves a cut-off last line: the records before it still count.
  return readFileSync(file, 'utf8')
    .split('\n')
    .flatMap((l) => {
      try {
        return l ? [JSON.parse(l) as UnitRecord] : [];
      } catch {
        return [];
      }
    });
}

export interface Summary {
  units: number;
  cached: number;
  built: number;
  local: number;
  fallback: number;
  /** where the cached units came from (a record of an older version says none: counted as the memo) */
  from: Record<CacheSource, number>;
  /** cached units (compiles and build scripts' runs) of all that went through us, 0–1 */
  hitRate: number;
  /** build scripts' runs that went through us: in the sandbox, from its cache, on the host */
  scripts: { sandbox: number; cached: number; host: number };
  /** the run's wall time */
  seconds: number;
  /** every unit's own time, added up (units run in parallel, so this exceeds the wall time) */
  unitSeconds: number;
}

/**
 * A run's summary. Wall time: what `cargo buildx` measured (`wallSeconds`), else the first unit's start
 * to the last unit's end (a bare RUSTC_WRAPPER run), else, for records without times, the units' sum.
 */
export function summarize(all: readonly UnitRecord[], wallSeconds?: number): Summary {
  const records = all.filter((r) => r.kind === undefined);
  const runs = all.filter((r) => r.kind === 'build-script');
  const count = (o: Outcome, of: readonly UnitRecord[] = records) => of.filter((r) => r.outcome === o).length;
  // Times count build scripts' runs too: they are part of the run's work and of its span.
  const unitSeconds = all.reduce((s, r) => s + r.seconds, 0);
  const starts = all.map((r) => r.start).filter((t) => t !== undefined);
  const ends = all.map((r) => r.end).filter((t) => t !== undefined);
  const spanned = starts.length === all.length && ends.length === all.length && all.length > 0 ? (Math.max(...ends) - Math.min(...starts)) / 1000 : undefined;
  const round = (x: number) => Math.round(x * 100) / 100;
  return {
    units: records.length,
    cached: count('cached'),
    built: count('built'),
    local: count('local'),
    fallback: count('fallback'),
    from: {
      memo: records.filter((r) => r.outcome === 'cached' && (r.from ?? 'memo') === 'memo').length,
      store: records.filter((r) => r.outcome === 'cached' && r.from === 'store').length,
      engine: records.filter((r) => r.outcome === 'cached' && r.from === 'engine').length,
    },
    hitRate: all.length > 0 ? round(count('cached', all) / all.length) : 0,
    // `local`: a workspace crate's script run again by an edit, here by choice (the edit loop)
    scripts: { sandbox: count('built', runs), cached: count('cached', runs), host: count('fallback', runs) + count('local', runs) },
    seconds: round(wallSeconds ?? spanned ?? unitSeconds),
    unitSeconds: round(unitSeconds),
  };
}

export function formatSummary(s: Summary): string {
  const here = s.local > 0 ? `, ${s.local} compiled here (edit loop)` : '';
  const store = s.from.store > 0 ? ` (${s.from.store} from the shared store)` : '';
  const { sandbox, cached, host } = s.scripts;
  const scripts = sandbox + cached + host > 0 ? `; build scripts: ${sandbox} run in the sandbox, ${cached} from cache, ${host} on the host` : '';
  return `rustcbuildx: ${s.units} units compiled: ${s.cached} from cache${store}, ${s.built} built${here}, ${s.fallback} fell back to local rustc${scripts}, ${s.seconds.toFixed(1)} s`;
}

/** The wall time `cargo buildx` recorded for a run, given its records file (`<run>.jsonl`). */
export function readWallTime(recordsFile: string): number | undefined {
  try {
    const { seconds } = JSON.parse(readFileSync(recordsFile.replace(/\.jsonl$/, '.wall.json'), 'utf8')) as { seconds?: unknown };
    return typeof seconds === 'number' ? seconds : undefined;
  } catch {
    return undefined;
  }
}
