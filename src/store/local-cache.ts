/**
 * A local memo of BuildKit's answers: a unit's exported result (outputs, rustc's streams and exit code)
 * stored under the hash of everything that determines it, the full Dockerfile text (which pins every
 * source, input and dependency by content) and the base image's content ID. A hit replays the stored
 * result without calling the engine, which is most of a warm build's time. The engine stays the source of
 * truth: the memo only ever holds what an engine build returned for exactly that key.
 */
import { copyFileSync, constants, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { sha256 } from '../toolchain.ts';

/** Bump when what is stored, or how the key is made, changes. */
const FORMAT = 'rcbx-memo-1';

export class LocalCache {
  constructor(readonly dir: string) {}

  /** The memo directory from RUSTCBUILDX_CACHE_DIR, else the user's cache dir; undefined when turned off. */
  static fromEnv(env: Record<string, string | undefined> = process.env): LocalCache | undefined {
    if (env.RUSTCBUILDX_LOCAL_CACHE === 'off') return undefined;
    return new LocalCache(join(cacheBaseDir(env), 'results'));
  }

  key(dockerfile: string, baseImageId: string): string {
    return sha256(`${FORMAT}\0${baseImageId}\0${dockerfile}`);
  }

  private entry(key: string): string {
    return join(this.dir, key.slice(0, 2), key);
  }

  /** Copies a stored result into `into` (laid out like an engine export); false when there is none. */
  restore(key: string, into: string): boolean {
    const entry = this.entry(key);
    if (!existsSync(join(entry, 'meta', 'status'))) return false;
    copyTree(entry, into);
    // Marks it used, for pruning by age.
    const now = new Date();
    utimesSync(entry, now, now);
    return true;
  }

  /** Stores an engine export under its key (atomically: concurrent writers of one key store the same). */
  store(key: string, exportDir: string): void {
    const entry = this.entry(key);
    if (existsSync(entry)) return;
    const tmp = `${entry}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    copyTree(exportDir, tmp);
    mkdirSync(dirname(entry), { recursive: true });
    try {
      renameSync(tmp, entry);
    } catch {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
}

/** RUSTCBUILDX_CACHE_DIR, else `rustcbuildx` in the user's cache dir. */
export function cacheBaseDir(env: Record<string, string | undefined> = process.env): string {
  return env.RUSTCBUILDX_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'rustcbuildx');
}

export interface CacheUsage {
  entries: number;
  bytes: number;
}

/** Entries and bytes under the memo, and removal of entries unused (not restored or stored) since a time. */
export function cacheUsage(cache: LocalCache, removeUnusedBefore?: number): CacheUsage & { removed: number } {
  const usage = { entries: 0, bytes: 0, removed: 0 };
  if (!existsSync(cache.dir)) return usage;
  for (const shard of readdirSync(cache.dir)) {
    for (const name of readdirSync(join(cache.dir, shard))) {
      const entry = join(cache.dir, shard, name);
      if (removeUnusedBefore !== undefined && statSync(entry).mtimeMs < removeUnusedBefore) {
        rmSync(entry, { recursive: true, force: true });
        usage.removed++;
        continue;
      }
      usage.entries++;
      usage.bytes += treeBytes(entry);
    }
  }
  return usage;
}

function treeBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const st = statSync(join(dir, name));
    total += st.isDirectory() ? treeBytes(join(dir, name)) : st.size;
  }
  return total;
}

/** Copies a tree, cloning file contents where the filesystem can (reflinks), copying otherwise. */
function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from)) {
    const src = join(from, name);
    const dest = join(to, name);
    if (statSync(src).isDirectory()) copyTree(src, dest);
    else copyFileSync(src, dest, constants.COPYFILE_FICLONE);
  }
}
