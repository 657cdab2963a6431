import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stampOf, type UnitPlan } from '../../src/plan/plans';
import { closureEntries } from '../../src/plan/unit';
import { renderBuildDockerfile, type UnitSpec } from '../../src/render/dockerfile';

const root = mkdtempSync(join(tmpdir(), 'rcbx-closure-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function spec(key: string): UnitSpec {
  return { key, baseImage: 'base', baseImageConfig: { env: [], user: '' }, source: undefined, inputs: [], cwd: '/', env: [], program: ['rustc'], args: [], mkdirs: [] };
}

function plan(key: string, snippetBytes: number, withSpec = true): UnitPlan {
  const hostOutDir = join(root, 'deps');
  Bun.spawnSync(['mkdir', '-p', hostOutDir]);
  const names = [`lib${key}.rlib`, `lib${key}.rmeta`, `${key}.d`];
  for (const name of names) writeFileSync(join(hostOutDir, name), `${name} bytes`);
  return {
    version: 2,
    key,
    crate: key,
    snippet: `FROM scratch AS o-${key}\n#`.padEnd(snippetBytes, 'x') + '\n',
    ...(withSpec ? { spec: spec(key) } : {}),
    closure: [],
    hostOutDir,
    outputs: names.map((name) => stampOf(hostOutDir, name)),
    envDeps: [],
    hostPathVars: [],
  };
}

describe('closureEntries', () => {
  test('within the budget every dependency is rebuilt from its own spec and snippet', () => {
    const closure = [plan('a-1', 100), plan('b-2', 200)];
    expect(closureEntries(closure, join(root, 'ctx1'), 1_000)).toEqual(closure.map((p) => ({ kind: 'recipe', spec: p.spec as UnitSpec, snippet: p.snippet })));
  });

  test('past the budget the largest snippets become outputs stages filled from the context', () => {
    const ctx = join(root, 'ctx2');
    const closure = [plan('big-1', 900), plan('small-2', 100), plan('mid-3', 300)];
    const entries = closureEntries(closure, ctx, 450);
    expect(entries.map((e) => e.kind)).toEqual(['outputs', 'recipe', 'recipe']);
    const outputs = entries[0];
    if (outputs?.kind !== 'outputs') throw new Error('unreachable');
    expect(outputs.ctxPath).toMatch(/^outs\/[0-9a-f]{32}$/);
    const text = renderBuildDockerfile('own', entries, '');
    expect(text).toContain(`FROM scratch AS o-big-1\nCOPY ${outputs.ctxPath} /\n`);
    const dir = join(ctx, outputs.ctxPath);
    // The outputs rustc reads, not the dep-info (which names host paths).
    expect(readFileSync(join(dir, 'libbig-1.rlib'), 'utf8')).toBe('libbig-1.rlib bytes');
    expect(readFileSync(join(dir, 'libbig-1.rmeta'), 'utf8')).toBe('libbig-1.rmeta bytes');
    expect(() => statSync(join(dir, 'big-1.d'))).toThrow();
    // The same outputs give the same context path: the Dockerfile text is stable.
    expect(closureEntries(closure, ctx, 450)[0]).toEqual(outputs);
  });

  test('a plan from a version that kept no spec, or no base image configuration, is given by its outputs, whatever the budget', () => {
    const noConfig = plan('noconf-3', 100);
    delete noConfig.spec?.baseImageConfig;
    const entries = closureEntries([plan('old-1', 100, false), plan('new-2', 100), noConfig], join(root, 'ctx3'), 1_000);
    expect(entries.map((e) => e.kind)).toEqual(['outputs', 'recipe', 'outputs']);
  });
});
