import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closurePrivate, namedToShare, originPrivate, outputsPrivate, recordRunPrivacy, userEnvPrivate } from '../../src/plan/provenance';
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

  test('what a build script made is as private as its run; a run never recorded counts as private', () => {
    const target = mkdtempSync(join(tmpdir(), 'rcbx-prov-'));
    dirs.push(target);
    const state = new RunState(target, 'r1');
    const out = (pkg: string) => join(target, 'debug', 'build', pkg, 'out');
    recordRunPrivacy(state, 'run-zstd-sys-0123', undefined);
    recordRunPrivacy(state, 'run-app-4567', 'which ran on this machine (the network)');
    expect(outputsPrivate(state, [out('zstd-sys-0123'), join(target, 'debug', 'deps')])).toBeUndefined();
    expect(outputsPrivate(state, [join(out('zstd-sys-0123'), 'lib')])).toBeUndefined();
    expect(outputsPrivate(state, [out('app-4567')])).toBe('uses what the build script of app made, which ran on this machine (the network)');
    expect(outputsPrivate(state, [out('never-89ab')])).toContain('uses what the build script of never made, which ran before rustcbuildx recorded');
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
