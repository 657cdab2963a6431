import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCache } from '../../src/store/local-cache';

const dirs: string[] = [];
function fresh(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rcbx-memo-${name}-`));
  dirs.push(dir);
  return dir;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function fakeExport(): string {
  const dir = fresh('export');
  mkdirSync(join(dir, 'out'));
  mkdirSync(join(dir, 'meta'));
  writeFileSync(join(dir, 'out', 'app-1'), 'binary');
  chmodSync(join(dir, 'out', 'app-1'), 0o755);
  writeFileSync(join(dir, 'out', 'app-1.d'), '/rcbx/out/app-1: src/main.rs\n');
  writeFileSync(join(dir, 'meta', 'status'), '0\n');
  writeFileSync(join(dir, 'meta', 'stdout'), '');
  writeFileSync(join(dir, 'meta', 'stderr'), '{"artifact":"/rcbx/out/app-1","emit":"link"}\n');
  return dir;
}

describe('LocalCache', () => {
  test('the key changes with the Dockerfile text and with the base image, and only with them', () => {
    const cache = new LocalCache(fresh('cache'));
    const k = cache.key('FROM a\nRUN rustc x', 'sha256:1');
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(cache.key('FROM a\nRUN rustc x', 'sha256:1')).toBe(k);
    expect(cache.key('FROM a\nRUN rustc y', 'sha256:1')).not.toBe(k);
    expect(cache.key('FROM a\nRUN rustc x', 'sha256:2')).not.toBe(k);
  });

  test('a stored export is restored byte for byte, modes included; an unknown key restores nothing', () => {
    const cache = new LocalCache(fresh('cache'));
    const key = cache.key('dockerfile', 'sha256:1');
    const into = join(fresh('into'), 'export');
    expect(cache.restore(key, into)).toBe(false);
    cache.store(key, fakeExport());
    expect(cache.restore(key, into)).toBe(true);
    expect(readFileSync(join(into, 'out', 'app-1'), 'utf8')).toBe('binary');
    expect(statSync(join(into, 'out', 'app-1')).mode & 0o777).toBe(0o755);
    expect(readFileSync(join(into, 'meta', 'stderr'), 'utf8')).toContain('/rcbx/out/app-1');
    expect(readFileSync(join(into, 'meta', 'status'), 'utf8')).toBe('0\n');
  });

  test('storing a key twice keeps the first result', () => {
    const cache = new LocalCache(fresh('cache'));
    const key = cache.key('d', 'i');
    cache.store(key, fakeExport());
    const other = fakeExport();
    writeFileSync(join(other, 'out', 'app-1'), 'different');
    cache.store(key, other);
    const into = fresh('into');
    cache.restore(key, into);
    expect(readFileSync(join(into, 'out', 'app-1'), 'utf8')).toBe('binary');
  });

  test('RUSTCBUILDX_LOCAL_CACHE=off turns it off; RUSTCBUILDX_CACHE_DIR places it', () => {
    expect(LocalCache.fromEnv({ RUSTCBUILDX_LOCAL_CACHE: 'off' })).toBeUndefined();
    expect(LocalCache.fromEnv({ RUSTCBUILDX_CACHE_DIR: '/x/y' })?.dir).toBe('/x/y/results');
    expect(LocalCache.fromEnv({ XDG_CACHE_HOME: '/c' })?.dir).toBe('/c/rustcbuildx/results');
  });
});
