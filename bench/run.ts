/**
 * The benchmark: plain cargo, rustcbuildx and sccache on real projects, scenario by scenario.
 *
 *   npm run bench          full run: every project, 5 iterations, sccache (installed once if missing);
 *                          writes bench/results/latest.{json,md,svg} and a dated copy of the json.
 *   npm run bench:smoke    one iteration on the smallest project, no sccache; writes bench/results/smoke.*
 *                          so it never overwrites a real run. CI runs it so the harness cannot rot.
 *
 * Options: --iterations N, --projects a,b, --no-sccache, --no-profile, --work DIR (or RCBX_BENCH_WORK),
 * --no-remote (skip remote-cold, remote-warm and the remote engine floor; the smoke run skips them unless
 * given --remote), --latency-ms N (added each way on the path to the remote engine, default 20).
 * The remote scenarios need root (scripts/remote-engine.sh); without it they are skipped with a note.
 * Run the full benchmark on a quiet machine: every figure is wall time.
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, homedir } from 'node:os';
import { join } from 'node:path';
import { BenchError, capture, ROOT, RUSTCBUILDX } from './lib/proc.ts';
import { PROJECTS, prepareProject } from './lib/projects.ts';
import { benchProject } from './lib/scenarios.ts';
import { findOrInstallSccache, type Sccache } from './lib/sccache.ts';
import { startRemote, stopRemote, type RemoteEngine } from './lib/remote.ts';
import { startTeam, stopTeam, type TeamStore } from './lib/team.ts';
import { load1, machineInfo, toolVersions } from './lib/machine.ts';
import { checkTargets } from './lib/targets.ts';
import { markdownReport, scenarioTable } from './lib/report.ts';
import { ratioChart } from './lib/chart.ts';
import type { BenchResults, ProjectResult } from './lib/types.ts';

interface Options {
  smoke: boolean;
  iterations: number;
  projects: string[];
  sccache: boolean;
  profile: boolean;
  remote: boolean;
  latencyMs: number;
  work: string;
}

const CACHE = join(homedir(), '.cache', 'rustcbuildx-bench');

function parseArgs(argv: string[]): Options {
  const smoke = argv.includes('--smoke');
  const opts: Options = {
    smoke,
    iterations: smoke ? 1 : 5,
    projects: smoke ? ['demo'] : PROJECTS.map((p) => p.name),
    sccache: !smoke,
    profile: true,
    remote: !smoke,
    latencyMs: 20,
    work: process.env.RCBX_BENCH_WORK || join(CACHE, smoke ? 'smoke' : 'work'),
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new BenchError(`${arg} needs a value`);
      return v;
    };
    if (arg === '--smoke') continue;
    else if (arg === '--iterations') opts.iterations = Number.parseInt(value(), 10);
    else if (arg === '--projects') opts.projects = value().split(',').filter(Boolean);
    else if (arg === '--no-sccache') opts.sccache = false;
    else if (arg === '--no-profile') opts.profile = false;
    else if (arg === '--no-remote') opts.remote = false;
    else if (arg === '--remote') opts.remote = true;
    else if (arg === '--latency-ms') opts.latencyMs = Number(value());
    else if (arg === '--work') opts.work = value();
    else throw new BenchError(`unknown option ${arg} (see the top of bench/run.ts)`);
  }
  if (!(opts.iterations >= 1)) throw new BenchError('--iterations must be at least 1');
  if (!Number.isInteger(opts.latencyMs) || opts.latencyMs < 0) throw new BenchError('--latency-ms must be a whole number ≥ 0');
  const unknown = opts.projects.filter((n) => !PROJECTS.some((p) => p.name === n));
  if (unknown.length > 0) throw new BenchError(`unknown project(s) ${unknown.join(', ')}; known: ${PROJECTS.map((p) => p.name).join(', ')}`);
  return opts;
}

const t0 = performance.now();
function say(line: string): void {
  process.stderr.write(`bench [${Math.round((performance.now() - t0) / 1000)} s] ${line}\n`);
}

/** Fails early, with the command that fixes it, rather than after the first project's plain builds. */
async function preflight(): Promise<void> {
  if (!existsSync(RUSTCBUILDX)) throw new BenchError(`${RUSTCBUILDX} is missing: run \`npm run build\` (or \`npm run setup\`)`);
  const base = await capture([RUSTCBUILDX, 'base', 'show']);
  if (base.code !== 0) throw new BenchError(`rustcbuildx has no engine or base image here:\n${base.stderr.trim()}\nrun \`npm run setup\``);
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const loadStart = load1();
  await preflight();
  mkdirSync(opts.work, { recursive: true });
  const notes: string[] = [];
  if (opts.smoke) notes.push('smoke run: one iteration on the smallest project, to keep the harness working; not figures to draw conclusions from');
  if (loadStart > 0.5 * cpus().length) notes.push(`the machine was busy when the run started (1-min load ${loadStart} on ${cpus().length} cores): all figures are slower and noisier than on a quiet machine`);

  let sccache: Sccache | undefined;
  if (opts.sccache) {
    const found = await findOrInstallSccache(join(CACHE, 'sccache'), true, join(opts.work, 'sccache-install.log'), say);
    if ('skipped' in found) notes.push(`sccache scenarios skipped: ${found.skipped}`);
    else sccache = found;
  } else {
    notes.push(opts.smoke ? 'sccache scenarios skipped: the smoke run does not install or run sccache (a full `npm run bench` does)' : 'sccache scenarios skipped: --no-sccache');
  }
  let remote: RemoteEngine | undefined;
  if (opts.remote) {
    const found = await startRemote(opts.latencyMs, join(opts.work, 'remote-base-build.log'), say);
    if ('skipped' in found) notes.push(`remote scenarios skipped: ${found.skipped}`);
    else {
      remote = found;
      notes.push(`remote-cold and remote-warm: a second docker engine (scripts/remote-engine.sh) over DOCKER_HOST=${remote.dockerHost}, ${remote.latencyMs} ms added each way by bench/lib/delay-relay.ts; compared with plain local cold`);
    }
  } else {
    notes.push(opts.smoke ? 'remote scenarios skipped: the smoke run leaves out the remote engine to stay fast (add --remote to include it)' : 'remote scenarios skipped: --no-remote');
  }
  let team: TeamStore | undefined;
  if (remote) {
    const found = await startTeam(remote, opts.work, say);
    if ('skipped' in found) notes.push(`team-warm skipped: ${found.skipped}`);
    else {
      team = found;
      notes.push(
        `team-warm: a first machine (this one, local engine) builds cold and pushes to a registry (Debian's docker-registry on loopback); a second (the remote engine, its build cache pruned, the base image pulled from the registry, an empty memo, a fresh clone with its own CARGO_HOME) reads it through a relay adding ${remote.latencyMs} ms each way; its nonce is in RUSTFLAGS (a variable passed to the sandbox keeps units private); compared with plain local cold`,
      );
    }
  }
  for (const note of notes) say(`note: ${note}`);

  const projects: ProjectResult[] = [];
  try {
    for (const name of opts.projects) {
      const def = PROJECTS.find((p) => p.name === name);
      if (!def) continue;
      say(`${name}: preparing a fresh copy in ${join(opts.work, name)}`);
      const prepared = await prepareProject(def, opts.work);
      const floorCacheDir = join(CACHE, 'engine-floor-cache');
      projects.push(await benchProject(prepared, { iterations: opts.iterations, sccache, probeRuns: opts.smoke ? 21 : 101, profile: opts.profile, strict: opts.smoke, remote, team, floorCacheDir, say }));
    }
  } finally {
    if (team) await stopTeam(team);
    // Only an engine this run started is stopped: one already running belongs to someone else.
    if (remote?.stopAtEnd) {
      say('remote engine: stopping it (scripts/remote-engine.sh stop)');
      await stopRemote(remote);
    }
  }

  const date = new Date().toISOString();
  const results: BenchResults = {
    schema: 1,
    kind: opts.smoke ? 'smoke' : 'full',
    date,
    command: `bun bench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
    iterations: opts.iterations,
    duration_s: Math.round((performance.now() - t0) / 1000),
    machine: machineInfo(loadStart),
    tools: { ...(await toolVersions()), sccache: sccache?.version ?? null },
    notes,
    projects,
    targets: checkTargets(projects),
  };
  write(results, opts.smoke ? 'smoke' : 'latest');
  for (const p of projects) process.stdout.write(`\n${p.name} (${p.units} units):\n${scenarioTable(p)}\n`);
}

/** Results, report and chart side by side; a full run also keeps a dated copy of its json. */
function write(results: BenchResults, stem: string): void {
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const json = join(dir, `${stem}.json`);
  writeFileSync(json, JSON.stringify(results, null, 2) + '\n');
  writeFileSync(join(dir, `${stem}.svg`), ratioChart(results));
  writeFileSync(join(dir, `${stem}.md`), markdownReport(results, `${stem}.svg`));
  if (results.kind === 'full') copyFileSync(json, join(dir, `${results.date.slice(0, 16).replace(/:/g, '')}.json`));
  say(`wrote ${json} (+ .md, .svg)`);
}

try {
  await main();
} catch (err) {
  if (!(err instanceof BenchError)) throw err;
  say(`error: ${err.message}`);
  process.exit(1);
}
