/**
 * One result as a single file, the form shared stores hold it in: a tar of its manifest (first) and its
 * files, zstd-compressed. Unpacking vouches for every byte: the tar must hold exactly the files the
 * manifest lists, each with its size and sha256, or nothing is written.
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { extract, pack } from 'tar-stream';
import { sha256 } from '../toolchain.ts';
import { MANIFEST, manifestProblem, writeWithMode, type ManifestDoc } from './local-cache.ts';

export const PACKED_MEDIA_TYPE = 'application/vnd.rustcbuildx.result.v1.tar+zstd';

/** The result laid out in `dir` (as an export: `out/…`, `meta/…`) with its manifest and key, packed. */
export async function packResult(dir: string, doc: ManifestDoc, key: string): Promise<Uint8Array> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of tar) chunks.push(chunk as Buffer);
  })();
  tar.entry({ name: MANIFEST, mode: 0o644, mtime: EPOCH }, JSON.stringify({ ...doc, key }));
  for (const file of doc.files) tar.entry({ name: file.path, mode: file.mode, mtime: EPOCH }, readFileSync(join(dir, file.path)));
  tar.finalize();
  await collected;
  return Bun.zstdCompressSync(Buffer.concat(chunks), { level: 3 });
}

export class DamagedResult extends Error {
  override name = 'DamagedResult';
}

/**
 * Unpacks into `into` after checking everything against the packed manifest: exactly its files, in its
 * order, each with its size and sha256. Throws DamagedResult, having written nothing, when anything differs.
 */
export async function unpackResult(packed: Uint8Array, into: string, key: string): Promise<ManifestDoc> {
  let tarBytes: Buffer;
  try {
    tarBytes = Buffer.from(Bun.zstdDecompressSync(packed));
  } catch (err) {
    throw new DamagedResult(`not a zstd stream (${(err as Error).message})`);
  }
  const entries = await readTar(tarBytes);
  const first = entries[0];
  if (!first || first.name !== MANIFEST) throw new DamagedResult('the manifest is not its first entry');
  let doc: ManifestDoc;
  try {
    doc = JSON.parse(first.data.toString('utf8')) as ManifestDoc;
  } catch (err) {
    throw new DamagedResult(`unreadable manifest (${(err as Error).message})`);
  }
  const problem = manifestProblem(doc);
  if (problem) throw new DamagedResult(problem);
  // A whole result of another key (a tag moved, a mix-up) is as wrong as a damaged one.
  if (doc.key !== key) throw new DamagedResult(`it is the result of ${String(doc.key).slice(0, 16)}…, not of ${key.slice(0, 16)}…`);
  const files = entries.slice(1);
  if (files.length !== doc.files.length) throw new DamagedResult(`it holds ${files.length} files, its manifest lists ${doc.files.length}`);
  for (const [i, listed] of doc.files.entries()) {
    const got = files[i] as TarFile;
    if (got.name !== listed.path) throw new DamagedResult(`${got.name} where the manifest lists ${listed.path}`);
    if (got.data.length !== listed.size) throw new DamagedResult(`${listed.path} has ${got.data.length} bytes, the manifest says ${listed.size}`);
    if (sha256(got.data) !== listed.sha256) throw new DamagedResult(`${listed.path} does not match its sha256`);
  }
  for (const [i, listed] of doc.files.entries()) writeWithMode(join(into, listed.path), (files[i] as TarFile).data, listed.mode);
  return doc;
}

interface TarFile {
  name: string;
  data: Buffer;
}

/** Regular files only: a link or a device in a result is damage, not content. */
async function readTar(bytes: Buffer): Promise<TarFile[]> {
  const out: TarFile[] = [];
  const tar = extract();
  const done = (async () => {
    for await (const entry of tar) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      if (entry.header.type !== 'file') throw new DamagedResult(`${entry.header.name} is a ${entry.header.type ?? 'special entry'}, not a file`);
      out.push({ name: entry.header.name, data: Buffer.concat(chunks) });
    }
  })();
  tar.end(bytes);
  try {
    await done;
  } catch (err) {
    throw err instanceof DamagedResult ? err : new DamagedResult(`not a whole tar (${(err as Error).message})`);
  }
  return out;
}

/** Fixed times: the same result packs to the same bytes wherever it was built. */
const EPOCH = new Date(0);
