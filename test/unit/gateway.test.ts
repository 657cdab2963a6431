import { afterAll, describe, expect, test } from 'bun:test';
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readResult } from '../../src/engine/buildkit/gateway';
import { GO_MODE } from '../../src/engine/buildkit/context-sync';
import type { ReadDirRequest, ReadFileRequest, Stat } from '../../src/engine/buildkit/proto';

/** A result as the engine's ReadDir/ReadFile would serve it, from an in-memory tree. */
type Node = { dir: Record<string, Node> } | { data: Uint8Array; mode?: number; linkOf?: string } | { symlink: string };

function engine(root: Record<string, Node>, opts: { shortRead?: string } = {}) {
  const reads: ReadFileRequest[] = [];
  const at = (path: string): Node => {
    let node: Node = { dir: root };
    for (const part of path.split('/').filter(Boolean)) {
      if (!('dir' in node) || !node.dir[part]) throw new Error(`no such path ${path}`);
      node = node.dir[part];
    }
    return node;
  };
  const stat = (name: string, node: Node): Stat => {
    const base = { path: name, uid: 0, gid: 0, modTime: 0, devmajor: 0, devminor: 0, linkname: '', size: 0 };
    if ('dir' in node) return { ...base, mode: GO_MODE.dir + 0o755 };
    if ('symlink' in node) return { ...base, mode: GO_MODE.symlink + 0o777, linkname: node.symlink };
    // fsutil: the second name of a hard-linked file carries the first's name and no size
    if (node.linkOf) return { ...base, mode: node.mode ?? 0o644, linkname: node.linkOf };
    return { ...base, mode: node.mode ?? 0o644, size: node.data.length };
  };
  return {
    reads,
    readDir: async (req: ReadDirRequest) => {
      const node = at(req.DirPath);
      if (!('dir' in node)) throw new Error('not a dir');
      return { entries: Object.entries(node.dir).map(([name, n]) => stat(name, n)) };
    },
    readFile: async (req: ReadFileRequest) => {
      reads.push(req);
      const node = at(req.FilePath);
      if (!('data' in node)) throw new Error('not a file');
      const { Offset = 0, Length = node.data.length } = req.Range ?? {};
      const data = node.data.subarray(Offset, Offset + Length);
      return { Data: req.FilePath === opts.shortRead ? data.subarray(1) : data };
    },
  };
}

const scratch = mkdtempSync(join(tmpdir(), 'rcbx-gateway-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let n = 0;
const dest = () => join(scratch, `r${n++}`);
const text = (s: string) => new TextEncoder().encode(s);

describe('readResult', () => {
  test('directories (the dir bit is bit 31), files with their modes, symlinks and hard links, as the export wrote them', async () => {
    const big = new Uint8Array(9 * 1024 * 1024).map((_, i) => i % 251);
    const e = engine({
      out: { dir: { 'libx.rlib': { data: text('rlib') }, app: { data: big, mode: 0o755 }, 'app-copy': { data: new Uint8Array(), linkOf: 'app' }, sub: { dir: { 'x.o': { data: text('obj') } } }, latest: { symlink: 'app' } } },
      meta: { dir: { stdout: { data: text('') }, stderr: { data: text('warning\n') }, status: { data: text('0\n') } } },
    });
    const d = dest();
    await readResult(e.readDir, e.readFile, 'ref', d, ['out', 'meta']);
    expect(readdirSync(join(d, 'out')).sort()).toEqual(['app', 'app-copy', 'latest', 'libx.rlib', 'sub']);
    expect(readFileSync(join(d, 'out', 'sub', 'x.o'), 'utf8')).toBe('obj');
    expect(Buffer.compare(readFileSync(join(d, 'out', 'app')), Buffer.from(big))).toBe(0);
    expect(lstatSync(join(d, 'out', 'app')).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(d, 'out', 'app-copy')).ino).toBe(lstatSync(join(d, 'out', 'app')).ino);
    expect(readlinkSync(join(d, 'out', 'latest'))).toBe('app');
    expect(readFileSync(join(d, 'meta', 'stderr'), 'utf8')).toBe('warning\n');
    // large files in ranges; an empty file costs no read
    expect(e.reads.filter((r) => r.FilePath === 'out/app').map((r) => r.Range?.Offset)).toEqual([0, 4 * 1024 * 1024, 8 * 1024 * 1024]);
    expect(e.reads.some((r) => r.FilePath === 'meta/stdout')).toBe(false);
  });

  test('without known dirs, the root is listed', async () => {
    const e = engine({ a: { data: text('a') } });
    const d = dest();
    await readResult(e.readDir, e.readFile, 'ref', d);
    expect(readFileSync(join(d, 'a'), 'utf8')).toBe('a');
  });

  test('a read of another length than the listing said is an error, not a file', async () => {
    const e = engine({ out: { dir: { f: { data: text('abcdef') } } } }, { shortRead: 'out/f' });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), ['out'])).rejects.toThrow(/gave 5 bytes, not 6/);
  });

  test.each(['..', '.', 'a/b', ''])('an entry named %p is refused: nothing is written outside the result', async (name) => {
    const e = engine({ out: { dir: { [name]: { data: text('x') } } } });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), ['out'])).rejects.toThrow(/entry named/);
  });

  test('a hard link to a name its directory does not hold is refused', async () => {
    const e = engine({ out: { dir: { f: { data: new Uint8Array(), linkOf: '../../etc/passwd' } } } });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), ['out'])).rejects.toThrow(/does not hold/);
  });
});
