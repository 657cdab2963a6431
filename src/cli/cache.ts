/**
 * `rustcbuildx cache …`: the local memo and the shared stores (RUSTCBUILDX_CACHE) as a user sees them:
 * what is there, how big, removing what is old or unwanted, and moving results between them (push what
 * may be shared, pull for offline work). Every result that arrives is unpacked against its manifest first.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Config } from '../config/config.ts';
import { cliConfig } from '../config/files.ts';
import { cacheUsage, LocalCache, PROVENANCE_RULES, type EntryMeta } from '../store/local-cache.ts';
import { openStore, type ResultStore, type StoredResult } from '../store/shared.ts';
import { DamagedResult, packResult, unpackResult } from '../store/packed.ts';
import { mayShare } from '../wrapper/run-stores.ts';
import { namedToShare } from '../plan/provenance.ts';
import { run } from '../exec.ts';
import { writeStdout } from '../io.ts';
import { UsageError } from './usage.ts';

const USAGE = `usage: rustcbuildx cache ls [--json] | du | prune [--days N] [--max-size SIZE] | rm CRATE… | push | pull [--all]`;

interface Listed extends StoredResult {
  where: string;
}

export async function cacheCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const cfg = await cliConfig();
  const memo = LocalCache.fromEnv();
  const stores = cfg.stores.map(openStore);
  switch (sub) {
    case 'ls':
    case 'show': {
      const json = takeFlag(rest, '--json');
      noMore(rest);
      const all = [...memoEntries(memo), ...(await storeEntries(stores))];
      if (json) {
        await writeStdout(JSON.stringify(all.map((e) => ({ key: e.key, where: e.where, size: e.size, lastUsed: e.lastUsed ?? null, ...(e.meta ?? {}) }))) + '\n');
        return 0;
      }
      await writeStdout(table(all) + `${all.length} results\n`);
      return 0;
    }
    case 'du': {
      noMore(rest);
      const lines: string[] = [];
      if (memo) {
        const usage = cacheUsage(memo);
        lines.push(`memo ${memo.dir}: ${usage.entries} results, ${mb(usage.bytes)}`);
      }
      for (const store of stores) {
        const listed = await store.list();
        lines.push(`${store.name}: ${listed.length} results, ${mb(listed.reduce((s, e) => s + e.size, 0))}`);
      }
      await writeStdout((lines.length ? lines.join('\n') : 'no memo (RUSTCBUILDX_LOCAL_CACHE=off) and no shared store (RUSTCBUILDX_CACHE)') + '\n');
      return 0;
    }
    case 'prune':
      return prune(rest, memo, stores);
    case 'rm': {
      if (rest.length === 0 || rest.some((a) => a.startsWith('-'))) throw new UsageError('usage: rustcbuildx cache rm CRATE… (names or globs: serde, acme-*)');
      let removed = 0;
      for (const e of memoEntries(memo)) {
        if (e.meta && namedToShare([e.meta.crate], rest)) {
          memo?.remove(e.key);
          removed++;
        }
      }
      const notes: string[] = [];
      for (const store of stores.filter((s) => s.spec.writable)) {
        for (const e of await store.list()) {
          if (!e.meta || !namedToShare([e.meta.crate], rest)) continue;
          try {
            await store.remove(e.key);
            removed++;
          } catch (err) {
            notes.push(`${store.name}: ${(err as Error).message}`);
            break;
          }
        }
      }
      await writeStdout(`removed ${removed} results of ${rest.join(', ')}\n${notes.map((n) => `not removed from ${n}\n`).join('')}`);
      return notes.length > 0 ? 1 : 0;
    }
    case 'push':
      noMore(rest);
      return push(cfg, memo, stores);
    case 'pull': {
      const all = takeFlag(rest, '--all');
      noMore(rest);
      return pull(memo, stores, all);
    }
    default:
      throw new UsageError(USAGE);
  }
}

function takeFlag(args: string[], flag: string): boolean {
  const at = args.indexOf(flag);
  if (at < 0) return false;
  args.splice(at, 1);
  return true;
}

function noMore(args: string[]): void {
  if (args.length > 0) throw new UsageError(`unexpected argument "${args[0]}"; ${USAGE}`);
}

function memoEntries(memo: LocalCache | undefined): Listed[] {
  if (!memo) return [];
  return memo.keys().flatMap((key) => {
    const doc = memo.manifest(key);
    const st = statSync(memo.entry(key), { throwIfNoEntry: false });
    if (!st) return [];
    const size = doc ? doc.files.reduce((s, f) => s + f.size, 0) : 0;
    return [{ key, where: 'memo', size, lastUsed: st.mtimeMs, ...(doc?.meta ? { meta: doc.meta } : {}) }];
  });
}

async function storeEntries(stores: readonly ResultStore[]): Promise<Listed[]> {
  const out: Listed[] = [];
  for (const store of stores) for (const e of await store.list()) out.push({ ...e, where: store.name });
  return out;
}

function table(entries: readonly Listed[]): string {
  const rows = [...entries]
    .sort((a, b) => (a.meta?.crate ?? '~').localeCompare(b.meta?.crate ?? '~') || a.where.localeCompare(b.where))
    .map((e) => [
      e.meta?.crate ?? '(older format)',
      e.meta?.version ?? '',
      e.meta?.kind ?? '',
      mb(e.size),
      e.lastUsed ? new Date(e.lastUsed).toISOString().slice(0, 16).replace('T', ' ') : '',
      e.where,
      e.where !== 'memo' ? '' : e.meta?.private ? `private: ${e.meta.private}` : e.meta?.incremental ? 'private: built incrementally' : e.meta && e.meta.rules !== PROVENANCE_RULES ? 'private: decided by an older rustcbuildx' : '',
    ]);
  const head = ['CRATE', 'VERSION', 'KIND', 'SIZE', 'LAST USED', 'WHERE', ''];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  return [head, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join('  ').trimEnd() + '\n').join('');
}

function mb(bytes: number): string {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${(bytes / 1e3).toFixed(1)} kB`;
}

/** `10G`, `500M`, `2048k`, or bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?$/.exec(text.trim());
  if (!m) throw new UsageError(`--max-size ${text}: a size such as 500M or 10G`);
  const unit = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * unit);
}

/**
 * Removes memo entries (and results in writable directory stores) unused for N days, then the least
 * recently used until what remains fits --max-size. A registry keeps its own: its garbage collector
 * decides there.
 */
async function prune(args: string[], memo: LocalCache | undefined, stores: readonly ResultStore[]): Promise<number> {
  let days = 30;
  let maxSize: number | undefined;
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = (args[i] as string).split('=', 2) as [string, string | undefined];
    const value = inline ?? args[++i];
    if (value === undefined || (flag !== '--days' && flag !== '--max-size')) throw new UsageError(`unexpected argument "${args[i - 1] ?? flag}"; ${USAGE}`);
    if (flag === '--days') {
      if (!/^\d+$/.test(value)) throw new UsageError(`--days ${value}: a whole number of days`);
      days = Number(value);
    } else maxSize = parseSize(value);
  }
  const before = Date.now() - days * 86_400_000;
  const lines: string[] = [];
  if (memo) {
    const aged = cacheUsage(memo, before);
    const bySize = maxSize === undefined ? [] : overSize(memoEntries(memo), maxSize);
    for (const e of bySize) memo.remove(e.key);
    const left = cacheUsage(memo);
    lines.push(`memo: removed ${aged.removed + bySize.length} results; ${left.entries} remain, ${mb(left.bytes)}`);
  }
  for (const store of stores.filter((s) => s.spec.writable)) {
    if (store.spec.kind !== 'dir') {
      lines.push(`${store.name}: left as it is (a registry prunes with its own garbage collector)`);
      continue;
    }
    const listed = await store.list();
    const aged = listed.filter((e) => (e.lastUsed ?? 0) < before);
    const kept = listed.filter((e) => (e.lastUsed ?? 0) >= before);
    const gone = [...aged, ...(maxSize === undefined ? [] : overSize(kept, maxSize))];
    for (const e of gone) await store.remove(e.key);
    lines.push(`${store.name}: removed ${gone.length} results`);
  }
  await writeStdout(lines.join('\n') + '\n');
  return 0;
}

/** The least recently used entries whose removal makes the rest fit in maxSize. */
function overSize(entries: readonly StoredResult[], maxSize: number): StoredResult[] {
  let total = entries.reduce((s, e) => s + e.size, 0);
  const out: StoredResult[] = [];
  for (const e of [...entries].sort((a, b) => (a.lastUsed ?? 0) - (b.lastUsed ?? 0))) {
    if (total <= maxSize) break;
    out.push(e);
    total -= e.size;
  }
  return out;
}

/** Offers every memo entry that may be shared to every writable store that lacks it. */
async function push(cfg: Config, memo: LocalCache | undefined, stores: readonly ResultStore[]): Promise<number> {
  const targets = stores.filter((s) => s.spec.writable);
  if (!memo || targets.length === 0) throw new UsageError('cache push needs the memo and a writable store in RUSTCBUILDX_CACHE');
  let pushed = 0;
  let present = 0;
  const kept = new Map<string, number>();
  for (const key of memo.keys()) {
    const doc = memo.manifest(key);
    if (!doc?.meta) continue;
    if (!mayShare(doc.meta, cfg.share)) {
      const why = doc.meta.private ?? (doc.meta.incremental ? 'built incrementally' : 'decided by an older rustcbuildx');
      kept.set(why, (kept.get(why) ?? 0) + 1);
      continue;
    }
    // Packed from a verified restore, so a damaged memo entry is never offered.
    const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-push-'));
    try {
      if (!memo.restore(key, join(work, 'r'))) continue;
      let packed: Uint8Array | undefined;
      for (const store of targets) {
        if (await store.has(key)) {
          present++;
          continue;
        }
        packed ??= await packResult(join(work, 'r'), doc, key);
        await store.put(key, packed, doc.meta);
        pushed++;
      }
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }
  const privateLines = [...kept].map(([why, n]) => `  kept ${n} here: ${why}\n`).join('');
  await writeStdout(`pushed ${pushed} results to ${targets.map((s) => s.name).join(', ')}; ${present} were there already\n${privateLines}`);
  return 0;
}

/**
 * Copies results from the stores into the memo, for working offline: those of the current project's
 * packages (as `cargo metadata` resolves them), or all with --all.
 */
async function pull(memo: LocalCache | undefined, stores: readonly ResultStore[], all: boolean): Promise<number> {
  if (!memo || stores.length === 0) throw new UsageError('cache pull needs the memo and a store in RUSTCBUILDX_CACHE');
  const wanted = all ? undefined : await projectPackages();
  let pulled = 0;
  let damaged = 0;
  let have = 0;
  for (const store of stores) {
    for (const e of await store.list()) {
      if (wanted && !(e.meta && wanted.has(`${e.meta.crate} ${e.meta.version}`))) continue;
      if (memo.manifest(e.key)) {
        have++;
        continue;
      }
      const packed = await store.get(e.key);
      if (!packed) continue;
      const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-pull-'));
      try {
        const doc = await unpackResult(packed, join(work, 'r'), e.key);
        memo.store(e.key, join(work, 'r'), pulledMeta(doc.meta ?? e.meta, store.name));
        pulled++;
      } catch (err) {
        if (!(err instanceof DamagedResult)) throw err;
        damaged++;
        await writeStdout(`rejected ${e.key.slice(0, 12)} (${e.meta?.crate ?? '?'}) from ${store.name}: ${err.message}\n`);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    }
  }
  await writeStdout(`pulled ${pulled} results into ${memo.dir}; ${have} were there already${damaged ? `; ${damaged} damaged, rejected` : ''}\n`);
  return damaged > 0 ? 1 : 0;
}

/**
 * What came from a store is the pusher's to share, not this user's: `cache push` keeps it here unless
 * its crate is named (a build that uses it decides again from its own provenance).
 */
function pulledMeta(meta: EntryMeta | undefined, store: string): EntryMeta | undefined {
  return meta ? { crate: meta.crate, version: meta.version, kind: meta.kind, private: `pulled from ${store}` } : undefined;
}

/** `name version` of every package in the current project's resolved graph. */
async function projectPackages(): Promise<Set<string>> {
  // Online: this is what prepares for working offline.
  const meta = await run(['cargo', 'metadata', '--format-version', '1'], { timeoutMs: 300_000 });
  if (meta.code !== 0) throw new UsageError(`cache pull: \`cargo metadata\` failed (${meta.stderr.trim().split('\n').at(-1) ?? ''}): run it in a cargo project, or pass --all`);
  const doc = JSON.parse(meta.stdout) as { packages: Array<{ name: string; version: string }> };
  return new Set(doc.packages.map((p) => `${p.name} ${p.version}`));
}
