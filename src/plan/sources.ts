/**
 * Sources staged into the build context (one directory per target dir, `<target>/.rustcbuildx/ctx`).
 * Everything in it is immutable and named by what it holds, so concurrent builds never race and the
 * engine receives only the paths a Dockerfile names (BuildKit follows COPY/ADD sources).
 */
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { sha256 } from '../toolchain.ts';
import { writeAtomic } from '../run-state.ts';
import { keepScratch, removeScratch, scratch } from '../scratch.ts';

/**
 * The context's directories of content-named entries that many units share (crate tarballs, build
 * script outputs, trusted outputs): kept whole in the engine's copy of the context (BuildRequest.keepSynced).
 * Workspace and git snapshots are left out: they can hold thousands of files, whose stats would then
 * travel with every build.
 */
export const SHARED_CONTEXT_DIRS = ['crates', 'dirs', 'outs'];

/** Where staging writes a file or a tree before its rename into place; STAGING_GLOBS match it. */
const stagingPath = (dest: string) => `${dest}.tmp-${process.pid}`;
export const STAGING_GLOBS = ['**/*.tmp-*', '**/*.tmp-*/**'];

export class SourceError extends Error {
  override name = 'SourceError';
}

/** A crates.io (or other registry) crate: its `.crate` tarball, extracted by the engine. */
export interface ArchiveSource {
  kind: 'archive';
  /** path inside the context */
  ctxPath: string;
  /** the top directory inside the tarball, `<name>-<version>` */
  topDir: string;
}

/** A directory tree copied into the context (workspace crate, git checkout, build-script output). */
export interface TreeSource {
  kind: 'tree';
  ctxPath: string;
}

export type StagedSource = ArchiveSource | TreeSource;

/**
 * `<CARGO_HOME>/registry/src/<index>/<name>-<ver>` → cargo's downloaded tarball, checked against the
 * registry's recorded checksum and linked into the context under its sha256: the Dockerfile text then
 * pins the exact bytes, whatever the registry or its cache holds.
 */
export function stageRegistryCrate(ctxDir: string, cargoHome: string, manifestDir: string): ArchiveSource {
  const rel = relative(join(cargoHome, 'registry', 'src'), manifestDir).split('/');
  const [index, pkgDir] = rel;
  if (!index || !pkgDir || rel.length !== 2) throw new SourceError(`not a registry source dir: ${manifestDir}`);
  const tarball = join(cargoHome, 'registry', 'cache', index, `${pkgDir}.crate`);
  const st = statSync(tarball, { throwIfNoEntry: false });
  if (!st) throw new SourceError(`cargo's download of ${pkgDir} is missing: ${tarball}`);
  const memo = statMemo(ctxDir, `${tarball}\0${st.size}\0${st.mtimeMs}\0${st.ino}`);
  let digest = readMemo(memo);
  if (digest === undefined) {
    digest = sha256(readFileSync(tarball));
    const expected = recordedChecksum(join(cargoHome, 'registry', 'index', index), pkgDir);
    if (expected !== undefined && digest !== expected) {
      throw new SourceError(`${tarball} does not match the registry's checksum ${expected}: remove it and let cargo download it again`);
    }
    writeMemo(memo, digest);
  }
  const ctxPath = `crates/${digest}.crate`;
  const staged = join(ctxDir, ctxPath);
  if (!existsSync(staged)) placeFile(tarball, staged);
  return { kind: 'archive', ctxPath, topDir: pkgDir };
}

/** Where the answer for a file's (or tree's) stat fingerprint is remembered, so it is computed once. */
function statMemo(ctxDir: string, fingerprint: string): string {
  const key = sha256(fingerprint);
  return join(ctxDir, '.stat', key.slice(0, 2), key);
}

/**
 * The remembered answer, or undefined. A hit is marked used now: pruning (src/prune.ts) keeps the
 * snapshots that memos used since the run began.
 */
function readMemo(memo: string): string | undefined {
  try {
    const value = readFileSync(memo, 'utf8');
    if (!value) return undefined;
    const now = new Date();
    utimesSync(memo, now, now);
    return value;
  } catch {
    return undefined;
  }
}

/** Atomic: a concurrent reader sees the old answer or the new one, never an empty file. */
function writeMemo(memo: string, value: string): void {
  writeAtomic(memo, value);
}

/** The checksum the registry index recorded for `<name>-<version>`, from cargo's index cache. */
export function recordedChecksum(indexDir: string, pkgDir: string): string | undefined {
  const m = /^(.+?)-(\d+\.\d+\.\d+.*)$/.exec(pkgDir);
  if (!m?.[1] || !m[2]) return undefined;
  const name = m[1].toLowerCase();
  const cacheFile = join(indexDir, '.cache', indexPrefix(name), name);
  let text: string;
  try {
    text = readFileSync(cacheFile, 'latin1');
  } catch {
    return undefined;
  }
  // Entries are JSON objects separated by NULs; find the one for this exact version.
  const needle = `"vers":"${m[2]}"`;
  for (const entry of text.split('\0')) {
    if (entry.startsWith('{') && entry.includes(needle)) {
      return /"cksum":"([0-9a-f]{64})"/.exec(entry)?.[1];
    }
  }
  return undefined;
}

function indexPrefix(name: string): string {
  if (name.length <= 2) return String(name.length);
  if (name.length === 3) return `3/${name[0]}`;
  return `${name.slice(0, 2)}/${name.slice(2, 4)}`;
}

export interface SnapshotOptions {
  /** directory names never sent (besides .git and cargo target dirs) */
  excludeDirs?: readonly string[];
  /** absolute paths never sent (the target dir when it lies inside the crate) */
  excludePaths?: readonly string[];
}

/**
 * Copies a directory tree into the context under `<kind>/<content hash>`: the same files always
 * give the same context path (so the same Dockerfile text), wherever and whenever they were made.
 * Hashing reads every file, so a stat fingerprint (path, size, mode, mtime) remembers the answer.
 * Skips `.git`, cargo target dirs (they hold CACHEDIR.TAG) and what `.dockerignore` excludes.
 */
export function snapshotTree(ctxDir: string, kind: string, hostDir: string, opts: SnapshotOptions = {}): TreeSource {
  const files = listTree(hostDir, opts);
  const memo = statMemo(ctxDir, `${hostDir}\n` + files.map((f) => `${f.rel}\0${f.size}\0${f.mode}\0${f.mtimeMs}`).join('\n'));
  const known = readMemo(memo);
  if (known !== undefined && existsSync(join(ctxDir, known))) return { kind: 'tree', ctxPath: known };
  const hash = new Bun.CryptoHasher('sha256');
  const contents = files.map((f) => {
    const data = readFileSync(join(hostDir, f.rel));
    hash.update(`${f.rel}\0${f.mode}\0${data.length}\0`).update(data);
    return data;
  });
  // Named by content only: the host dir's name differs between checkouts, the files need not.
  const ctxPath = `${kind}/${hash.digest('hex').slice(0, 32)}`;
  const dest = join(ctxDir, ctxPath);
  if (!existsSync(dest)) {
    const tmp = scratch(stagingPath(dest));
    rmSync(tmp, { recursive: true, force: true });
    files.forEach((f, i) => {
      const to = join(tmp, f.rel);
      mkdirSync(dirname(to), { recursive: true });
      writeFileSync(to, contents[i] as Buffer, { mode: f.mode });
    });
    mkdirSync(tmp, { recursive: true });
    pinTimes(tmp, files.map((f) => f.rel));
    try {
      renameSync(tmp, dest);
      keepScratch(tmp);
    } catch (err) {
      // Another wrapper staged the same snapshot first: theirs is identical.
      removeScratch(tmp);
      if (!existsSync(dest)) throw err;
    }
  }
  writeMemo(memo, ctxPath);
  return { kind: 'tree', ctxPath };
}

/**
 * One mtime for every file and directory of a snapshot. Its name says its content; with the same
 * times too, a snapshot made again (another checkout, a fresh target dir) has the same stats as the
 * copy the engine keeps of it, which then asks for none of its files again (fsutil compares size,
 * mode and mtime). Nothing in the sandbox reads a source's mtime.
 */
const SNAPSHOT_TIME = new Date('2000-01-01T00:00:00Z');

function pinTimes(root: string, rels: readonly string[]): void {
  const dirs = new Set<string>(['.']);
  for (const rel of rels) {
    utimesSync(join(root, rel), SNAPSHOT_TIME, SNAPSHOT_TIME);
    for (let d = dirname(rel); d !== '.' && !dirs.has(d); d = dirname(d)) dirs.add(d);
  }
  // Deepest first: setting a directory's time after its children are done keeps it.
  for (const d of [...dirs].sort((a, b) => b.length - a.length)) utimesSync(join(root, d), SNAPSHOT_TIME, SNAPSHOT_TIME);
}

/**
 * Some files of a directory (a unit's outputs in cargo's out-dir), hard-linked into the context under
 * `<kind>/<content hash>/`; rustc replaces outputs by renaming new files over them, so a link keeps the
 * bytes it was made from.
 */
export function snapshotFiles(ctxDir: string, kind: string, hostDir: string, names: readonly string[]): TreeSource {
  const stats = names.map((name) => ({ name, st: statSync(join(hostDir, name)) }));
  const memo = statMemo(ctxDir, `${hostDir}\n` + stats.map(({ name, st }) => `${name}\0${st.size}\0${st.mtimeMs}\0${st.ino}`).join('\n'));
  const known = readMemo(memo);
  if (known !== undefined && existsSync(join(ctxDir, known))) return { kind: 'tree', ctxPath: known };
  const hash = new Bun.CryptoHasher('sha256');
  for (const name of [...names].sort()) hash.update(`${name}\0`).update(readFileSync(join(hostDir, name)));
  const ctxPath = `${kind}/${hash.digest('hex').slice(0, 32)}`;
  for (const name of names) {
    const dest = join(ctxDir, ctxPath, name);
    if (!existsSync(dest)) placeFile(join(hostDir, name), dest);
  }
  writeMemo(memo, ctxPath);
  return { kind: 'tree', ctxPath };
}

interface TreeFile {
  rel: string;
  size: number;
  mode: number;
  mtimeMs: number;
}

function listTree(root: string, opts: SnapshotOptions): TreeFile[] {
  const ignore = loadDockerignore(root);
  const seenDirs = new Set<string>();
  const excludeDirs = new Set(['.git', ...(opts.excludeDirs ?? [])]);
  const excludePaths = new Set(opts.excludePaths ?? []);
  const out: TreeFile[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const abs = join(dir, name);
      const rel = relative(root, abs);
      if (excludePaths.has(abs)) continue;
      let st = lstatSync(abs);
      if (st.isSymbolicLink()) {
        try {
          st = statSync(abs);
        } catch {
          continue; // a dangling link cannot be read by rustc either
        }
      }
      if (st.isDirectory()) {
        // An ignored dir is pruned unless a `!` exception may re-include something inside it.
        if (!ignore.hasExceptions && ignore.matches(rel)) continue;
        if (excludeDirs.has(name) || existsSync(join(abs, 'CACHEDIR.TAG'))) continue;
        // A symlink back to an ancestor would be walked forever.
        const id = `${st.dev}:${st.ino}`;
        if (seenDirs.has(id)) continue;
        seenDirs.add(id);
        walk(abs);
      } else if (st.isFile() && !ignore.matches(rel)) {
        out.push({ rel, size: st.size, mode: st.mode & 0o777, mtimeMs: st.mtimeMs });
      }
    }
  };
  seenDirs.add(`${statSync(root).dev}:${statSync(root).ino}`);
  walk(root);
  return out;
}

export interface IgnoreMatcher {
  matches(rel: string): boolean;
  /** whether any `!` rule exists (then no directory can be pruned whole) */
  hasExceptions: boolean;
}

/** A `.dockerignore` matcher (patterns, `**`, `!` exceptions, last match wins). */
export function dockerignoreMatcher(text: string): IgnoreMatcher {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
      return { negate, glob: new Bun.Glob(pattern), prefix: new Bun.Glob(`${pattern}/**`) };
    });
  return {
    hasExceptions: rules.some((r) => r.negate),
    matches(rel) {
      let ignored = false;
      for (const r of rules) if (r.glob.match(rel) || r.prefix.match(rel)) ignored = !r.negate;
      return ignored;
    },
  };
}

const NOTHING_IGNORED: IgnoreMatcher = { matches: () => false, hasExceptions: false };

function loadDockerignore(root: string): IgnoreMatcher {
  const file = join(root, '.dockerignore');
  return existsSync(file) ? dockerignoreMatcher(readFileSync(file, 'utf8')) : NOTHING_IGNORED;
}

/** Hard-links (else copies) a file into the context, atomically. */
function placeFile(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  // Registered, so a Ctrl-C between link and rename removes it (and the handler is in place first).
  const tmp = scratch(stagingPath(to));
  rmSync(tmp, { force: true });
  try {
    linkSync(from, tmp);
  } catch {
    copyFileSync(from, tmp);
  }
  renameSync(tmp, to);
  keepScratch(tmp);
}
