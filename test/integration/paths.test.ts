/**
 * Same answers as plain cargo where paths are concerned (test/fixtures/paths): a crate that reads
 * CARGO_MANIFEST_DIR at compile time, an integration test that runs the binary by CARGO_BIN_EXE_app and
 * finds fixtures by CARGO_MANIFEST_DIR, a proc-macro that reads a file the sandbox was not sent, and all
 * of it in a checkout whose path has a space. Every expected answer comes from plain cargo, run beside.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import type { UnitRecord } from '../../src/run-state.ts';
import { BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, ensureBaseImage, removeProject, ROOT, compileRecords } from './harness.ts';

beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 1_800_000;

/** A copy of the fixture in a fresh directory whose name is `prefix` plus random characters. */
function copyFixture(prefix: string): string {
  const dir = join(mkdtempSync(join(tmpdir(), prefix)), 'paths');
  cpSync(join(ROOT, 'test/fixtures/paths'), dir, { recursive: true, filter: (src) => !src.includes('/target') });
  return dir;
}

async function output(bin: string): Promise<string> {
  const res = await run([bin]);
  expect(res.code).toBe(0);
  return res.stdout.trim();
}

/** The records of the newest run under a target dir. */
async function lastRun(target: string): Promise<UnitRecord[]> {
  const runs = join(target, '.rustcbuildx', 'runs');
  const files = [...new Bun.Glob('*.jsonl').scanSync(runs)].map((f) => ({ f, t: Bun.file(join(runs, f)).lastModified }));
  const newest = files.sort((a, b) => b.t - a.t)[0];
  return newest ? compileRecords(join(runs, newest.f)) : [];
}

/** Builds and tests the fixture with plain cargo and through rustcbuildx, edits it, and does both again. */
function suite(name: string, prefix: string): void {
  describe(name, () => {
    let dir = '';
    beforeAll(() => {
      dir = copyFixture(prefix);
    });
    afterAll(() => removeProject(join(dir, '..')), CLEANUP_TIMEOUT);

    test('build: the bin prints its host CARGO_MANIFEST_DIR and the fixture it included, as plain cargo\'s does', async () => {
      const plain = join(dir, 'plain-target');
      expect((await cargo(dir, ['build', '--locked'], { CARGO_TARGET_DIR: plain })).code).toBe(0);
      const res = await buildx(dir, ['build', '--locked']);
      expect(res.code).toBe(0);
      const expected = await output(join(plain, 'debug', 'app'));
      expect(expected).toBe(`dir=${dir}/crates/app data=fixture data answer=42`);
      expect(await output(join(dir, 'target', 'debug', 'app'))).toBe(expected);
      const records = await lastRun(join(dir, 'target'));
      expect(records.find((r) => r.crate === 'app' && r.outcome === 'fallback')).toBeUndefined();
    }, LONG);

    test('a proc-macro reading a file outside its crate: the build succeeds as plain cargo\'s does, and the failure is not kept', async () => {
      expect(await output(join(dir, 'target', 'debug', 'uses-shared'))).toBe(await output(join(dir, 'plain-target', 'debug', 'uses-shared')));
      const first = (await lastRun(join(dir, 'target'))).find((r) => r.crate === 'uses_shared');
      expect(first).toMatchObject({ outcome: 'fallback', code: 0 });
      expect(first?.reason).toContain('proc macro panicked');
      // After cargo clean, with the memo (which remembers the failure) and without it (BuildKit must
      // not serve the failed step from its cache): it still builds.
      for (const extra of [{}, { RUSTCBUILDX_LOCAL_CACHE: 'off' }]) {
        expect((await cargo(dir, ['clean'])).code).toBe(0);
        expect((await buildx(dir, ['build', '--locked'], extra)).code).toBe(0);
        expect(await output(join(dir, 'target', 'debug', 'uses-shared'))).toBe('shared=shared text beside the crates');
      }
    }, LONG);

    test('test: CARGO_BIN_EXE_app and CARGO_MANIFEST_DIR in an integration test, before and after an edit', async () => {
      for (let round = 0; round < 2; round++) {
        const res = await buildx(dir, ['test', '--locked']);
        expect(res.stderr).not.toContain('FAILED');
        expect(res.code).toBe(0);
        expect(res.stdout).toContain('test result: ok. 2 passed');
        // A new edit every round: BuildKit's cache outlives test runs.
        appendFileSync(join(dir, 'crates/app/src/main.rs'), `\n// edited ${crypto.randomUUID()}\n`);
      }
      // cargo reads the dep-info we wrote: plain cargo afterwards rebuilds what the edit changed and passes.
      const plain = await cargo(dir, ['test', '--locked']);
      expect(plain.code).toBe(0);
      expect(plain.stdout).toContain('test result: ok. 2 passed');
    }, LONG);

    test('edit and rebuild: exactly the edited crate is compiled again, and the program is plain cargo\'s', async () => {
      appendFileSync(join(dir, 'crates/app/src/main.rs'), `\n// edited ${crypto.randomUUID()}\n`);
      expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
      expect((await lastRun(join(dir, 'target'))).map((r) => r.crate)).toEqual(['app']);
      expect(await output(join(dir, 'target', 'debug', 'app'))).toBe(`dir=${dir}/crates/app data=fixture data answer=42`);
      // A no-op afterwards compiles nothing: cargo accepts the dep-info we left (env-dep values included).
      const noop = await buildx(dir, ['build', '--locked']);
      expect(noop.code).toBe(0);
      expect(noop.stderr).not.toContain('Compiling');
    }, LONG);
  });
}

suite('path variables and files outside the crate', 'rcbx-paths-');
suite('the same in a checkout whose path has a space', 'rcbx paths ');
