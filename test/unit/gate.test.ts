import { describe, expect, test } from 'bun:test';
import { Gate } from '../../src/engine/buildkit/gate.ts';

/** A call that runs until released, recording when it started. */
function held(started: number[], id: number) {
  let release!: () => void;
  const done = new Promise<void>((resolve) => (release = resolve));
  return { run: async () => { started.push(id); await done; return id; }, release };
}

describe('Gate', () => {
  test('at most `limit` calls run at once; the others start in the order they came, as slots free', async () => {
    const gate = new Gate(2);
    const started: number[] = [];
    const calls = [1, 2, 3, 4].map((id) => held(started, id));
    const results = calls.map((c) => gate.run(c.run));
    await Bun.sleep(0);
    expect(started).toEqual([1, 2]);
    expect(gate.waiting).toBe(2);
    calls[1]!.release();
    await Bun.sleep(0);
    expect(started).toEqual([1, 2, 3]);
    // A newcomer while others wait goes behind them, even when a slot has just freed.
    const late = held(started, 5);
    const lateResult = gate.run(late.run);
    calls[0]!.release();
    await Bun.sleep(0);
    expect(started).toEqual([1, 2, 3, 4]);
    calls[2]!.release();
    calls[3]!.release();
    late.release();
    expect(await Promise.all([...results, lateResult])).toEqual([1, 2, 3, 4, 5]);
    expect(started).toEqual([1, 2, 3, 4, 5]);
  });

  test('calls arriving while others finish start in arrival order, never more than the limit at once', async () => {
    const gate = new Gate(2);
    const order: number[] = [];
    let running = 0;
    let most = 0;
    const call = (id: number) =>
      gate.run(async () => {
        order.push(id);
        most = Math.max(most, ++running);
        await Bun.sleep(id % 3);
        running--;
      });
    const calls: Array<Promise<void>> = [];
    // Newcomers arrive in the very ticks in which earlier calls finish and free their places.
    for (let id = 0; id < 40; id++) {
      calls.push(call(id));
      if (id % 4 === 3) await Bun.sleep(1);
    }
    await Promise.all(calls);
    expect(order).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(most).toBe(2);
  });

  test('a call whose wrapper went away while it waited leaves the queue; the others go on', async () => {
    const gate = new Gate(1);
    const started: number[] = [];
    const first = held(started, 1);
    const running = gate.run(first.run);
    const gone = new AbortController();
    const waiting = gate.run(async () => started.push(2), gone.signal);
    const after = gate.run(async () => started.push(3));
    gone.abort();
    await expect(waiting).rejects.toThrow('cancelled while waiting for the engine');
    first.release();
    await Promise.all([running, after]);
    expect(started).toEqual([1, 3]);
  });

  test('a call that throws frees its slot; a resize lets waiting calls in at once', async () => {
    const gate = new Gate(1);
    const started: number[] = [];
    await expect(gate.run(async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    const calls = [1, 2, 3].map((id) => held(started, id));
    const results = calls.map((c) => gate.run(c.run));
    await Bun.sleep(0);
    expect(started).toEqual([1]);
    gate.resize(3);
    await Bun.sleep(0);
    expect(started).toEqual([1, 2, 3]);
    for (const c of calls) c.release();
    expect(await Promise.all(results)).toEqual([1, 2, 3]);
  });
});
