/**
 * One project's measurements. Each iteration runs every scenario once, plain cargo and rustcbuildx
 * back to back (their order swapped every other iteration, so neither always gets the warmer page
 * cache), and each scenario's figure is the median over iterations.
 */
import { appendFileSync, cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { PreparedProject } from './projects.ts';
import { baseEnv, BenchError, capture, timed } from './proc.ts';
import { cargoClean, plainBuild, rcbxBuild, targetIn, verifyProject, type BuildContext, type RcbxRun, type RcbxSettings } from './tools.ts';
import { restartServer, sccacheEnv, stopServer, type Sccache } from './sccache.ts';
import { breakdownOfRun } from './breakdown.ts';
import { engineFloor } from './floor.ts';
import { pruneRemote, type RemoteEngine } from './remote.ts';
import type { TeamStore } from './team.ts';
import { median, ratio, round } from './stats.ts';
import type { Breakdown, ProjectResult, RunCounts, ScenarioName, ScenarioResult, Tool } from './types.ts';

export interface ProjectOptions {
  iterations: number;
  sccache: Sccache | undefined;
  /** spawns per command for the probe scenario (bench/startup.ts) */
  probeRuns: number;
  /** one more cold and warm rustcbuildx run with RUSTCBUILDX_LOG=debug, for the breakdown */
  profile: boolean;
  /** a cold run that was not cold (or warm not warm) is an error, not a note */
  strict: boolean;
  /** the remote engine of remote-cold and remote-warm; those scenarios are skipped without one */
  remote: RemoteEngine | undefined;
  /** the registry team-warm shares through (bench/lib/team.ts); skipped without it */
  team: TeamStore | undefined;
  /** RUSTCBUILDX_CACHE_DIR for the engine floor's rustcbuildx arms (a broker it starts may outlive the project) */
  floorCacheDir: string;
  say: (line: string) => void;
}

type Key = `${ScenarioName}/${Tool}`;

class Samples {
  readonly seconds = new Map<Key, number[]>();
  readonly counts = new Map<Key, RunCounts[]>();

  add(scenario: ScenarioName, tool: Tool, seconds: number, counts?: RunCounts): void {
    const key: Key = `${scenario}/${tool}`;
    this.seconds.set(key, [...(this.seconds.get(key) ?? []), seconds]);
    if (counts) this.counts.set(key, [...(this.counts.get(key) ?? []), counts]);
  }

  median(scenario: ScenarioName, tool: Tool): number | undefined {
    const values = this.seconds.get(`${scenario}/${tool}`);
    return values ? median(values) : undefined;
  }
}

export async function benchProject(p: PreparedProject, opts: ProjectOptions): Promise<ProjectResult> {
  const ctx: BuildContext = { dir: p.dir, logFile: join(p.home, 'bench.log') };
  const samples = new Samples();
  const notes = new Set<string>();
  // A broken harness (a cold run that was not cold, a noop that compiled) fails a strict run. A warm run
  // that was partly rebuilt only leaves a note: it depends on BuildKit keeping its cache, which other
  // builds on a shared machine can evict, and it is a finding about the product, not the harness.
  const expect = (ok: boolean, message: string, harnessBug = true) => {
    if (ok) return;
    if (opts.strict && harnessBug) throw new BenchError(`${p.def.name}: ${message}`);
    notes.add(message);
    opts.say(`note: ${message}`);
  };
  const plainTarget = targetIn(p.home, 'plain');
  const rcbxTarget = targetIn(p.home, 'rcbx');
  const memoDir = join(p.home, 'memo');
  let units = 0;
  /** the last iteration's nonce: the remote builder holds its units, for the profiled remote-warm run */
  let lastNonce = '';

  for (let i = 0; i < opts.iterations; i++) {
    const say = (what: string) => opts.say(`${p.def.name} ${i + 1}/${opts.iterations}: ${what}`);
    // Every iteration starts from the pristine sources and a nonce no BuildKit cache has seen.
    writeFileSync(p.leafPath, p.leafOriginal);
    const nonce = randomBytes(8).toString('hex');
    lastNonce = nonce;
    const pair = async (scenario: ScenarioName, plain: () => Promise<void>, rcbx: () => Promise<void>) => {
      say(scenario);
      for (const step of i % 2 === 0 ? [plain, rcbx] : [rcbx, plain]) await step();
    };
    const rcbx = async (scenario: ScenarioName, dir: string, target: string, how: Omit<RcbxSettings, 'nonce' | 'memoDir'> & { memoDir?: string } = {}): Promise<RcbxRun> => {
      const run = await rcbxBuild({ ...ctx, dir }, target, { nonce, memoDir, ...how }, `rustcbuildx ${scenario}`);
      samples.add(scenario, 'rustcbuildx', run.seconds, run.counts);
      return run;
    };

    await pair(
      'cold',
      async () => {
        rmSync(plainTarget, { recursive: true, force: true });
        samples.add('cold', 'plain', await plainBuild(ctx, plainTarget, 'plain cold'));
      },
      async () => {
        rmSync(rcbxTarget, { recursive: true, force: true });
        const { counts } = await rcbx('cold', p.dir, rcbxTarget);
        units = Math.max(units, counts.units);
        expect(counts.built + counts.fallback === counts.units && counts.built > 0, `cold was not cold: ${JSON.stringify(counts)} (the nonce did not change the units' cache keys?)`);
        if (counts.fallback > 0) notes.add(`cold: ${counts.fallback} of ${counts.units} units fell back to the local rustc (see ${rcbxTarget}/.rustcbuildx)`);
      },
    );
    await pair(
      'noop',
      async () => samples.add('noop', 'plain', await plainBuild(ctx, plainTarget, 'plain noop')),
      async () => {
        const { counts } = await rcbx('noop', p.dir, rcbxTarget);
        expect(counts.units === 0, `noop compiled ${counts.units} unit(s)`);
      },
    );
    // The same through plain `cargo build` with cargo's config naming the wrapper (`rustcbuildx enable`).
    const noopEnabled = await rcbx('noop-enabled', p.dir, rcbxTarget, { enabled: true });
    expect(noopEnabled.counts.units === 0, `noop-enabled compiled ${noopEnabled.counts.units} unit(s)`);
    // One line in the leaf crate: only it (and nothing depending on it) must be compiled again. The
    // first edit after a build from the cache finds no incremental state of cargo's (the sandbox kept
    // its own): compiled here, it starts one; plain cargo's cold build left it one. Measured on its
    // own (against plain's edit), then the edit loop as it goes on.
    const editOnce = async (scenario: ScenarioName, how: Omit<RcbxSettings, 'nonce' | 'memoDir'>) => {
      say(scenario);
      const before = readFileSync(p.leafPath, 'utf8');
      appendFileSync(p.leafPath, `${p.leafOriginal.endsWith('\n') ? '' : '\n'}const _RCBX_BENCH_${scenario.replace('-', '_').toUpperCase()}: u32 = ${i + 1};\n`);
      const { counts } = await rcbx(scenario, p.dir, rcbxTarget, how);
      expect(counts.units >= 1 && counts.cached === 0, `${scenario}: expected only the edited crate to compile, got ${JSON.stringify(counts)}`);
      return () => writeFileSync(p.leafPath, before);
    };
    await editOnce('edit-first', {});
    appendFileSync(p.leafPath, `const _RCBX_BENCH_EDIT: u32 = ${i + 1};\n`);
    await pair(
      'edit',
      async () => samples.add('edit', 'plain', await plainBuild(ctx, plainTarget, 'plain edit')),
      async () => {
        const { counts } = await rcbx('edit', p.dir, rcbxTarget);
        expect(counts.units >= 1 && counts.cached === 0, `edit: expected only the edited crate to compile, got ${JSON.stringify(counts)}`);
      },
    );
    // Each a new edit of the same kind (ratios against plain's edit): through plain `cargo build`
    // (enabled), and compiled incrementally in the engine although it runs here (what a remote builder does).
    await editOnce('edit-enabled', { enabled: true });
    await editOnce('edit-sandbox', { incremental: 'sandbox' });
    // "Before" in this run: the edit compiled in the engine from scratch, as before issue 11. Last, since
    // cargo's flag change also makes it compile the workspace's other members again (workspace-c: 3).
    const undoBefore = await editOnce('edit-before', { incremental: 'sandbox', noIncremental: true });
    // Its state was compiled without incremental only: back to edit-sandbox's, which the memo holds, for warm.
    undoBefore();

    say('warm');
    await cargoClean(ctx, rcbxTarget);
    const warm = await rcbx('warm', p.dir, rcbxTarget);
    expect(warm.counts.cached + warm.counts.fallback === warm.counts.units, `warm was not all cache hits: ${JSON.stringify(warm.counts)}`, false);

    say('warm-engine');
    // The same with the local memo off: what every unit costs when it has to ask BuildKit.
    await cargoClean(ctx, rcbxTarget);
    const warmEngine = await rcbx('warm-engine', p.dir, rcbxTarget, { engineOnly: true });
    expect(warmEngine.counts.cached + warmEngine.counts.fallback === warmEngine.counts.units, `warm-engine was not all BuildKit cache hits: ${JSON.stringify(warmEngine.counts)}`, false);

    say('warm-engine-cli');
    // The same through the docker CLI per unit (no broker): the figure before the broker, in this run.
    // The CLI builds the Dockerfile, whose cache entries are not those of the broker's LLB: a CLI build
    // fills them first (not measured).
    await cargoClean(ctx, rcbxTarget);
    await rcbxBuild(ctx, rcbxTarget, { nonce, memoDir, engineOnly: true, cliOnly: true }, 'rustcbuildx CLI fill (not measured)');
    await cargoClean(ctx, rcbxTarget);
    const warmEngineCli = await rcbx('warm-engine-cli', p.dir, rcbxTarget, { engineOnly: true, cliOnly: true });
    expect(warmEngineCli.counts.cached + warmEngineCli.counts.fallback === warmEngineCli.counts.units, `warm-engine-cli was not all BuildKit cache hits: ${JSON.stringify(warmEngineCli.counts)}`, false);

    say('second-checkout');
    // The same tree at another path with its own target dir: path independence makes it all cache hits.
    const checkout = join(p.home, 'checkout2');
    const checkoutTarget = targetIn(p.home, 'checkout2');
    rmSync(checkout, { recursive: true, force: true });
    rmSync(checkoutTarget, { recursive: true, force: true });
    cpSync(p.dir, checkout, { recursive: true });
    const second = await rcbx('second-checkout', checkout, checkoutTarget);
    expect(second.counts.cached + second.counts.fallback === second.counts.units, `second-checkout was not all cache hits: ${JSON.stringify(second.counts)}`, false);

    if (opts.remote) {
      const engine = opts.remote;
      // Both with an empty memo (so every unit asks the remote engine) and an empty target dir.
      const remoteMemo = join(p.home, 'memo-remote');
      say(`remote-cold (${engine.dockerHost}, ${engine.latencyMs} ms each way)`);
      const pruned = await pruneRemote(engine);
      if (pruned) throw new BenchError(`${p.def.name}: ${pruned}`);
      const remoteTarget = targetIn(p.home, 'remote');
      rmSync(remoteTarget, { recursive: true, force: true });
      rmSync(remoteMemo, { recursive: true, force: true });
      const remoteCold = await rcbx('remote-cold', p.dir, remoteTarget, { remote: engine, memoDir: remoteMemo });
      expect(remoteCold.counts.built + remoteCold.counts.fallback === remoteCold.counts.units && remoteCold.counts.built > 0, `remote-cold was not cold: ${JSON.stringify(remoteCold.counts)}`);
      if (remoteCold.counts.fallback > 0) notes.add(`remote-cold: ${remoteCold.counts.fallback} of ${remoteCold.counts.units} units fell back to the local rustc (see ${remoteTarget}/.rustcbuildx)`);

      say('remote-warm');
      // A fresh clone elsewhere, against the builder remote-cold just filled: nothing local helps it.
      const clone = join(p.home, 'checkout-remote');
      const cloneTarget = targetIn(p.home, 'checkout-remote');
      for (const d of [clone, cloneTarget, remoteMemo]) rmSync(d, { recursive: true, force: true });
      cpSync(p.dir, clone, { recursive: true });
      const remoteWarm = await rcbx('remote-warm', clone, cloneTarget, { remote: engine, memoDir: remoteMemo });
      expect(remoteWarm.counts.cached + remoteWarm.counts.fallback === remoteWarm.counts.units, `remote-warm was not all cache hits on the remote builder: ${JSON.stringify(remoteWarm.counts)}`, false);
      if (remoteWarm.counts.fallback > 0) notes.add(`remote-warm: ${remoteWarm.counts.fallback} of ${remoteWarm.counts.units} units fell back to the local rustc (see ${cloneTarget}/.rustcbuildx)`);

      say('edit-remote');
      // An edit of that clone on the remote builder: compiled incrementally in the engine (the default
      // for an engine elsewhere), its state in the builder's cache mount.
      appendFileSync(join(clone, relative(p.dir, p.leafPath)), `const _RCBX_BENCH_EDIT_REMOTE: u32 = ${i + 1};\n`);
      const editRemote = await rcbx('edit-remote', clone, cloneTarget, { remote: engine, memoDir: remoteMemo });
      expect(editRemote.counts.built >= 1 && editRemote.counts.cached === 0 && editRemote.counts.local === 0, `edit-remote: expected the edited crate built on the remote engine, got ${JSON.stringify(editRemote.counts)}`);

      if (opts.team) {
        say('team-warm');
        // The first machine: this one, cold, pushing every unit it may share (not measured). The nonce
        // goes in RUSTFLAGS: a variable the sandbox is given is the user's environment, and keeps units home.
        const team = opts.team;
        const firstTarget = targetIn(p.home, 'team-first');
        const firstMemo = join(p.home, 'memo-team-first');
        for (const d of [firstTarget, firstMemo]) rmSync(d, { recursive: true, force: true });
        await rcbxBuild(ctx, firstTarget, { nonce, memoDir: firstMemo, nonceInRustflags: true, store: team.pushTo }, 'rustcbuildx team-warm: the first machine, pushing (not measured)');
        // The second: the remote engine with its build cache emptied, a fresh clone elsewhere with its
        // own CARGO_HOME (filled by `cargo fetch`, not measured) and an empty memo, reading the store.
        const pruned = await pruneRemote(engine);
        if (pruned) throw new BenchError(`${p.def.name}: ${pruned}`);
        const teamClone = join(p.home, 'checkout-team');
        const teamHome = join(p.home, 'cargo-home-team');
        const teamTarget = targetIn(p.home, 'checkout-team');
        const teamMemo = join(p.home, 'memo-team');
        for (const d of [teamClone, teamHome, teamTarget, teamMemo]) rmSync(d, { recursive: true, force: true });
        cpSync(p.dir, teamClone, { recursive: true });
        await timed(['cargo', 'fetch', '--locked'], { cwd: teamClone, env: baseEnv({ CARGO_HOME: teamHome }), logFile: ctx.logFile, label: 'team-warm: cargo fetch into the second CARGO_HOME (not measured)' });
        const teamWarm = await rcbx('team-warm', teamClone, teamTarget, { remote: engine, memoDir: teamMemo, nonceInRustflags: true, store: team.readFrom, cargoHome: teamHome });
        const fromStore = teamWarm.counts.store ?? 0;
        expect(fromStore > 0, `team-warm: nothing came from the store: ${JSON.stringify(teamWarm.counts)}`);
        if (teamWarm.counts.fallback > 0) notes.add(`team-warm: ${teamWarm.counts.fallback} of ${teamWarm.counts.units} units fell back to the local rustc (see ${teamTarget}/.rustcbuildx)`);
      }

    }

    if (opts.sccache) {
      say('sccache cold, warm');
      await sccacheRuns(ctx, p.home, opts.sccache, samples);
    }
  }
  writeFileSync(p.leafPath, p.leafOriginal);

  opts.say(`${p.def.name}: probe (${opts.probeRuns} spawns each)`);
  const probe = await probeTimes(p.dir, opts.probeRuns);
  samples.add('probe', 'plain', probe.rustc_vV_ms / 1000);
  samples.add('probe', 'rustcbuildx', probe.probe_ms / 1000);
  notes.add(`probe: median of ${opts.probeRuns} spawns each; \`rustcbuildx --version\` alone takes ${probe.version_ms} ms (process start-up, paid once per rustc call)`);

  opts.say(`${p.def.name}: engine floor${opts.remote ? `, local and on ${opts.remote.dockerHost}` : ''}`);
  const { floor, notes: floorNotes } = await engineFloor(join(p.home, 'floor'), { runs: opts.probeRuns > 50 ? 21 : 7, remote: opts.remote, cacheDir: opts.floorCacheDir });
  for (const note of floorNotes) {
    notes.add(note);
    opts.say(`note: ${note}`);
  }

  // Every unit built again whatever the cache holds, compared with what the memo serves (the last
  // iteration's warm results): how many of this project's units are byte-reproducible in the sandbox.
  opts.say(`${p.def.name}: rustcbuildx verify (every unit again, compared with the memo)`);
  writeFileSync(p.leafPath, p.leafOriginal);
  const reproducible = await verifyProject(ctx, rcbxTarget, { nonce: lastNonce, memoDir });
  if ('error' in reproducible) notes.add(`verify: ${reproducible.error}`);
  else if (reproducible.differ.length > 0) notes.add(`verify: ${reproducible.differ.length} of ${reproducible.compared} units differ from what the memo served: ${reproducible.differ.join(', ')}`);

  const breakdown: Breakdown[] = [];
  if (opts.profile) {
    opts.say(`${p.def.name}: profiled cold, warm, warm-engine and edit-sandbox runs${opts.remote ? ', and remote-warm' : ''} (RUSTCBUILDX_LOG=debug, not in the medians)`);
    const edit = { apply: () => appendFileSync(p.leafPath, `const _RCBX_BENCH_PROFILED_EDIT: u32 = 0;\n`), undo: () => writeFileSync(p.leafPath, p.leafOriginal) };
    try {
      breakdown.push(...(await profile(ctx, targetIn(p.home, 'profile'), join(p.home, 'memo-profile'), edit, opts.remote && lastNonce ? { engine: opts.remote, nonce: lastNonce } : undefined)));
    } finally {
      edit.undo();
    }
  }
  // Target dirs, memos and the second checkout take gigabytes on a full run; the sources and the log of
  // every command stay. (On a failure everything stays, to look at.)
  for (const name of readdirSync(p.home)) if (name !== 'src' && name !== 'bench.log') rmSync(join(p.home, name), { recursive: true, force: true });
  return {
    name: p.def.name,
    description: p.def.description,
    units,
    scenarios: results(samples),
    breakdown,
    engine_floor: floor,
    ...('error' in reproducible ? {} : { reproducible }),
    notes: [...notes],
  };
}

/** sccache cold (empty cache dir, fresh server) then warm (`cargo clean`, cache full). */
async function sccacheRuns(ctx: BuildContext, home: string, s: Sccache, samples: Samples): Promise<void> {
  const target = targetIn(home, 'sccache');
  const cacheDir = join(home, 'sccache-cache');
  const env = sccacheEnv(s, cacheDir, target);
  rmSync(target, { recursive: true, force: true });
  rmSync(cacheDir, { recursive: true, force: true });
  try {
    await restartServer(s, env);
    samples.add('cold', 'sccache', await timed(['cargo', 'build', '--locked'], { cwd: ctx.dir, env, logFile: ctx.logFile, label: 'sccache cold' }));
    await cargoClean(ctx, target);
    samples.add('warm', 'sccache', await timed(['cargo', 'build', '--locked'], { cwd: ctx.dir, env, logFile: ctx.logFile, label: 'sccache warm' }));
  } finally {
    await stopServer(s, env);
  }
}

interface ProbeTimes {
  version_ms: number;
  probe_ms: number;
  rustc_vV_ms: number;
}

/** bench/startup.ts measures the probe path; it runs as a child so its top-level code stays its own. */
async function probeTimes(cwd: string, runs: number): Promise<ProbeTimes> {
  const script = resolve(import.meta.dir, '..', 'startup.ts');
  const res = await capture([process.execPath, script, String(runs)], { cwd });
  const line = res.stdout.trim().split('\n').at(-1) ?? '';
  if (res.code !== 0 || !line.startsWith('{')) throw new BenchError(`bench/startup.ts failed (exit ${res.code}): ${res.stderr.trim()}`);
  return JSON.parse(line) as ProbeTimes;
}

/**
 * Cold, warm and warm-engine runs with the debug log on, each read back into per-bucket figures before
 * the next one's `cargo clean` removes its state; then an edit of the leaf compiled in the engine
 * (edit-sandbox: where a sandboxed edit's time goes). With a remote engine, also remote-warm: the last
 * iteration's units (its nonce), which the remote builder holds, from an empty target dir and memo.
 */
async function profile(ctx: BuildContext, target: string, memoDir: string, edit: { apply: () => void; undo: () => void }, remote?: { engine: RemoteEngine; nonce: string }): Promise<Breakdown[]> {
  const nonce = randomBytes(8).toString('hex');
  rmSync(target, { recursive: true, force: true });
  const out: Breakdown[] = [];
  for (const scenario of ['cold', 'warm', 'warm-engine'] as const) {
    if (scenario !== 'cold') await cargoClean(ctx, target);
    const run = await rcbxBuild(ctx, target, { nonce, memoDir, engineOnly: scenario === 'warm-engine', debugLog: true }, `profiled ${scenario}`);
    out.push(breakdownOfRun(target, run.runId ?? '', scenario, run.seconds));
  }
  edit.apply();
  const edited = await rcbxBuild(ctx, target, { nonce, memoDir, incremental: 'sandbox', debugLog: true }, 'profiled edit-sandbox');
  out.push(breakdownOfRun(target, edited.runId ?? '', 'edit-sandbox', edited.seconds));
  // remote-warm's units are the last iteration's sources, which the remote builder holds
  edit.undo();
  if (remote) {
    for (const d of [target, memoDir]) rmSync(d, { recursive: true, force: true });
    const run = await rcbxBuild(ctx, target, { nonce: remote.nonce, memoDir, remote: remote.engine, debugLog: true }, 'profiled remote-warm');
    out.push(breakdownOfRun(target, run.runId ?? '', 'remote-warm', run.seconds));
  }
  return out;
}

const ORDER: ScenarioName[] = ['cold', 'warm', 'warm-engine', 'warm-engine-cli', 'noop', 'noop-enabled', 'edit-first', 'edit', 'edit-enabled', 'edit-sandbox', 'edit-before', 'second-checkout', 'remote-cold', 'remote-warm', 'edit-remote', 'team-warm', 'probe'];
const TOOLS: Tool[] = ['plain', 'rustcbuildx', 'sccache'];

/** What each tool's median is divided by: a noop or edit variant by plain's noop or edit; warm and remote results have no plain counterpart, so plain (local) cold. */
function baselineOf(scenario: ScenarioName): ScenarioName {
  if (scenario === 'probe') return 'probe';
  if (scenario.startsWith('noop')) return 'noop';
  if (scenario.startsWith('edit')) return 'edit';
  return 'cold';
}

function results(samples: Samples): ScenarioResult[] {
  const out: ScenarioResult[] = [];
  for (const name of ORDER) {
    for (const tool of TOOLS) {
      const runs = samples.seconds.get(`${name}/${tool}`);
      if (!runs) continue;
      const base = baselineOf(name);
      const med = median(runs);
      const counts = samples.counts.get(`${name}/${tool}`);
      out.push({
        name,
        tool,
        median_s: round(med, 3),
        runs_s: runs.map((r) => round(r, 3)),
        ratio_vs_plain: tool === 'plain' ? 1 : ratio(med, samples.median(base, 'plain')),
        baseline: `plain ${base}`,
        ...(counts ? { counts } : {}),
      });
    }
  }
  return out;
}
