import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { untar } from '../../src/engine/buildkit/untar';

const scratch = mkdtempSync(join(tmpdir(), 'rcbx-untar-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A tar of `files` (no directory entries: the unpacker must make the directories itself). */
async function tarOf(files: Record<string, string>): Promise<Buffer> {
  const p = pack();
  for (const [name, body] of Object.entries(files)) p.entry({ name, mode: 0o644 }, body);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('untar', () => {
  test('files in directories the tar does not list are written below dest', async () => {
    const work = mkdtempSync(join(scratch, 'work-'));
    const dest = join(work, 'export');
    const { unpack, done } = untar(dest);
    unpack.end(await tarOf({ 'out/sub/x.o': 'obj', 'meta/status': '0\n' }));
    await done;
    expect(readFileSync(join(dest, 'out/sub/x.o'), 'utf8')).toBe('obj');
    expect(readFileSync(join(dest, 'meta/status'), 'utf8')).toBe('0\n');
  });

  test('the work dir removed mid-unpack (its wrapper got Ctrl-C) is not made again: the unpack fails', async () => {
    const work = mkdtempSync(join(scratch, 'work-'));
    const dest = join(work, 'export');
    const { unpack, done } = untar(dest);
    const failed = done.then(() => 'done', (err: Error) => err.message);
    const tar = await tarOf({ 'out/first': 'a', 'meta/second': 'b' });
    // One header block and one data block: the first file whole.
    unpack.write(tar.subarray(0, 1024));
    for (let i = 0; i < 200 && !existsSync(join(dest, 'out/first')); i++) await Bun.sleep(5);
    expect(existsSync(join(dest, 'out/first'))).toBe(true);
    rmSync(work, { recursive: true, force: true });
    unpack.end(tar.subarray(1024));
    expect(await failed).toMatch(/ENOENT|no such file/);
    expect(existsSync(work)).toBe(false);
  });

  test('dest must have its parent: untar never makes the directories above it', () => {
    expect(() => untar(join(scratch, 'missing', 'export'))).toThrow();
    expect(existsSync(join(scratch, 'missing'))).toBe(false);
    mkdirSync(join(scratch, 'present'));
    expect(() => untar(join(scratch, 'present', 'export'))).not.toThrow();
  });
});
