/**
 * The base image holds exactly the local toolchain; the CLI reports it and names the fix when it is
 * missing; an image not made by us is used only when its `rustc -vV` equals the local one.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ensureBaseImage, removeProject, RUSTCBUILDX, stats, testEnv } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 900_000;

describe('base image', () => {
  test('`base build` again is a no-op and `rustc -vV` inside equals outside', async () => {
    const again = await run([RUSTCBUILDX, 'base', 'build'], { env: testEnv(), timeoutMs: 900_000 });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already present: nothing to do');
    const show = await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: testEnv() });
    expect(show.code).toBe(0);
    const choice = JSON.parse(show.stdout) as { image: string; id: string; reason: string };
    expect(choice.reason).toBe('local-toolchain');
    expect(choice.id).toMatch(/^sha256:[0-9a-f]{64}$/);
    const inside = await run(['docker', 'run', '--rm', '--network', 'none', choice.image, 'rustc', '-vV']);
    const outside = await run(['rustc', '-vV']);
    expect(inside.code).toBe(0);
    expect(inside.stdout).toBe(outside.stdout);
  }, 900_000);

  test('`base show` names image, digest and reason', async () => {
    const show = await run([RUSTCBUILDX, 'base', 'show'], { env: testEnv() });
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^image: +rustcbuildx\/toolchain:1\.\d+\.\d+-[0-9a-f]{12}-x86_64-unknown-linux-gnu$/m);
    expect(show.stdout).toMatch(/^digest: +sha256:[0-9a-f]{64}$/m);
    expect(show.stdout).toMatch(/^reason: +local-toolchain: /m);
  });

  test('a toolchain with no image is an error that names the command to run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rcbx-fake-rustc-'));
    const fake = join(dir, 'rustc');
    writeFileSync(
      fake,
      '#!/bin/sh\nif [ "$1" = "-vV" ]; then printf "rustc 1.80.0-nightly (0123456789ab 2024-05-01)\\nbinary: rustc\\ncommit-hash: 0123456789abcdef0123456789abcdef01234567\\ncommit-date: 2024-05-01\\nhost: x86_64-unknown-linux-gnu\\nrelease: 1.80.0-nightly\\nLLVM version: 18.1.4\\n"; else echo /nonexistent; fi\n',
    );
    chmodSync(fake, 0o755);
    const show = await run([RUSTCBUILDX, 'base', 'show'], { env: testEnv({ RUSTC: fake }) });
    expect(show.code).toBe(1);
    expect(show.stderr).toContain('no base image for rustc 1.80.0-nightly');
    expect(show.stderr).toContain('in the store of docker (local default)');
    expect(show.stderr).toContain('Make it with: rustcbuildx base build\n');
    // Named by DOCKER_HOST (a remote builder looks the same): the message says which engine, and the
    // command it suggests carries the same endpoint, whatever the user's next shell has set.
    const remote = await run([RUSTCBUILDX, 'base', 'show'], { env: testEnv({ RUSTC: fake, DOCKER_HOST: 'unix:///var/run/docker.sock' }) });
    expect(remote.code).toBe(1);
    expect(remote.stderr).toContain('in the store of docker (DOCKER_HOST=unix:///var/run/docker.sock)');
    expect(remote.stderr).toContain('Make it with: DOCKER_HOST=unix:///var/run/docker.sock rustcbuildx base build\n');
  });

  test('an engine that does not answer is named with its endpoint', async () => {
    const res = await run([RUSTCBUILDX, 'base', 'show'], { env: testEnv({ DOCKER_HOST: 'unix:///tmp/rcbx-no-engine-here.sock', RUSTCBUILDX_RUNNER: 'docker' }) });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain('docker (DOCKER_HOST=unix:///tmp/rcbx-no-engine-here.sock) does not answer');
  });

  test('--version prints name and version', async () => {
    const res = await run([RUSTCBUILDX, '--version']);
    expect(res.stdout).toMatch(/^rustcbuildx \d+\.\d+\.\d+\n$/);
  });
});

describe('RUSTCBUILDX_BASE_IMAGE', () => {
  let dir = '';
  let toolchainImage = '';
  /** The toolchain image with a rustc that says another commit for -vV and otherwise is the real one. */
  const impostor = `rustcbuildx-test/other-rustc:${process.pid}`;
  beforeAll(async () => {
    dir = copyProject('examples/demo');
    toolchainImage = (JSON.parse((await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: testEnv() })).stdout) as { image: string }).image;
    const dockerfile = [
      `FROM ${toolchainImage}`,
      'RUN mv /opt/rust/bin/rustc /opt/rust/bin/rustc.real && \\',
      `    printf '#!/bin/sh\\nif [ "$1" = -vV ]; then /opt/rust/bin/rustc.real -vV | sed "s/^commit-hash: ........./commit-hash: 000000000/"; else exec /opt/rust/bin/rustc.real "$@"; fi\\n' >/opt/rust/bin/rustc && \\`,
      '    chmod +x /opt/rust/bin/rustc',
      '',
    ].join('\n');
    const made = await run(['docker', 'build', '-q', '--network', 'none', '-t', impostor, '-'], { stdin: dockerfile, timeoutMs: LONG });
    expect(made.stderr).toBe('');
    expect(made.code).toBe(0);
  }, LONG);
  afterAll(async () => {
    removeProject(dir);
    await run(['docker', 'image', 'rm', '-f', impostor]);
  }, CLEANUP_TIMEOUT);

  test('an image whose rustc differs: one warning naming it and both versions, every unit local, the build succeeds', async () => {
    const res = await buildx(dir, ['build', '--locked'], { RUSTCBUILDX_BASE_IMAGE: impostor });
    expect(res.code).toBe(0);
    const warnings = res.stderr.match(/rustcbuildx: warning: [^\n]*/g) ?? [];
    expect(warnings).toEqual([expect.stringContaining(`base-image = ${impostor} (environment RUSTCBUILDX_BASE_IMAGE)`)]);
    expect(res.stderr).toMatch(/image: commit-hash: 000000000/);
    expect(res.stderr).toContain(`local: ${(await run(['rustc', '-vV'])).stdout.split('\n').find((l) => l.startsWith('commit-hash:'))}`);
    const s = await stats(dir);
    expect(s.fallback).toBe(s.units);
    expect((await run([join(dir, 'target/debug/rustcbuildx-demo')])).code).toBe(0);
  }, LONG);

  test('the toolchain image itself, named there: checked once, then every unit sandboxed', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked'], { RUSTCBUILDX_BASE_IMAGE: toolchainImage });
    expect(res.code).toBe(0);
    expect(res.stderr).not.toContain('rustcbuildx: warning');
    const s = await stats(dir);
    expect(s.fallback).toBe(0);
    expect(s.cached + s.built).toBe(s.units);
  }, LONG);
});
