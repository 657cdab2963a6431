/**
 * How many units `cargo buildx` lets cargo run at once when the engine is another machine. cargo's
 * default is one job per local core, which suits compiling here. With a remote engine a unit's time is
 * mostly round trips and the remote's cores, and a cached unit costs the remote almost nothing: with one
 * job per local core the link idles. The user's own choice always wins: `-j`/`--jobs`,
 * `--config build.jobs=…`, CARGO_BUILD_JOBS, or `build.jobs` in a cargo config file.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

/** Jobs for a remote engine: 8 (what one ssh connection carries at once, and some) or the local cores. */
export const REMOTE_MIN_JOBS = 8;

/** An engine endpoint on another machine: ssh://, or tcp:// to anything but this one. */
export function isRemoteHost(host: string | undefined): boolean {
  if (!host) return false;
  if (host.startsWith('ssh://')) return true;
  const tcp = /^(?:tcp|https?):\/\/(\[[^\]]*\]|[^:/]*)/.exec(host);
  return tcp !== null && !/^(localhost|127\.[\d.]+|\[::1\]|0\.0\.0\.0)$/i.test(tcp[1] ?? '');
}

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

/** `build.jobs` in a cargo config file cargo would read from `cwd` (a text check, not a TOML parse). */
export function jobsInConfig(cwd: string, cargoHome: string): boolean {
  const files: string[] = [];
  for (let dir = cwd; ; dir = dirname(dir)) {
    files.push(join(dir, '.cargo', 'config.toml'), join(dir, '.cargo', 'config'));
    if (dirname(dir) === dir) break;
  }
  files.push(join(cargoHome, 'config.toml'), join(cargoHome, 'config'));
  return files.some((file) => {
    if (!existsSync(file)) return false;
    const text = readFileSync(file, 'utf8');
    return /^\s*build\.jobs\s*=/m.test(text) || /^\s*build\s*=\s*\{[^}]*\bjobs\s*=/m.test(text) || /^\s*\[build\][^[]*^\s*jobs\s*=/m.test(text);
  });
}

/**
 * The environment to add for cargo: CARGO_BUILD_JOBS when the engine is remote and the user did not
 * choose; nothing otherwise. A wrong guess (a config file this check misreads) only changes parallelism.
 */
export function remoteJobsEnv(opts: { args: readonly string[]; env: Record<string, string | undefined>; host: string | undefined; cwd: string; cpus: number }): Record<string, string> {
  const { args, env, host, cwd, cpus } = opts;
  if (!isRemoteHost(host) || env.CARGO_BUILD_JOBS || jobsInArgs(args)) return {};
  if (jobsInConfig(cwd, env.CARGO_HOME || join(env.HOME || homedir(), '.cargo'))) return {};
  return { CARGO_BUILD_JOBS: String(Math.max(REMOTE_MIN_JOBS, cpus)) };
}
