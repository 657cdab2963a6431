/**
 * `rustc -vV`'s answer remembered per binary (path, size, mtime, inode): it depends only on the binary.
 * cargo asks it several times per run (the wrapper answers from here without starting rustc), and every
 * run's engine setup needs the toolchain it names. Light imports only: the wrapper's hot path reads it.
 */
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cacheBaseDir } from '../config.ts';

/** Where the answer for this binary as it is now is kept; undefined when it cannot be said (no such file, memo off). */
export function versionMemoFile(rustc: string, env: Record<string, string | undefined> = process.env): string | undefined {
  if (env.RUSTCBUILDX_LOCAL_CACHE === 'off') return undefined;
  const st = statSync(rustc, { throwIfNoEntry: false });
  if (!st) return undefined;
  return join(cacheBaseDir(env), 'probes', Bun.hash(`${rustc}\0${st.size}\0${st.mtimeMs}\0${st.ino}`).toString(16));
}

export function readVersionMemo(file: string | undefined): Uint8Array | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Keeps a successful answer (whole, by a rename: readers never see part of one). */
export function rememberVersion(file: string | undefined, stdout: Uint8Array): void {
  if (file === undefined || stdout.length === 0) return;
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, stdout);
  renameSync(tmp, file);
}
