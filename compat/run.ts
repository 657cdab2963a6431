/**
 * The compatibility harness: builds real projects (compat/projects.ts) with plain cargo and through
 * rustcbuildx, and reports per project whether both agree (exit code, test results), how each unit went
 * (built, cached, compiled here, fell back, and why) and the time ratio.
 *
 *   npm run compat -- [--label NAME] [--projects a,b] [--config FILE] [--dist DIR] [--work DIR] [--resume] [--report]
 *
 * --label names the result file (compat/results/NAME.json; default `latest`); docs/compatibility.md is
 * written from every result file there, so a `before` and an `after` run sit side by side.
 * --config FILE is the rustcbuildx user config the wrapper arm reads (otherwise an empty one: the
 * user's own never leaks in); its base image is built first. Each rustcbuildx arm is cold: a fresh target dir, memo and nonce.
 * --dist DIR runs the wrapper arm with another build's dist/ (another commit's `npm run build`), so an
 * older version is measured against plain cargo on the same machine, one run after the other.
 */
import { appendFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { baseEnv, BenchError, capture, must, ROOT, RUSTCBUILDX, type Env } from '../bench/lib/proc.ts';
import { fetchCrate } from '../bench/lib/projects.ts';
import { rcbxEnv } from '../bench/lib/tools.ts';
import { readRecords, STATE_DIR_NAME, type UnitRecord } from '../src/run-state.ts';
import { COMPAT_PROJECTS, type CompatProject } from './projects.ts';

/** What plain cargo needs on this machine to build every project (the system libraries they link). */
const HOST_PACKAGES = ['libssl-dev', 'libsqlite3-dev', 'zlib1g-dev', 'pkg-config'];

interface Options {
  label: string;
  projects: string[];
  config: string | undefined;
  /** the dist/ whose rustcbuildx and cargo-buildx the wrapper arm runs (default: this checkout's) */
  dist: string | undefined;
  work: string;
  /** keep the projects the label's result file has, and build only the others */
  resume: boolean;
  /** build nothing: write docs/compatibility.md from the result files */
  report: boolean;
}

interface ArmResult {
  code: number;
  seconds: number;
  /** summed over every `test result:` line */
  tests?: { passed: number; failed: number; ignored: number };
}

export interface ProjectOutcome {
  name: string;
  shape: string;
  command: string;
  plain: ArmResult;
  rcbx: ArmResult;
  sameOutcome: boolean;
  sameTests: boolean | undefined;
  units: number;
  built: number;
  cached: number;
  local: number;
  /** compiles the sandbox could not do that the local rustc did */
  fallback: number;
  /** compiles that failed in the sandbox and with the local rustc alike: the crate's own error */
  failedBoth: number;
  scripts: { sandbox: number; host: number };
  /** why units fell back or build scripts ran on the host, with how many units each */
  reasons: Array<{ what: string; reason: string; count: number }>;
  ratio: number;
}

export interface CompatResults {
  label: string;
  date: string;
  commit: string;
  config: string | undefined;
  /** the wrapper arm's `rustcbuildx --version` and dist dir, when --dist named another build */
  dist?: string;
  load1: [number, number];
  projects: ProjectOutcome[];
}

function parseOptions(argv: string[]): Options {
  const opts: Options = { label: 'latest', projects: COMPAT_PROJECTS.map((p) => p.name), config: undefined, dist: undefined, work: process.env.RCBX_COMPAT_WORK || '/tmp/rcbx-compat', resume: false, report: false };
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new BenchError(`${argv[i - 1]} needs a value`);
      return v;
    };
    const a = argv[i];
    if (a === '--label') opts.label = value();
    else if (a === '--projects') opts.projects = value().split(',').filter(Boolean);
    else if (a === '--config') opts.config = value();
    else if (a === '--dist') opts.dist = resolve(value());
    else if (a === '--work') opts.work = value();
    else if (a === '--resume') opts.resume = true;
    else if (a === '--report') opts.report = true;
    else throw new BenchError(`unknown option ${a}: use --label NAME, --projects a,b, --config FILE, --dist DIR, --work DIR, --resume, --report`);
  }
  const unknown = opts.projects.filter((n) => !COMPAT_PROJECTS.some((p) => p.name === n));
  if (unknown.length > 0) throw new BenchError(`no such compat project: ${unknown.join(', ')} (see compat/projects.ts)`);
  if (!/^[\w.-]+$/.test(opts.label)) throw new BenchError(`--label ${opts.label}: letters, digits, . _ - only`);
  return opts;
}

/** A fresh copy of the project's sources under `home/src`, its pinned Cargo.lock in place, every dependency downloaded. */
async function prepare(p: CompatProject, home: string): Promise<string> {
  const dir = join(home, 'src');
  rmSync(home, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const scratch = join(home, '..', '_fetch', p.name);
  if ('crate' in p.source) {
    cpSync(await fetchCrate(p.source.crate, p.source.version, scratch), dir, { recursive: true });
  } else {
    const members = p.source.workspace;
    for (const m of members) cpSync(await fetchCrate(m.crate, m.version, scratch), join(dir, m.crate), { recursive: true });
    // The members as path dependencies of each other, as in their own repository.
    writeFileSync(
      join(dir, 'Cargo.toml'),
      `[workspace]\nmembers = [${members.map((m) => `"${m.crate}"`).join(', ')}]\nresolver = "2"\n\n[patch.crates-io]\n` + members.map((m) => `${m.crate} = { path = "${m.crate}" }\n`).join(''),
    );
  }
  const pinned = join(ROOT, 'compat', 'locks', p.name, 'Cargo.lock');
  if (existsSync(pinned)) {
    cpSync(pinned, join(dir, 'Cargo.lock'));
    await must(['cargo', 'fetch', '--locked'], { cwd: dir, env: baseEnv() });
    return dir;
  }
  // First run of a new project: pin what cargo resolves today, to be committed. The package's own
  // Cargo.lock when it still resolves (a yanked version makes it fail), else a new one.
  const fetched = existsSync(join(dir, 'Cargo.lock')) ? await capture(['cargo', 'fetch', '--locked'], { cwd: dir, env: baseEnv() }) : undefined;
  if (fetched?.code !== 0) {
    await must(['cargo', 'generate-lockfile'], { cwd: dir, env: baseEnv() });
    await must(['cargo', 'fetch', '--locked'], { cwd: dir, env: baseEnv() });
  }
  mkdirSync(join(ROOT, 'compat', 'locks', p.name), { recursive: true });
  cpSync(join(dir, 'Cargo.lock'), pinned);
  return dir;
}

/** One cargo run, its output appended to the log; a failure is a result here, not an error. */
async function arm(argv: string[], cwd: string, env: Env, logFile: string, label: string): Promise<ArmResult> {
  appendFileSync(logFile, `\n=== ${new Date().toISOString()} ${label}: (cd ${cwd} && ${argv.join(' ')})\n`);
  const started = performance.now();
  const res = await capture(argv, { cwd, env });
  const seconds = (performance.now() - started) / 1000;
  appendFileSync(logFile, res.stdout + res.stderr + `=== exit ${res.code} in ${seconds.toFixed(2)} s\n`);
  const results = [...res.stdout.matchAll(/^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored/gm)];
  const tests = results.length > 0 ? results.reduce((t, m) => ({ passed: t.passed + Number(m[1]), failed: t.failed + Number(m[2]), ignored: t.ignored + Number(m[3]) }), { passed: 0, failed: 0, ignored: 0 }) : undefined;
  return { code: res.code, seconds: Math.round(seconds * 100) / 100, ...(tests ? { tests } : {}) };
}

/** The records of the latest run rustcbuildx kept in this target dir. */
function latestRecords(targetDir: string): UnitRecord[] {
  const runs = join(targetDir, STATE_DIR_NAME, 'runs');
  if (!existsSync(runs)) return [];
  const latest = readdirSync(runs)
    .filter((f) => f.endsWith('.jsonl'))
    .map((f) => ({ f, t: statSync(join(runs, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t)[0];
  return latest ? readRecords(join(runs, latest.f)) : [];
}

async function compatProject(p: CompatProject, opts: Options, config: string | undefined): Promise<ProjectOutcome> {
  const home = join(opts.work, p.name);
  const dir = await prepare(p, home);
  const logFile = join(home, 'log.txt');
  const cargoArgs = [p.command, '--locked', ...(p.args ?? [])];
  const plainTarget = join(home, 'target-plain');
  const rcbxTarget = join(home, 'target-rcbx');
  const plain = await arm(['cargo', ...cargoArgs], dir, baseEnv({ CARGO_TARGET_DIR: plainTarget }), logFile, 'plain');
  const env: Env = { ...rcbxEnv(rcbxTarget, { nonce: randomBytes(8).toString('hex'), memoDir: join(home, 'memo') }), ...(config ? { RUSTCBUILDX_CONFIG: config } : {}) };
  if (opts.dist) env.PATH = `${opts.dist}:${env.PATH ?? ''}`;
  const rcbx = await arm(['cargo', 'buildx', ...cargoArgs], dir, env, logFile, 'rustcbuildx');
  const records = latestRecords(rcbxTarget);
  // Both target dirs, the memo and the sources go (a run of every project would fill a small disk); the log stays.
  for (const path of [plainTarget, rcbxTarget, join(home, 'memo'), dir]) rmSync(path, { recursive: true, force: true });
  const compiles = records.filter((r) => r.kind === undefined);
  const runs = records.filter((r) => r.kind === 'build-script');
  const why = new Map<string, { what: string; reason: string; count: number }>();
  for (const r of records) {
    const here = r.kind === 'build-script' ? r.outcome === 'fallback' || r.outcome === 'local' : r.outcome === 'fallback' && r.code === 0;
    if (!here) continue;
    const what = r.kind === 'build-script' ? 'build script on the host' : 'fallback';
    const reason = (r.reason ?? '(no reason recorded)').split('\n')[0]!.slice(0, 400);
    const key = `${what}\0${reason}`;
    const seen = why.get(key) ?? { what, reason: `${r.crate}: ${reason}`, count: 0 };
    seen.count++;
    why.set(key, seen);
  }
  const sameTests = plain.tests || rcbx.tests ? JSON.stringify(plain.tests) === JSON.stringify(rcbx.tests) : undefined;
  return {
    name: p.name,
    shape: p.shape,
    command: `cargo ${cargoArgs.join(' ')}`,
    plain,
    rcbx,
    sameOutcome: (plain.code === 0) === (rcbx.code === 0),
    sameTests,
    units: compiles.length,
    built: compiles.filter((r) => r.outcome === 'built').length,
    cached: compiles.filter((r) => r.outcome === 'cached').length,
    local: compiles.filter((r) => r.outcome === 'local').length,
    fallback: compiles.filter((r) => r.outcome === 'fallback' && r.code === 0).length,
    failedBoth: compiles.filter((r) => r.outcome === 'fallback' && r.code !== 0).length,
    scripts: { sandbox: runs.filter((r) => r.outcome === 'built' || r.outcome === 'cached').length, host: runs.filter((r) => r.outcome === 'fallback' || r.outcome === 'local').length },
    reasons: [...why.values()].sort((a, b) => b.count - a.count),
    ratio: Math.round((rcbx.seconds / plain.seconds) * 100) / 100,
  };
}

function fallbackRate(r: CompatResults): { units: number; fallback: number; scripts: number; scriptsHost: number } {
  const sum = (f: (p: ProjectOutcome) => number) => r.projects.reduce((s, p) => s + f(p), 0);
  return { units: sum((p) => p.units), fallback: sum((p) => p.fallback), scripts: sum((p) => p.scripts.sandbox + p.scripts.host), scriptsHost: sum((p) => p.scripts.host) };
}

function pct(n: number, of: number): string {
  return of === 0 ? '–' : `${((100 * n) / of).toFixed(1)} %`;
}

function configText(file: string | undefined): string | undefined {
  if (!file) return undefined;
  const lines = readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  return lines.join(' ');
}

/** docs/compatibility.md from every result file: the rates of each, then the newest run's table. */
export function markdown(all: CompatResults[]): string {
  const sorted = [...all].sort((a, b) => a.date.localeCompare(b.date));
  const lines = [
    '# Compatibility',
    '',
    'Written by `npm run compat` (compat/run.ts): real projects from crates.io (compat/projects.ts, pinned by',
    'compat/locks/), each built with plain cargo and, cold (a fresh target dir, memo and nonce), through',
    '`cargo buildx`. BuildKit\'s cache is shared between projects, so a crate an earlier project built may come',
    'from it. "Fallback" is a compile that went to the local rustc because the sandbox could not do it (one',
    "that failed with the local rustc too is the crate's own error, and not counted);",
    '"scripts on host" are build scripts that ran here instead of in the sandbox.',
    '',
    '## Fallback rate per run',
    '',
    '| run | date | commit | config | projects | same outcome | units | fell back | scripts on host | median time ratio |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of sorted) {
    const rate = fallbackRate(r);
    const ratios = r.projects.map((p) => p.ratio).sort((a, b) => a - b);
    const median = ratios.length ? ratios[Math.floor(ratios.length / 2)]! : 0;
    lines.push(
      `| ${r.label} | ${r.date.slice(0, 16)} | ${r.commit} | ${r.config ?? 'none'} | ${r.projects.length} | ${r.projects.filter((p) => p.sameOutcome && p.sameTests !== false).length}/${r.projects.length} | ${rate.units} | ${rate.fallback} (${pct(rate.fallback, rate.units)}) | ${rate.scriptsHost} of ${rate.scripts} | ${median.toFixed(2)}× |`,
    );
  }
  const tests = (a: ArmResult) => (a.tests ? `${a.tests.passed}✓ ${a.tests.failed}✗` : '–');
  for (const r of sorted) {
    lines.push('', `## Run \`${r.label}\` (${r.date.slice(0, 16)}, ${r.commit}${r.dist ? `, wrapper ${r.dist}` : ''}, 1-minute load ${r.load1[0]} → ${r.load1[1]})`, '');
    lines.push('| project | shape | command | outcome plain / ours | tests plain / ours | units | built | cached | fell back | scripts sandbox / host | time plain → ours | ratio |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const p of r.projects) {
      const same = p.sameOutcome && p.sameTests !== false ? '' : ' **differs**';
      lines.push(
        `| ${p.name} | ${p.shape} | \`${p.command}\` | ${p.plain.code} / ${p.rcbx.code}${same} | ${tests(p.plain)} / ${tests(p.rcbx)} | ${p.units} | ${p.built} | ${p.cached} | ${p.fallback} | ${p.scripts.sandbox} / ${p.scripts.host} | ${p.plain.seconds.toFixed(1)} s → ${p.rcbx.seconds.toFixed(1)} s | ${p.ratio.toFixed(2)}× |`,
      );
    }
    const reasons = r.projects.flatMap((p) => p.reasons.map((x) => `- ${p.name}, ${x.what} (${x.count}): ${x.reason.replaceAll('|', '\\|')}`));
    lines.push('', 'Why units left the sandbox:', '', ...(reasons.length ? reasons : ['- none']));
  }
  return lines.join('\n') + '\n';
}

/** docs/compatibility.md from every result file in compat/results, and compat/notes.md below. */
function writeReport(): void {
  const resultsDir = join(ROOT, 'compat', 'results');
  const all = readdirSync(resultsDir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as CompatResults);
  const notes = join(ROOT, 'compat', 'notes.md');
  writeFileSync(join(ROOT, 'docs', 'compatibility.md'), markdown(all) + (existsSync(notes) ? `\n${readFileSync(notes, 'utf8')}` : ''));
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (opts.report) {
    writeReport();
    return 0;
  }
  if (!existsSync(RUSTCBUILDX)) throw new BenchError(`${RUSTCBUILDX} is missing: run npm run build`);
  if (opts.dist && !existsSync(join(opts.dist, 'cargo-buildx'))) throw new BenchError(`--dist ${opts.dist}: no cargo-buildx there (run npm run build in that checkout)`);
  const dist = opts.dist ? `${(await must([join(opts.dist, 'rustcbuildx'), '--version'])).trim()} (${opts.dist})` : undefined;
  // Plain cargo links the system libraries the projects ask for: this machine needs their -dev packages.
  const hostMissing = [];
  for (const p of HOST_PACKAGES) if ((await capture(['dpkg-query', '-W', '-f=${Status}', p])).stdout !== 'install ok installed') hostMissing.push(p);
  if (hostMissing.length > 0) {
    const install = ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...hostMissing];
    if ((await capture(install)).code !== 0) {
      await must(['apt-get', 'update', '-qq']);
      await must(install);
    }
  }
  mkdirSync(opts.work, { recursive: true });
  // The wrapper arm reads only the config given here (baseEnv's empty one otherwise), never the user's own.
  const config = opts.config ? resolve(opts.config) : undefined;
  if (config) {
    // The image the config's extras name, made before anything is measured.
    process.stderr.write(`compat: rustcbuildx base build with ${config}\n`);
    await must([opts.dist ? join(opts.dist, 'rustcbuildx') : RUSTCBUILDX, 'base', 'build'], { env: baseEnv({ RUSTCBUILDX_CONFIG: config }) });
  }
  const commit = (await capture(['git', 'rev-parse', '--short', 'HEAD'], { cwd: ROOT })).stdout.trim();
  const before = loadavg()[0]!;
  const resultsDir = join(ROOT, 'compat', 'results');
  const resultFile = join(resultsDir, `${opts.label}.json`);
  const earlier = opts.resume && existsSync(resultFile) ? (JSON.parse(readFileSync(resultFile, 'utf8')) as CompatResults) : undefined;
  // Resumed: what the file has stays (other projects too); the projects named and missing are built.
  const projects: ProjectOutcome[] = earlier ? [...earlier.projects] : [];
  for (const name of opts.projects) {
    if (projects.some((p) => p.name === name)) continue;
    const p = COMPAT_PROJECTS.find((x) => x.name === name)!;
    process.stderr.write(`compat: ${p.name} (${p.shape})\n`);
    const outcome = await compatProject(p, opts, config);
    process.stderr.write(`compat: ${p.name}: plain ${outcome.plain.code} in ${outcome.plain.seconds} s, ours ${outcome.rcbx.code} in ${outcome.rcbx.seconds} s; ${outcome.units} units, ${outcome.fallback} fell back, ${outcome.scripts.host} scripts on the host\n`);
    projects.push(outcome);
    // Written after each project, so an interrupted run can --resume.
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(resultFile, JSON.stringify({ label: opts.label, date: new Date().toISOString(), commit, config: configText(config), ...(dist ? { dist } : {}), load1: [Math.round(before * 10) / 10, Math.round(loadavg()[0]! * 10) / 10], projects }, null, 2) + '\n');
  }
  writeReport();
  const bad = projects.filter((p) => !p.sameOutcome || p.sameTests === false);
  process.stderr.write(`compat: ${projects.length - bad.length}/${projects.length} projects agree with plain cargo; docs/compatibility.md written\n`);
  return bad.length > 0 ? 1 : 0;
}

if (import.meta.main) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`compat: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(2);
    },
  );
}
