import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FORMAT, LocalCache, resultKey } from '../../src/store/local-cache';
import { sha256 } from '../../src/toolchain';

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

  test('two machines that run one base image under different names share keys; one name for two images does not', () => {
    const dockerfile = (base: string) => `FROM ${base} AS u-1\nRUN rustc x\nFROM ${base} AS run\n`;
    const k = resultKey(dockerfile('rustcbuildx/toolchain:1.95.0'), 'sha256:1', 'rustcbuildx/toolchain:1.95.0');
    expect(resultKey(dockerfile('registry.example.com/team/base:1'), 'sha256:1', 'registry.example.com/team/base:1')).toBe(k);
    expect(resultKey(dockerfile('registry.example.com/team/base:1'), '1', 'registry.example.com/team/base:1')).toBe(k);
    expect(resultKey(dockerfile('rustcbuildx/toolchain:1.95.0'), 'sha256:2', 'rustcbuildx/toolchain:1.95.0')).not.toBe(k);
  });

  test('a stored export is restored byte for byte, modes included; an unknown key restores nothing', () => {
    const cache = new LocalCache(fresh('cache'));
    const key = cache.key('dockerfile', 'sha256:1');
    const into = join(fresh('into'), 'export');
    expect(cache.restore(key, into)).toBeUndefined();
    const stored = cache.store(key, fakeExport());
    const restored = cache.restore(key, into);
    expect(restored).toEqual(stored);
    expect(restored?.map((f) => f.path)).toEqual(['meta/status', 'meta/stderr', 'meta/stdout', 'out/app-1', 'out/app-1.d']);
    expect(restored?.find((f) => f.path === 'out/app-1')).toEqual({ path: 'out/app-1', size: 6, mode: 0o755, sha256: sha256('binary') });
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

  /** Damage done to a stored entry, as a full disk, a crash or a bad copy leaves it. */
  const damages: Array<[string, (entry: string) => void, RegExp]> = [
    ['a truncated output', (e) => truncateSync(join(e, 'out', 'app-1'), 3), /out\/app-1 has 3 bytes/],
    ['a flipped byte', (e) => writeFileSync(join(e, 'out', 'app-1'), 'bInary'), /out\/app-1 does not match its sha256/],
    ['a missing output', (e) => rmSync(join(e, 'out', 'app-1')), /out\/app-1 is missing/],
    ['an emptied status', (e) => writeFileSync(join(e, 'meta', 'status'), ''), /meta\/status has 0 bytes/],
    ['a truncated manifest', (e) => truncateSync(join(e, 'manifest.json'), 20), /unreadable manifest/],
    ['no manifest (an entry of the old format)', (e) => rmSync(join(e, 'manifest.json')), /unreadable manifest/],
    ['a manifest that escapes the entry', (e) => writeFileSync(join(e, 'manifest.json'), JSON.stringify({ format: FORMAT, files: [{ path: '../x', size: 0, mode: 420, sha256: '' }, { path: 'meta/status' }, { path: 'meta/stdout' }, { path: 'meta/stderr' }] })), /bad path/],
  ];
  test.each(damages)('%s: the entry is removed, nothing is restored, and the damage is named', (_name, damage, detail) => {
    const cache = new LocalCache(fresh('cache'));
    const key = cache.key('dockerfile', 'sha256:1');
    cache.store(key, fakeExport());
    const entry = join(cache.dir, key.slice(0, 2), key);
    damage(entry);
    const into = join(fresh('into'), 'export');
    const said: string[] = [];
    expect(cache.restore(key, into, (d) => said.push(d))).toBeUndefined();
    expect(existsSync(into)).toBe(false);
    expect(existsSync(entry)).toBe(false);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(detail);
    // Stored again by the next engine build, it restores.
    cache.store(key, fakeExport());
    expect(cache.restore(key, into)).toBeDefined();
    expect(readFileSync(join(into, 'out', 'app-1'), 'utf8')).toBe('binary');
  });

  test('a failure is remembered for its key only, and never as a result', () => {
    const cache = new LocalCache(join(fresh('cache'), 'results'));
    const key = cache.key('d', 'i');
    expect(cache.failedRecently(key)).toBeUndefined();
    cache.rememberFailure(key, 'rustc exited with status 1');
    expect(cache.failedRecently(key)).toBe('rustc exited with status 1');
    expect(cache.failedRecently(cache.key('e', 'i'))).toBeUndefined();
    expect(cache.restore(key, join(fresh('into'), 'export'))).toBeUndefined();
  });

  test('RUSTCBUILDX_LOCAL_CACHE=off turns it off; RUSTCBUILDX_CACHE_DIR places it', () => {
    expect(LocalCache.fromEnv({ RUSTCBUILDX_LOCAL_CACHE: 'off' })).toBeUndefined();
    expect(LocalCache.fromEnv({ RUSTCBUILDX_CACHE_DIR: '/x/y' })?.dir).toBe('/x/y/results');
    expect(LocalCache.fromEnv({ XDG_CACHE_HOME: '/c' })?.dir).toBe('/c/rustcbuildx/results');
  });
});
