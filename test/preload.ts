/**
 * Loaded before every test file (bunfig.toml). `bun test` fires no process 'exit' event, so what a test
 * helper must undo when the run ends (its temp memo, its brokers) is registered here and run after the
 * last file's tests.
 */
import { afterAll } from 'bun:test';

const cleanups: Array<() => void> = [];

/** Runs `fn` once the whole test run has ended (in the order registered). */
export function atEnd(fn: () => void): void {
  cleanups.push(fn);
}

afterAll(() => {
  for (const fn of cleanups.splice(0)) {
    try {
      fn();
    } catch (err) {
      process.stderr.write(`test cleanup failed: ${(err as Error).message}\n`);
    }
  }
});
