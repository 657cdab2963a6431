/**
 * A local memo of BuildKit's answers: a unit's exported result (outputs, rustc's streams and exit code)
 * stored under the hash of everything that determines it, the full Dockerfile text (which pins every
 * source, input and dependency by content) and the base image's content ID. A hit replays the stored
 * result without calling the engine, which is most of a warm build's time. The engine stays the source of
 * truth: the memo only ever holds what an engine build returned for exactly that key, and every entry
 * carries a manifest (size, mode and sha256 of each file) that a restore checks before any byte is used:
 * a truncated or altered entry (a full disk, a crash, a bad copy) is removed and the unit goes to the engine.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { sha256 } from '../toolchain.ts';
import { cacheBaseDir } from '../config/config.ts';
import { writeAtomic } from '../run-state.ts';
import { removeScratch, scratch } from '../scratch.ts';

/** Bump when the rules of src/plan/provenance.ts change: entries decided before count as private. */
export const PROVENANCE_RULES = 2;

/** Bump when what is stored, or how the key is made, changes. */
export const FORMAT = 'rcbx-memo-3';
export const MANIFEST = 'manifest.json';

/** One file of an export: where it lies (relative, `/`-separated), its size, permission bits and digest. */
export interface ManifestFile {
  path: string;
  size: number;
  mode: number;
  sha256: string;
}

/** What a result is of, for `cache ls` and for deciding whether it may leave this machine. */
export interface EntryMeta {
  /** the package (CARGO_PKG_NAME) and its version */
  crate: string;
  version: string;
  /** `lib`, `proc-macro`, `bin`, `test`, `build-script` (its compile), `build-script-run`… */
  kind: string;
  /** why it must never be offered to a shared store (a workspace crate, a git dependency…); absent: it may */
  private?: string;
  /** the rules that decided `private` (PROVENANCE_RULES): an entry decided by older rules counts as private */
  rules?: number;
  /**
   * Built with incremental state from earlier builds: correct, but not byte-for-byte what a fresh build
   * gives, so no shared store is offered it unless its crate is named (RUSTCBUILDX_SHARE).
   */
  incremental?: true;
}

export interface ManifestDoc {
  format: string;
  files: ManifestFile[];
  meta?: EntryMeta;
  /** in a packed result: the key it was stored under, checked against the key it is fetched for */
  key?: string;
}

export class LocalCache {
  constructor(readonly dir: string) {}

  /** The memo directory from RUSTCBUILDX_CACHE_DIR, else the user's cache dir; undefined when turned off. */
  static fromEnv(env: Record<string, string | undefined> = process.env): LocalCache | undefined {
    if (env.RUSTCBUILDX_LOCAL_CACHE === 'off') return undefined;
    return new LocalCache(join(cacheBaseDir(env), 'results'));
  }

  /** The memo's (and the shared stores') key: see resultKey. */
  key(dockerfile: string, baseImageId: string, baseImage?: string): string {
    return resultKey(dockerfile, baseImageId, baseImage);
  }

  entry(key: string): string {
    return join(this.dir, key.slice(0, 2), key);
  }

  /**
   * Copies a stored result into `into` (laid out like an engine export) after checking every byte against
   * the entry's manifest. Undefined when there is no entry, or when it is damaged: then the entry is
   * removed, `into` is left absent, and `onDamaged` says what was wrong.
   */
  restore(key: string, into: string, onDamaged: (detail: string) => void = () => {}): ManifestFile[] | undefined {
    const entry = this.entry(key);
    if (!existsSync(entry)) return undefined;
    const damage = restoreVerified(entry, into);
    if (typeof damage === 'string') {
      rmSync(into, { recursive: true, force: true });
      rmSync(entry, { recursive: true, force: true });
      onDamaged(`local memo entry ${key} is damaged (${damage}); removed it`);
      return undefined;
    }
    // Marks it used, for pruning by age.
    const now = new Date();
    utimesSync(entry, now, now);
    return damage;
  }

  /**
   * Remembers that rustc failed in the sandbox on this key, so the next attempt with the very same
   * inputs goes straight to the local rustc instead of paying the engine to fail again. Not a result:
   * nothing of it is ever replayed, and it expires (the failure may have been memory or disk).
   */
  rememberFailure(key: string, reason: string): void {
    writeAtomic(this.failureFile(key), reason);
  }

  /** The reason of a failure remembered for this key within the last day, if any. */
  failedRecently(key: string): string | undefined {
    const file = this.failureFile(key);
    const st = statSync(file, { throwIfNoEntry: false });
    if (!st) return undefined;
    if (Date.now() - st.mtimeMs > FAILURE_TTL_MS) {
      rmSync(file, { force: true });
      return undefined;
    }
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  }

  private failureFile(key: string): string {
    return join(dirname(this.dir), 'failed', key.slice(0, 2), key);
  }

  /**
   * Stores an engine export under its key with its manifest, atomically (a rename of a complete entry;
   * concurrent writers of one key store the same). Returns the export's manifest either way.
   */
  store(key: string, exportDir: string, meta?: EntryMeta): ManifestFile[] {
    const entry = this.entry(key);
    if (existsSync(entry)) return manifestOf(exportDir);
    const tmp = scratch(`${entry}.tmp-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    try {
      const files = manifestOf(exportDir, tmp);
      const doc: ManifestDoc = { format: FORMAT, files, ...(meta ? { meta } : {}) };
      writeFileSync(join(tmp, MANIFEST), JSON.stringify(doc));
      mkdirSync(dirname(entry), { recursive: true });
      try {
        renameSync(tmp, entry);
      } catch {
        // another wrapper stored the same key first
      }
      return files;
    } finally {
      removeScratch(tmp);
    }
  }

  /** An entry's manifest, unchecked (for listing, and for what a store is offered: the restore checks bytes). */
  manifest(key: string): ManifestDoc | undefined {
    return readManifest(this.entry(key));
  }

  /** Notes that an engine (by id) built or served this entry's result: its cache holds the step. */
  markEngine(key: string, engine: string): void {
    const entry = this.entry(key);
    if (existsSync(entry) && !existsSync(join(entry, `engine-${engine}`))) writeFileSync(join(entry, `engine-${engine}`), '');
  }

  /** Whether that engine built or served this entry's result (as far as this memo knows). */
  engineHad(key: string, engine: string): boolean {
    return existsSync(join(this.entry(key), `engine-${engine}`));
  }

  /** Every entry's key, in no order. */
  keys(): string[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir).flatMap((shard) => (/^[0-9a-f]{2}$/.test(shard) ? readdirSync(join(this.dir, shard)).filter((n) => KEY.test(n)) : []));
  }

  remove(key: string): void {
    rmSync(this.entry(key), { recursive: true, force: true });
  }
}

const KEY = /^[0-9a-f]{64}$/;

/**
 * The key of a step's result: the Dockerfile text, which pins every source, input and dependency by
 * content, and the base image by its content ID. The base image's *name* is left out (its FROM lines
 * read alike), so two machines that run one image under different names (pulled from a team's registry,
 * `rustcbuildx base pull`) share results; two images under one name never do.
 */
export function resultKey(dockerfile: string, baseImageId: string, baseImage?: string): string {
  const text = baseImage ? dockerfile.replaceAll(`FROM ${baseImage} `, 'FROM <base> ') : dockerfile;
  return sha256(`${FORMAT}\0${baseImageId.replace(/^sha256:/, '')}\0${text}`);
}

function readManifest(entry: string): ManifestDoc | undefined {
  try {
    const doc = JSON.parse(readFileSync(join(entry, MANIFEST), 'utf8')) as ManifestDoc;
    return doc.format === FORMAT && Array.isArray(doc.files) ? doc : undefined;
  } catch {
    return undefined;
  }
}

/** How long a failure in the sandbox sends the same inputs straight to the local rustc. */
const FAILURE_TTL_MS = 86_400_000;

/** Restores an entry into `into`, checking each file against the manifest; a string says what is damaged. */
function restoreVerified(entry: string, into: string): ManifestFile[] | string {
  let doc: ManifestDoc;
  try {
    doc = JSON.parse(readFileSync(join(entry, MANIFEST), 'utf8')) as ManifestDoc;
  } catch (err) {
    return `unreadable manifest: ${(err as Error).message}`;
  }
  const bad = manifestProblem(doc);
  if (bad) return bad;
  for (const file of doc.files) {
    let data: Buffer;
    try {
      data = readFileSync(join(entry, file.path));
    } catch {
      return `${file.path} is missing`;
    }
    if (data.length !== file.size) return `${file.path} has ${data.length} bytes, the manifest says ${file.size}`;
    if (sha256(data) !== file.sha256) return `${file.path} does not match its sha256`;
    writeWithMode(join(into, file.path), data, file.mode);
  }
  return doc.files;
}

export interface CacheUsage {
  entries: number;
  bytes: number;
}

/** What is wrong with a manifest as a document (its files are checked against it apart), if anything. */
export function manifestProblem(doc: ManifestDoc): string | undefined {
  if (doc.format !== FORMAT || !Array.isArray(doc.files)) return 'manifest of another format';
  for (const meta of ['meta/status', 'meta/stdout', 'meta/stderr']) if (!doc.files.some((f) => f.path === meta)) return `manifest lists no ${meta}`;
  const seen = new Set<string>();
  for (const file of doc.files) {
    if (typeof file.path !== 'string' || file.path.split('/').some((part) => part === '..' || part === '' || part === '.')) return `bad path in manifest: ${String(file.path)}`;
    if (seen.has(file.path)) return `${file.path} is listed twice`;
    seen.add(file.path);
    if (!Number.isInteger(file.size) || file.size < 0 || !/^[0-9a-f]{64}$/.test(String(file.sha256)) || !Number.isInteger(file.mode) || file.mode < 0 || file.mode > 0o777) {
      return `bad entry in manifest: ${file.path}`;
    }
  }
  return undefined;
}

/** Entries and bytes under the memo, and removal of entries unused (not restored or stored) since a time. */
export function cacheUsage(cache: LocalCache, removeUnusedBefore?: number): CacheUsage & { removed: number } {
  const usage = { entries: 0, bytes: 0, removed: 0 };
  if (removeUnusedBefore !== undefined) sweepFailures(join(dirname(cache.dir), 'failed'));
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

/** Drops remembered failures that have expired (they are also dropped when read). */
function sweepFailures(dir: string): void {
  if (!existsSync(dir)) return;
  for (const shard of readdirSync(dir)) {
    for (const name of readdirSync(join(dir, shard))) {
      const file = join(dir, shard, name);
      if (Date.now() - statSync(file).mtimeMs > FAILURE_TTL_MS) rmSync(file, { force: true });
    }
  }
}

function treeBytes(dir: string): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const st = statSync(join(dir, name));
    total += st.isDirectory() ? treeBytes(join(dir, name)) : st.size;
  }
  return total;
}

/** The manifest of a directory tree as it is now; with `copyTo`, each file is also copied there (read once). */
export function manifestOf(dir: string, copyTo?: string): ManifestFile[] {
  return walkFiles(dir).map(({ path, mode }) => {
    const data = readFileSync(join(dir, path));
    if (copyTo !== undefined) writeWithMode(join(copyTo, path), data, mode);
    return { path, size: data.length, mode, sha256: sha256(data) };
  });
}

/** Writes a file with exactly these permission bits (not narrowed by the umask). */
export function writeWithMode(dest: string, data: Buffer, mode: number): void {
  mkdirSync(dirname(dest), { recursive: true });
  writeFileSync(dest, data, { mode });
  chmodSync(dest, mode);
}

function walkFiles(root: string, rel = ''): Array<{ path: string; mode: number }> {
  const out: Array<{ path: string; mode: number }> = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const path = rel ? `${rel}/${name}` : name;
    const st = statSync(join(root, path));
    if (st.isDirectory()) out.push(...walkFiles(root, path));
    else out.push({ path, mode: st.mode & 0o777 });
  }
  return out;
}
