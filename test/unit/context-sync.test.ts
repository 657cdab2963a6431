import { describe, expect, test } from 'bun:test';
import { lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goFileMode, walkContext } from '../../src/engine/buildkit/context-sync.ts';
import { SHARED_CONTEXT_DIRS, STAGING_GLOBS } from '../../src/plan/sources.ts';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'rcbx-ctx-'));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

describe('walkContext (fsutil sender order and filters)', () => {
  test('names sorted within each directory, a directory before what it holds', () => {
    const root = tree({ 'b/x': '1', 'a.txt': '2', 'a/z': '3', 'a/b/c': '4' });
    try {
      expect(walkContext(root, { include: [], exclude: [] }).map((e) => e.stat.path)).toEqual(['a', 'a/b', 'a/b/c', 'a/z', 'a.txt', 'b', 'b/x']);
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  test('follow paths restrict the walk like include patterns, parents sent first', () => {
    const root = tree({ 'crates/one.crate': 'x', 'crates/two.crate': 'y', 'ws/abc/src/lib.rs': 'z', 'outs/k/lib.rlib': 'w' });
    try {
      const paths = walkContext(root, { include: ['crates/two.crate', 'ws/abc'], exclude: [] }).map((e) => e.stat.path);
      expect(paths).toEqual(['crates', 'crates/two.crate', 'ws', 'ws/abc', 'ws/abc/src', 'ws/abc/src/lib.rs']);
      expect(walkContext(root, { include: ['.dockerignore'], exclude: [] })).toEqual([]);
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  test('a kept dir is listed whole, without what staging is about to rename into place', () => {
    const root = tree({ 'crates/a.crate': 'x', 'crates/b.crate.tmp-12': 'partial', 'dirs/h1/out.rs': 'y', 'dirs/h2.tmp-34/out.rs': 'partial', 'outs/k/lib.rlib': 'w', 'outs/k/lib.rmeta.tmp-5-x1': 'partial', 'ws/abc/src/lib.rs': 'z' });
    try {
      const paths = walkContext(root, { include: ['ws/abc', ...SHARED_CONTEXT_DIRS], exclude: STAGING_GLOBS }).map((e) => e.stat.path);
      expect(paths).toEqual(['crates', 'crates/a.crate', 'dirs', 'dirs/h1', 'dirs/h1/out.rs', 'outs', 'outs/k', 'outs/k/lib.rlib', 'ws', 'ws/abc', 'ws/abc/src', 'ws/abc/src/lib.rs']);
    } finally {
      rmSync(root, { recursive: true });
    }
  });

  test('only regular files can be asked for; symlinks carry their target; modes are Go FileModes', () => {
    const root = tree({ 'f': 'data' });
    symlinkSync('f', join(root, 'l'));
    mkdirSync(join(root, 'd'));
    try {
      const entries = walkContext(root, { include: [], exclude: [] });
      const byPath = Object.fromEntries(entries.map((e) => [e.stat.path, e]));
      expect(byPath.f?.file).toBe(join(root, 'f'));
      expect(byPath.f?.stat.size).toBe(4);
      expect(byPath.l?.file).toBeUndefined();
      expect(byPath.l?.stat.linkname).toBe('f');
      expect(byPath.l?.stat.mode).toBe(2 ** 27 + (lstatSync(join(root, 'l')).mode & 0o777));
      expect(byPath.d?.stat.mode).toBe(2 ** 31 + (lstatSync(join(root, 'd')).mode & 0o777));
      expect(goFileMode(lstatSync(join(root, 'f'), { bigint: true }))).toBe(lstatSync(join(root, 'f')).mode & 0o777);
    } finally {
      rmSync(root, { recursive: true });
    }
  });
});
