import { describe, expect, test } from 'bun:test';
import { jsonEscape, PathMap, SANDBOX, type HostRoots } from '../../src/plan/sandbox-paths';

const WS = '/home/ana/src/proj';
const CARGO = '/home/ana/.cargo';
const TARGET = `${WS}/target`;
const OUT = `${TARGET}/debug/deps`;
const REG = `${CARGO}/registry/src/index.crates.io-1949cf8c6b5b557f`;

/** A workspace crate whose target dir lies inside the workspace. */
const LOCAL: HostRoots = { workspace: WS, cargoHome: CARGO, target: TARGET, outDir: OUT };
/** A registry crate: no workspace root. */
const REGISTRY: HostRoots = { workspace: undefined, cargoHome: CARGO, target: TARGET, outDir: OUT };

describe('SANDBOX layout', () => {
  test('every root lives under /rcbx and they are distinct', () => {
    const roots = Object.values(SANDBOX);
    expect(new Set(roots).size).toBe(roots.length);
    for (const r of roots) expect(r === SANDBOX.root || r.startsWith(`${SANDBOX.root}/`)).toBe(true);
  });
});

describe('PathMap.toSandbox', () => {
  test.each([
    ['the workspace root itself', WS, '/rcbx/ws'],
    ['a workspace source file', `${WS}/src/main.rs`, '/rcbx/ws/src/main.rs'],
    ['a member crate', `${WS}/crates/core/src/lib.rs`, '/rcbx/ws/crates/core/src/lib.rs'],
    ['the target dir (inside the workspace: longest prefix wins)', TARGET, '/rcbx/t'],
    ['the deps dir', OUT, '/rcbx/t/debug/deps'],
    ['a build script OUT_DIR', `${TARGET}/debug/build/foo-0123/out`, '/rcbx/t/debug/build/foo-0123/out'],
    ['a registry source file', `${REG}/serde-1.0.228/src/lib.rs`, `/rcbx/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde-1.0.228/src/lib.rs`],
    ['CARGO_HOME itself', CARGO, '/rcbx/cargo'],
    ['a sibling with the workspace as a name prefix', `${WS}-old/src/main.rs`, undefined],
    ['a sibling of target inside the workspace', `${WS}/targets/x`, '/rcbx/ws/targets/x'],
    ['outside every root', '/usr/lib/libssl.so', undefined],
    ['the parent of the workspace', '/home/ana/src', undefined],
  ])('local crate: %s', (_name, host, sandbox) => {
    expect(new PathMap(LOCAL).toSandbox(host)).toBe(sandbox);
  });

  test('the order the roots are given in does not matter', () => {
    // A workspace nested inside CARGO_HOME (odd, but the longest prefix must still win).
    const nested = new PathMap({ workspace: `${CARGO}/git/checkouts/x`, cargoHome: CARGO, target: '/tmp/t', outDir: '/tmp/t/debug/deps' });
    expect(nested.toSandbox(`${CARGO}/git/checkouts/x/src/lib.rs`)).toBe('/rcbx/ws/src/lib.rs');
    expect(nested.toSandbox(`${CARGO}/git/db/x`)).toBe('/rcbx/cargo/git/db/x');
  });

  test.each([
    ['workspace paths are not mapped', `${WS}/src/main.rs`, undefined],
    ['target paths still are', `${OUT}/libfoo-abc.rlib`, '/rcbx/t/debug/deps/libfoo-abc.rlib'],
    ['registry paths still are', `${REG}/serde-1.0.228/build.rs`, '/rcbx/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde-1.0.228/build.rs'],
  ])('registry crate (no workspace root): %s', (_name, host, sandbox) => {
    expect(new PathMap(REGISTRY).toSandbox(host)).toBe(sandbox);
  });

  test('target dir outside the workspace', () => {
    const map = new PathMap({ workspace: WS, cargoHome: CARGO, target: '/var/cache/cargo-target', outDir: '/var/cache/cargo-target/debug/deps' });
    expect(map.toSandbox(`${WS}/target/debug`)).toBe('/rcbx/ws/target/debug');
    expect(map.toSandbox('/var/cache/cargo-target/debug/deps')).toBe('/rcbx/t/debug/deps');
  });
});

describe('PathMap.toHostText', () => {
  test('a dep-info file gets host paths back', () => {
    const depInfo = [
      '/rcbx/out/foo-0123abcd.d: /rcbx/ws/src/lib.rs /rcbx/ws/src/util.rs /rcbx/t/debug/build/foo-99/out/gen.rs /rcbx/cargo/registry/src/index.crates.io-1949cf8c6b5b557f/itoa-1.0.15/src/lib.rs',
      '',
      '/rcbx/out/libfoo-0123abcd.rmeta: /rcbx/ws/src/lib.rs /rcbx/ws/src/util.rs /rcbx/t/debug/build/foo-99/out/gen.rs',
      '',
      '/rcbx/ws/src/lib.rs:',
      '/rcbx/ws/src/util.rs:',
      '/rcbx/t/debug/build/foo-99/out/gen.rs:',
      '',
      '# env-dep:CARGO_PKG_NAME=foo',
      '# env-dep:OUT_DIR=/rcbx/t/debug/build/foo-99/out',
      '',
    ].join('\n');
    const expected = [
      `${OUT}/foo-0123abcd.d: ${WS}/src/lib.rs ${WS}/src/util.rs ${TARGET}/debug/build/foo-99/out/gen.rs ${REG}/itoa-1.0.15/src/lib.rs`,
      '',
      `${OUT}/libfoo-0123abcd.rmeta: ${WS}/src/lib.rs ${WS}/src/util.rs ${TARGET}/debug/build/foo-99/out/gen.rs`,
      '',
      `${WS}/src/lib.rs:`,
      `${WS}/src/util.rs:`,
      `${TARGET}/debug/build/foo-99/out/gen.rs:`,
      '',
      '# env-dep:CARGO_PKG_NAME=foo',
      `# env-dep:OUT_DIR=${TARGET}/debug/build/foo-99/out`,
      '',
    ].join('\n');
    expect(new PathMap(LOCAL).toHostText(depInfo)).toBe(expected);
  });

  test('a JSON diagnostic line stays valid JSON with jsonEscape', () => {
    const odd = '/home/ana/src/my "quoted" proj\\x';
    const map = new PathMap({ workspace: odd, cargoHome: CARGO, target: `${odd}/target`, outDir: `${odd}/target/debug/deps` });
    const diag = {
      $message_type: 'diagnostic',
      message: 'unused variable: `x`',
      code: { code: 'unused_variables', explanation: null },
      level: 'warning',
      spans: [{ file_name: '/rcbx/ws/src/main.rs', line_start: 2, line_end: 2, column_start: 9, column_end: 10, is_primary: true }],
      rendered: 'warning: unused variable: `x`\n --> /rcbx/ws/src/main.rs:2:9\n',
    };
    const artifact = { $message_type: 'artifact', artifact: '/rcbx/out/libfoo-0123abcd.rmeta', emit: 'metadata' };
    const line = `${JSON.stringify(diag)}\n${JSON.stringify(artifact)}\n`;
    const host = map.toHostText(line, jsonEscape);
    const [d, a] = host.trim().split('\n').map((l) => JSON.parse(l));
    expect(d.spans[0].file_name).toBe(`${odd}/src/main.rs`);
    expect(d.rendered).toBe(`warning: unused variable: \`x\`\n --> ${odd}/src/main.rs:2:9\n`);
    expect(d.message).toBe('unused variable: `x`');
    expect(a.artifact).toBe(`${odd}/target/debug/deps/libfoo-0123abcd.rmeta`);
  });

  test('roots are replaced only as whole path components', () => {
    const map = new PathMap(LOCAL);
    expect(map.toHostText('/rcbx/tt/x /rcbx/t/x')).toBe(`/rcbx/tt/x ${TARGET}/x`);
    expect(map.toHostText('/rcbx/wsx/a /rcbx/outer /rcbx/cargox')).toBe('/rcbx/wsx/a /rcbx/outer /rcbx/cargox');
    expect(map.toHostText('/rcbx/t')).toBe(TARGET);
    expect(map.toHostText('"/rcbx/t"')).toBe(`"${TARGET}"`);
    expect(map.toHostText('at /rcbx/ws:1:2')).toBe(`at ${WS}:1:2`);
  });

  test('a registry crate leaves /rcbx/ws alone', () => {
    const map = new PathMap(REGISTRY);
    expect(map.toHostText('/rcbx/ws/src/lib.rs /rcbx/cargo/x')).toBe(`/rcbx/ws/src/lib.rs ${CARGO}/x`);
  });

  test('text without sandbox paths is unchanged', () => {
    const text = 'error[E0308]: mismatched types\n  --> src/main.rs:3:5\n';
    expect(new PathMap(LOCAL).toHostText(text)).toBe(text);
  });

  // BUG (src/sandbox-paths.ts): the host path is passed to String.prototype.replace as a replacement
  // string, so `$$`, `$&`, `` $` `` and `$'` in a host path are interpreted as replacement patterns.
  test('host paths holding `$` sequences are inserted literally', () => {
    const ws = '/home/ana/a$$b/p$&q';
    const map = new PathMap({ workspace: ws, cargoHome: CARGO, target: `${ws}/target`, outDir: `${ws}/target/debug/deps` });
    expect(map.toHostText('/rcbx/ws/src/lib.rs')).toBe(`${ws}/src/lib.rs`);
  });
});

describe('jsonEscape', () => {
  test.each([
    ['/plain/path', '/plain/path'],
    ['/with "quotes"', '/with \\"quotes\\"'],
    ['C:\\Users\\x', 'C:\\\\Users\\\\x'],
    ['tab\there', 'tab\\there'],
  ])('%p → %p', (input, escaped) => {
    expect(jsonEscape(input)).toBe(escaped);
    expect(JSON.parse(`"${jsonEscape(input)}"`)).toBe(input);
  });
});
