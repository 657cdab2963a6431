import { afterAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PathMap } from '../../src/plan/sandbox-paths';
import { sha256 } from '../../src/toolchain';
import { hostDepInfo, hostStderr, placeOutputs, readSandboxResult, sandboxFailure, servedFromCache, type SandboxResult } from '../../src/wrapper/replay';

function result(status: number, stderr: string): SandboxResult {
  return { status, stdout: Buffer.alloc(0), stderr: Buffer.from(stderr) };
}

/** rustc --error-format=json diagnostics, as cargo asks for them. */
function diag(message: string, rendered: string, code: string | null = null): string {
  return JSON.stringify({ $message_type: 'diagnostic', message, code: code && { code, explanation: null }, level: 'error', spans: [], children: [], rendered }) + '\n';
}

const TYPE_ERROR =
  diag(
    'mismatched types',
    'error[E0308]: mismatched types\n --> src/main.rs:2:18\n  |\n2 |     let x: u32 = "a";\n  |            ---   ^^^ expected `u32`, found `&str`\n',
    'E0308',
  ) + diag('aborting due to 1 previous error', 'error: aborting due to 1 previous error\n');

const LINK_FAILURE = diag(
  'linking with `cc` failed: exit status: 1',
  'error: linking with `cc` failed: exit status: 1\n  |\n  = note: LC_ALL="C" PATH="/usr/local/cargo/bin" "cc" "-m64" …\n  = note: /usr/bin/ld: cannot find -lssl: No such file or directory\n          collect2: error: ld returned 1 exit status\n',
);

/** What `docker buildx build --progress=plain` logs when rustc fails in the unit's step (taken from a real run). */
function failedStepLog(status: number, stderr: string): string {
  const body = stderr.split('\n').filter(Boolean).map((l) => `#7 0.286 ${l}`);
  return [
    '#7 [u-errc-6027576a5ab36356 2/2] RUN --mount=type=bind,from=s-errc-6027576a5ab36356,target=/rcbx/ws     mkdir -p /rcbx/out … [ $s = 0 ] || { echo "rustcbuildx-sandbox: rustc exited with status $s" >&2; tail -c 8000 /rcbx/meta/stderr >&2; exit 1; }',
    `#7 0.284 rustcbuildx-sandbox: rustc exited with status ${status}`,
    ...body,
    '#7 ERROR: process "/bin/sh -c mkdir -p /rcbx/out … exit 1; }" did not complete successfully: exit code: 1',
    '------',
    `ERROR: failed to solve: process "/bin/sh -c … exit 1; }" did not complete successfully: exit code: 1`,
  ].join('\n');
}

describe('sandboxFailure', () => {
  test('a type error: the status and the first error message, from the JSON diagnostics', () => {
    expect(sandboxFailure(failedStepLog(1, TYPE_ERROR))).toMatchObject({ status: 1, firstError: 'mismatched types' });
  });

  test('a linker failure', () => {
    expect(sandboxFailure(failedStepLog(1, LINK_FAILURE))).toMatchObject({ status: 1, firstError: 'linking with `cc` failed: exit status: 1' });
  });

  test('rustc killed for memory (137), with nothing on stderr', () => {
    expect(sandboxFailure(failedStepLog(137, ''))).toEqual({ status: 137, firstError: undefined, tail: [] });
  });

  test('human-readable errors (no --error-format=json)', () => {
    expect(sandboxFailure(failedStepLog(1, "error: couldn't read `../shared.txt`: No such file or directory (os error 2)\n"))?.firstError).toBe("couldn't read `../shared.txt`: No such file or directory (os error 2)");
  });

  test('podman prints the step output without prefixes', () => {
    const log = ['STEP 9/12: RUN --mount=… rustc …', 'rustcbuildx-sandbox: rustc exited with status 101', 'error: the compiler unexpectedly panicked. this is a bug.', 'Error: building at STEP "RUN …": exit status 1'].join('\n');
    expect(sandboxFailure(log)).toEqual({ status: 101, firstError: 'the compiler unexpectedly panicked. this is a bug.', tail: ['error: the compiler unexpectedly panicked. this is a bug.'] });
  });

  test("a build script's panic: the lines it printed, without the engine's own", () => {
    const panic = "\nthread 'main' panicked at build.rs:4:39:\nno network: Connection refused (os error 111)\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
    expect(sandboxFailure(failedStepLog(101, panic))?.tail).toEqual(["thread 'main' panicked at build.rs:4:39:", 'no network: Connection refused (os error 111)', 'note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace']);
  });

  test("a program's own `Error: …` line is its output, and other steps' lines between are not", () => {
    const log = ['#5 [u-run-x] RUN …', '#5 0.143 rustcbuildx-sandbox: rustc exited with status 1', '#7 transferring context: 12838115 B done', '#5 0.143 Error: Os { code: 30, kind: ReadOnlyFilesystem, message: "Read-only file system" }', '#5 ERROR: process "/bin/sh -c …" did not complete successfully: exit code: 1'].join('\n');
    expect(sandboxFailure(log)?.tail).toEqual(['Error: Os { code: 30, kind: ReadOnlyFilesystem, message: "Read-only file system" }']);
  });

  test('an engine failure is not a rustc failure: the marker in the echoed command does not count', () => {
    expect(sandboxFailure('#7 [u-x 2/2] RUN … echo "rustcbuildx-sandbox: rustc exited with status $s" >&2 …\n#7 ERROR: exit code: 97\n')).toBeUndefined();
    expect(sandboxFailure('ERROR: failed to solve: rustcbuildx/toolchain:x: not found\n')).toBeUndefined();
  });
});

// `docker buildx build --progress=plain` output for a unit `foo-1` whose Dockerfile also builds `dep-2`.
function buildkitLog(depEnd: string, ownEnd: string): string {
  return [
    '#0 building with "default" instance using docker driver',
    '',
    '#1 [internal] load build definition from Dockerfile',
    '#1 transferring dockerfile: 2.31kB done',
    '#1 DONE 0.0s',
    '',
    '#2 [internal] load metadata for docker.io/rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu',
    '#2 DONE 0.0s',
    '',
    '#3 [internal] load .dockerignore',
    '#3 transferring context: 2B done',
    '#3 DONE 0.0s',
    '',
    '#4 [u-foo-1 1/2] FROM docker.io/rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu',
    '#4 DONE 0.0s',
    '',
    '#5 [internal] load build context',
    '#5 transferring context: 1.02kB done',
    '#5 DONE 0.0s',
    '',
    '#6 [s-foo-1 1/1] COPY ws/foo-0a1b2c3d4e5f60718293a4b5 /',
    '#6 CACHED',
    '',
    '#7 [u-dep-2 2/2] RUN --mount=type=bind,from=s-dep-2,source=/dep-1.0.0,target=/rcbx/cargo/registry/src/x/dep-1.0.0     mkdir -p /rcbx/out /rcbx/meta 2>/dev/null; cd /rcbx/cargo/registry/src/x/dep-1.0.0 || exit 97; env -i PATH="$PATH"     rustc --crate-name dep',
    `#7 ${depEnd}`,
    '',
    '#8 [t-foo-1 1/1] COPY --link --from=u-dep-2 /rcbx/out/ /rcbx/t/debug/deps/',
    '#8 CACHED',
    '',
    '#12 [u-foo-1 2/2] RUN --mount=type=bind,from=s-foo-1,target=/rcbx/ws     --mount=type=bind,from=t-foo-1,source=/rcbx/t,target=/rcbx/t     mkdir -p /rcbx/out /rcbx/meta 2>/dev/null; cd /rcbx/ws || exit 97; env -i PATH="$PATH"     rustc --crate-name foo',
    `#12 ${ownEnd}`,
    '',
    '#13 [x-foo-1 1/2] COPY --from=u-foo-1 /rcbx/out /out',
    '#13 DONE 0.0s',
    '',
    '#14 exporting to client directory',
    '#14 copying files 1.2MB 0.1s done',
    '#14 DONE 0.1s',
    '',
  ].join('\n');
}

// `podman build` output for the same Dockerfile.
function podmanLog(depCached: boolean, ownCached: boolean): string {
  return [
    '[1/5] STEP 1/2: FROM scratch AS s-dep-2',
    '[1/5] STEP 2/2: ADD crates/x/dep-1.0.0.crate /',
    '--> Using cache 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0',
    '--> 0f1e2d3c4b5a',
    '[2/5] STEP 1/2: FROM rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu AS u-dep-2',
    '[2/5] STEP 2/2: RUN --mount=type=bind,from=s-dep-2,source=/dep-1.0.0,target=/rcbx/cargo/registry/src/x/dep-1.0.0 mkdir -p /rcbx/out /rcbx/meta 2>/dev/null; cd /rcbx/cargo/registry/src/x/dep-1.0.0 || exit 97; env -i PATH="$PATH" rustc --crate-name dep',
    ...(depCached ? ['--> Using cache 1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809', '--> 1a2b3c4d5e6f'] : ['--> 9f8e7d6c5b4a']),
    '[3/5] STEP 1/2: FROM scratch AS s-foo-1',
    '[3/5] STEP 2/2: COPY ws/foo-0a1b2c3d4e5f60718293a4b5 /',
    '--> Using cache 2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a',
    '--> 2b3c4d5e6f70',
    '[4/5] STEP 1/2: FROM rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu AS u-foo-1',
    '[4/5] STEP 2/2: RUN --mount=type=bind,from=s-foo-1,target=/rcbx/ws mkdir -p /rcbx/out /rcbx/meta 2>/dev/null; cd /rcbx/ws || exit 97; env -i PATH="$PATH" rustc --crate-name foo',
    ...(ownCached ? ['--> Using cache 3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b', '--> 3c4d5e6f7081'] : ['--> 7a6b5c4d3e2f']),
    '[5/5] STEP 1/3: FROM scratch AS x-foo-1',
    '[5/5] STEP 2/3: COPY --from=u-foo-1 /rcbx/out /out',
    '--> 4d5e6f708192',
    '[5/5] STEP 3/3: COPY --from=u-foo-1 /rcbx/meta /meta',
    '[5/5] COMMIT',
    '--> 5e6f708192a3',
    '',
  ].join('\n');
}

describe('servedFromCache', () => {
  test.each([
    ['BuildKit: own RUN cached', buildkitLog('DONE 4.2s', 'CACHED'), 'u-foo-1', true],
    ['BuildKit: own RUN ran', buildkitLog('CACHED', 'DONE 0.3s'), 'u-foo-1', false],
    ['BuildKit: both cached', buildkitLog('CACHED', 'CACHED'), 'u-foo-1', true],
    ['BuildKit: dependency ran, own cached', buildkitLog('DONE 4.2s', 'CACHED'), 'u-foo-1', true],
    ['BuildKit: dependency stage asked about', buildkitLog('CACHED', 'DONE 0.3s'), 'u-dep-2', true],
    ['BuildKit: own RUN failed', buildkitLog('CACHED', 'ERROR: process "/bin/sh -c …" did not complete successfully: exit code: 97'), 'u-foo-1', false],
    ['BuildKit: a stage whose name is a prefix of another', buildkitLog('CACHED', 'CACHED'), 'u-foo', false],
    ['podman: own RUN cached', podmanLog(false, true), 'u-foo-1', true],
    ['podman: own RUN ran, dependency cached', podmanLog(true, false), 'u-foo-1', false],
    ['podman: nothing cached', podmanLog(false, false), 'u-foo-1', false],
    ['empty log', '', 'u-foo-1', false],
  ] as const)('%s', (_name, log, stage, cached) => {
    expect(servedFromCache(log, stage)).toBe(cached);
  });

  test('a vertex number is matched whole (#1 is not #12)', () => {
    const log = ['#1 [u-a 2/2] RUN rustc', '#1 DONE 0.5s', '', '#12 [u-b 2/2] RUN rustc', '#12 CACHED', ''].join('\n');
    expect(servedFromCache(log, 'u-a')).toBe(false);
    expect(servedFromCache(log, 'u-b')).toBe(true);
  });

  test('regex characters in the stage name are literal', () => {
    const log = ['#9 [u-a.b 2/2] RUN rustc', '#9 CACHED', ''].join('\n');
    expect(servedFromCache(log, 'u-a.b')).toBe(true);
    expect(servedFromCache(log.replace('u-a.b', 'u-axb'), 'u-a.b')).toBe(false);
  });

  test('minimal podman excerpt', () => {
    expect(servedFromCache('STEP 2/2: RUN rustc --crate-name foo\n--> Using cache 0123abcd\n--> 0123abcd\n', 'u-foo-1')).toBe(true);
    expect(servedFromCache('STEP 2/2: RUN rustc --crate-name foo\n--> 0123abcd\n', 'u-foo-1')).toBe(false);
  });
});

const tmpRoot = mkdtempSync(join(tmpdir(), 'rcbx-replay-'));
afterAll(() => rmSync(tmpRoot, { recursive: true, force: true }));

function exportDir(name: string, files: Record<string, string>, meta?: Record<string, string>): string {
  const dir = join(tmpRoot, name);
  mkdirSync(join(dir, 'out'), { recursive: true });
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, 'out', f), text);
  if (meta) {
    mkdirSync(join(dir, 'meta'), { recursive: true });
    for (const [f, text] of Object.entries(meta)) writeFileSync(join(dir, 'meta', f), text);
  }
  return dir;
}

describe('readSandboxResult', () => {
  test('reads status, stdout and stderr', () => {
    const dir = exportDir('meta-ok', {}, { status: '1\n', stdout: 'out', stderr: TYPE_ERROR });
    const r = readSandboxResult(dir);
    expect(r?.status).toBe(1);
    expect(r?.stdout.toString()).toBe('out');
    expect(r?.stderr.toString()).toBe(TYPE_ERROR);
  });

  test.each([
    ['no meta dir', undefined],
    ['an empty status', { status: '', stdout: '', stderr: '' }],
    ['a non-numeric status', { status: 'abc\n', stdout: '', stderr: '' }],
  ])('%s → undefined', (name, meta) => {
    expect(readSandboxResult(exportDir(`meta-${name.replace(/\W/g, '_')}`, {}, meta))).toBeUndefined();
  });
});

describe('placeOutputs', () => {
  const ws = join(tmpRoot, 'ws');
  const target = join(ws, 'target');
  const outDir = join(target, 'debug', 'deps');
  const map = new PathMap({ workspace: ws, cargoHome: join(tmpRoot, 'cargo'), target, outDir });

  test('moves outputs into the out-dir, rewrites dep-info, returns sorted stamps', () => {
    mkdirSync(outDir, { recursive: true });
    const dir = exportDir('place', {
      'libfoo-abc.rmeta': 'RMETA',
      'foo-abc.d': '/rcbx/out/foo-abc.d: /rcbx/ws/src/lib.rs\n\n/rcbx/ws/src/lib.rs:\n',
      'libfoo-abc.rlib': 'RLIB!',
    });
    const before = Date.now();
    // A digest the export's manifest already knows is taken as is; the rewritten dep-info is hashed.
    const stamps = placeOutputs(dir, map, outDir, new Map([['out/libfoo-abc.rlib', sha256('RLIB!')]]));
    expect(stamps.map((s) => s.name)).toEqual(['foo-abc.d', 'libfoo-abc.rlib', 'libfoo-abc.rmeta']);
    expect(readFileSync(join(outDir, 'foo-abc.d'), 'utf8')).toBe(`${outDir}/foo-abc.d: ${ws}/src/lib.rs\n\n${ws}/src/lib.rs:\n`);
    expect(readFileSync(join(outDir, 'libfoo-abc.rlib'), 'utf8')).toBe('RLIB!');
    for (const s of stamps) {
      const st = statSync(join(outDir, s.name));
      // Whatever the stamp records (size, mtime, inode…) is what the placed file has.
      expect(s.size).toBe(st.size);
      expect(s).toEqual({ name: s.name, size: st.size, ino: st.ino, mtimeMs: st.mtimeMs, sha256: sha256(readFileSync(join(outDir, s.name))) });
      expect(st.mtimeMs).toBeGreaterThanOrEqual(before - 1000);
      expect(existsSync(join(dir, 'out', s.name))).toBe(false);
    }
  });

  test('no out dir in the export → no stamps', () => {
    expect(placeOutputs(join(tmpRoot, 'nothing-here'), map, outDir, new Map())).toEqual([]);
  });

  // rustc writes spaces in dep-info paths as `\ ` (cargo parses them so); host roots inserted there must be too.
  test('dep-info keeps spaces in host paths escaped', () => {
    const spaced = join(tmpRoot, 'my proj');
    const spacedOut = join(spaced, 'target', 'debug', 'deps');
    mkdirSync(spacedOut, { recursive: true });
    const m = new PathMap({ workspace: spaced, cargoHome: join(tmpRoot, 'cargo'), target: join(spaced, 'target'), outDir: spacedOut });
    const dir = exportDir('place-space', { 'foo-abc.d': '/rcbx/out/foo-abc.d: /rcbx/ws/src/lib.rs\n\n/rcbx/ws/src/lib.rs:\n' });
    placeOutputs(dir, m, spacedOut, new Map());
    const text = readFileSync(join(spacedOut, 'foo-abc.d'), 'utf8');
    expect(text).toContain(`: ${spaced.replace(/ /g, '\\ ')}/src/lib.rs\n`);
  });
});

describe('hostDepInfo', () => {
  const spaced = '/home/u/my proj';
  const map = new PathMap({ workspace: spaced, cargoHome: '/home/u/.cargo', target: `${spaced}/target`, outDir: `${spaced}/target/debug/deps` });

  test('file lists escape spaces; env-dep values escape only what rustc escapes (cargo rejects `\\ `)', () => {
    const sandbox = [
      '/rcbx/out/app-1.d: /rcbx/ws/src/main.rs /rcbx/t/debug/build/app-2/out/gen.rs',
      '',
      '/rcbx/ws/src/main.rs:',
      '# env-dep:CARGO_MANIFEST_DIR=/rcbx/ws',
      '# env-dep:OUT_DIR=/rcbx/t/debug/build/app-2/out',
      '# env-dep:NOTE=a\\nb',
      '',
    ].join('\n');
    expect(hostDepInfo(sandbox, map)).toBe(
      [
        `${spaced.replace(/ /g, '\\ ')}/target/debug/deps/app-1.d: ${spaced.replace(/ /g, '\\ ')}/src/main.rs ${spaced.replace(/ /g, '\\ ')}/target/debug/build/app-2/out/gen.rs`,
        '',
        `${spaced.replace(/ /g, '\\ ')}/src/main.rs:`,
        `# env-dep:CARGO_MANIFEST_DIR=${spaced}`,
        `# env-dep:OUT_DIR=${spaced}/target/debug/build/app-2/out`,
        '# env-dep:NOTE=a\\nb',
        '',
      ].join('\n'),
    );
  });

  test('a host root with a backslash is escaped as rustc would in env-dep values', () => {
    const odd = new PathMap({ workspace: '/w/a\\b', cargoHome: '/c', target: '/w/a\\b/target', outDir: '/w/a\\b/target/debug/deps' });
    expect(hostDepInfo('# env-dep:CARGO_MANIFEST_DIR=/rcbx/ws\n', odd)).toBe('# env-dep:CARGO_MANIFEST_DIR=/w/a\\\\b\n');
  });
});

describe('hostStderr', () => {
  test('JSON diagnostics get JSON-escaped host paths', () => {
    const ws = join(tmpRoot, 'quote"d');
    const map = new PathMap({ workspace: ws, cargoHome: '/c', target: `${ws}/target`, outDir: `${ws}/target/debug/deps` });
    const line = JSON.stringify({ $message_type: 'artifact', artifact: '/rcbx/out/libfoo-abc.rmeta', emit: 'metadata' }) + '\n';
    const back = JSON.parse(hostStderr(Buffer.from(line), map));
    expect(back.artifact).toBe(`${ws}/target/debug/deps/libfoo-abc.rmeta`);
  });
});
