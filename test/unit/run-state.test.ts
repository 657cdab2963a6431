import { describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSummary, RunState, summarize, type UnitRecord } from '../../src/run-state';

function rec(outcome: UnitRecord['outcome'], start: number, end: number): UnitRecord {
  return { unit: 'u', crate: 'u', outcome, seconds: (end - start) / 1000, start, end, code: 0 };
}

describe('summarize', () => {
  // Two units side by side from t=1000 to t=3000 and t=1500 to t=4000: 4.5 s of units in 3 s of wall time.
  const records = [rec('cached', 1000, 3000), rec('built', 1500, 4000)];

  test('wall time as cargo buildx measured it, when given; the units\' sum beside it', () => {
    expect(summarize(records, 3.04)).toEqual({
      units: 2,
      cached: 1,
      built: 1,
      local: 0,
      fallback: 0,
      from: { memo: 1, store: 0, engine: 0 },
      hitRate: 0.5,
      scripts: { sandbox: 0, cached: 0, host: 0 },
      seconds: 3.04,
      unitSeconds: 4.5,
    });
  });

  test('where cached units came from, and the hit rate over compiles and scripts\' runs', () => {
    const from = (source: 'memo' | 'store' | 'engine'): UnitRecord => ({ ...rec('cached', 0, 1), from: source });
    const s = summarize([from('store'), from('store'), from('engine'), from('memo'), rec('built', 0, 1), { ...rec('cached', 0, 1), kind: 'build-script', from: 'store' }, rec('fallback', 0, 1), rec('built', 0, 1)]);
    expect(s.from).toEqual({ memo: 1, store: 2, engine: 1 });
    expect(s.hitRate).toBe(0.63);
    expect(formatSummary(s)).toStartWith('rustcbuildx: 7 units compiled: 4 from cache (2 from the shared store), 2 built, 1 fell back');
  });

  test('a bare RUSTC_WRAPPER run: first start to last end', () => {
    expect(summarize(records).seconds).toBe(3);
  });

  test('records without times (older runs): the units\' sum', () => {
    const old = records.map(({ start: _s, end: _e, ...r }) => r);
    expect(summarize(old).seconds).toBe(4.5);
  });

  test('the summary line and stats print the same wall time', () => {
    expect(formatSummary(summarize(records, 3.04))).toBe('rustcbuildx: 2 units compiled: 1 from cache, 1 built, 0 fell back to local rustc, 3.0 s');
    expect(formatSummary(summarize([...records, rec('local', 1000, 2000)], 3.04))).toBe('rustcbuildx: 3 units compiled: 1 from cache, 1 built, 1 compiled here (edit loop), 0 fell back to local rustc, 3.0 s');
  });

  test('build scripts\' runs are counted apart from the compiles, and their time is the run\'s too', () => {
    const script = (outcome: UnitRecord['outcome'], start: number, end: number): UnitRecord => ({ ...rec(outcome, start, end), kind: 'build-script' });
    const all = [...records, script('built', 500, 1000), script('cached', 4000, 4200), script('fallback', 4000, 4500)];
    const s = summarize(all);
    expect(s).toMatchObject({ units: 2, cached: 1, built: 1, fallback: 0, scripts: { sandbox: 1, cached: 1, host: 1 }, seconds: 4, unitSeconds: 5.7 });
    expect(formatSummary(s)).toBe('rustcbuildx: 2 units compiled: 1 from cache, 1 built, 0 fell back to local rustc; build scripts: 1 run in the sandbox, 1 from cache, 1 on the host, 4.0 s');
  });
});

describe('a value the run shares (the engine detected once per run)', () => {
  const fresh = () => new RunState(mkdtempSync(join(tmpdir(), 'rcbx-run-state-')), `r${Math.random().toString(36).slice(2)}`);

  test('made once while the others wait for it: every caller gets the same value', async () => {
    const state = fresh();
    let made = 0;
    const make = async () => {
      made++;
      await Bun.sleep(30);
      return { answer: 42 };
    };
    const values = await Promise.all(Array.from({ length: 5 }, () => state.shared('engine', make)));
    expect(values).toEqual(Array.from({ length: 5 }, () => ({ answer: 42 })));
    expect(made).toBe(1);
    // Later callers read it: no lock left behind.
    expect(await state.shared('engine', make)).toEqual({ answer: 42 });
    expect(made).toBe(1);
    expect(existsSync(state.path('runs', `${state.runId}.engine.lock`))).toBe(false);
  });

  test('a maker that died (its lock names a pid that is gone) is replaced; one that threw leaves the making to the next caller', async () => {
    const state = fresh();
    const dead = Bun.spawnSync(['true']).pid;
    writeFileSync(state.path('runs', `${state.runId}.engine.lock`), String(dead));
    expect(await state.shared('engine', async () => 'mine')).toBe('mine');

    const other = fresh();
    await expect(other.shared('engine', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await other.shared('engine', async () => 'second')).toBe('second');
  });
});
