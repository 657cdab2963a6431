import { describe, expect, test } from 'bun:test';
import { adviseBasePackages, missingPart, missingPartHint, packagesAdvised } from '../../src/plan/system-packages.ts';
import { linkLibs, pkgConfigDisagrees, probedModules } from '../../src/wrapper/system-probe.ts';
import { packagesHint } from '../../src/cargo-buildx.ts';
import { resolveConfig } from '../../src/config/config.ts';
import type { UnitRecord } from '../../src/run-state.ts';

describe('what a failed sandbox step lacked, and its package', () => {
  test.each([
    ['/usr/bin/ld: cannot find -lssl: No such file or directory', 'the library ssl (-lssl)', 'libssl-dev'],
    ['{"$message_type":"diagnostic","message":"linking with `cc` failed: exit status: 1","rendered":"error: linking with `cc` failed\\n  = note: /usr/bin/ld: cannot find -lz: No such file or directory\\n"}', 'the library z (-lz)', 'zlib1g-dev'],
    ['rust-lld: error: unable to find library -lsqlite3', 'the library sqlite3 (-lsqlite3)', 'libsqlite3-dev'],
    ['/usr/bin/ld: cannot find -lacme_private', 'the library acme_private (-lacme_private)', undefined],
    ["Package openssl was not found in the pkg-config search path.\nPerhaps you should add the directory containing `openssl.pc'", 'the pkg-config module openssl', 'libssl-dev'],
    ['Could not run `PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 pkg-config --libs --cflags openssl`\nThe pkg-config command could not be found.', 'the program pkg-config', 'pkg-config'],
    ['Could not find directory of OpenSSL installation, and this `-sys` crate cannot proceed', 'the OpenSSL headers and libraries', 'libssl-dev'],
    ['src/zutil.c:3:10: fatal error: zlib.h: No such file or directory', 'the header zlib.h', 'zlib1g-dev'],
    ['failed to execute command: No such file or directory (os error 2)\nis `cmake` not installed?', 'the program cmake', 'cmake'],
    ['error occurred: failed to find tool "c++": No such file or directory (os error 2)', 'the program c++', 'g++'],
    ['sh: 1: make: not found', 'the program make', 'make'],
    ['/usr/bin/ld: cannot find -l:libz.so.1: No such file or directory', 'the library z (-l:libz)', 'zlib1g-dev'],
    // cc-rs passes the C compiler's errors on as cargo:warning lines (a failed script's step shows them)
    ['cargo:warning=libgit2/src/util/zstream.h:12:10: fatal error: zlib.h: No such file or directory', 'the header zlib.h', 'zlib1g-dev'],
  ])('%s', (output, what, pkg) => {
    expect(missingPart(output)).toEqual({ what, package: pkg });
  });

  test('an ordinary compile error names nothing', () => {
    expect(missingPart('error[E0308]: mismatched types\n --> src/main.rs:2:5')).toBeUndefined();
    expect(missingPart('warning: not found: the cache entry')).toBeUndefined();
    expect(missingPartHint('thread main panicked at build.rs:3: network unreachable')).toBeUndefined();
  });

  test('openssl-sys without pkg-config: both packages, in one hint', () => {
    const out = 'Could not find directory of OpenSSL installation, and this `-sys` crate cannot\nproceed without this knowledge.\n' +
      'It looks like you\'re compiling on Linux and also targeting Linux. Currently this\nrequires the `pkg-config` utility to find OpenSSL but unfortunately `pkg-config`\ncould not be found. If you have OpenSSL installed you can likely fix this by\ninstalling `pkg-config`.';
    expect(missingPartHint(out)).toBe('the image lacks the OpenSSL headers and libraries and the program pkg-config: add "libssl-dev", "pkg-config" to base.packages, then run `rustcbuildx base build`');
  });

  test('the hint says what to add and how', () => {
    expect(missingPartHint('/usr/bin/ld: cannot find -lssl: No such file or directory')).toBe('the image lacks the library ssl (-lssl): add "libssl-dev" to base.packages, then run `rustcbuildx base build`');
  });
});

describe('what a pkg-config probe asked and linked', () => {
  test('the modules a script asked about, from the names the pkg-config crate declares', () => {
    const known = ['openssl', 'libudev', 'SDL2_image', 'gtk+-3.0', 'zlib'];
    expect(probedModules(['PKG_CONFIG_PATH', 'OPENSSL_NO_PKG_CONFIG', 'LIBUDEV_NO_PKG_CONFIG', 'PKG_CONFIG_ALLOW_CROSS', 'CC', 'SDL2_IMAGE_NO_PKG_CONFIG', 'GTK+_3.0_NO_PKG_CONFIG'], known)).toEqual(['openssl', 'libudev', 'SDL2_image', 'gtk+-3.0']);
  });

  test('link directives with their kind, either spelling of cargo\'s prefix', () => {
    expect(linkLibs('cargo:rustc-link-lib=ssl\ncargo::rustc-link-lib=static=z\ncargo:rustc-link-lib=dylib=crypto\ncargo:rustc-link-search=native=/usr/lib\ncargo:rustc-link-lib=static:+whole-archive=foo\ncargo:rustc-link-lib=dylib=bar:baz\n')).toEqual([
      { kind: 'dylib', name: 'ssl' },
      { kind: 'static', name: 'z' },
      { kind: 'dylib', name: 'crypto' },
      { kind: 'static', name: 'foo' },
      { kind: 'dylib', name: 'bar' },
    ]);
  });

  test('without pkg-config in the image, a probing script runs here and is told what to add', async () => {
    expect(await pkgConfigDisagrees(['OPENSSL_NO_PKG_CONFIG'], '', { packages: [], dockerfile: undefined })).toContain('add "pkg-config" and the libraries\' -dev packages to base.packages');
    expect(await pkgConfigDisagrees(['CC'], '', { packages: [], dockerfile: undefined })).toBeUndefined();
  });
});

describe('the advice of a reason, read back by base suggest', () => {
  test.each([
    [['zlib1g-dev'], undefined],
    [['libssl-dev', 'pkg-config'], undefined],
    [['pkg-config'], "the libraries' -dev packages"],
    [[], 'the package that provides it'],
  ] as const)('%p and %p', (packages, rest) => {
    const reason = `it links -lz, which the base image lacks: ${adviseBasePackages(packages, rest)}, then run \`rustcbuildx base build\``;
    expect(packagesAdvised(reason)).toEqual([...packages]);
  });
  test("cargo buildx's hint after its summary: what units gone local asked for and base.packages lacks", () => {
    const cfg = resolveConfig([], { RUSTCBUILDX_BASE_PACKAGES: 'pkg-config' });
    const rec = (outcome: UnitRecord['outcome'], reason: string): UnitRecord => ({ unit: 'u', crate: 'c', outcome, seconds: 1, code: 0, reason });
    const records = [
      rec('fallback', `it links -lz, which the base image lacks: ${adviseBasePackages(['zlib1g-dev'])}`),
      rec('local', `the build script probes the system with pkg-config: ${adviseBasePackages(['pkg-config'], 'more')}`),
      rec('built', adviseBasePackages(['libssl-dev'])),
    ];
    expect(packagesHint(records, cfg)).toBe('rustcbuildx: 1 unit or build script left the sandbox for what the base image lacks (zlib1g-dev): in the project, `rustcbuildx base build --add-suggested` adds it to base.packages and builds that image');
    expect(packagesHint(records.slice(1), cfg)).toBeUndefined();
  });

  test('every reason that advises, read back', async () => {
    expect(packagesAdvised(missingPartHint('/usr/bin/ld: cannot find -lssl\nsrc/zutil.c:3:10: fatal error: zlib.h: No such file or directory')!)).toEqual(['libssl-dev', 'zlib1g-dev']);
    expect(packagesAdvised((await pkgConfigDisagrees(['OPENSSL_NO_PKG_CONFIG'], '', { packages: [], dockerfile: undefined }))!)).toEqual(['pkg-config']);
    expect(packagesAdvised('linking failed in the sandbox')).toEqual([]);
  });
});
