import { describe, expect, test } from 'bun:test';
import { links, nativeLibs } from '../../src/wrapper/image-libs.ts';
import { parseRustcArgs } from '../../src/rustc/args.ts';

describe('native libraries a unit links', () => {
  test('-l values: names of the kinds the linker looks up as files', () => {
    expect(nativeLibs(['z', 'static=zstd', 'dylib=ssl', 'static:+whole-archive=foo', 'dylib=bar:baz', 'framework=Security', 'link-arg=-Wl,x', 'z'])).toEqual(['z', 'zstd', 'ssl', 'foo', 'bar']);
  });

  test('only a linking unit needs them: bins, tests, dylibs, proc-macros; not an rlib', () => {
    const call = (...args: string[]) => parseRustcArgs(['--crate-name', 'x', '--edition=2021', 'src/lib.rs', '--out-dir', '/t/debug/deps', ...args], () => '');
    expect(links(call('--crate-type', 'lib'))).toBe(false);
    expect(links(call('--crate-type', 'bin'))).toBe(true);
    expect(links(call('--test'))).toBe(true);
    expect(links(call('--crate-type', 'proc-macro'))).toBe(true);
    expect(links(call('--crate-type', 'cdylib'))).toBe(true);
  });
});
