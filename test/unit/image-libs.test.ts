import { describe, expect, test } from 'bun:test';
import { hostSoname, links, nativeLibs, parseLibList, sonameDiffers } from '../../src/wrapper/image-libs.ts';
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

describe("the image's libraries and their sonames", () => {
  test('the listing: a shared library with its SONAME, a static one or a linker script without', () => {
    const libs = parseLibList('c \ngcc_s \nm\nstdc++ libstdc++.so.6\nz\nz libz.so.1\nzstd\n');
    expect([...libs]).toEqual([['c', ''], ['gcc_s', ''], ['m', ''], ['stdc++', 'libstdc++.so.6'], ['z', 'libz.so.1'], ['zstd', '']]);
  });

  test("this machine's: the SONAME of what its linker picks; none for a linker script or a library it lacks", async () => {
    // libssl-dev: the pretest script installs it (the system-libs test links it)
    expect(await hostSoname('ssl')).toBe('libssl.so.3');
    expect(await hostSoname('c')).toBeUndefined();
    expect(await hostSoname('rcbx_no_such_library')).toBeUndefined();
  });

  test('a library of another soname in the image: the unit is compiled here, saying both; the same, a static one or a script: no objection', async () => {
    const image = parseLibList('z libz.so.2\nssl libssl.so.3\nzstd\nc\n');
    const here = async (name: string) => ({ z: 'libz.so.1', ssl: 'libssl.so.3' } as Record<string, string>)[name];
    expect(await sonameDiffers(['ssl', 'z'], image, here)).toStartWith('it links -lz, which is libz.so.1 here but libz.so.2 in the base image (another release)');
    expect(await sonameDiffers(['ssl', 'zstd', 'c'], image, here)).toBeUndefined();
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
