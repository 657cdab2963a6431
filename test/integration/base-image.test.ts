/** The base image holds exactly the local toolchain; the CLI reports it and names the fix when it is missing. */
import { beforeAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { BASE_BUILD_TIMEOUT, ensureBaseImage, RUSTCBUILDX, testEnv } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

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
    expect(show.stderr).toContain('Make it with: rustcbuildx base build');
  });

  test('--version prints name and version', async () => {
    const res = await run([RUSTCBUILDX, '--version']);
    expect(res.stdout).toMatch(/^rustcbuildx \d+\.\d+\.\d+\n$/);
  });
});
