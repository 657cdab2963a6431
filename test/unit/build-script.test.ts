import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildScriptProgram, installShim, planBuildScriptRun, realProgram, runKey } from '../../src/plan/build-script';
import { LocalOnly } from '../../src/plan/unit';
import { PathMap } from '../../src/plan/sandbox-paths';
import { cFlagsWithMaps } from '../../src/plan/cargo-env';
import { parseRustcArgs } from '../../src/rustc/args';
import { RunState } from '../../src/run-state';
import { envReadBy, explain, sandboxPathsIn } from '../../src/wrapper/build-script';

const scratch = mkdtempSync(join(tmpdir(), 'rcbx-build-script-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const parse = (args: string[]) => parseRustcArgs(args, () => '');

describe('buildScriptProgram', () => {
  const base = ['--edition=2021', 'build.rs', '--crate-type', 'bin', '-C', 'metadata=abc', '-C', 'extra-filename=-0123abcd'];
  test('a build script: the program rustc writes in build/<pkg>-<hash>/', () => {
    const call = parse(['--crate-name', 'build_script_build', ...base, '--out-dir', '/w/target/debug/build/gen-0123abcd']);
    expect(buildScriptProgram(call, '/w')).toBe('/w/target/debug/build/gen-0123abcd/build_script_build-0123abcd');
  });
  test('a relative out-dir is cargo\'s cwd\'s', () => {
    const call = parse(['--crate-name', 'build_script_build', ...base, '--out-dir', 'target/debug/build/gen-0123abcd']);
    expect(buildScriptProgram(call, '/w')).toBe('/w/target/debug/build/gen-0123abcd/build_script_build-0123abcd');
  });
  test.each([
    ['a bin named like one, in deps/', ['--crate-name', 'build_script_build', ...base, '--out-dir', '/w/target/debug/deps']],
    ['a lib in build/', ['--crate-name', 'build_script_build', '--crate-type', 'lib', 'build.rs', '--out-dir', '/w/target/debug/build/gen-1']],
    ['any other crate', ['--crate-name', 'gen', ...base, '--out-dir', '/w/target/debug/build/gen-0123abcd']],
  ])('not a build script: %s', (_name, args) => {
    expect(buildScriptProgram(parse(args), '/w')).toBeUndefined();
  });
});

describe('installShim', () => {
  test('the program moves into the state dir; the shim runs it through the rustcbuildx cargo names as its wrapper, or by itself', () => {
    const target = join(scratch, 'shim target');
    const dir = join(target, 'debug', 'build', 'gen-1');
    mkdirSync(dir, { recursive: true });
    const program = join(dir, 'build_script_build-1');
    writeFileSync(program, '#!/bin/sh\necho "real $*"\n');
    chmodSync(program, 0o755);
    const real = realProgram(join(target, '.rustcbuildx'), target, program);
    expect(real).toBe(join(target, '.rustcbuildx', 'programs', 'debug', 'build', 'gen-1', 'build_script_build-1'));
    installShim(program, real, "/w's ws");
    expect(readFileSync(real, 'utf8')).toBe('#!/bin/sh\necho "real $*"\n');
    expect(readFileSync(program, 'utf8')).toStartWith('#!/bin/sh\n# Written by rustcbuildx');
    expect(statSync(program).mode & 0o777).toBe(0o755);
    const runShim = (env: Record<string, string>) => Bun.spawnSync([program, 'a b'], { env: { PATH: process.env.PATH ?? '', ...env } }).stdout.toString();
    // cargo without us: the program itself
    expect(runShim({})).toBe('real a b\n');
    expect(runShim({ RUSTC_WRAPPER: '/usr/bin/sccache' })).toBe('real a b\n');
    // cargo with us: our command, with the program found from the shim's own place
    const fake = join(scratch, 'rustcbuildx');
    writeFileSync(fake, '#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n');
    chmodSync(fake, 0o755);
    expect(runShim({ RUSTC_WRAPPER: fake })).toBe(`[__build-script]\n[--workspace]\n[/w's ws]\n[${dir}/../../../.rustcbuildx/programs/debug/build/gen-1/build_script_build-1]\n[a b]\n`);
  });
});

describe('planBuildScriptRun', () => {
  const root = join(scratch, 'ws');
  const target = join(root, 'target');
  const state = new RunState(target, 'run-1');
  const cargoHome = join(scratch, 'cargo');
  const pkgBuild = join(target, 'debug', 'build');
  mkdirSync(join(root, 'gen'), { recursive: true });
  writeFileSync(join(root, 'gen', 'Cargo.toml'), '[package]\nname = "gen"\n');
  writeFileSync(join(root, 'gen', 'build.rs'), 'fn main() {}\n');
  mkdirSync(join(pkgBuild, 'gen-2', 'out'), { recursive: true });
  mkdirSync(join(pkgBuild, 'zlib-3', 'out', 'include'), { recursive: true });
  writeFileSync(join(pkgBuild, 'zlib-3', 'out', 'include', 'zlib.h'), '/* z */\n');
  mkdirSync(join(pkgBuild, 'gen-1'), { recursive: true });
  const program = join(pkgBuild, 'gen-1', 'build_script_build-1.real');
  writeFileSync(program, 'program');
  const env = {
    CARGO_HOME: cargoHome,
    CARGO_MANIFEST_DIR: join(root, 'gen'),
    OUT_DIR: join(pkgBuild, 'gen-2', 'out'),
    CARGO_PKG_NAME: 'gen',
    TARGET: 'x86_64-unknown-linux-gnu',
    RUSTC: '/home/u/.rustup/toolchains/stable/bin/rustc',
    RUSTC_WRAPPER: '/usr/local/bin/rustcbuildx',
    CARGO_MAKEFLAGS: '-j --jobserver-auth=3,4',
    DEP_Z_INCLUDE: join(pkgBuild, 'zlib-3', 'out', 'include'),
    CFLAGS: `-O2 -ffile-prefix-map=${target}=/x`,
    HOME: '/home/u',
    GEN_GREETING: 'hola',
    API_TOKEN: 'secret',
  };
  const plan = (setEnvs: string[] = []) =>
    planBuildScriptRun({ program, args: [], env, workspace: root, state, baseImage: 'img', baseImageConfig: { env: [], user: '' }, setEnvs });

  test('cargo\'s variables and the common C ones, in sandbox paths; the toolchain inside; nothing else', () => {
    const { spec, key } = plan();
    expect(key).toBe('run-gen-2');
    const vars = Object.fromEntries(spec.env);
    expect(vars).toEqual({
      CARGO: '/opt/rust/bin/cargo',
      RUSTC: '/opt/rust/bin/rustc',
      RUSTDOC: '/opt/rust/bin/rustdoc',
      CARGO_HOME: '/rcbx/cargo',
      CARGO_MANIFEST_DIR: '/rcbx/ws/gen',
      CARGO_PKG_NAME: 'gen',
      CFLAGS: '-O2 -ffile-prefix-map=/rcbx/t=/x',
      DEP_Z_INCLUDE: '/rcbx/t/debug/build/zlib-3/out/include',
      OUT_DIR: '/rcbx/t/debug/build/gen-2/out',
      TARGET: 'x86_64-unknown-linux-gnu',
    });
    expect(spec.cwd).toBe('/rcbx/ws/gen');
    expect(spec.outputsAt).toBe('/rcbx/t/debug/build/gen-2/out');
    // the builder's cores, as the step runs (cargo's NUM_JOBS is this machine's -j); writes beside OUT_DIR are caught
    expect(spec.jobsVar).toBe('NUM_JOBS');
    expect(spec.guardWrites).toBe('/rcbx/t');
    expect(spec.program).toEqual(['/rcbx/bin/build_script_build-1.real']);
    // the program by content, and the other script's OUT_DIR the variable names, mounted where it says
    expect(spec.inputs.map((i) => (i.kind === 'tree' ? [i.ctxPath.split('/')[0], i.target] : []))).toEqual([
      ['dirs', '/rcbx/bin'],
      ['dirs', '/rcbx/t/debug/build/zlib-3/out'],
    ]);
  });

  test('names the user allows, or the script declared, are passed too', () => {
    expect(Object.fromEntries(plan(['GEN_GREETING']).spec.env).GEN_GREETING).toBe('hola');
  });

  test('the same script from another checkout is the same step', () => {
    const a = plan().spec;
    expect(JSON.stringify(a)).not.toContain(root);
    expect(runKey(env.OUT_DIR)).toBe('run-gen-2');
  });

  test('C flags or rustflags asking for the native CPU: the script runs here', () => {
    for (const extra of [{ CFLAGS: '-O2 -march=native' }, { CARGO_ENCODED_RUSTFLAGS: '-C\x1ftarget-cpu=native' }]) {
      expect(() => planBuildScriptRun({ program, args: [], env: { ...env, ...extra }, workspace: root, state, baseImage: 'img', baseImageConfig: { env: [], user: '' }, setEnvs: [] })).toThrow(/native/);
    }
  });

  test('a crate outside the workspace, CARGO_HOME and the target dir cannot be mounted', () => {
    expect(() => planBuildScriptRun({ program, args: [], env: { ...env, CARGO_MANIFEST_DIR: '/elsewhere/gen' }, workspace: root, state, baseImage: 'img', baseImageConfig: { env: [], user: '' }, setEnvs: [] })).toThrow(LocalOnly);
  });
});

describe('PathMap.toSandboxText', () => {
  const map = new PathMap({ workspace: '/w/p', cargoHome: '/h/.cargo', target: '/w/p/target', outDir: '/w/p/target/debug/deps' });
  test.each([
    ['flags', '-I/w/p/inc -isystem /h/.cargo/x -ffile-prefix-map=/w/p/target=/x', '-I/rcbx/ws/inc -isystem /rcbx/cargo/x -ffile-prefix-map=/rcbx/t=/x'],
    ['a search path list', '/h/.cargo/a:/w/p/b', '/rcbx/cargo/a:/rcbx/ws/b'],
    ['only whole components', '/w/p2/x /w/pp', '/w/p2/x /w/pp'],
    ['not inside another path', '/x/w/p/y', '/x/w/p/y'],
    ['cargo\'s encoded flags (0x1f between)', '-L\x1f/w/p/target/debug', '-L\x1f/rcbx/t/debug'],
  ])('%s', (_name, text, expected) => {
    expect(map.toSandboxText(text)).toBe(expected);
  });
});

describe('what a script says', () => {
  test('rerun-if-env-changed, both spellings', () => {
    expect(envReadBy(Buffer.from('cargo:rerun-if-env-changed=CC\ncargo::rerun-if-env-changed=GEN_GREETING\r\ncargo:rustc-cfg=x\ncargo:rerun-if-env-changed=CC\n'))).toEqual(['CC', 'GEN_GREETING']);
  });
  test('a failure: its panic message, and whether it wanted the network', () => {
    expect(explain(["thread 'main' panicked at build.rs:9:59:", 'cannot reach 127.0.0.1:9: Connection refused (os error 111)', 'note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace'])).toBe(
      'cannot reach 127.0.0.1:9: Connection refused (os error 111); the sandbox has no network',
    );
    expect(explain(['error: cmake not found', ''])).toBe('error: cmake not found');
    expect(explain([])).toBeUndefined();
    expect(explain(['Error: Os { code: 30, kind: ReadOnlyFilesystem, message: "Read-only file system" }'])).toBe('Error: Os { code: 30, kind: ReadOnlyFilesystem, message: "Read-only file system" }; it writes into its crate\'s sources, which the sandbox gives read-only');
  });
});

describe('cFlagsWithMaps', () => {
  test('a map per root, longest last (gcc takes the last that matches), after the user\'s own flags; a root with a space is left out', () => {
    expect(cFlagsWithMaps({ CFLAGS: '-O1' }, { cargoHome: '/h/.cargo', workspace: '/w/p', target: '/w/p/target' })).toEqual({
      CFLAGS: '-O1 -ffile-prefix-map=/w/p=/rcbx/ws -ffile-prefix-map=/h/.cargo=/rcbx/cargo -ffile-prefix-map=/w/p/target=/rcbx/t',
      CXXFLAGS: '-ffile-prefix-map=/w/p=/rcbx/ws -ffile-prefix-map=/h/.cargo=/rcbx/cargo -ffile-prefix-map=/w/p/target=/rcbx/t',
    });
    expect(cFlagsWithMaps({}, { cargoHome: '/h/.cargo', workspace: '/w/my proj' }).CFLAGS).toBe('-ffile-prefix-map=/h/.cargo=/rcbx/cargo');
  });
});

describe('sandbox paths left in OUT_DIR', () => {
  test('a generated source naming one is found; a probe\'s dep-info is not counted', () => {
    const out = mkdtempSync(join(tmpdir(), 'rcbx-outdir-'));
    try {
      writeFileSync(join(out, 'proc_macro2.d'), '/rcbx/t/debug/build/proc-macro2-1/out/proc_macro2.d: /rcbx/cargo/registry/src/x/proc-macro2-1.0.86/build/probe.rs\n');
      expect(sandboxPathsIn(out)).toBeUndefined();
      writeFileSync(join(out, 'bindings.rs'), 'include!("/rcbx/t/debug/build/x/out/gen.rs");\n');
      expect(sandboxPathsIn(out)).toBe("the build script's OUT_DIR holds sandbox paths (bindings.rs); it runs here");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
