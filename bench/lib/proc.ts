/**
 * Child processes for the harness: timed runs whose output goes to a log file (a failed build must be
 * diagnosable after a long unattended run), and small captured commands. Kept apart from src/exec.ts on
 * purpose: the harness must not change behaviour when the product's own helpers do.
 */
import { appendFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dir, '..', '..');
export const DIST = join(ROOT, 'dist');
export const RUSTCBUILDX = join(DIST, 'rustcbuildx');

export type Env = Record<string, string | undefined>;

/** An empty rustcbuildx user config: measured runs never read the user's own file. */
export const EMPTY_CONFIG = join(mkdtempSync(join(tmpdir(), 'rcbx-bench-config-')), 'config.toml');
writeFileSync(EMPTY_CONFIG, '');

export class BenchError extends Error {
  override name = 'BenchError';
}

export interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * The environment every measured command starts from: ours first on PATH, and nothing of the caller's
 * that would change what is measured (another wrapper, a target dir, our own settings, sccache's).
 */
export function baseEnv(extra: Env = {}): Env {
  const env: Env = { ...process.env, PATH: `${DIST}:${process.env.PATH ?? ''}`, CARGO_TERM_COLOR: 'never', CARGO_TERM_PROGRESS_WHEN: 'never' };
  for (const key of Object.keys(env)) {
    if (key.startsWith('RUSTCBUILDX_') || key.startsWith('SCCACHE_') || ['RUSTC_WRAPPER', 'RUSTC_WORKSPACE_WRAPPER', 'CARGO_TARGET_DIR', 'CARGO_INCREMENTAL', 'CARGO_BUILD_JOBS'].includes(key)) delete env[key];
  }
  return { ...env, RUSTCBUILDX_CONFIG: EMPTY_CONFIG, ...extra };
}

export async function capture(argv: readonly string[], opts: { cwd?: string; env?: Env } = {}): Promise<Captured> {
  let proc;
  try {
    proc = Bun.spawn([...argv], { cwd: opts.cwd, env: opts.env ?? baseEnv(), stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  } catch (err) {
    return { code: 127, stdout: '', stderr: (err as Error).message };
  }
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

/** Like `capture`, but a failure is fatal: for setup steps the benchmark cannot go on without. */
export async function must(argv: readonly string[], opts: { cwd?: string; env?: Env } = {}): Promise<string> {
  const res = await capture(argv, opts);
  if (res.code !== 0) throw new BenchError(`\`${argv.join(' ')}\` exited ${res.code}${opts.cwd ? ` in ${opts.cwd}` : ''}:\n${tail(res.stderr + res.stdout)}`);
  return res.stdout;
}

/**
 * Runs a measured command and returns its wall time in seconds. Its output is appended to `logFile`
 * (with a header naming the command), never kept in memory or shown: cargo's progress is noise here.
 */
export async function timed(argv: readonly string[], opts: { cwd: string; env: Env; logFile: string; label: string }): Promise<number> {
  mkdirSync(dirname(opts.logFile), { recursive: true });
  appendFileSync(opts.logFile, `\n=== ${new Date().toISOString()} ${opts.label}: (cd ${opts.cwd} && ${argv.join(' ')})\n`);
  const started = performance.now();
  const proc = Bun.spawn([...argv], { cwd: opts.cwd, env: opts.env, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const seconds = (performance.now() - started) / 1000;
  appendFileSync(opts.logFile, stdout + stderr + `=== exit ${code} in ${seconds.toFixed(2)} s\n`);
  if (code !== 0) throw new BenchError(`${opts.label}: \`${argv.join(' ')}\` exited ${code} (full output in ${opts.logFile}):\n${tail(stderr + stdout)}`);
  return seconds;
}

function tail(text: string, lines = 25): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
