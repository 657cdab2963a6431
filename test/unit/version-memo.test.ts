import { afterAll, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readVersionMemo, rememberVersion, versionMemoFile } from '../../src/rustc/version-memo';

const root = mkdtempSync(join(tmpdir(), 'rcbx-vmemo-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const env = { RUSTCBUILDX_CACHE_DIR: join(root, 'cache') };

test('one answer per binary and rustup toolchain; none for rustup proxies, a missing binary or the memo off', () => {
  const rustc = join(root, 'rustc');
  writeFileSync(rustc, '#!/bin/sh\n');
  const file = versionMemoFile(rustc, env);
  expect(file).toBeDefined();
  expect(versionMemoFile(rustc, { ...env, RUSTUP_TOOLCHAIN: 'nightly' })).not.toBe(file);
  expect(versionMemoFile(join(root, 'missing'), env)).toBeUndefined();
  expect(versionMemoFile(rustc, { ...env, RUSTCBUILDX_LOCAL_CACHE: 'off' })).toBeUndefined();
  const rustup = join(root, 'rustup');
  writeFileSync(rustup, '');
  mkdirSync(join(root, 'bin'));
  symlinkSync(rustup, join(root, 'bin', 'rustc'));
  expect(versionMemoFile(join(root, 'bin', 'rustc'), env)).toBeUndefined();
});

test('remembered whole; a cache dir that cannot be written loses nothing but the time', () => {
  const rustc = join(root, 'rustc2');
  writeFileSync(rustc, '');
  const file = versionMemoFile(rustc, env);
  rememberVersion(file, new TextEncoder().encode('rustc 1.95.0\n'));
  expect(new TextDecoder().decode(readVersionMemo(file))).toBe('rustc 1.95.0\n');
  // below a regular file: no directory can be made there, whoever runs this
  const below = join(rustc, 'sub', 'x');
  expect(() => rememberVersion(below, new TextEncoder().encode('x'))).not.toThrow();
  expect(readVersionMemo(below)).toBeUndefined();
  expect(readVersionMemo(undefined)).toBeUndefined();
});
