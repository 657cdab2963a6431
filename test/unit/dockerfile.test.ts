import { afterAll, describe, expect, test } from 'bun:test';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderBuildDockerfile, renderUnitStages, RenderError, RUSTC_FAILED_MARKER, stageName, type UnitSpec } from '../../src/render/dockerfile';
import { BASE, INDEX, registrySpec, workspaceSpec } from './unit-specs';
import { shQuote } from '../../src/argv';
import { SANDBOX } from '../../src/plan/sandbox-paths';

const tmpRoot = mkdtempSync(join(tmpdir(), 'rcbx-dockerfile-'));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));

function sh(script: string, cwd?: string): { status: number; stdout: Buffer; stderr: string } {
  const r = Bun.spawnSync(['/bin/sh', '-c', script], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  return { status: r.exitCode, stdout: Buffer.from(r.stdout), stderr: r.stderr.toString() };
}

describe('snapshots', () => {
  test('registry crate (archive source, no inputs)', () => {
    expect(renderUnitStages(registrySpec())).toMatchSnapshot();
  });

  test('workspace crate (tree source, unit and tree inputs)', () => {
    expect(renderUnitStages(workspaceSpec())).toMatchSnapshot();
  });

  test('inputs are bind mounts, one per dependency (its output dir), never copied layers', () => {
    const text = renderUnitStages(workspaceSpec());
    expect(text).toContain('--mount=type=bind,from=o-itoa-0123abcd4567ef89,target=/rcbx/d/0 ');
    expect(text).toContain('--mount=type=bind,from=i1-demo-abcdef0123456789,target=/rcbx/t/debug/build/demo-99aa/out');
    expect(text.match(/--from=/g)?.length).toBe(1); // only the unit's own outputs stage
  });

  test('build Dockerfile: dependency closure, own snippet, export stage', () => {
    const dep = renderUnitStages(registrySpec());
    const own = renderUnitStages(workspaceSpec());
    expect(renderBuildDockerfile(workspaceSpec().key, [{ kind: 'recipe', spec: registrySpec(), snippet: dep }], own)).toMatchSnapshot();
  });
});

describe('renderUnitStages structure', () => {
  test('archive source: ADD the tarball, mount its top dir', () => {
    const text = renderUnitStages(registrySpec());
    const lines = text.split('\n');
    expect(lines[0]).toBe('FROM scratch AS s-itoa-0123abcd4567ef89');
    expect(lines[1]).toBe(`ADD crates/${INDEX}/itoa-1.0.15.crate /`);
    expect(text).toContain(
      `--mount=type=bind,from=s-itoa-0123abcd4567ef89,source=/itoa-1.0.15,target=/rcbx/cargo/registry/src/${INDEX}/itoa-1.0.15`,
    );
    expect(text).not.toContain('AS t-');
    expect(text).toContain(`FROM ${BASE} AS u-itoa-0123abcd4567ef89`);
    expect(text).toContain('echo $s >/rcbx/meta/status; \\\n    [ $s = 0 ] || { echo "rustcbuildx-sandbox: rustc exited with status $s" >&2; tail -c 8000 /rcbx/meta/stderr >&2; exit 1; }\nFROM scratch AS o-itoa-0123abcd4567ef89\nCOPY --from=u-itoa-0123abcd4567ef89 /rcbx/out /\n');
    expect(text.endsWith('COPY --from=u-itoa-0123abcd4567ef89 /rcbx/out /\n')).toBe(true);
  });

  test('verify\'s nonce is a no-op at the start of the script: a new step text, the same program and mounts', () => {
    const plain = renderUnitStages(registrySpec());
    const fresh = renderUnitStages({ ...registrySpec(), fresh: 'n0nce' });
    expect(fresh).not.toBe(plain);
    expect(fresh.replace(': fresh=n0nce; \\\n    ', '')).toBe(plain);
    const run = sh(`: fresh=n0nce; echo ran`);
    expect(run.stdout.toString()).toBe('ran\n');
  });

  test('tree source: COPY the snapshot, mount it whole', () => {
    const text = renderUnitStages(workspaceSpec());
    expect(text).toContain('COPY ws/demo-0a1b2c3d4e5f60718293a4b5 /\n');
    expect(text).toContain('--mount=type=bind,from=s-demo-abcdef0123456789,target=/rcbx/ws/crates/demo');
    expect(text).not.toContain('source=/rcbx/t,');
  });

  test('a tree input: its own stage holding the snapshot, mounted at its target', () => {
    const lines = renderUnitStages(workspaceSpec()).split('\n');
    const at = lines.indexOf('FROM scratch AS i1-demo-abcdef0123456789');
    expect(at).toBeGreaterThanOrEqual(0);
    expect(lines[at + 1]).toBe('COPY dirs/out-99aa88bb77cc66dd55ee44ff /');
  });

  test('incremental state: a locked cache mount of that id at the fixed dir; none without it', () => {
    const text = renderUnitStages({ ...workspaceSpec(), incremental: { id: 'rcbx-inc-0123' } });
    expect(text).toContain(`--mount=type=cache,id=rcbx-inc-0123,target=${SANDBOX.incremental},sharing=locked`);
    expect(renderUnitStages(workspaceSpec())).not.toContain('type=cache');
  });

  test("the RUN line names what it mounts by content (podman reuses a RUN layer whose text is unchanged)", () => {
    const text = renderUnitStages({ ...workspaceSpec(), inputsDigest: 'ab12' });
    expect(text).toMatch(/^RUN [^\n]*(\n    [^\n]*)*\n    : inputs=ab12;/m);
    expect(renderUnitStages(workspaceSpec())).not.toContain(': inputs=');
  });

  test('no source: no s- stage and no source mount', () => {
    const text = renderUnitStages({ ...registrySpec(), source: undefined });
    expect(text).not.toContain('AS s-');
    expect(text).not.toContain('--mount');
    expect(text.startsWith(`FROM ${BASE} AS u-`)).toBe(true);
  });

  test('stage names and stage references are lowercase', () => {
    const spec = workspaceSpec();
    spec.inputs = [{ kind: 'unit', key: 'Dep-XYZ', target: '/rcbx/d/9' }, ...spec.inputs];
    const text = renderBuildDockerfile(spec.key, [], renderUnitStages(spec));
    const names = [...text.matchAll(/ AS (\S+)$/gm)].map((m) => m[1] as string);
    const refs = [...text.matchAll(/from=([^,\s]+)/gi)].map((m) => m[1] as string);
    expect(names).toEqual(['s-demo-abcdef0123456789', 'i2-demo-abcdef0123456789', 'u-demo-abcdef0123456789', 'o-demo-abcdef0123456789', 'x-demo-abcdef0123456789']);
    expect(refs).toContain('o-dep-xyz');
    for (const n of [...names, ...refs]) expect(n).toBe(n.toLowerCase());
  });

  test('stageName lowercases every kind', () => {
    expect(stageName.unit('Foo-AB')).toBe('u-foo-ab');
    expect(stageName.source('Foo-AB')).toBe('s-foo-ab');
    expect(stageName.input('Foo-AB', 3)).toBe('i3-foo-ab');
    expect(stageName.export('Foo-AB')).toBe('x-foo-ab');
  });

  test.each([
    ['an argument with \\n', (s: UnitSpec) => s.args.push('--cfg', 'feature="a\nb"')],
    ['an argument with \\r', (s: UnitSpec) => s.args.push('a\rb')],
    ['an argument with NUL', (s: UnitSpec) => s.args.push('a\0b')],
    ['a cwd with \\n', (s: UnitSpec) => (s.cwd = '/rcbx/ws/a\nb')],
  ])('%s → RenderError', (_name, mutate) => {
    const spec = workspaceSpec();
    mutate(spec);
    expect(() => renderUnitStages(spec)).toThrow(RenderError);
  });

  // BUG (src/dockerfile.ts): mount targets and COPY destinations are written unquoted, so a workspace
  // member in a directory with a space (`/rcbx/ws/my crate`) splits the `--mount=` flag into two words.
  test('a source dir with a space is quoted in its --mount flag, or rejected', () => {
    const spec = workspaceSpec();
    spec.source = { staged: { kind: 'tree', ctxPath: 'ws/x-0' }, mountTarget: '/rcbx/ws/my crate' };
    let text: string;
    try {
      text = renderUnitStages(spec);
    } catch (err) {
      expect(err).toBeInstanceOf(RenderError);
      return;
    }
    const line = text.split('\n').find((l) => l.includes('from=s-')) ?? '';
    // Unquoted, the flag ends at the space and `crate` becomes the start of the command.
    expect(line).not.toMatch(/(^|\s)--mount=[^\s"']*target=\/rcbx\/ws\/my crate/);
  });
});

describe('renderBuildDockerfile', () => {
  test('closure snippets come first, then the unit, then its export stage', () => {
    const dep = renderUnitStages(registrySpec());
    const own = renderUnitStages(workspaceSpec());
    const text = renderBuildDockerfile(workspaceSpec().key, [{ kind: 'recipe', spec: registrySpec(), snippet: dep }], own);
    expect(text.startsWith('# generated by rustcbuildx')).toBe(true);
    expect(text.indexOf(dep)).toBeGreaterThan(0);
    expect(text.indexOf(own)).toBeGreaterThan(text.indexOf(dep));
    expect(text.endsWith(
      'FROM scratch AS x-demo-abcdef0123456789\n' +
        'COPY --from=u-demo-abcdef0123456789 /rcbx/out /out\n' +
        'COPY --from=u-demo-abcdef0123456789 /rcbx/meta /meta\n',
    )).toBe(true);
  });
});

describe('shQuote', () => {
  test.each([
    ['plain', 'rustc', 'rustc'],
    ['flag with =', '--edition=2021', '--edition=2021'],
    ['path', '/rcbx/t/debug/deps', '/rcbx/t/debug/deps'],
    ['space', 'a b', "'a b'"],
    ['single quote', "it's", `'it'\\''s'`],
    ['dollar', '$HOME', "'$HOME'"],
    ['empty', '', "''"],
    ['double quotes', 'feature="std"', `'feature="std"'`],
  ])('%s: %p → %p', (_name, word, quoted) => {
    expect(shQuote(word)).toBe(quoted);
  });

  test.each([
    'a b', "it's", "'", "''", '$HOME', '${PATH}', '$(id)', '`id`', '', 'feature="std"', 'a\\b', '*', '~', 'a;b', 'a|b&c',
    '#comment', 'tab\there', 'héllo', 'cfg(feature, values("a", "b"))', "mix 'of' \"all\" $x \\ `y`",
  ])('/bin/sh reads %p back as the same word', (word) => {
    const r = sh(`printf %s ${shQuote(word)}`);
    expect(r.status).toBe(0);
    expect(r.stdout.toString('utf8')).toBe(word);
  });

  test('several quoted words stay separate words', () => {
    const words = ['a b', '', "c'd", '$e'];
    const r = sh(`for w in ${words.map(shQuote).join(' ')}; do printf '<%s>' "$w"; done`);
    expect(r.stdout.toString()).toBe('<a b><><c\'d><$e>');
  });
});

describe('env values with line breaks', () => {
  const VALUES: Array<[string, string]> = [
    ['newline and trailing newline', 'first line\nsecond line\n'],
    ['several trailing newlines', 'x\n\n\n'],
    ['only newlines', '\n\n'],
    ['leading newline', '\nx'],
    ['backslashes and escapes', 'a\\nb\\\\c \\c \\0101 \\x41\nd\\'],
    ['quotes and expansions', `it's "q" $HOME \${PATH} $(id) \`id\`\n`],
    ['printf directives', '100%s %d %%\n%b'],
    ['CRLF', 'line\r\nline\r\n'],
    ['unicode', 'héllo wörld\n✓\n'],
  ];

  function specWith(value: string): UnitSpec {
    const spec = workspaceSpec();
    spec.env = [['PLAIN', 'no break'], ['CARGO_PKG_DESCRIPTION', value]];
    return spec;
  }

  test.each(VALUES)('%s: the printf snippet rebuilds the exact bytes', (_name, value) => {
    const text = renderUnitStages(specWith(value));
    const assignments = [...text.matchAll(/(v\d+)="\$\(printf '%bx' .*?\)"; \1="\$\{\1%x\}";/g)];
    expect(assignments.length).toBe(1);
    const [snippet, variable] = assignments[0] as unknown as [string, string];
    expect(variable).toBe('v1');
    expect(text).toContain(`"CARGO_PKG_DESCRIPTION=$v1"`);
    const r = sh(`${snippet} printf %s "$${variable}"`);
    expect(r.stderr).toBe('');
    expect(r.stdout.equals(Buffer.from(value, 'utf8'))).toBe(true);
  });

  test('values without a line break are quoted inline, not rebuilt', () => {
    const text = renderUnitStages(specWith('one line'));
    expect(text).not.toContain('printf');
    expect(text).toContain("'CARGO_PKG_DESCRIPTION=one line'");
    expect(text).toContain("'PLAIN=no break'");
  });

  /** The unit's RUN body with the sandbox's meta and out dirs moved under `work`, run by /bin/sh there. */
  function runBody(spec: UnitSpec, work: string): { status: number; stdout: Buffer; stderr: string } {
    const text = renderUnitStages(spec);
    const run = text.split('\n').findIndex((l) => l.startsWith('RUN '));
    const after = text.split('\n').slice(run);
    const end = after.findIndex((l) => l.startsWith('FROM '));
    const body = after.slice(0, end).join('\n').slice('RUN '.length).replaceAll(SANDBOX.meta, join(work, 'meta')).replaceAll(SANDBOX.out, join(work, 'out'));
    return sh(body, work);
  }

  function bareSpec(work: string, program: string[], args: string[]): UnitSpec {
    mkdirSync(join(work, 'meta'), { recursive: true });
    return { ...workspaceSpec(), source: undefined, inputs: [], cwd: work, program, args, mkdirs: [], env: [] };
  }

  test('a failing rustc fails the step (nothing is cached), with the marker, its status and its stderr in the log', () => {
    const work = join(tmpRoot, 'run-fails');
    const r = runBody(bareSpec(work, ['sh', '-c', 'echo "error: nope" >&2; exit 3'], []), work);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`${RUSTC_FAILED_MARKER} 3\nerror: nope\n`);
    expect(readFileSync(join(work, 'meta', 'status'), 'utf8')).toBe('3\n');
  });

  test('host links: the host path exists inside as a link to its sandbox copy; a path that exists is left alone', () => {
    const work = join(tmpRoot, 'run-links');
    const copy = join(work, 'sandbox-copy');
    mkdirSync(copy, { recursive: true });
    writeFileSync(join(copy, 'fixture.txt'), 'fixture');
    const host = join(work, 'home', 'my proj', 'crate');
    const taken = join(work, 'taken');
    mkdirSync(taken);
    const spec = { ...bareSpec(work, ['cat', join(host, 'fixture.txt')], []), hostLinks: [[host, copy], [taken, copy], [join(host, 'below'), copy]] as Array<[string, string]> };
    const r = runBody(spec, work);
    expect(r.status).toBe(0);
    expect(readFileSync(join(work, 'meta', 'stdout'), 'utf8')).toBe('fixture');
    expect(readlinkSync(host)).toBe(copy);
    expect(lstatSync(taken).isDirectory()).toBe(true);
  });

  test('the whole RUN body, run by /bin/sh, gives rustc exactly the env it was rendered with', () => {
    const work = join(tmpRoot, 'run-body');
    const meta = join(work, 'meta');
    const values = new Map<string, string>(VALUES.map(([, v], i) => [`V_${i}`, v]));
    values.set('PLAIN', "single 'line' $x");
    const r = runBody({ ...bareSpec(work, ['env'], ['-0']), env: [...values] }, work);
    expect(r.status).toBe(0);
    expect(readFileSync(join(meta, 'status'), 'utf8')).toBe('0\n');
    expect(readFileSync(join(meta, 'stderr'), 'utf8')).toBe('');
    const seen = new Map<string, string>();
    for (const entry of readFileSync(join(meta, 'stdout'), 'utf8').split('\0').filter(Boolean)) {
      const eq = entry.indexOf('=');
      seen.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
    expect(seen.get('PATH')).toBe(process.env.PATH ?? '/usr/bin:/bin');
    seen.delete('PATH');
    expect(seen).toEqual(values);
  });
});
