import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stampOf, type UnitPlan } from '../../src/plan/plans';
import { closureStages } from '../../src/plan/unit';

const root = mkdtempSync(join(tmpdir(), 'rcbx-closure-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function plan(key: string, snippetBytes: number): UnitPlan {
  const hostOutDir = join(root, 'deps');
  Bun.spawnSync(['mkdir', '-p', hostOutDir]);
  const names = [`lib${key}.rlib`, `lib${key}.rmeta`, `${key}.d`];
  for (const name of names) writeFileSync(join(hostOutDir, name), `${name} bytes`);
  return {
    version: 2,
    key,
    crate: key,
    snippet: `FROM scratch AS o-${key}\n#`.padEnd(snippetBytes, 'x') + '\n',
    closure: [],
    hostOutDir,
    outputs: names.map((name) => stampOf(hostOutDir, name)),
    envDeps: [],
    hostPathVars: [],
  };
}

describe('closureStages', () => {
  test('within the budget every dependency is rebuilt from its own snippet', () => {
    const closure = [plan('a-1', 100), plan('b-2', 200)];
    expect(closureStages(closure, join(root, 'ctx1'), 1_000)).toEqual(closure.map((p) => p.snippet));
  });

  test('past the budget the largest snippets become outputs stages filled from the context', () => {
    const ctx = join(root, 'ctx2');
    const closure = [plan('big-1', 900), plan('small-2', 100), plan('mid-3', 300)];
    const stages = closureStages(closure, ctx, 450);
    expect(stages[1]).toBe(closure[1]?.snippet);
    expect(stages[2]).toBe(closure[2]?.snippet);
    const ref = stages[0] as string;
    const m = /^FROM scratch AS o-big-1\nCOPY (outs\/[0-9a-f]{32}) \/\n$/.exec(ref);
    expect(m).not.toBeNull();
    const dir = join(ctx, m?.[1] as string);
    // The outputs rustc reads, not the dep-info (which names host paths).
    expect(readFileSync(join(dir, 'libbig-1.rlib'), 'utf8')).toBe('libbig-1.rlib bytes');
    expect(readFileSync(join(dir, 'libbig-1.rmeta'), 'utf8')).toBe('libbig-1.rmeta bytes');
    expect(() => statSync(join(dir, 'big-1.d'))).toThrow();
    // The same outputs give the same context path: the Dockerfile text is stable.
    expect(closureStages(closure, ctx, 450)[0]).toBe(ref);
  });
});
