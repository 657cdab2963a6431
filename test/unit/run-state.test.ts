import { describe, expect, test } from 'bun:test';
import { formatSummary, summarize, type UnitRecord } from '../../src/run-state';

function rec(outcome: UnitRecord['outcome'], start: number, end: number): UnitRecord {
  return { unit: 'u', crate: 'u', outcome, seconds: (end - start) / 1000, start, end, code: 0 };
}

describe('summarize', () => {
  // Two units side by side from t=1000 to t=3000 and t=1500 to t=4000: 4.5 s of units in 3 s of wall time.
  const records = [rec('cached', 1000, 3000), rec('built', 1500, 4000)];

  test('wall time as cargo buildx measured it, when given; the units\' sum beside it', () => {
    expect(summarize(records, 3.04)).toEqual({ units: 2, cached: 1, built: 1, fallback: 0, seconds: 3.04, unitSeconds: 4.5 });
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
  });
});
