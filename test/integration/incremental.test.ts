/**
 * Incremental compilation in the sandbox (test/fixtures/edits): cargo's `-C incremental` becomes
 * `-C incremental=/rcbx/inc`, a locked cache mount of the engine's named by the unit's identity. The
 * acceptance is an edit-sequence table: each row edits the sources (cumulatively: every row starts from
 * the previous row's tree), then `cargo buildx build` (target dir A) and plain `cargo build` (target dir
 * B) build the same tree one after the other, and must give the same exit code, the same rustc
 * diagnostics (each package's rendered messages) and, when the build succeeds, the same program output.
 * Then the engine must really have compiled incrementally: the plans name a cache mount per unit (one id
 * per unit across all rows) and that mount holds rustc's session for the crate; and a release build,
 * which cargo compiles without `-C incremental`, gets no cache mount.
 *
 * Both engines where cache mounts work, docker (BuildKit) and podman (buildah), each with the memo off
 * so the engine does the work, and with RUSTCBUILDX_INCREMENTAL=sandbox: with an engine on this machine
 * the default (`auto`) compiles an edited crate with the local rustc instead, which is not what this
 * file is about.
 *
 * BuildKit's cache outlives a test run, so the first row writes a fresh nonce into both crates: every
 * source state of this run is new to the engine, and its rows are really built there (a row that returns
 * to an earlier state of this run, like "revert it", may be `cached`).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Captured } from '../../src/exec.ts';
import type { UnitRecord } from '../../src/run-state.ts';
import type { UnitSpec } from '../../src/render/dockerfile.ts';
import { BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ENGINE_ONLY, ensureBaseImage, removeProject, RUSTCBUILDX, testEnv, compileRecords } from './harness.ts';

const LONG = 1_800_000;

const LIB_RS = 'crates/edits_lib/src/lib.rs';
const MAIN_RS = 'crates/edits_app/src/main.rs';
const APP_TOML = 'crates/edits_app/Cargo.toml';
const CRATES = ['edits_lib', 'edits_app'] as const;
/** Where the sandbox keeps rustc's incremental state (SANDBOX.incremental). */
const SANDBOX_INC = '/rcbx/inc';

/** Replaces `from` by `to` in one file of the project; an edit that finds nothing to replace is a broken table, not a no-op. */
function edit(dir: string, file: string, from: string, to: string): void {
  const path = join(dir, file);
  const text = readFileSync(path, 'utf8');
  if (!text.includes(from)) throw new Error(`the edit table is stale: ${file} holds no ${JSON.stringify(from)}`);
  writeFileSync(path, text.replace(from, to));
}

interface Step {
  name: string;
  /** the edit, applied to the tree the previous step left */
  apply: (dir: string) => void;
  /** what plain cargo's program prints after this step; undefined: the build fails */
  prints?: string;
  /** which diagnostics plain cargo gives: none, warnings only, or an error */
  diagnostics: 'none' | 'warning' | 'error';
}

const FIRST = 'hello answer=41 scaled=21 sum=7 features=none bonus=0';

/** The edit sequence. Each row's expectations are plain cargo's (checked too, so a row that edits nothing shows). */
function steps(nonce: string): Step[] {
  return [
    {
      name: 'first build (fresh sources for the engine)',
      apply: (dir) => {
        for (const file of [LIB_RS, MAIN_RS]) appendFileSync(join(dir, file), `\n// rustcbuildx incremental test run ${nonce}\n`);
      },
      prints: FIRST,
      diagnostics: 'none',
    },
    {
      name: 'edit a function body',
      apply: (dir) => edit(dir, LIB_RS, 'pub fn answer() -> u32 {\n    41\n}', 'pub fn answer() -> u32 {\n    40 + 2\n}'),
      prints: 'hello answer=42 scaled=21 sum=7 features=none bonus=0',
      diagnostics: 'none',
    },
    {
      name: 'revert it',
      apply: (dir) => edit(dir, LIB_RS, 'pub fn answer() -> u32 {\n    40 + 2\n}', 'pub fn answer() -> u32 {\n    41\n}'),
      prints: FIRST,
      diagnostics: 'none',
    },
    {
      name: 'edit another function',
      apply: (dir) => edit(dir, LIB_RS, '    x * 3\n', '    x * 4\n'),
      prints: 'hello answer=41 scaled=28 sum=7 features=none bonus=0',
      diagnostics: 'none',
    },
    {
      name: 'change a feature (the bin turns on the lib\'s `extra`)',
      apply: (dir) => edit(dir, APP_TOML, 'edits_lib = { path = "../edits_lib" }', 'edits_lib = { path = "../edits_lib", features = ["extra"] }'),
      prints: 'hello answer=41 scaled=28 sum=7 features=extra bonus=1000',
      diagnostics: 'none',
    },
    {
      name: 'change a dependency (the lib\'s public API the bin calls, and the call)',
      apply: (dir) => {
        edit(dir, LIB_RS, 'pub fn scale(x: u32) -> u32 {\n    x * 4\n}', 'pub fn scale(x: u32, by: u32) -> u32 {\n    x * by\n}');
        edit(dir, MAIN_RS, 'edits_lib::scale(7)', 'edits_lib::scale(7, 5)');
      },
      prints: 'hello answer=41 scaled=35 sum=7 features=extra bonus=1000',
      diagnostics: 'none',
    },
    {
      name: 'rename an item and its use sites',
      apply: (dir) => {
        edit(dir, LIB_RS, 'pub struct Point {', 'pub struct Pair {');
        edit(dir, LIB_RS, 'impl Point {', 'impl Pair {');
        edit(dir, MAIN_RS, 'use edits_lib::Point;', 'use edits_lib::Pair;');
        edit(dir, MAIN_RS, 'let p = Point {', 'let p = Pair {');
      },
      prints: 'hello answer=41 scaled=35 sum=7 features=extra bonus=1000',
      diagnostics: 'none',
    },
    {
      name: 'introduce a warning (an unused variable in each crate)',
      apply: (dir) => {
        edit(dir, LIB_RS, 'pub fn answer() -> u32 {\n    41\n}', 'pub fn answer() -> u32 {\n    let unused = 1;\n    41\n}');
        edit(dir, MAIN_RS, '    let p = Pair {', '    let spare = 2;\n    let p = Pair {');
      },
      prints: 'hello answer=41 scaled=35 sum=7 features=extra bonus=1000',
      diagnostics: 'warning',
    },
    {
      name: 'introduce a compile error in the lib',
      apply: (dir) => edit(dir, LIB_RS, '    x * by\n', '    x * by + "one"\n'),
      diagnostics: 'error',
    },
    {
      name: 'fix it',
      apply: (dir) => edit(dir, LIB_RS, '    x * by + "one"\n', '    x * by\n'),
      prints: 'hello answer=41 scaled=35 sum=7 features=extra bonus=1000',
      diagnostics: 'warning',
    },
    {
      name: 'introduce a compile error in the bin',
      apply: (dir) => edit(dir, MAIN_RS, 'edits_lib::answer(),', 'edits_lib::answer_missing(),'),
      diagnostics: 'error',
    },
    {
      name: 'fix it (the bin)',
      apply: (dir) => edit(dir, MAIN_RS, 'edits_lib::answer_missing(),', 'edits_lib::answer(),'),
      prints: 'hello answer=41 scaled=35 sum=7 features=extra bonus=1000',
      diagnostics: 'warning',
    },
  ];
}

/** What one side of a row gives: what the issue's acceptance compares. */
interface Result {
  code: number;
  /** package id → its rendered rustc messages, sorted (a multiset: a repeated message counts) */
  rendered: Record<string, string[]>;
  /** the program's exit code and stdout, when the build succeeded */
  program?: { code: number; stdout: string };
}

interface CompilerMessage {
  reason?: string;
  package_id?: string;
  message?: { rendered?: string | null; level?: string };
}

function compilerMessages(stdout: string): CompilerMessage[] {
  const out: CompilerMessage[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const msg = JSON.parse(line) as CompilerMessage;
    if (msg.reason === 'compiler-message') out.push(msg);
  }
  return out;
}

async function resultOf(res: Captured, target: string): Promise<Result> {
  const rendered: Record<string, string[]> = {};
  for (const msg of compilerMessages(res.stdout)) {
    // Only the target dir may differ between the two sides (both build the same tree).
    (rendered[msg.package_id ?? '?'] ??= []).push((msg.message?.rendered ?? '').split(target).join('<target-dir>'));
  }
  for (const list of Object.values(rendered)) list.sort();
  if (res.code !== 0) return { code: res.code, rendered };
  const bin = await run([join(target, 'debug', 'edits_app')]);
  return { code: res.code, rendered, program: { code: bin.code, stdout: bin.stdout } };
}

function levels(res: Captured): Set<string> {
  return new Set(compilerMessages(res.stdout).map((m) => m.message?.level ?? '?'));
}

function runFiles(target: string): string[] {
  const runs = join(target, '.rustcbuildx', 'runs');
  return existsSync(runs) ? readdirSync(runs).filter((f) => f.endsWith('.jsonl')) : [];
}

interface Plan {
  key: string;
  spec?: UnitSpec;
}

function readPlan(target: string, key: string): Plan | undefined {
  const path = join(target, '.rustcbuildx', 'units', `${key}.json`);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Plan) : undefined;
}

/** rustc is told `-C incremental=/rcbx/inc` (either spelling), and of no other incremental dir. */
function incrementalArgs(args: readonly string[]): string[] {
  return args.flatMap((a, i) => {
    if (a === '-C' && args[i + 1]?.startsWith('incremental=')) return [`-C ${args[i + 1]}`];
    if (a.startsWith('-Cincremental=')) return [`-C ${a.slice(2)}`];
    return [];
  });
}

/**
 * The session dirs rustc left for `crate` in a listing of `ls -la --time-style=+%s /inc /inc/*` (engine log
 * prefixes removed), with their mtimes (seconds since the epoch).
 */
function sessionsIn(output: string, crate: string): Array<{ name: string; mtime: number }> {
  const sessions: Array<{ name: string; mtime: number }> = [];
  let inCrate = false;
  for (const raw of output.split('\n')) {
    const line = raw.replace(/^#\d+ \d+\.\d+ ?/, '').trimEnd();
    const header = /^\/inc\/([^/:]+):$/.exec(line);
    if (header) {
      inCrate = (header[1] ?? '').startsWith(`${crate}-`);
      continue;
    }
    if (line === '') {
      inCrate = false;
      continue;
    }
    // drwxr-xr-x 2 root root 4096 1764000000 s-…
    const entry = /^d\S*\s+\d+\s+\S+\s+\S+\s+\d+\s+(\d+)\s+(s-\S+)$/.exec(line);
    if (inCrate && entry?.[1] && entry[2] && !entry[2].endsWith('-working')) sessions.push({ name: entry[2], mtime: Number(entry[1]) });
  }
  return sessions;
}

interface EngineCase {
  runner: 'docker' | 'podman';
  /** builds a one-off Dockerfile on this engine, never from its layer cache, and gives its output (the RUN's output included) */
  build: (ctx: string) => Promise<Captured>;
  /** what the engine knows about a cache mount the probe found empty, for the failure message */
  explainEmpty?: (id: string) => Promise<string>;
}

const ENGINES: EngineCase[] = [
  {
    runner: 'docker',
    // Not `--no-cache`: BuildKit then gives the RUN a fresh, empty cache mount (seen on docker 26.1), which
    // would prove nothing. The probe's RUN line carries a nonce instead, so it is never a cache hit.
    // `cacheonly`: nothing is left in the image store.
    build: (ctx) => run(['docker', 'buildx', 'build', '--progress=plain', '--output', 'type=cacheonly', '-f', join(ctx, 'Dockerfile'), ctx], { env: testEnv(), timeoutMs: 300_000 }),
    // The Dockerfile frontend names a mount `<namespace>/<id>` (buildkit's dockerfile2llb, an empty namespace
    // by default): `/rcbx-inc-…`. LLB made by us must use the same name for the two routes to share it.
    explainEmpty: async (id) => {
      const du = await run(['docker', 'buildx', 'du', '--verbose', '--filter', 'type=exec.cachemount'], { env: testEnv(), timeoutMs: 120_000 });
      const llbNamed = du.stdout.includes(`with id "${id}"`);
      return llbNamed
        ? `BuildKit has a cache mount named ${JSON.stringify(id)}: not the one a Dockerfile's id=${id} names (${JSON.stringify(`/${id}`)}), so the LLB route keeps its state apart from the Dockerfile route`
        : `BuildKit has no cache mount named ${JSON.stringify(id)} either`;
    },
  },
  {
    runner: 'podman',
    // buildah keeps cache mounts by id in its own dir whatever `--no-cache` says (checked by the first test).
    build: async (ctx) => {
      const iid = join(ctx, 'iid');
      const res = await run(['podman', 'build', '--no-cache', '--iidfile', iid, '-f', join(ctx, 'Dockerfile'), ctx], { env: testEnv(), timeoutMs: 300_000 });
      // The probe's own image only: its parent is the tagged base image, which stays.
      if (existsSync(iid)) await run(['podman', 'rmi', readFileSync(iid, 'utf8').trim()], { env: testEnv() });
      return res;
    },
  },
];

/** Runs `command` in `base` with the engine's cache mount `id` at /inc (locked, as the sandbox mounts it), once. */
async function probeMount(engine: EngineCase, base: string, id: string, command: string): Promise<Captured> {
  const ctx = mkdtempSync(join(tmpdir(), 'rcbx-inc-probe-'));
  try {
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN --mount=type=cache,id=${id},target=/inc,sharing=locked ${command} # probe ${crypto.randomUUID()}\n`);
    return await engine.build(ctx);
  } finally {
    rmSync(ctx, { recursive: true, force: true });
  }
}

for (const engine of ENGINES) {
  describe(`incremental compilation in the sandbox, ${engine.runner}: the edit-sequence table`, () => {
    let dir = '';
    let ours = '';
    let plain = '';
    /** unit key → the cache-mount ids its plans named after each row (must stay one) */
    const idsByUnit = new Map<string, Set<string>>();
    /** crate → outcomes of its units in rows after the first */
    const laterOutcomes = new Map<string, string[]>();
    /** when the table started (s): a session in a cache mount must be this run's, not an earlier run's (the ids do not depend on the checkout) */
    let tableStart = 0;
    const env = { ...ENGINE_ONLY, RUSTCBUILDX_RUNNER: engine.runner, RUSTCBUILDX_INCREMENTAL: 'sandbox' };

    beforeAll(async () => {
      await ensureBaseImage(engine.runner);
      dir = copyProject('test/fixtures/edits');
      ours = join(dir, `t-${engine.runner}`);
      plain = join(dir, `p-${engine.runner}`);
    }, BASE_BUILD_TIMEOUT);
    afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

    test(`${engine.runner} keeps a cache mount's contents from one build to the next (what incremental state in the sandbox needs)`, async () => {
      // One fixed id (no litter across runs), a fresh value each run.
      const nonce = crypto.randomUUID();
      const base = await baseImageName(engine.runner);
      const id = 'rcbx-test-cache-mount-probe';
      const write = await probeMount(engine, base, id, `sh -c 'echo ${nonce} > /inc/nonce'`);
      expect(write.code, `${engine.runner} cannot build with a cache mount (RUN --mount=type=cache,…,sharing=locked):\n${write.stdout}${write.stderr}`).toBe(0);
      const read = await probeMount(engine, base, id, 'cat /inc/nonce');
      const said = `${read.stdout}${read.stderr}`;
      expect(said.includes(nonce), `${engine.runner} does not keep a cache mount's contents between builds: incremental state in its sandbox cannot work:\n${said}`).toBe(true);
    }, LONG);

    const table = steps(crypto.randomUUID().replace(/-/g, '').slice(0, 16));
    table.forEach((step, index) => {
      test(`row ${index + 1}, ${step.name}: cargo buildx gives plain cargo's exit code, diagnostics and program`, async () => {
        if (index === 0) tableStart = Math.floor(Date.now() / 1000) - 2;
        step.apply(dir);
        const before = new Set(runFiles(ours));
        const oursRes = await buildx(dir, ['build', '--locked', '--message-format=json'], { ...env, CARGO_TARGET_DIR: ours });
        const records: UnitRecord[] = runFiles(ours)
          .filter((f) => !before.has(f))
          .flatMap((f) => compileRecords(join(ours, '.rustcbuildx', 'runs', f)));
        const plainRes = await cargo(dir, ['build', '--locked', '--message-format=json'], { CARGO_TARGET_DIR: plain });

        // The table itself: plain cargo does what the row says, so a row that changed nothing shows.
        const plainLevels = levels(plainRes);
        if (step.prints === undefined) expect(plainRes.code, plainRes.stderr).not.toBe(0);
        else expect(plainRes.code, plainRes.stderr).toBe(0);
        const said = JSON.stringify([...plainLevels]);
        if (step.diagnostics === 'none') expect(plainLevels.size, said).toBe(0);
        if (step.diagnostics === 'warning') expect({ warning: plainLevels.has('warning'), error: plainLevels.has('error') }, said).toEqual({ warning: true, error: false });
        if (step.diagnostics === 'error') expect(plainLevels.has('error'), said).toBe(true);

        // The acceptance: the same exit code, diagnostics and program as plain cargo.
        const expected = await resultOf(plainRes, plain);
        if (step.prints !== undefined) expect(expected.program).toEqual({ code: 0, stdout: `${step.prints}\n` });
        const actual = await resultOf(oursRes, ours);
        expect(actual, `cargo buildx stderr:\n${oursRes.stderr}`).toEqual(expected);

        // Every unit of ours went through the sandbox; only a row with a compile error may fall back (the
        // local rustc decides every failure), and a failing unit is what cargo saw fail.
        expect(records.length, 'cargo buildx compiled nothing in this row').toBeGreaterThan(0);
        const allowed = step.prints === undefined ? ['built', 'cached', 'fallback'] : ['built', 'cached'];
        expect(records.filter((r) => !allowed.includes(r.outcome)), JSON.stringify(records)).toEqual([]);
        if (step.prints === undefined) expect(records.some((r) => r.code !== 0), JSON.stringify(records)).toBe(true);
        if (index > 0) for (const r of records) laterOutcomes.set(r.crate, [...(laterOutcomes.get(r.crate) ?? []), r.outcome]);

        // Each unit the sandbox compiled names its cache mount, and rustc was pointed at it (no host path).
        for (const r of records.filter((r) => r.outcome === 'built' || r.outcome === 'cached')) {
          const plan = readPlan(ours, r.unit);
          expect(plan?.spec, `no plan with a spec for ${r.unit}`).toBeDefined();
          const spec = plan?.spec;
          if (!spec) continue;
          expect(spec.incremental?.id, `${r.unit}: spec.incremental`).toMatch(/^rcbx-inc-[0-9a-f]+$/);
          expect(incrementalArgs(spec.args), `${r.unit}: rustc's incremental flags`).toEqual([`-C incremental=${SANDBOX_INC}`]);
          if (spec.incremental) idsByUnit.set(r.unit, new Set([...(idsByUnit.get(r.unit) ?? []), spec.incremental.id]));
        }
      }, LONG);
    });

    test('each unit kept one cache mount through every row, edited units were rebuilt in the sandbox, and the mount holds rustc\'s session', async () => {
      // Each unit (its key: crate + cargo's metadata, so the feature row made new ones) one id, whatever the edits.
      expect([...idsByUnit.keys()].some((k) => k.startsWith('edits_lib-'))).toBe(true);
      expect([...idsByUnit.keys()].some((k) => k.startsWith('edits_app-'))).toBe(true);
      for (const [unit, ids] of idsByUnit) expect([...ids], unit).toHaveLength(1);
      // Edits after the first row reached the engine (not only cached results, not the local rustc).
      for (const crate of CRATES) expect(laterOutcomes.get(crate) ?? [], crate).toContain('built');

      // The cache mount of each unit holds a finished session of rustc's for its crate (`<crate>-<hash>/s-…`)
      // written by this run: the ids are the same for every checkout, so an older session proves nothing.
      for (const [unit, ids] of idsByUnit) {
        const crate = CRATES.find((c) => unit.startsWith(`${c}-`));
        const id = [...ids][0];
        const base = readPlan(ours, unit)?.spec?.baseImage;
        if (!crate || !id || !base) throw new Error(`${unit}: no crate, id or base image in its plan`);
        // `ls -la /inc /inc/*`: the crate's dir (rustc names it `<crate>-<hash>`) and the sessions in it.
        const res = await probeMount(engine, base, id, 'ls -la --time-style=+%s /inc /inc/*');
        const listing = `${res.stdout}${res.stderr}`;
        const sessions = sessionsIn(listing, crate).filter((s) => s.mtime >= tableStart);
        if (sessions.length === 0) {
          const why = engine.explainEmpty ? `\n${await engine.explainEmpty(id)}` : '';
          throw new Error(`${unit}: no session of rustc's for ${crate} written since ${tableStart} (this run) in the ${engine.runner} cache mount ${id}${why}\n${listing}`);
        }
        expect(res.code, listing).toBe(0);
      }
    }, LONG);

    test('units cargo compiles without -C incremental (the release profile) get no cache mount', async () => {
      const before = new Set(runFiles(ours));
      const res = await buildx(dir, ['build', '--locked', '--release'], { ...env, CARGO_TARGET_DIR: ours });
      expect(res.code, res.stderr).toBe(0);
      const records = runFiles(ours)
        .filter((f) => !before.has(f))
        .flatMap((f) => compileRecords(join(ours, '.rustcbuildx', 'runs', f)));
      expect(records.map((r) => r.crate).sort()).toEqual(['edits_app', 'edits_lib']);
      for (const r of records) {
        expect(['built', 'cached'], r.unit).toContain(r.outcome);
        const spec = readPlan(ours, r.unit)?.spec;
        expect(spec, r.unit).toBeDefined();
        expect(spec?.incremental, r.unit).toBeUndefined();
        expect(incrementalArgs(spec?.args ?? []), r.unit).toEqual([]);
      }
    }, LONG);
  });
}

/** The base image this engine's sandbox uses (what `rustcbuildx base show` picks), for the probes. */
async function baseImageName(runner: 'docker' | 'podman'): Promise<string> {
  const res = await run([RUSTCBUILDX, 'base', 'show', '--runner', runner, '--json'], { env: testEnv() });
  if (res.code !== 0) throw new Error(`rustcbuildx base show --runner ${runner} failed: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { image: string }).image;
}
