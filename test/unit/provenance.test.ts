import { afterAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closurePrivate, depMetadataPrivate, namedToShare, originPrivate, outputsPrivate, recordRunPrivacy, userEnvPrivate } from '../../src/plan/provenance';
import { RunState } from '../../src/run-state';
import type { UnitPlan } from '../../src/plan/plans';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('which results may leave this machine', () => {
  const home = '/home/u/.cargo';
  test('only crates.io crates by origin; workspace, git and other registries stay home', () => {
    expect(originPrivate(home, `${home}/registry/src/index.crates.io-1949cf8c6b5b557f/serde-1.0.0`)).toBeUndefined();
    expect(originPrivate(home, `${home}/registry/src/github.com-1ecc6299db9ec823/serde-1.0.0`)).toBeUndefined();
    expect(originPrivate(home, `${home}/registry/src/my-corp-0123456789abcdef/secret-1.0.0`)).toBe('from the registry my-corp, not crates.io');
    expect(originPrivate(home, `${home}/git/checkouts/thing-0123/abcdef0`)).toBe('a git dependency');
    expect(originPrivate(home, '/home/u/project/crates/core')).toBe('a crate of the workspace or a path dependency');
  });

  test('a dependency that is private, or of unknown origin (an older plan), makes its dependents private', () => {
    const plan = (crate: string, p: UnitPlan['private']): UnitPlan => ({ version: 2, key: crate, crate, snippet: '', closure: [], hostOutDir: '/', outputs: [], envDeps: [], hostPathVars: [], ...(p === undefined ? {} : { private: p }) });
    expect(closurePrivate([plan('a', false), plan('b', false)])).toBeUndefined();
    expect(closurePrivate([plan('a', false), plan('core', 'a crate of the workspace or a path dependency')])).toBe('depends on core, a crate of the workspace or a path dependency');
    expect(closurePrivate([plan('old', undefined)])).toBe('depends on old, built before rustcbuildx recorded where units come from');
  });

  test('what a build script made is as private as its run, and only while its outputs are what that run gave back', () => {
    const target = mkdtempSync(join(tmpdir(), 'rcbx-prov-'));
    dirs.push(target);
    const state = new RunState(target, 'r1');
    const runDir = (pkg: string) => join(target, 'debug', 'build', pkg);
    const out = (pkg: string) => join(runDir(pkg), 'out');
    const ran = (pkg: string, why: string | undefined, links?: string) => {
      mkdirSync(out(pkg), { recursive: true });
      writeFileSync(join(out(pkg), 'gen.rs'), 'pub const X: u32 = 1;\n');
      writeFileSync(join(runDir(pkg), 'output'), 'cargo:rustc-cfg=x\n');
      recordRunPrivacy(state, runDir(pkg), why, { outDir: out(pkg), stdout: 'cargo:rustc-cfg=x\n' }, links);
    };
    ran('zstd-sys-0123', undefined, 'zstd');
    ran('app-4567', 'which ran on this machine (the network)');
    expect(outputsPrivate(state, [out('zstd-sys-0123'), join(target, 'debug', 'deps')])).toBeUndefined();
    expect(outputsPrivate(state, [join(out('zstd-sys-0123'), 'lib')])).toBeUndefined();
    expect(outputsPrivate(state, [out('app-4567')])).toBe('uses what the build script of app made, which ran on this machine (the network)');
    expect(outputsPrivate(state, [out('never-89ab')])).toContain('uses what the build script of never made, which ran before rustcbuildx recorded');
    // The links crate's metadata, as its dependents' scripts receive it.
    expect(depMetadataPrivate(state, runDir('zstd-0001'), ['CARGO_PKG_NAME', 'DEP_ZSTD_INCLUDE'])).toBeUndefined();
    expect(depMetadataPrivate(state, runDir('openssl-0002'), ['DEP_OPENSSL_VERSION_NUMBER'])).toBe('receives $DEP_OPENSSL_VERSION_NUMBER from a build script rustcbuildx has no record of');
    // Run again without us (plain cargo through the shim): another OUT_DIR, or other directives.
    writeFileSync(join(out('zstd-sys-0123'), 'gen.rs'), 'pub const X: u32 = 2;\n');
    expect(outputsPrivate(state, [out('zstd-sys-0123')])).toBe('uses what the build script of zstd-sys made, which ran again since its sandboxed run, not through rustcbuildx');
    expect(depMetadataPrivate(state, runDir('zstd-0001'), ['DEP_ZSTD_INCLUDE'])).toBe('receives $DEP_ZSTD_INCLUDE from the build script of zstd-sys, which ran again since its sandboxed run, not through rustcbuildx');
    writeFileSync(join(out('zstd-sys-0123'), 'gen.rs'), 'pub const X: u32 = 1;\n');
    expect(outputsPrivate(state, [out('zstd-sys-0123')])).toBeUndefined();
    writeFileSync(join(runDir('zstd-sys-0123'), 'output'), 'cargo:rustc-cfg=y\n');
    expect(outputsPrivate(state, [out('zstd-sys-0123')])).toContain('ran again since its sandboxed run');
    // A run that started and never finished through us.
    recordRunPrivacy(state, runDir('zstd-sys-0123'), 'which did not finish through rustcbuildx');
    expect(outputsPrivate(state, [out('zstd-sys-0123')])).toContain('which did not finish through rustcbuildx');
  });

  test('values from the user\'s environment; names and globs the user shares', () => {
    expect(userEnvPrivate([])).toBeUndefined();
    expect(userEnvPrivate(['GREETING', 'MODE'])).toBe('reads $GREETING, $MODE from your environment');
    expect(namedToShare(['acme-core'], ['acme-*'])).toBe(true);
    expect(namedToShare(['acme_core'], ['acme-core'])).toBe(true);
    expect(namedToShare(['acme-core'], ['acme'])).toBe(false);
    expect(namedToShare(['xacme'], ['acme*'])).toBe(false);
  });
});
