/** The podman runner: its own base image in its own store, and the demo built through it. */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { BASE_BUILD_TIMEOUT, buildx, CLEANUP_TIMEOUT, copyProject, ENGINE_ONLY, ensureBaseImage, plainCompileCount, removeProject, RUSTCBUILDX, stats, testEnv } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('podman'), BASE_BUILD_TIMEOUT);

const LONG = 1_800_000;

describe('podman runner', () => {
  let dir = '';
  beforeAll(() => {
    dir = copyProject('examples/demo');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test('`base build --runner podman` makes an image whose rustc equals the local one', async () => {
    const built = await run([RUSTCBUILDX, 'base', 'build', '--runner', 'podman'], { env: testEnv(), timeoutMs: LONG });
    expect(built.code).toBe(0);
    expect(built.stdout).toMatch(/ on podman \([^)]*\): (built; `rustc -vV` inside equals outside|already present: nothing to do)/);
    const show = await run([RUSTCBUILDX, 'base', 'show', '--runner', 'podman', '--json'], { env: testEnv() });
    expect(show.code).toBe(0);
    const choice = JSON.parse(show.stdout) as { reason: string; runner: string; id: string };
    expect(choice).toMatchObject({ reason: 'local-toolchain', runner: 'podman' });
    expect(choice.id).toMatch(/^sha256:[0-9a-f]{64}$/);
  }, LONG);

  test('cargo buildx build with RUSTCBUILDX_RUNNER=podman: every unit sandboxed, the binary runs', async () => {
    const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_RUNNER: 'podman' });
    expect(res.code).toBe(0);
    const s = await stats(dir);
    expect(s.fallback).toBe(0);
    expect(s.units).toBe(await plainCompileCount(dir, join(dir, 'plain-target')));
    const bin = await run([join(dir, 'target/debug/rustcbuildx-demo')]);
    expect(bin.stdout).toContain('hello from a binary built by rustcbuildx');
  }, LONG);
});
