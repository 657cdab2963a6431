import { afterAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keyOfArtifact, readTrustedPlan, stampOf, unitKey, writePlan, type UnitPlan } from '../../src/plan/plans';
import { hostPathRead, incrementalCacheId } from '../../src/plan/unit';
import { parseRustcArgs } from '../../src/rustc/args';
import { RunState } from '../../src/run-state';

const DEPS = '/work/proj/target/debug/deps';

describe('keyOfArtifact', () => {
  test.each([
    ['rlib', `${DEPS}/libfoo-abc.rlib`, 'foo-abc'],
    ['rmeta', `${DEPS}/libfoo-abc.rmeta`, 'foo-abc'],
    ['proc-macro .so', `${DEPS}/libserde_derive-0123abcd4567ef89.so`, 'serde_derive-0123abcd4567ef89'],
    ['proc-macro .dylib', `${DEPS}/libserde_derive-0123abcd4567ef89.dylib`, 'serde_derive-0123abcd4567ef89'],
    ['staticlib .a', `${DEPS}/libnative-1a2b.a`, 'native-1a2b'],
    ['bin (no lib prefix, no extension)', `${DEPS}/mytool-9f8e7d6c5b4a3210`, 'mytool-9f8e7d6c5b4a3210'],
    ['bin whose name starts with lib', `${DEPS}/library_tool-1234`, 'library_tool-1234'],
    ['crate named lib… (liblib-x.rlib)', `${DEPS}/liblib-x.rlib`, 'lib-x'],
    ['crate libc', `${DEPS}/liblibc-5e5b7e3c.rlib`, 'libc-5e5b7e3c'],
    ['bare file name', 'libfoo-abc.rlib', 'foo-abc'],
    ['no extra filename', `${DEPS}/libfoo.rlib`, 'foo'],
  ])('%s: %s → %s', (_name, path, key) => {
    expect(keyOfArtifact(path)).toBe(key);
  });

  test('rlib, rmeta and proc-macro of one unit share a key', () => {
    const keys = ['rlib', 'rmeta', 'so'].map((ext) => keyOfArtifact(`${DEPS}/libfoo-abc.${ext}`));
    expect(new Set(keys)).toEqual(new Set(['foo-abc']));
  });
});

describe('unitKey', () => {
  test.each([
    ['foo', '-abc', 'foo-abc'],
    ['serde_derive', '-0123abcd4567ef89', 'serde_derive-0123abcd4567ef89'],
    ['foo', undefined, 'foo'],
    ['foo', '', 'foo'],
  ] as const)('unitKey(%p, %p) = %p', (crate, extra, key) => {
    expect(unitKey(crate, extra)).toBe(key);
  });

  test('matches the key read back from the unit’s artifact', () => {
    for (const [crate, extra] of [['foo', '-abc'], ['lib', '-x'], ['libc', '-5e5b7e3c']] as const) {
      expect(keyOfArtifact(`${DEPS}/lib${unitKey(crate, extra)}.rlib`)).toBe(unitKey(crate, extra));
    }
  });
});

describe('readTrustedPlan: trusted by the content of the outputs, the stat only memoises the check', () => {
  const root = mkdtempSync(join(tmpdir(), 'rcbx-plan-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const state = new RunState(join(root, 'target'), 'run-1');
  const outDir = join(root, 'target', 'debug', 'deps');
  mkdirSync(outDir, { recursive: true });

  function placed(key: string, bytes: string): UnitPlan {
    writeFileSync(join(outDir, `lib${key}.rlib`), bytes);
    const plan: UnitPlan = { version: 2, key, crate: key, snippet: '', closure: [], hostOutDir: outDir, outputs: [stampOf(outDir, `lib${key}.rlib`)], envDeps: [], hostPathVars: [] };
    writePlan(state, plan);
    return plan;
  }

  test('untouched outputs: trusted', () => {
    placed('a-1', 'AAAA');
    expect(readTrustedPlan(state, 'a-1')?.key).toBe('a-1');
  });

  test('re-timed but the same bytes: trusted, and the new stat is remembered', () => {
    placed('b-1', 'BBBB');
    const later = new Date(Date.now() + 5_000);
    utimesSync(join(outDir, 'libb-1.rlib'), later, later);
    expect(readTrustedPlan(state, 'b-1')?.outputs[0]?.mtimeMs).toBe(statSync(join(outDir, 'libb-1.rlib')).mtimeMs);
  });

  test('rewritten in place, same inode and size, other bytes: not trusted (its mtime moved, so it is hashed)', () => {
    const plan = placed('c-1', 'CCCC');
    writeFileSync(join(outDir, 'libc-1.rlib'), 'XXXX'); // in place: same inode, same size
    const st = statSync(join(outDir, 'libc-1.rlib'));
    expect(st.ino).toBe(plan.outputs[0]?.ino as number);
    expect(readTrustedPlan(state, 'c-1')).toBeUndefined();
  });

  test('replaced by a rename (what a plain cargo build does): not trusted', () => {
    placed('d-1', 'DDDD');
    writeFileSync(join(outDir, 'tmp'), 'DDDE');
    renameSync(join(outDir, 'tmp'), join(outDir, 'libd-1.rlib'));
    expect(readTrustedPlan(state, 'd-1')).toBeUndefined();
  });

  test('a missing output or a plan of the old format: not trusted', () => {
    placed('e-1', 'EEEE');
    rmSync(join(outDir, 'libe-1.rlib'));
    expect(readTrustedPlan(state, 'e-1')).toBeUndefined();
    writeFileSync(state.path('units', 'f-1.json'), JSON.stringify({ version: 1, key: 'f-1', outputs: [] }));
    expect(readTrustedPlan(state, 'f-1')).toBeUndefined();
  });
});

describe('hostPathRead: which translated variables a unit must get with their host values', () => {
  const target = '/home/u/proj/target';
  const env = {
    CARGO_MANIFEST_DIR: '/home/u/proj',
    CARGO_BIN_EXE_app: `${target}/debug/app`,
    OUT_DIR: `${target}/debug/build/app-1/out`,
    GENERATED: `${target}/debug/build/app-1/out/gen.rs`,
    CARGO_TARGET_TMPDIR: `${target}/tmp`,
  };
  const translated = Object.keys(env);

  test('read runtime paths get host values; OUT_DIR and paths inside build-script outputs stay in the sandbox layout', () => {
    expect(hostPathRead(translated, ['CARGO_MANIFEST_DIR', 'CARGO_BIN_EXE_app', 'OUT_DIR', 'GENERATED', 'CARGO_TARGET_TMPDIR'], env, target)).toEqual(['CARGO_MANIFEST_DIR', 'CARGO_BIN_EXE_app', 'CARGO_TARGET_TMPDIR']);
  });

  test('nothing read, nothing given', () => {
    expect(hostPathRead(translated, ['OUT_DIR'], env, target)).toEqual([]);
    expect(hostPathRead(translated, [], env, target)).toEqual([]);
  });

  test('only translated variables count', () => {
    expect(hostPathRead([], ['CARGO_MANIFEST_DIR'], env, target)).toEqual([]);
  });
});

describe('incrementalCacheId: one per unit identity, never a host path', () => {
  const args = (root: string, extra: string[] = []) => [
    '--crate-name', 'app', '--edition=2021', 'src/main.rs', '--crate-type', 'bin', '-C', 'metadata=e6ecd1e27e0fc094',
    '-C', 'extra-filename=-36aadfce2873fda9', '--out-dir', `${root}/target/debug/deps`, '-C', `incremental=${root}/target/debug/incremental`, ...extra,
  ];
  const req = { baseImage: 'rustcbuildx/toolchain:1.95.0-x', driver: undefined, env: { CARGO_PKG_NAME: 'app' } };
  const id = incrementalCacheId(parseRustcArgs(args('/home/a/proj')), req);

  test('the same from another checkout and target dir; named for BuildKit', () => {
    expect(id).toMatch(/^rcbx-inc-[0-9a-f]{32}$/);
    expect(incrementalCacheId(parseRustcArgs(args('/srv/b/other')), { ...req, env: { ...req.env, CARGO_MANIFEST_DIR: '/srv/b/other' } })).toBe(id);
  });

  test('another toolchain, driver, metadata (profile, features), test harness or target: another state', () => {
    const others = [
      incrementalCacheId(parseRustcArgs(args('/home/a/proj')), { ...req, baseImage: 'rustcbuildx/toolchain:1.96.0-y' }),
      incrementalCacheId(parseRustcArgs(args('/home/a/proj')), { ...req, driver: 'clippy-driver' }),
      incrementalCacheId(parseRustcArgs(args('/home/a/proj').map((a) => a.replace('metadata=e6ec', 'metadata=0000'))), req),
      incrementalCacheId(parseRustcArgs(args('/home/a/proj', ['--test'])), req),
      incrementalCacheId(parseRustcArgs(args('/home/a/proj', ['--target', 'aarch64-unknown-linux-gnu'])), req),
    ];
    expect(new Set([id, ...others]).size).toBe(others.length + 1);
  });

  test("a custom target's JSON file counts by its name, not its host path", () => {
    const at = (dir: string) => incrementalCacheId(parseRustcArgs(args('/home/a/proj', ['--target', `${dir}/my-target.json`])), req);
    expect(at('/home/a/proj/targets')).toBe(at('/srv/b/targets'));
  });
});
