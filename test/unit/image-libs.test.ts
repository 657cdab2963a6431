import { describe, expect, test } from 'bun:test';
import { links, nativeLibs } from '../../src/wrapper/image-libs.ts';
import { parseRustcArgs } from '../../src/rustc/args.ts';
import { packagesOfDpkgSearch } from '../../src/cli/base-suggest.ts';

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

describe('base suggest', () => {
  test("dpkg -S's answer: the packages, without architecture", () => {
    expect(packagesOfDpkgSearch('zlib1g-dev:amd64: /usr/lib/x86_64-linux-gnu/libz.so\n')).toEqual(['zlib1g-dev']);
    expect(packagesOfDpkgSearch('libssl-dev:amd64: /usr/lib/x86_64-linux-gnu/libssl.so\nlibssl-dev:amd64: /usr/lib/x86_64-linux-gnu/libssl.so\n')).toEqual(['libssl-dev']);
    expect(packagesOfDpkgSearch('libstdc++-12-dev:amd64, g++-12: /usr/lib/gcc/x86_64-linux-gnu/12/libstdc++.so\n')).toEqual(['libstdc++-12-dev']);
    expect(packagesOfDpkgSearch('dpkg-query: no path found matching pattern /opt/x/libfoo.so\n')).toEqual([]);
  });
});
