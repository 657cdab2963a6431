import { describe, expect, test } from 'bun:test';
import { missingPart, missingPartHint } from '../../src/plan/system-packages.ts';

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
  ])('%s', (output, what, pkg) => {
    expect(missingPart(output)).toEqual({ what, package: pkg });
  });

  test('an ordinary compile error names nothing', () => {
    expect(missingPart('error[E0308]: mismatched types\n --> src/main.rs:2:5')).toBeUndefined();
    expect(missingPartHint('thread main panicked at build.rs:3: network unreachable')).toBeUndefined();
  });

  test('the hint says what to add and how', () => {
    expect(missingPartHint('/usr/bin/ld: cannot find -lssl: No such file or directory')).toBe('the image lacks the library ssl (-lssl): add "libssl-dev" to base.packages, then run `rustcbuildx base build`');
  });
});
