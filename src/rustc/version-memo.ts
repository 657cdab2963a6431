/**
 * `rustc -vV`'s answer remembered per binary (path, size, mtime, inode): it depends only on the binary.
 * cargo asks it several times per run (the wrapper answers from here without starting rustc), and every
 * run's engine setup needs the toolchain it names. Light imports only: the wrapper's hot path reads it.
 */
import { mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { cacheBaseDir } from '../config/config.ts';

/**
 * Where the answer for this binary as it is now is kept; undefined when it cannot be said: no such file,
 * the memo off, or rustup's proxy (its answer is whichever toolchain rustup picks for the directory and
 * environment, not the binary's). RUSTUP_TOOLCHAIN and RUSTUP_HOME are in the key all the same.
 */
export function versionMemoFile(rustc: string, env: Record<string, string | undefined> = process.env): string | undefined {
  if (env.RUSTCBUILDX_LOCAL_CACHE === 'off') return undefined;
  const st = statSync(rustc, { throwIfNoEntry: false });
  if (!st) return undefined;
  try {
    if (basename(realpathSync(rustc)).startsWith('rustup')) return undefined;
  } catch {
    return undefined;
  }
  const key = [rustc, st.size, st.mtimeMs, st.ino, env.RUSTUP_TOOLCHAIN ?? '', env.RUSTUP_HOME ?? ''].join('\0');
  return join(cacheBaseDir(env), 'probes', Bun.hash(key).toString(16));
}

export function readVersionMemo(file: string | undefined): Uint8Array | undefined {
  if (file === undefined) return undefined;
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Keeps a successful answer (whole, by a rename: readers never see part of one). Never fails: it only saves time. */
export function rememberVersion(file: string | undefined, stdout: Uint8Array): void {
  if (file === undefined || stdout.length === 0) return;
  try {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, stdout);
    renameSync(tmp, file);
  } catch {
    // a cache dir that cannot be written: asked again next time
  }
}
