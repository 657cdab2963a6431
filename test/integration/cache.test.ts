/**
 * The cache: what one build leaves is reused wherever the inputs are the same (another checkout, another
 * CARGO_HOME and target dir, another project, after `cargo clean`, two builds at once), and never when
 * one input differs (the never-stale table). Real cargo, rustc, crates.io and the engine throughout.
 *
 * BuildKit's cache outlives a test run, so each test first writes a fresh nonce into the workspace crates
 * it builds: their first build must then really be `built`, and a later `cached` can only come from this
 * run. Dependencies from crates.io carry no nonce; where a test must see them built, it adds a fresh
 * `--cfg` to RUSTFLAGS (test 2) or a fresh base image (the toolchain row).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Captured } from '../../src/exec.ts';
import type { Outcome, UnitRecord } from '../../src/run-state.ts';
import { BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ENGINE_ONLY, ensureBaseImage, removeProject, RUSTCBUILDX, TEST_CACHE_DIR, testEnv, compileRecords } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 1_800_000;

/** What test/fixtures/workspace's binary prints. */
const WORKSPACE_OUTPUT = 'hello plain Widget {"x":1,"y":2} generated=42 built_by=build.rs data=data read with include_str! pid_positive=true';


interface Build {
  res: Captured;
  /** the records of this cargo run only (none when cargo compiled nothing) */
  records: UnitRecord[];
}

function newNonce(): string {
  return crypto.randomUUID().replace(/-/g, '').slice(0, 16);
}

/** Appends a comment holding the nonce to each file: new sources for the cache, the same program. */
function stamp(dir: string, files: readonly string[], nonce: string): void {
  for (const file of files) appendFileSync(join(dir, file), `\n// rustcbuildx cache test run ${nonce}\n`);
}

const WORKSPACE_SOURCES = ['crates/core-lib/src/lib.rs', 'crates/app/src/main.rs', 'crates/macros/src/lib.rs'];

function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function runFiles(targetDir: string): string[] {
  const runs = join(targetDir, '.rustcbuildx', 'runs');
  return existsSync(runs) ? readdirSync(runs).filter((f) => f.endsWith('.jsonl')) : [];
}

/** `cargo buildx ARGS` and the records of exactly that run (`cargo buildx` names each run afresh). */
async function build(dir: string, args: string[], extra: Record<string, string | undefined> = {}): Promise<Build> {
  const targetDir = extra.CARGO_TARGET_DIR ?? join(dir, 'target');
  const before = new Set(runFiles(targetDir));
  const res = await buildx(dir, args, extra);
  const records = runFiles(targetDir)
    .filter((f) => !before.has(f))
    .flatMap((f) => compileRecords(join(targetDir, '.rustcbuildx', 'runs', f)));
  return { res, records };
}

/** The build succeeded; on failure the message carries cargo's stderr. */
function expectOk(res: Captured, what: string): void {
  expect(res.code, `${what} failed with ${res.code}:\n${res.stderr.slice(-6000)}`).toBe(0);
}

function outcomesOf(records: readonly UnitRecord[], crate: string): Outcome[] {
  return records.filter((r) => r.crate === crate).map((r) => r.outcome);
}

function fallbacks(records: readonly UnitRecord[]): UnitRecord[] {
  return records.filter((r) => r.outcome === 'fallback');
}

function count(records: readonly UnitRecord[]) {
  const n = (o: Outcome) => records.filter((r) => r.outcome === o).length;
  return { units: records.length, cached: n('cached'), built: n('built'), fallback: n('fallback') };
}

async function output(program: string): Promise<string> {
  const res = await run([program]);
  expect(res.code, `${program} exited with ${res.code}: ${res.stderr}`).toBe(0);
  return res.stdout.trim();
}

function sha256(path: string): string {
  return new Bun.CryptoHasher('sha256').update(readFileSync(path)).digest('hex');
}

/** Every regular file under dir whose bytes contain needle (paths relative to dir). */
function filesContaining(dir: string, needle: string): string[] {
  const hits: string[] = [];
  const bytes = Buffer.from(needle);
  const walk = (sub: string) => {
    for (const name of readdirSync(join(dir, sub))) {
      const rel = sub ? join(sub, name) : name;
      const st = lstatSync(join(dir, rel));
      if (st.isDirectory()) walk(rel);
      else if (st.isFile() && readFileSync(join(dir, rel)).includes(bytes)) hits.push(rel);
    }
  };
  walk('');
  return hits;
}

// ---------------------------------------------------------------------------------------------------

describe('the cache is shared across checkouts, CARGO_HOMEs and target dirs', () => {
  test('a second checkout at another path, with its own CARGO_HOME and CARGO_TARGET_DIR: every unit cached, same program', async () => {
    const nonce = newNonce();
    const a = copyProject('test/fixtures/workspace');
    const b = copyProject('test/fixtures/workspace');
    const homeX = tempDir('rcbx-it-home-x-');
    const homeY = tempDir('rcbx-it-home-y-');
    const targetB = tempDir('rcbx-it-target-b-');
    try {
      stamp(a, WORKSPACE_SOURCES, nonce);
      stamp(b, WORKSPACE_SOURCES, nonce);

      // A: cargo downloads every crate into the fresh CARGO_HOME X.
      const first = await build(a, ['build', '--locked'], { CARGO_HOME: homeX });
      expectOk(first.res, 'the build of checkout A');
      expect(existsSync(join(homeX, 'registry', 'cache'))).toBe(true);
      expect(fallbacks(first.records)).toEqual([]);
      // The nonce makes the workspace crates new to the cache: they really were compiled here.
      for (const crate of ['core_lib', 'macros', 'app']) expect(outcomesOf(first.records, crate), crate).toEqual(['built']);
      const outA = await output(join(a, 'target', 'debug', 'app'));
      expect(outA).toBe(WORKSPACE_OUTPUT);

      // B: another path, another CARGO_HOME (downloaded again into Y), a target dir outside the checkout.
      // The local memo is off so that every unit reaches the engine: BuildKit's own keys are path-free.
      const second = await build(b, ['build', '--locked'], { CARGO_HOME: homeY, CARGO_TARGET_DIR: targetB, ...ENGINE_ONLY });
      expectOk(second.res, 'the build of checkout B');
      expect(existsSync(join(homeY, 'registry', 'cache'))).toBe(true);
      const units = first.records.length;
      expect(units).toBeGreaterThan(20);
      // Every unit, including those whose inputs are a build script's outputs: a build script runs on the
      // host, so what it writes must not depend on where CARGO_HOME is for B to hit A's cache (zstd-sys's
      // C objects carry gcc's DW_AT_comp_dir, the crate's directory under CARGO_HOME).
      expect(count(second.records), JSON.stringify(second.records.filter((r) => r.outcome !== 'cached'))).toEqual({ units, cached: units, built: 0, fallback: 0 });
      expect(await output(join(targetB, 'debug', 'app'))).toBe(outA);
    } finally {
      for (const dir of [a, b, homeX, homeY, targetB]) removeProject(dir);
    }
  }, LONG);

  test('two different projects depending on the same crates.io versions: the second gets them from the cache', async () => {
    // The versions test/fixtures/workspace/Cargo.lock pins (already in CARGO_HOME: nothing to download).
    const lockEntries = `[[package]]
name = "itoa"
version = "1.0.19"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "3bd1574e617a9a6c1f8f8181bd7e841e1f20e4277607ef28945765188d6284d4"

[[package]]
name = "memchr"
version = "2.8.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "cf8baf1c55e62ffcace7a9f06f4bd9cd3f0c4beb022d3b367256b91b87513d98"
`;
    const project = (name: string, version: string, main: string): string => {
      const dir = tempDir(`rcbx-it-${name}-`);
      writeFileSync(
        join(dir, 'Cargo.toml'),
        `[package]\nname = "${name}"\nversion = "${version}"\nedition = "2021"\npublish = false\n\n[dependencies]\nitoa = "=1.0.19"\nmemchr = "=2.8.3"\n`,
      );
      writeFileSync(
        join(dir, 'Cargo.lock'),
        `# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n\n${lockEntries}\n[[package]]\nname = "${name}"\nversion = "${version}"\ndependencies = [\n "itoa",\n "memchr",\n]\n`,
      );
      mkdirSync(join(dir, 'src'));
      writeFileSync(join(dir, 'src', 'main.rs'), main);
      return dir;
    };
    const one = project(
      'rcbx-share-one',
      '0.1.0',
      'fn main() {\n    let mut b = itoa::Buffer::new();\n    let at = memchr::memchr(b\'z\', b"xyz").unwrap();\n    println!("one: z at {}", b.format(at));\n}\n',
    );
    const two = project(
      'rcbx-share-two',
      '0.2.0',
      'fn main() {\n    let hay = b"shared dependencies, different code";\n    let n = memchr::memchr_iter(b\'e\', hay).count();\n    let mut b = itoa::Buffer::new();\n    println!("two: {} e", b.format(n));\n}\n',
    );
    // The same fresh --cfg for both projects: the dependencies' units are new to the cache, so the first
    // project must build them and the second can only get them from the first.
    const flags = { RUSTFLAGS: `--cfg rcbx_share_${newNonce()}` };
    try {
      const first = await build(one, ['build', '--locked'], flags);
      expectOk(first.res, 'the first project');
      expect(fallbacks(first.records)).toEqual([]);
      expect(outcomesOf(first.records, 'itoa')).toEqual(['built']);
      expect(outcomesOf(first.records, 'memchr')).toEqual(['built']);
      expect(await output(join(one, 'target', 'debug', 'rcbx-share-one'))).toBe('one: z at 2');

      const second = await build(two, ['build', '--locked'], flags);
      expectOk(second.res, 'the second project');
      expect(fallbacks(second.records)).toEqual([]);
      expect(outcomesOf(second.records, 'itoa')).toEqual(['cached']);
      expect(outcomesOf(second.records, 'memchr')).toEqual(['cached']);
      expect(outcomesOf(second.records, 'rcbx_share_two')).toEqual(['built']);
      expect(await output(join(two, 'target', 'debug', 'rcbx-share-two'))).toBe('two: 8 e');
    } finally {
      removeProject(one);
      removeProject(two);
    }
  }, LONG);
});

// ---------------------------------------------------------------------------------------------------

/**
 * One row of the never-stale table: one input changed on its own. test/fixtures/stale prints every
 * input in one line: `hello answer=41 data=plain data gen=base cfg=off note=none opt=0 debug=true
 * panic=unwind rf=false erf=false main=1 who=nobody`.
 */
interface Row {
  name: string;
  /** a file edit (path relative to the fixture, text replaced) */
  edit?: { file: string; from: string; to: string };
  /** variables set for the changed build only */
  env?: Record<string, string>;
  /** cargo arguments added for the changed build only */
  args?: string[];
  /** the program's line with the change */
  output: (base: string) => string;
  /** crates whose one unit must be compiled again, not served from the cache; 'all' for every unit */
  rebuilt: string[] | 'all';
  /**
   * After reverting: 'cached' when cargo compiles the same inputs as the baseline again (served from
   * the cache); 'kept' when cargo named the changed artifacts apart (feature, profile and flags are
   * hashed into -C metadata), keeps both variants and recompiles nothing on revert: there only the
   * program's line is checked, and any unit cargo did recompile must be a cache hit.
   */
  revert: 'cached' | 'kept';
  /** the change is not observable by the program (LTO): its binary must differ from the baseline's */
  binaryDiffers?: boolean;
  /** cargo does not see this input (the wrapper's own setting): `cargo clean` before each build */
  clean?: boolean;
  /** done once before the changed build */
  prepare?: () => Promise<void>;
}

const CHANGED_BASE = 'rcbx-test/changed-base';

/** A base image derived from the one in use, new on every call (`--no-cache`): unknown to the cache. */
async function buildChangedBase(): Promise<void> {
  const show = await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: testEnv() });
  expect(show.code, show.stderr).toBe(0);
  const base = (JSON.parse(show.stdout) as { image: string }).image;
  const proc = Bun.spawn(['docker', 'build', '--no-cache', '-t', CHANGED_BASE, '-'], {
    stdin: new Blob([`FROM ${base}\nRUN touch /changed\n`]),
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited, new Response(proc.stdout).text()]);
  expect(code, stderr).toBe(0);
}

const STALE_ROWS: Row[] = [
  {
    name: 'a source file (the bin\'s main.rs)',
    edit: { file: 'crates/stale-bin/src/main.rs', from: 'main=1', to: 'main=2' },
    output: (b) => b.replace('main=1', 'main=2'),
    rebuilt: ['stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a file read by include_str!',
    edit: { file: 'crates/stale-lib/data.txt', from: 'plain data', to: 'changed data' },
    output: (b) => b.replace('data=plain data', 'data=changed data'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a feature (--features stale-lib/loud)',
    args: ['--features', 'stale-lib/loud'],
    output: (b) => b.replace(/^hello /, 'HELLO '),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    name: 'the profile: opt-level (CARGO_PROFILE_DEV_OPT_LEVEL=1)',
    env: { CARGO_PROFILE_DEV_OPT_LEVEL: '1' },
    output: (b) => b.replace('opt=0', 'opt=1'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    name: 'the profile: debug (CARGO_PROFILE_DEV_DEBUG=0)',
    env: { CARGO_PROFILE_DEV_DEBUG: '0' },
    output: (b) => b.replace('debug=true', 'debug=false'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    // No program can see LTO: the line stays, the binary must differ.
    name: 'the profile: lto (--config profile.dev.lto=true)',
    args: ['--config', 'profile.dev.lto=true'],
    output: (b) => b,
    binaryDiffers: true,
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    name: 'the profile: panic (CARGO_PROFILE_DEV_PANIC=abort)',
    env: { CARGO_PROFILE_DEV_PANIC: 'abort' },
    output: (b) => b.replace('panic=unwind', 'panic=abort'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    name: 'RUSTFLAGS',
    env: { RUSTFLAGS: '--cfg stale_rf' },
    output: (b) => b.replace('rf=false', 'rf=true'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    name: 'CARGO_ENCODED_RUSTFLAGS',
    env: { CARGO_ENCODED_RUSTFLAGS: '--cfg\x1fstale_erf' },
    output: (b) => b.replace('erf=false', 'erf=true'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'kept',
  },
  {
    // The bin's own source is unchanged: only what it links against is.
    name: 'a dependency\'s output (the lib the bin depends on)',
    edit: { file: 'crates/stale-lib/src/lib.rs', from: '    41\n', to: '    42\n' },
    output: (b) => b.replace('answer=41', 'answer=42'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a build script\'s OUT_DIR contents',
    env: { RCBX_STALE_GEN: 'generated-differently' },
    output: (b) => b.replace('gen=base', 'gen=generated-differently'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a build script\'s cargo:rustc-cfg',
    env: { RCBX_STALE_CFG: '1' },
    output: (b) => b.replace('cfg=off', 'cfg=on'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a build script\'s cargo:rustc-env',
    env: { RCBX_STALE_NOTE: 'noted' },
    output: (b) => b.replace('note=none', 'note=noted'),
    rebuilt: ['stale_lib', 'stale_bin'],
    revert: 'cached',
  },
  {
    name: 'a variable the crate reads with option_env!',
    env: { RCBX_STALE_WHO: 'somebody' },
    output: (b) => b.replace('who=nobody', 'who=somebody'),
    rebuilt: ['stale_bin'],
    revert: 'cached',
  },
  {
    // cargo does not know the base image: cargo clean makes it compile every unit again.
    name: 'the toolchain (RUSTCBUILDX_BASE_IMAGE = a derived image)',
    env: { RUSTCBUILDX_BASE_IMAGE: CHANGED_BASE },
    prepare: buildChangedBase,
    clean: true,
    output: (b) => b,
    rebuilt: 'all',
    revert: 'cached',
  },
];

describe('never stale: one input changed, the unit is built again; reverted, it comes from the cache', () => {
  let dir = '';
  let program = '';
  let base = '';
  let baseSha = '';
  let baseUnits: string[] = [];
  beforeAll(() => {
    dir = copyProject('test/fixtures/stale');
    program = join(dir, 'target', 'debug', 'stale-bin');
    stamp(dir, ['crates/stale-lib/src/lib.rs', 'crates/stale-bin/src/main.rs'], newNonce());
  });
  afterAll(async () => {
    removeProject(dir);
    await run(['docker', 'image', 'rm', '-f', CHANGED_BASE]);
  }, CLEANUP_TIMEOUT);

  test('baseline build', async () => {
    const { res, records } = await build(dir, ['build', '--locked']);
    expectOk(res, 'the baseline build');
    expect(fallbacks(records)).toEqual([]);
    expect(outcomesOf(records, 'stale_lib')).toEqual(['built']);
    expect(outcomesOf(records, 'stale_bin')).toEqual(['built']);
    base = await output(program);
    expect(base).toBe('hello answer=41 data=plain data gen=base cfg=off note=none opt=0 debug=true panic=unwind rf=false erf=false main=1 who=nobody');
    baseSha = sha256(program);
    baseUnits = records.map((r) => r.unit).sort();
  }, LONG);

  for (const row of STALE_ROWS) {
    test(row.name, async () => {
      expect(base, 'the baseline build did not succeed').not.toBe('');
      const file = row.edit ? join(dir, row.edit.file) : '';
      const original = row.edit ? readFileSync(file, 'utf8') : '';
      const clean = async () => {
        if (row.clean) expectOk(await cargo(dir, ['clean']), 'cargo clean');
      };

      try {
        await changeAndRevert();
      } finally {
        if (row.edit) writeFileSync(file, original); // a failed row leaves nothing behind for the next
      }

      async function changeAndRevert(): Promise<void> {
        // Changed.
        await row.prepare?.();
        if (row.edit) {
          expect(original).toContain(row.edit.from);
          writeFileSync(file, original.replace(row.edit.from, row.edit.to));
        }
        await clean();
        const changed = await build(dir, ['build', '--locked', ...(row.args ?? [])], row.env ?? {});
        expectOk(changed.res, 'the changed build');
        expect(fallbacks(changed.records)).toEqual([]);
        if (row.rebuilt === 'all') {
          expect(changed.records.map((r) => r.unit).sort()).toEqual(baseUnits);
          expect(count(changed.records).built).toBe(baseUnits.length);
        } else {
          for (const crate of row.rebuilt) expect(outcomesOf(changed.records, crate), `${crate} with the change`).toEqual(['built']);
        }
        expect(await output(program)).toBe(row.output(base));
        if (row.binaryDiffers) expect(sha256(program)).not.toBe(baseSha);

        // Reverted.
        if (row.edit) writeFileSync(file, original);
        await clean();
        const reverted = await build(dir, ['build', '--locked']);
        expectOk(reverted.res, 'the reverted build');
        expect(fallbacks(reverted.records)).toEqual([]);
        expect(await output(program)).toBe(base);
        if (row.revert === 'cached') {
          if (row.rebuilt === 'all') {
            expect(count(reverted.records)).toEqual({ units: baseUnits.length, cached: baseUnits.length, built: 0, fallback: 0 });
          } else {
            for (const crate of row.rebuilt) expect(outcomesOf(reverted.records, crate), `${crate} reverted`).toEqual(['cached']);
          }
        } else {
          // cargo kept the baseline's artifacts (their names hash the features/profile/flags) and only
          // linked the baseline binary back into place: nothing to serve, the line above is the check.
          for (const crate of row.rebuilt as string[]) for (const outcome of outcomesOf(reverted.records, crate)) expect(outcome).toBe('cached');
        }
        expect(sha256(program)).toBe(baseSha);
      }
    }, LONG);
  }

  test('the toolchain image rebuilt under the same tag: built again, never the old image\'s results', async () => {
    expect(base, 'the baseline build did not succeed').not.toBe('');
    const env = { RUSTCBUILDX_BASE_IMAGE: CHANGED_BASE };
    await buildChangedBase();
    expectOk(await cargo(dir, ['clean']), 'cargo clean');
    const first = await build(dir, ['build', '--locked'], env);
    expectOk(first.res, 'the build on the first image');
    expect(count(first.records)).toMatchObject({ units: baseUnits.length, fallback: 0 });
    expect(await output(program)).toBe(base);

    // Same name, same Dockerfiles, another image: the cache must not answer for it.
    await buildChangedBase();
    expectOk(await cargo(dir, ['clean']), 'cargo clean');
    const second = await build(dir, ['build', '--locked'], env);
    expectOk(second.res, 'the build on the rebuilt image');
    expect(count(second.records)).toEqual({ units: baseUnits.length, cached: 0, built: baseUnits.length, fallback: 0 });
    expect(await output(program)).toBe(base);
  }, LONG);
});

// ---------------------------------------------------------------------------------------------------

describe('variables read at compile time (test/fixtures/envread)', () => {
  let dir = '';
  const plainTarget = () => join(dir, 'plain-target');
  const nonce = newNonce();
  /** plain cargo and cargo buildx with the same variables: what each program prints */
  const both = async (extra: Record<string, string | undefined>, ourTarget = join(dir, 'target')) => {
    const plain = await cargo(dir, ['build', '--locked'], { ...extra, CARGO_TARGET_DIR: plainTarget() });
    expectOk(plain, 'plain cargo build');
    const ours = await build(dir, ['build', '--locked'], { ...extra, CARGO_TARGET_DIR: ourTarget });
    expectOk(ours.res, 'cargo buildx build');
    return {
      plain: await output(join(plainTarget(), 'debug', 'envread')),
      ours: await output(join(ourTarget, 'debug', 'envread')),
      records: ours.records,
    };
  };
  beforeAll(() => {
    dir = copyProject('test/fixtures/envread');
    stamp(dir, ['src/lib.rs', 'src/main.rs'], nonce);
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  // A value with a space, quotes and a dollar sign: it crosses a Dockerfile and a shell.
  const greeting = `it's "$HOME" for ${nonce}`;

  test('option_env!: set, unset, set again: cargo buildx\'s program prints exactly what plain cargo\'s does', async () => {
    const unset = await both({ RCBX_TEST_GREETING: undefined });
    expect(unset.ours).toBe(unset.plain);
    expect(unset.ours).toBe('greeting=unset token=unset len=5');
    expect(fallbacks(unset.records)).toEqual([]);

    const set = await both({ RCBX_TEST_GREETING: greeting });
    expect(set.ours).toBe(set.plain);
    expect(set.ours).toBe(`greeting=${greeting} token=unset len=${greeting.length}`);
    expect(fallbacks(set.records)).toEqual([]);
    expect(outcomesOf(set.records, 'envread')).toEqual(['built']);

    const again = await both({ RCBX_TEST_GREETING: undefined });
    expect(again.ours).toBe(again.plain);
    expect(again.ours).toBe('greeting=unset token=unset len=5');
    expect(fallbacks(again.records)).toEqual([]);
    expect(outcomesOf(again.records, 'envread')).toEqual(['cached']);
  }, LONG);

  const secret = `rcbx-secret-${nonce}-value`;
  for (const [label, target] of [
    ['in a target dir that built the crate before (the variable is known)', 'target'],
    ['in a fresh target dir (the variable is discovered)', 't-secret'],
  ] as const) {
    test(`a secret-looking variable (RCBX_TEST_API_TOKEN) ${label}: that unit compiles locally, its value is never sent`, async () => {
      const ourTarget = join(dir, target);
      const res = await both({ RCBX_TEST_API_TOKEN: secret, RUSTCBUILDX_LOG: 'debug' }, ourTarget);
      expect(res.ours).toBe(res.plain);
      expect(res.ours).toBe(`greeting=unset token=${secret} len=5`);
      const lib = res.records.filter((r) => r.crate === 'envread_lib');
      expect(lib.map((r) => r.outcome)).toEqual(['fallback']);
      expect(lib[0]?.reason ?? '').toContain('RCBX_TEST_API_TOKEN');
      // The dependency does not read it: still sandboxed.
      if (target === 't-secret') expect(outcomesOf(res.records, 'itoa')).toEqual([expect.stringMatching(/^(built|cached)$/)]);
      // The search finds the value where it belongs: compiled into the local build's outputs.
      expect(filesContaining(join(ourTarget, 'debug', 'deps'), secret).length).toBeGreaterThan(0);
      const state = join(ourTarget, '.rustcbuildx');
      expect(readdirSync(join(state, 'runs')).some((f) => f.endsWith('.log'))).toBe(true); // the debug log is there to search
      expect(filesContaining(state, secret)).toEqual([]);
      // nor in the local memo of engine results
      if (existsSync(TEST_CACHE_DIR)) expect(filesContaining(TEST_CACHE_DIR, secret)).toEqual([]);
    }, LONG);
  }
});

// ---------------------------------------------------------------------------------------------------

describe('stress: two checkouts built at the same time', () => {
  test('5 rounds of `cargo buildx build -j 2` on two checkouts at once: all green, no fallback, identical artifacts', async () => {
    const nonce = newNonce();
    const dirs = [copyProject('test/fixtures/workspace'), copyProject('test/fixtures/workspace')] as const;
    try {
      for (const d of dirs) stamp(d, WORKSPACE_SOURCES, nonce);
      const artifacts = (d: string): Record<string, string> => {
        const debug = join(d, 'target', 'debug');
        const out: Record<string, string> = { app: sha256(join(debug, 'app')) };
        for (const name of readdirSync(join(debug, 'deps')).filter((n) => n.endsWith('.rlib')).sort()) out[`deps/${name}`] = sha256(join(debug, 'deps', name));
        return out;
      };
      for (let round = 1; round <= 5; round++) {
        const builds = await Promise.all(dirs.map((d) => build(d, ['build', '--locked', '-j', '2'])));
        builds.forEach((b, i) => {
          expectOk(b.res, `round ${round}, checkout ${i === 0 ? 'A' : 'B'}`);
          expect(fallbacks(b.records), `round ${round}`).toEqual([]);
          expect(b.records.length).toBeGreaterThan(20);
        });
        const [a, b] = dirs.map(artifacts) as [Record<string, string>, Record<string, string>];
        expect(Object.keys(a).length).toBeGreaterThan(20);
        expect(b, `round ${round}: artifacts of B vs A`).toEqual(a);
        for (const d of dirs) expect(await output(join(d, 'target', 'debug', 'app'))).toBe(WORKSPACE_OUTPUT);
        if (round < 5) for (const d of dirs) expectOk(await cargo(d, ['clean']), 'cargo clean');
      }
    } finally {
      for (const d of dirs) removeProject(d);
    }
  }, LONG);
});

// ---------------------------------------------------------------------------------------------------

describe('after cargo clean', () => {
  test('the bin (app) and the proc-macro (macros) are served from the cache', async () => {
    const dir = copyProject('test/fixtures/workspace');
    try {
      stamp(dir, WORKSPACE_SOURCES, newNonce());
      const first = await build(dir, ['build', '--locked']);
      expectOk(first.res, 'the first build');
      expect(outcomesOf(first.records, 'app')).toEqual(['built']);
      expect(outcomesOf(first.records, 'macros')).toEqual(['built']);

      // Once through the engine (BuildKit's cache), once as a user builds (the local memo may answer).
      for (const extra of [ENGINE_ONLY, {}]) {
        expectOk(await cargo(dir, ['clean']), 'cargo clean');
        const again = await build(dir, ['build', '--locked'], extra);
        expectOk(again.res, 'the build after cargo clean');
        expect(outcomesOf(again.records, 'app')).toEqual(['cached']);
        expect(outcomesOf(again.records, 'macros')).toEqual(['cached']);
        expect(count(again.records)).toEqual({ units: first.records.length, cached: first.records.length, built: 0, fallback: 0 });
        expect(await output(join(dir, 'target', 'debug', 'app'))).toBe(WORKSPACE_OUTPUT);
      }
    } finally {
      removeProject(dir);
    }
  }, LONG);
});

/** sha256 of every file cargo keeps in a profile's deps/ dir, by name. */
function depsDigests(targetDir: string): Map<string, string> {
  const deps = join(targetDir, 'debug', 'deps');
  return new Map(readdirSync(deps).filter((n) => !n.endsWith('.d')).map((n) => [n, sha256(join(deps, n))]));
}

/** The memo entry (its directory) whose export holds an output file named like `pattern`. */
function memoEntryWith(memoDir: string, pattern: RegExp): { entry: string; file: string } {
  const results = join(memoDir, 'results');
  for (const shard of readdirSync(results)) {
    for (const entry of readdirSync(join(results, shard))) {
      const out = join(results, shard, entry, 'out');
      const file = existsSync(out) ? readdirSync(out).find((n) => pattern.test(n)) : undefined;
      if (file) return { entry: join(results, shard, entry), file: join(out, file) };
    }
  }
  throw new Error(`no memo entry holds ${pattern}`);
}

describe('a damaged memo entry', () => {
  test('truncated or with a flipped byte: the unit goes to the engine, the bytes are a clean build\'s, plain cargo works after', async () => {
    const dir = copyProject('examples/demo');
    const memoDir = tempDir('rcbx-memo-damage-');
    const env = { RUSTCBUILDX_CACHE_DIR: memoDir, RUSTCBUILDX_LOG: 'debug' };
    try {
      expectOk((await build(dir, ['build', '--locked'], env)).res, 'the first build');
      const clean = depsDigests(join(dir, 'target'));

      // What a full disk or a crash leaves: a truncated rlib; what a bad copy leaves: one byte changed.
      const truncated = memoEntryWith(memoDir, /^libserde_core-.*\.rlib$/);
      truncateSync(truncated.file, 1000);
      const flipped = memoEntryWith(memoDir, /^libitoa-.*\.rlib$/);
      const bytes = readFileSync(flipped.file);
      bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] as number) ^ 0xff;
      writeFileSync(flipped.file, bytes);

      expectOk(await cargo(dir, ['clean']), 'cargo clean');
      const again = await build(dir, ['build', '--locked'], env);
      expectOk(again.res, 'the build after the damage');
      const log = readdirSync(join(dir, 'target', '.rustcbuildx', 'runs'))
        .filter((f) => f.endsWith('.log'))
        .map((f) => readFileSync(join(dir, 'target', '.rustcbuildx', 'runs', f), 'utf8'))
        .join('\n');
      expect(log).toMatch(/local memo entry [0-9a-f]{64} is damaged \(out\/libserde_core-[0-9a-f]+\.rlib has 1000 bytes, the manifest says \d+\); removed it/);
      expect(log).toMatch(/local memo entry [0-9a-f]{64} is damaged \(out\/libitoa-[0-9a-f]+\.rlib does not match its sha256\); removed it/);
      expect(existsSync(truncated.entry)).toBe(true); // stored again from the engine's answer
      expect(readFileSync(truncated.file).length).toBeGreaterThan(1000);
      expect(depsDigests(join(dir, 'target'))).toEqual(clean);

      const plain = await cargo(dir, ['build', '--locked']);
      expectOk(plain, 'plain cargo build afterwards');
      expect((await run([join(dir, 'target', 'debug', 'rustcbuildx-demo')])).code).toBe(0);
    } finally {
      removeProject(dir);
      removeProject(memoDir);
    }
  }, LONG);
});
