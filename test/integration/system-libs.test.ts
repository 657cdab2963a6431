/**
 * A crate linking a system library: openssl-sys from crates.io (system OpenSSL, not vendored) under a
 * small bin. Without base extras its build script finds no pkg-config in the sandbox and the bin cannot
 * link -lssl there: both go local, with reasons naming the Debian packages. With `base.packages =
 * ["libssl-dev", "pkg-config"]` in the user's config and `rustcbuildx base build`, every unit and the build
 * script run in the sandbox, and the binary runs. Real cargo, rustc, crates.io, mmdebstrap and the engine.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { readRecords, type UnitRecord } from '../../src/run-state.ts';
import { BASE_BUILD_TIMEOUT, buildx, CLEANUP_TIMEOUT, ensureBaseImage, removeProject, RUSTCBUILDX, testEnv } from './harness.ts';

const LONG = 1_200_000;
const dir = mkdtempSync(join(tmpdir(), 'rcbx-it-ssl-'));
const withExtras = join(dir, 'extras.toml');

function records(target: string): UnitRecord[] {
  const runs = join(target, '.rustcbuildx', 'runs');
  return readdirSync(runs)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => readRecords(join(runs, f)));
}

beforeAll(async () => {
  await ensureBaseImage();
  mkdirSync(join(dir, 'app', 'src'), { recursive: true });
  writeFileSync(join(dir, 'app', 'Cargo.toml'), '[package]\nname = "sslcheck"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nopenssl-sys = "=0.9.118"\n');
  writeFileSync(
    join(dir, 'app', 'src', 'main.rs'),
    'fn main() {\n    unsafe { openssl_sys::init() };\n    println!("openssl {:x}", unsafe { openssl_sys::OpenSSL_version_num() });\n}\n',
  );
  writeFileSync(withExtras, '[base]\npackages = ["libssl-dev", "pkg-config"]\n');
  const res = await run(['cargo', 'generate-lockfile'], { cwd: join(dir, 'app'), env: testEnv(), timeoutMs: 300_000 });
  if (res.code !== 0) throw new Error(`cargo generate-lockfile: ${res.stderr}`);
}, BASE_BUILD_TIMEOUT);

afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

describe('a crate that links the system OpenSSL', () => {
  test('without base extras: the script and the link go local, the reasons name pkg-config and libssl-dev', async () => {
    const target = join(dir, 'target-before');
    const res = await buildx(join(dir, 'app'), ['build', '--locked'], { CARGO_TARGET_DIR: target });
    expect(res.code).toBe(0);
    const all = records(target);
    const script = all.find((r) => r.kind === 'build-script' && r.crate === 'openssl-sys');
    expect(script?.outcome).toBe('fallback');
    expect(script?.reason).toContain('add "libssl-dev", "pkg-config" to base.packages');
    const bin = all.find((r) => r.kind === undefined && r.crate === 'sslcheck');
    expect(bin?.outcome).toBe('fallback');
    // known before building: no compile in the sandbox only to fail at the link
    expect(bin?.reason).toContain('it links -lssl -lcrypto, which the base image lacks: add "libssl-dev" to base.packages');
    expect(bin?.reason).toContain('without trying the sandbox');
    expect((await run([join(target, 'debug', 'sslcheck')])).stdout).toStartWith('openssl 3');
  }, LONG);

  test('with libssl-dev and pkg-config in base.packages: base build, then zero fallback and the binary runs', async () => {
    const env = { RUSTCBUILDX_CONFIG: withExtras };
    const base = await run([RUSTCBUILDX, 'base', 'build'], { env: testEnv(env), timeoutMs: BASE_BUILD_TIMEOUT });
    expect(base.code).toBe(0);
    expect(base.stdout).toMatch(/rustcbuildx\/toolchain:1\.\d+\.\d+-\w+-x86_64-unknown-linux-gnu-x[0-9a-f]{12} /);
    // the new image is what the wrapper finds
    const show = await run([RUSTCBUILDX, 'env'], { env: testEnv(env), timeoutMs: 120_000 });
    expect(show.stdout).toMatch(/base image: rustcbuildx\/toolchain:\S+-x[0-9a-f]{12} \(local-toolchain\)/);
    expect(show.stdout).toContain(`base.packages   = ["libssl-dev","pkg-config"]   (${withExtras})`);

    const target = join(dir, 'target-after');
    const res = await buildx(join(dir, 'app'), ['build', '--locked'], { ...env, CARGO_TARGET_DIR: target });
    expect(res.code).toBe(0);
    const all = records(target);
    expect(all.filter((r) => r.outcome === 'fallback' || r.outcome === 'local').map((r) => `${r.crate}: ${r.reason}`)).toEqual([]);
    // built, or BuildKit's cache from an earlier run on this engine: in the sandbox either way
    expect(['built', 'cached']).toContain(all.find((r) => r.kind === 'build-script' && r.crate === 'openssl-sys')?.outcome ?? 'missing');
    expect(['built', 'cached']).toContain(all.find((r) => r.kind === undefined && r.crate === 'sslcheck')?.outcome ?? 'missing');
    expect((await run([join(target, 'debug', 'sslcheck')])).stdout).toStartWith('openssl 3');
  }, BASE_BUILD_TIMEOUT);

  test('zlib through libz-sys, dynamic: the bin is compiled here at once, naming zlib1g-dev; with it in base.packages, in the sandbox', async () => {
    const app = join(dir, 'zapp');
    mkdirSync(join(app, 'src'), { recursive: true });
    writeFileSync(join(app, 'Cargo.toml'), '[package]\nname = "zcheck"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nlibz-sys = { version = "=1.1.22", default-features = false, features = ["libc"] }\n');
    writeFileSync(join(app, 'src', 'main.rs'), 'fn main() {\n    let v = unsafe { std::ffi::CStr::from_ptr(libz_sys::zlibVersion()) };\n    println!("zlib {}", v.to_str().unwrap());\n}\n');
    expect((await run(['cargo', 'generate-lockfile'], { cwd: app, env: testEnv(), timeoutMs: 300_000 })).code).toBe(0);

    const before = join(dir, 'target-z-before');
    const res = await buildx(app, ['build', '--locked'], { CARGO_TARGET_DIR: before, RUSTCBUILDX_LOG: 'debug' });
    expect(res.code).toBe(0);
    // after its summary, cargo buildx says what to add and the one command that does it
    expect(res.stderr).toContain('left the sandbox for what the base image lacks (pkg-config, zlib1g-dev): in the project, `rustcbuildx base build --add-suggested`');
    const bin = records(before).find((r) => r.kind === undefined && r.crate === 'zcheck');
    expect(bin?.outcome).toBe('fallback');
    expect(bin?.reason).toContain('it links -lz, which the base image lacks: add "zlib1g-dev" to base.packages');
    // the debug log shows no engine build for the bin's unit
    const logs = readdirSync(join(before, '.rustcbuildx', 'runs')).filter((f) => f.endsWith('.log'));
    const log = logs.map((f) => readFileSync(join(before, '.rustcbuildx', 'runs', f), 'utf8')).join('\n');
    expect(log).toMatch(/\[\d+ zcheck-[0-9a-f]+\] fallback: it links -lz/);
    expect(log).not.toMatch(/\[\d+ zcheck-[0-9a-f]+\] engine exit/);
    expect((await run([join(before, 'debug', 'zcheck')])).stdout).toStartWith('zlib 1.');
    // the package for the library this machine links, found for the user
    const suggest = await run([RUSTCBUILDX, 'base', 'suggest'], { cwd: app, env: testEnv({ CARGO_TARGET_DIR: before }), timeoutMs: 120_000 });
    expect(suggest.code).toBe(0);
    expect(suggest.stdout).toMatch(/-lz: \/\S+\/libz\.so from zlib1g-dev/);
    expect(suggest.stdout).toContain('libz-sys (build script): went local, asking for pkg-config');
    expect(suggest.stdout).toContain('packages = ["pkg-config", "zlib1g-dev"]');

    // base build in the project: without a terminal it says what it would add, and adds nothing
    const env = { RUSTCBUILDX_CONFIG: join(dir, 'z.toml') };
    writeFileSync(env.RUSTCBUILDX_CONFIG, '# mine\nlog = "info"\n');
    const offered = await run([RUSTCBUILDX, 'base', 'build'], { cwd: app, env: testEnv({ ...env, CARGO_TARGET_DIR: before }), timeoutMs: BASE_BUILD_TIMEOUT });
    expect(offered.code, offered.stderr).toBe(0);
    expect(offered.stdout).toContain(`to add pkg-config, zlib1g-dev to base.packages in ${env.RUSTCBUILDX_CONFIG} and build that image: rustcbuildx base build --add-suggested`);
    expect(readFileSync(env.RUSTCBUILDX_CONFIG, 'utf8')).toBe('# mine\nlog = "info"\n');
    // --add-suggested: pkg-config (the script that probed with it went local) and zlib1g-dev (-lz), into the user's file, and the image built with them
    const added = await run([RUSTCBUILDX, 'base', 'build', '--add-suggested'], { cwd: app, env: testEnv({ ...env, CARGO_TARGET_DIR: before }), timeoutMs: BASE_BUILD_TIMEOUT });
    expect(added.code, added.stderr).toBe(0);
    expect(added.stdout).toContain(`added pkg-config, zlib1g-dev to base.packages in ${env.RUSTCBUILDX_CONFIG}`);
    expect(readFileSync(env.RUSTCBUILDX_CONFIG, 'utf8')).toBe('# mine\nlog = "info"\n\n[base]\npackages = ["pkg-config", "zlib1g-dev"]\n');
    expect(added.stdout).toMatch(/rustcbuildx\/toolchain:\S+-x[0-9a-f]{12} sha256:/);
    const after = join(dir, 'target-z-after');
    expect((await buildx(app, ['build', '--locked'], { ...env, CARGO_TARGET_DIR: after })).code).toBe(0);
    expect(records(after).filter((r) => r.outcome === 'fallback' || r.outcome === 'local').map((r) => `${r.crate}: ${r.reason}`)).toEqual([]);
    expect((await run([join(after, 'debug', 'zcheck')])).stdout).toStartWith('zlib 1.');
  }, BASE_BUILD_TIMEOUT);

  test('a package apt does not know: base build says which, and names the setting', async () => {
    const bad = join(dir, 'bad.toml');
    writeFileSync(bad, '[base]\npackages = ["libssl-dev", "no-such-package-rcbx"]\n');
    const res = await run([RUSTCBUILDX, 'base', 'build'], { env: testEnv({ RUSTCBUILDX_CONFIG: bad }), timeoutMs: BASE_BUILD_TIMEOUT });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('no package no-such-package-rcbx: check base.packages');
  }, BASE_BUILD_TIMEOUT);

  test('a broken config: cargo buildx stops with the file, key and accepted values; plain cargo through the wrapper warns once and builds', async () => {
    const bad = join(dir, 'broken.toml');
    writeFileSync(bad, 'runner = "dockr"\n');
    const res = await buildx(join(dir, 'app'), ['build', '--locked'], { RUSTCBUILDX_CONFIG: bad, CARGO_TARGET_DIR: join(dir, 'target-broken') });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`${bad}: runner: "dockr" is not accepted; accepted: docker, docker-build, podman, none`);
    const wrapped = await run(['cargo', 'build', '--locked'], { cwd: join(dir, 'app'), env: testEnv({ RUSTCBUILDX_CONFIG: bad, RUSTC_WRAPPER: RUSTCBUILDX, CARGO_TARGET_DIR: join(dir, 'target-broken') }), timeoutMs: LONG });
    expect(wrapped.code).toBe(0);
    expect(wrapped.stderr.split(`${bad}: runner: "dockr" is not accepted`).length - 1).toBe(1);
  }, LONG);
});
