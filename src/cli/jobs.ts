/**
 * How many units `cargo buildx` lets cargo run at once. cargo's default is one job per local core, which
 * suits compiling here, and an engine on this machine (its cores are ours: more jobs only crowd them; a
 * warm run was measured 10 % slower with 8 jobs than with 2 on 2 cores). A unit built by an engine on
 * another machine takes that machine's cores, not ours, and the broker works on one unit per engine core
 * at once (src/engine/buildkit/client.ts); 4 jobs per engine core keep units waiting on it, so that a
 * unit found in the engine's cache (round trips and bytes, no cores) overlaps the others (measured on a
 * 2-core remote over ssh with 20 ms each way, hyperfine: 8 jobs 9.4 s against 14.8 s with 2 when
 * everything is cached, 31 s against 36–40 s cold). The engine's cores and where it is come from the
 * broker (`docker info`'s NCPU and the endpoint, kept beside its socket); with no broker there is
 * nothing to hold units back, and cargo keeps its default. Capped at 4 jobs per local core, since build
 * scripts, the C they compile and a wrapper per job still run here; and not for `cargo doc`, whose
 * rustdoc runs here. The user's own choice always wins: `-j`/`--jobs`, `--config build.jobs=…`,
 * CARGO_BUILD_JOBS, or `build.jobs` in a cargo config file. Given as `--config build.jobs=N`, not as a
 * variable that would reach nested cargo processes.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { engineInfoPath, type EngineInfo } from '../engine/broker/protocol.ts';

/** The user chose a number of jobs on cargo's command line (before `--`, which starts the program's args). */
export function jobsInArgs(args: readonly string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return false;
    if (a.startsWith('-j') || a === '--jobs' || a.startsWith('--jobs=')) return true;
    if (a === '--config' && /\bjobs\b/.test(args[i + 1] ?? '')) return true;
    if (a.startsWith('--config=') && /\bjobs\b/.test(a)) return true;
  }
  return false;
}

/** `build.jobs` in a cargo config file cargo would read from `cwd`; a file that does not parse counts as a choice. */
export function jobsInConfig(cwd: string, cargoHome: string): boolean {
  const files: string[] = [];
  for (let dir = cwd; ; dir = dirname(dir)) {
    files.push(join(dir, '.cargo', 'config.toml'), join(dir, '.cargo', 'config'));
    if (dirname(dir) === dir) break;
  }
  files.push(join(cargoHome, 'config.toml'), join(cargoHome, 'config'));
  return files.some((file) => {
    if (!existsSync(file)) return false;
    try {
      const config = Bun.TOML.parse(readFileSync(file, 'utf8')) as { build?: { jobs?: unknown } };
      return config.build?.jobs !== undefined;
    } catch {
      return true; // cargo will say what is wrong with it; we change nothing meanwhile
    }
  });
}

/** The engine as the broker on `socket` last recorded it (its cores, and whether it is elsewhere), if it did. */
export function engineInfo(socket: string | undefined): EngineInfo | undefined {
  if (!socket) return undefined;
  try {
    const info = JSON.parse(readFileSync(engineInfoPath(socket), 'utf8')) as Partial<EngineInfo>;
    return typeof info.cpus === 'number' && info.cpus >= 1 ? { cpus: Math.floor(info.cpus), elsewhere: info.elsewhere === true } : undefined;
  } catch {
    return undefined;
  }
}

/** Subcommands whose own work runs here whatever the engine: their jobs stay cargo's default. */
const LOCAL_WORK = new Set(['doc', 'rustdoc']);
export const JOBS_PER_LOCAL_CPU = 4;
export const JOBS_PER_ENGINE_CPU = 4;

/** cargo's global `--config build.jobs=N` when a broker knows the engine and the user did not choose. */
export function jobsArgs(opts: { args: readonly string[]; env: Record<string, string | undefined>; cwd: string; cpus: number; engine: EngineInfo | undefined }): string[] {
  const { args, env, cwd, cpus, engine } = opts;
  if (engine === undefined || LOCAL_WORK.has(args[0] ?? '') || env.CARGO_BUILD_JOBS !== undefined || jobsInArgs(args)) return [];
  const jobs = Math.min(engine.elsewhere ? JOBS_PER_ENGINE_CPU * engine.cpus : engine.cpus, JOBS_PER_LOCAL_CPU * cpus);
  if (jobs === cpus || jobsInConfig(cwd, env.CARGO_HOME || join(env.HOME || homedir(), '.cargo'))) return [];
  return ['--config', `build.jobs=${jobs}`];
}
