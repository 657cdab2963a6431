import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { KEEP_FAILURES, KEEP_RUNS, pruneState } from '../../src/prune';

const root = mkdtempSync(join(tmpdir(), 'rcbx-prune-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const HOUR = 3_600_000;
const now = Date.now();

/** Writes a file (or, for a path ending in `/`, a directory holding one) with the given age. */
function put(path: string, ageMs: number, text = 'x'): void {
  const file = path.endsWith('/') ? join(path, 'f') : path;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
  const t = new Date(now - ageMs);
  utimesSync(file, t, t);
  if (path.endsWith('/')) utimesSync(path, t, t);
}

describe('pruneState', () => {
  test('keeps what plans name, what memos used since the run began, the newest runs and reports; removes the rest', () => {
    const state = join(root, 'state');
    const ctx = join(state, 'ctx');
    // Plans name ws/a and crates/s.crate (as the JSON text of their snippets does).
    put(join(state, 'units', 'app-1.json'), 2 * HOUR, JSON.stringify({ snippet: 'FROM scratch AS s-app-1\nCOPY ws/a /\nFROM x AS u\n' }));
    put(join(state, 'units', 'dep-1.json'), 2 * HOUR, JSON.stringify({ snippet: 'FROM scratch AS s-dep-1\nADD crates/s.crate /\n' }));
    put(join(ctx, 'ws', 'a/'), 2 * HOUR);
    put(join(ctx, 'crates', 's.crate'), 2 * HOUR);
    // A memo used during this run points at ws/b (an old snapshot reused after a revert); an old memo at ws/c.
    put(join(ctx, '.stat', 'aa', 'fresh'), 0, 'ws/b');
    put(join(ctx, '.stat', 'bb', 'stale'), 2 * HOUR, 'ws/c');
    put(join(ctx, 'ws', 'b/'), 2 * HOUR);
    put(join(ctx, 'ws', 'c/'), 2 * HOUR);
    // Staged during this run, not yet named by a plan: kept. Old outputs snapshots: removed.
    put(join(ctx, 'ws', 'd/'), 0);
    put(join(ctx, 'outs', 'e/'), 2 * HOUR);
    put(join(ctx, 'dirs', 'f/'), 2 * HOUR);
    // Runs, reports and work dirs.
    for (let i = 0; i < KEEP_RUNS + 5; i++) for (const ext of ['.jsonl', '.log', '.engine.json']) put(join(state, 'runs', `r${i}${ext}`), (i + 1) * 60_000);
    put(join(state, 'runs', 'current.jsonl'), 10 * HOUR);
    for (let i = 0; i < KEEP_FAILURES + 3; i++) for (const ext of ['.Dockerfile', '.log']) put(join(state, 'failures', `u${i}${ext}`), (i + 1) * 60_000);
    put(join(state, 'tmp', 'old-work/'), 2 * HOUR);
    put(join(state, 'tmp', 'live-work/'), 0);

    pruneState(state, now - HOUR, 'current');

    expect(readdirSync(join(ctx, 'ws')).sort()).toEqual(['a', 'b', 'd']);
    expect(readdirSync(join(ctx, 'crates'))).toEqual(['s.crate']);
    expect(readdirSync(join(ctx, 'outs'))).toEqual([]);
    expect(readdirSync(join(ctx, 'dirs'))).toEqual([]);
    expect(existsSync(join(ctx, '.stat', 'aa', 'fresh'))).toBe(true);
    expect(existsSync(join(ctx, '.stat', 'bb', 'stale'))).toBe(false);
    const runs = new Set(readdirSync(join(state, 'runs')).map((f) => f.slice(0, f.indexOf('.'))));
    expect(runs.size).toBe(KEEP_RUNS);
    expect(runs.has('current')).toBe(true);
    expect(runs.has('r0')).toBe(true);
    expect(runs.has(`r${KEEP_RUNS}`)).toBe(false);
    expect(readdirSync(join(state, 'failures'))).toHaveLength(KEEP_FAILURES * 2);
    expect(existsSync(join(state, 'failures', 'u0.log'))).toBe(true);
    expect(readdirSync(join(state, 'tmp'))).toEqual(['live-work']);
    expect(readdirSync(join(state, 'units')).sort()).toEqual(['app-1.json', 'dep-1.json']);
  });

  test('an empty or missing state dir is fine', () => {
    expect(pruneState(join(root, 'nothing'), now).removed).toBe(0);
  });
});
