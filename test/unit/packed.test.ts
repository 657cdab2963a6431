import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pack } from 'tar-stream';
import { FORMAT, manifestOf, type ManifestDoc } from '../../src/store/local-cache';
import { DamagedResult, packResult, unpackResult } from '../../src/store/packed';

const KEY = '0123456789abcdef'.repeat(4);
const dirs: string[] = [];
function fresh(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `rcbx-packed-${name}-`));
  dirs.push(dir);
  return dir;
}
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function result(): { dir: string; doc: ManifestDoc } {
  const dir = fresh('export');
  mkdirSync(join(dir, 'out'));
  mkdirSync(join(dir, 'meta'));
  writeFileSync(join(dir, 'out', 'app-1'), 'binary');
  chmodSync(join(dir, 'out', 'app-1'), 0o755);
  writeFileSync(join(dir, 'meta', 'status'), '0\n');
  writeFileSync(join(dir, 'meta', 'stderr'), '');
  writeFileSync(join(dir, 'meta', 'stdout'), '');
  return { dir, doc: { format: FORMAT, files: manifestOf(dir), meta: { crate: 'app', version: '1.0.0', kind: 'bin' } } };
}

/** A tar.zst of these entries, as a store might hand one out. */
async function rawPack(entries: Array<{ name: string; data: string; type?: 'file' | 'symlink' }>): Promise<Uint8Array> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of tar) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    if (e.type === 'symlink') tar.entry({ name: e.name, type: 'symlink', linkname: e.data });
    else tar.entry({ name: e.name }, e.data);
  }
  tar.finalize();
  await done;
  return Bun.zstdCompressSync(Buffer.concat(chunks));
}

describe('a packed result', () => {
  test('unpacks byte for byte with its modes and manifest; packing is the same bytes every time', async () => {
    const { dir, doc } = result();
    const packed = await packResult(dir, doc, KEY);
    expect(Buffer.from(await packResult(dir, doc, KEY)).equals(Buffer.from(packed))).toBe(true);
    const into = join(fresh('into'), 'x');
    const back = await unpackResult(packed, into, KEY);
    expect(back).toEqual({ ...doc, key: KEY });
    expect(readFileSync(join(into, 'out', 'app-1'), 'utf8')).toBe('binary');
    expect(statSync(join(into, 'out', 'app-1')).mode & 0o777).toBe(0o755);
  });

  test('anything that differs from its manifest is refused and nothing is written', async () => {
    const { dir, doc } = result();
    const manifest = JSON.stringify({ ...doc, key: KEY });
    const cases: Array<[string, Uint8Array, string]> = [
      ['a file altered', await rawPack([{ name: 'manifest.json', data: manifest }, { name: 'meta/status', data: '0\n' }, { name: 'meta/stderr', data: '' }, { name: 'meta/stdout', data: '' }, { name: 'out/app-1', data: 'binarY' }]), 'does not match its sha256'],
      ['a file missing', await rawPack([{ name: 'manifest.json', data: manifest }, { name: 'meta/status', data: '0\n' }, { name: 'meta/stderr', data: '' }, { name: 'meta/stdout', data: '' }]), 'it holds 3 files, its manifest lists 4'],
      ['a file more', await rawPack([{ name: 'manifest.json', data: manifest }, { name: 'meta/status', data: '0\n' }, { name: 'meta/stderr', data: '' }, { name: 'meta/stdout', data: '' }, { name: 'out/app-1', data: 'binary' }, { name: 'out/extra', data: '' }]), 'it holds 5 files'],
      ['a link in place of a file', await rawPack([{ name: 'manifest.json', data: manifest }, { name: 'meta/stderr', data: '/etc/passwd', type: 'symlink' }]), 'is a symlink, not a file'],
      ['no manifest first', await rawPack([{ name: 'meta/status', data: '0\n' }, { name: 'manifest.json', data: manifest }]), 'the manifest is not its first entry'],
      ['a path leaving the dir', await rawPack([{ name: 'manifest.json', data: JSON.stringify({ ...doc, files: [...doc.files, { path: '../x', size: 0, mode: 420, sha256: '0'.repeat(64) }] }) }]), 'bad path in manifest: ../x'],
      ['another key\'s result, whole', await packResult(dir, doc, 'f'.repeat(64)), 'it is the result of ffffffffffffffff…, not of 0123456789abcdef…'],
      ['not zstd', new TextEncoder().encode('hello'), 'not a zstd stream'],
      ['a cut stream', (await rawPack([{ name: 'manifest.json', data: manifest }])).slice(0, 40), 'not a zstd stream'],
    ];
    for (const [what, packed, message] of cases) {
      const into = join(fresh('bad'), 'x');
      const err = await unpackResult(packed, into, KEY).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(DamagedResult);
      expect((err as Error).message, what).toContain(message);
      expect(existsSync(into), what).toBe(false);
    }
  });
});
