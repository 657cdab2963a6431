import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { dockerignoreMatcher, recordedChecksum, snapshotTree, SourceError, stageRegistryCrate } from '../../src/plan/sources';
import { sha256 } from '../../src/toolchain';

const tmpRoot = mkdtempSync(join(tmpdir(), 'rcbx-sources-'));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));

let counter = 0;
function freshDir(name: string): string {
  const dir = join(tmpRoot, `${counter++}`, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function writeTree(root: string, files: Record<string, string>): void {
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, rel)), { recursive: true });
    writeFileSync(join(root, rel), text);
  }
}

/** Every regular file under dir, relative, with its content. */
function readTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of (readdirSync(dir, { recursive: true }) as string[]).sort()) {
    if (statSync(join(dir, rel)).isFile()) out[rel] = readFileSync(join(dir, rel), 'utf8');
  }
  return out;
}

describe('dockerignoreMatcher', () => {
  const match = dockerignoreMatcher(['# build output', 'target', '*.log', '', 'docs/**', '!docs/keep.md', '/leading/', '  spaced.txt  '].join('\n'));
  test.each([
    ['target', true],
    ['target/debug/foo', true],
    ['sub/target', false], // patterns are anchored at the context root, as in Docker
    ['targets', false],
    ['a.log', true],
    ['sub/a.log', false], // `*` does not cross `/`
    ['a.log.txt', false],
    ['x.log/inner', true], // a matched directory excludes its content
    ['docs/a.md', true],
    ['docs/deep/er/b.md', true],
    ['docs/keep.md', false], // the exception wins: last match decides
    ['docs', false], // `docs/**` is the content, not the directory
    ['leading', true], // leading and trailing slashes are dropped
    ['leading/x.rs', true],
    ['sub/leading', false],
    ['spaced.txt', true],
    ['# build output', false], // a comment
    ['src/lib.rs', false],
    ['Cargo.toml', false],
  ])('%p → ignored=%p', (rel, ignored) => {
    expect(match.matches(rel)).toBe(ignored);
  });

  test('an empty file ignores nothing', () => {
    const none = dockerignoreMatcher('');
    expect(none.matches('target')).toBe(false);
    expect(none.matches('a/b/c')).toBe(false);
  });

  test('`**` patterns match at any depth; a later negation can be overridden again', () => {
    const m = dockerignoreMatcher('**/*.tmp\n!keep/*.tmp\nkeep/bad.tmp\n');
    expect(m.matches('a.tmp')).toBe(true);
    expect(m.matches('x/y/z.tmp')).toBe(true);
    expect(m.matches('keep/ok.tmp')).toBe(false);
    expect(m.matches('keep/bad.tmp')).toBe(true);
  });
});

const CRATE: Record<string, string> = {
  'Cargo.toml': '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n',
  'src/lib.rs': 'pub fn answer() -> u32 { 42 }\n',
  'src/bin/tool.rs': 'fn main() { println!("{}", demo::answer()); }\n',
  'sub/b.log': 'not at the root: kept\n',
  'docs/keep.md': '# kept by the exception\n',
  '.dockerignore': '*.log\ndocs/**\n!docs/keep.md\n',
};
const SKIPPED: Record<string, string> = {
  '.git/HEAD': 'ref: refs/heads/main\n',
  '.git/objects/ab/cdef': 'blob',
  'target/CACHEDIR.TAG': 'Signature: 8a477f597d28d172789f06886806bc55\n',
  'target/debug/demo': 'ELF',
  'other-target/CACHEDIR.TAG': 'Signature: 8a477f597d28d172789f06886806bc55\n',
  'other-target/release/x': 'x',
  'build.log': 'ignored by *.log\n',
  'docs/notes.md': 'ignored by docs/**\n',
  'docs/deep/more.md': 'ignored by docs/**\n',
};

function makeCrate(name = 'demo'): string {
  const dir = freshDir(name);
  writeTree(dir, { ...CRATE, ...SKIPPED });
  return dir;
}

describe('snapshotTree', () => {
  test('the snapshot holds exactly the source files that are sent, byte for byte', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const snap = snapshotTree(ctx, 'ws', src);
    expect(snap.kind).toBe('tree');
    expect(snap.ctxPath).toMatch(/^ws\/[0-9a-f]{32}$/);
    expect(readTree(join(ctx, snap.ctxPath))).toEqual(Object.fromEntries(Object.entries(CRATE).sort(([a], [b]) => (a < b ? -1 : 1))));
  });

  test('same content → same ctxPath, even with other mtimes or in another place', () => {
    const ctx = freshDir('ctx');
    const a = makeCrate();
    const first = snapshotTree(ctx, 'ws', a).ctxPath;
    const old = new Date('2001-02-03T04:05:06Z');
    utimesSync(join(a, 'src/lib.rs'), old, old);
    utimesSync(join(a, 'Cargo.toml'), new Date(), new Date(Date.now() + 5000));
    expect(snapshotTree(ctx, 'ws', a).ctxPath).toBe(first);
    // A copy elsewhere (same directory name, fresh mtimes) into another context.
    const b = freshDir('demo');
    cpSync(a, b, { recursive: true });
    expect(snapshotTree(freshDir('ctx'), 'ws', b).ctxPath).toBe(first);
  });

  test("snapshots of the same content made apart have the same stats (the engine's copy needs none of it again)", () => {
    const stats = (root: string) =>
      readdirSync(root, { recursive: true, encoding: 'utf8' })
        .sort()
        .map((rel) => {
          const st = statSync(join(root, rel));
          return [rel, st.size, st.mode, st.mtimeMs];
        });
    const a = makeCrate();
    const ctxA = freshDir('ctx');
    const snapA = snapshotTree(ctxA, 'ws', a).ctxPath;
    const b = freshDir('demo');
    cpSync(a, b, { recursive: true });
    utimesSync(join(b, 'src/lib.rs'), new Date(), new Date(Date.now() + 5000));
    const ctxB = freshDir('ctx');
    const snapB = snapshotTree(ctxB, 'ws', b).ctxPath;
    expect(snapB).toBe(snapA);
    expect(stats(join(ctxB, snapB))).toEqual(stats(join(ctxA, snapA)));
    expect(statSync(join(ctxA, snapA, 'src/lib.rs')).mtime.toISOString()).toBe('2000-01-01T00:00:00.000Z');
  });

  test('changed content → different ctxPath; changing it back → the first one again', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const first = snapshotTree(ctx, 'ws', src).ctxPath;
    writeFileSync(join(src, 'src/lib.rs'), 'pub fn answer() -> u32 { 43 }\n');
    const second = snapshotTree(ctx, 'ws', src).ctxPath;
    expect(second).not.toBe(first);
    expect(readFileSync(join(ctx, second, 'src/lib.rs'), 'utf8')).toBe('pub fn answer() -> u32 { 43 }\n');
    expect(readFileSync(join(ctx, first, 'src/lib.rs'), 'utf8')).toBe(CRATE['src/lib.rs'] as string);
    writeFileSync(join(src, 'src/lib.rs'), CRATE['src/lib.rs'] as string);
    expect(snapshotTree(ctx, 'ws', src).ctxPath).toBe(first);
  });

  test.each([
    ['a new file', (d: string) => writeFileSync(join(d, 'src/new.rs'), '')],
    ['a renamed file', (d: string) => cpSync(join(d, 'src/lib.rs'), join(d, 'src/lib2.rs'))],
    ['a file made executable', (d: string) => chmodSync(join(d, 'src/lib.rs'), 0o755)],
  ])('%s changes the ctxPath', (_name, change) => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const first = snapshotTree(ctx, 'ws', src).ctxPath;
    change(src);
    expect(snapshotTree(ctx, 'ws', src).ctxPath).not.toBe(first);
  });

  test.each([
    ['inside .git', '.git/config'],
    ['inside a CACHEDIR.TAG dir', 'target/debug/other'],
    ['ignored by .dockerignore', 'docs/more.md'],
  ])('a change %s does not change the ctxPath', (_name, rel) => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const first = snapshotTree(ctx, 'ws', src).ctxPath;
    writeTree(src, { [rel]: 'changed' });
    expect(snapshotTree(ctx, 'ws', src).ctxPath).toBe(first);
  });

  test('file modes are kept', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    writeTree(src, { 'run.sh': '#!/bin/sh\n' });
    chmodSync(join(src, 'run.sh'), 0o755);
    const snap = snapshotTree(ctx, 'ws', src);
    expect(statSync(join(ctx, snap.ctxPath, 'run.sh')).mode & 0o111).toBe(0o111);
    expect(statSync(join(ctx, snap.ctxPath, 'src/lib.rs')).mode & 0o111).toBe(0);
  });

  test('excludeDirs and excludePaths options', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    writeTree(src, { 'node_modules/x/index.js': '', 'out/gen.rs': '', 'keep/out/gen.rs': 'k' });
    const snap = snapshotTree(ctx, 'ws', src, { excludeDirs: ['node_modules'], excludePaths: [join(src, 'out')] });
    const files = Object.keys(readTree(join(ctx, snap.ctxPath)));
    expect(files).not.toContain('node_modules/x/index.js');
    expect(files).not.toContain('out/gen.rs');
    expect(files).toContain('keep/out/gen.rs');
  });

  test('symlinks are followed; dangling ones are skipped', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const shared = freshDir('shared');
    writeTree(shared, { 'common.rs': 'pub const X: u8 = 1;\n' });
    symlinkSync(join(shared, 'common.rs'), join(src, 'src/common.rs'));
    symlinkSync(join(src, 'missing'), join(src, 'dangling'));
    const tree = readTree(join(ctx, snapshotTree(ctx, 'ws', src).ctxPath));
    expect(tree['src/common.rs']).toBe('pub const X: u8 = 1;\n');
    expect(Object.keys(tree)).not.toContain('dangling');
  });

  test('an empty directory gives an (empty) snapshot', () => {
    const ctx = freshDir('ctx');
    const snap = snapshotTree(ctx, 'dirs', freshDir('out'));
    expect(snap.ctxPath).toMatch(/^dirs\/[0-9a-f]{32}$/);
    expect(existsSync(join(ctx, snap.ctxPath))).toBe(true);
    expect(readTree(join(ctx, snap.ctxPath))).toEqual({});
  });

  test('the host directory\'s name never appears in the ctxPath (checkouts are named differently)', () => {
    const ctx = freshDir('ctx');
    const snap = snapshotTree(ctx, 'dirs', freshDir('my crate (v2)'));
    expect(snap.ctxPath).toMatch(/^dirs\/[0-9a-f]{32}$/);
    expect(snapshotTree(ctx, 'dirs', freshDir('another-name')).ctxPath).toBe(snap.ctxPath);
  });

  test('a snapshot removed from the context is made again', () => {
    const ctx = freshDir('ctx');
    const src = makeCrate();
    const first = snapshotTree(ctx, 'ws', src).ctxPath;
    rmSync(join(ctx, first), { recursive: true });
    expect(snapshotTree(ctx, 'ws', src).ctxPath).toBe(first);
    expect(readFileSync(join(ctx, first, 'Cargo.toml'), 'utf8')).toBe(CRATE['Cargo.toml'] as string);
  });

  // BUG (src/sources.ts, listTree): a `!` exception under an ignored directory is lost, because the walk
  // prunes the directory before looking inside it. Docker/BuildKit would still send `docs/keep.md`.
  test('an exception inside an ignored directory is still sent (`docs` then `!docs/keep.md`)', () => {
    const ctx = freshDir('ctx');
    const src = freshDir('demo');
    writeTree(src, { '.dockerignore': 'docs\n!docs/keep.md\n', 'docs/keep.md': 'keep', 'docs/drop.md': 'drop' });
    const tree = readTree(join(ctx, snapshotTree(ctx, 'ws', src).ctxPath));
    expect(tree['docs/keep.md']).toBe('keep');
    expect(tree['docs/drop.md']).toBeUndefined();
  });

  // BUG (src/sources.ts, listTree): directory symlinks are followed without cycle detection; a link back
  // to an ancestor is copied ~40 times over (until ELOOP), and two such links make it exponential.
  test('a symlink back to an ancestor is not walked again', () => {
    const ctx = freshDir('ctx');
    const src = freshDir('demo');
    writeTree(src, { 'src/lib.rs': '' });
    symlinkSync('.', join(src, 'loop'));
    const files = Object.keys(readTree(join(ctx, snapshotTree(ctx, 'ws', src).ctxPath)));
    expect(files.filter((f) => f.endsWith('lib.rs')).length).toBeLessThanOrEqual(2);
  });
});

const CKSUM_A = 'a'.repeat(64);
const CKSUM_B = '0123456789abcdef'.repeat(4);
const CKSUM_C = 'fedcba9876543210'.repeat(4);

function indexEntry(name: string, vers: string, cksum: string): string {
  return JSON.stringify({ name, vers, deps: [{ name: 'serde', req: '^1.0.0', features: [], optional: false, default_features: true, target: null, kind: 'normal' }], cksum, features: {}, yanked: false, rust_version: '1.56' });
}

/** cargo's index cache layout: version byte, u32 index format, index version, then `vers\0json\0` pairs. */
function writeIndexCache(indexDir: string, prefix: string, name: string, versions: Array<[string, string]>): void {
  const header = Buffer.concat([Buffer.from([3]), Buffer.from([2, 0, 0, 0]), Buffer.from('etag: "0f1e2d3c"\0')]);
  const body = versions.map(([vers, cksum]) => `${vers}\0${indexEntry(name, vers, cksum)}\0`).join('');
  const file = join(indexDir, '.cache', prefix, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, Buffer.concat([header, Buffer.from(body)]));
}

describe('recordedChecksum', () => {
  const indexDir = join(tmpRoot, 'index', 'index.crates.io-1949cf8c6b5b557f');
  writeIndexCache(indexDir, 'it/oa', 'itoa', [['1.0.14', CKSUM_A], ['1.0.15', CKSUM_B], ['1.0.15-alpha.1', CKSUM_C]]);
  writeIndexCache(indexDir, 'se/rd', 'serde_json', []);
  writeIndexCache(indexDir, 'fo/o-', 'foo-bar', [['0.2.0', CKSUM_C]]);
  writeIndexCache(indexDir, '1', 'a', [['0.1.0', CKSUM_A]]);
  writeIndexCache(indexDir, '2', 'ab', [['0.1.0', CKSUM_B]]);
  writeIndexCache(indexDir, '3/x', 'xyz', [['0.1.0', CKSUM_C]]);
  writeIndexCache(indexDir, 'my/cr', 'mycrate', [['1.0.0', 'not-a-sha256']]);

  test.each([
    ['itoa-1.0.14', CKSUM_A],
    ['itoa-1.0.15', CKSUM_B],
    ['itoa-1.0.15-alpha.1', CKSUM_C],
    ['foo-bar-0.2.0', CKSUM_C],
    ['a-0.1.0', CKSUM_A],
    ['ab-0.1.0', CKSUM_B],
    ['xyz-0.1.0', CKSUM_C],
    ['ITOA-1.0.15', CKSUM_B], // index cache files are named in lowercase
    ['itoa-1.0.16', undefined], // version not in the index
    ['itoa-1.0.1', undefined], // a prefix of 1.0.14 / 1.0.15 is not a match
    ['serde_json-1.0.0', undefined], // no entries
    ['nope-1.0.0', undefined], // no cache file
    ['mycrate-1.0.0', undefined], // malformed cksum
    ['itoa', undefined], // not <name>-<version>
  ])('%s → %p', (pkgDir, cksum) => {
    expect(recordedChecksum(indexDir, pkgDir)).toBe(cksum);
  });
});

describe('stageRegistryCrate', () => {
  const cargoHome = join(tmpRoot, 'cargo-home');
  const index = 'index.crates.io-1949cf8c6b5b557f';
  const tarball = Buffer.from('not really a gzip, but bytes all the same');
  mkdirSync(join(cargoHome, 'registry', 'cache', index), { recursive: true });
  writeFileSync(join(cargoHome, 'registry', 'cache', index, 'itoa-1.0.15.crate'), tarball);
  writeFileSync(join(cargoHome, 'registry', 'cache', index, 'itoa-1.0.14.crate'), tarball);
  writeIndexCache(join(cargoHome, 'registry', 'index', index), 'it/oa', 'itoa', [['1.0.14', CKSUM_A], ['1.0.15', sha256(tarball)]]);
  const src = (pkg: string) => join(cargoHome, 'registry', 'src', index, pkg);

  test('a verified tarball is placed in the context under its sha256', () => {
    const ctx = freshDir('ctx');
    const staged = stageRegistryCrate(ctx, cargoHome, src('itoa-1.0.15'));
    expect(staged).toEqual({ kind: 'archive', ctxPath: `crates/${sha256(tarball)}.crate`, topDir: 'itoa-1.0.15' });
    expect(readFileSync(join(ctx, staged.ctxPath)).equals(tarball)).toBe(true);
  });

  test('a tarball that does not match the index checksum → SourceError', () => {
    expect(() => stageRegistryCrate(freshDir('ctx'), cargoHome, src('itoa-1.0.14'))).toThrow(SourceError);
  });

  test('a missing download → SourceError', () => {
    expect(() => stageRegistryCrate(freshDir('ctx'), cargoHome, src('itoa-9.9.9'))).toThrow(SourceError);
  });

  test('a directory that is not <registry>/src/<index>/<crate> → SourceError', () => {
    expect(() => stageRegistryCrate(freshDir('ctx'), cargoHome, join(src('itoa-1.0.15'), 'src'))).toThrow(SourceError);
    expect(() => stageRegistryCrate(freshDir('ctx'), cargoHome, join(cargoHome, 'registry', 'src', index))).toThrow(SourceError);
  });
});
