import { describe, expect, test } from 'bun:test';
import { keyOfArtifact, unitKey } from '../../src/plan/plans';

const DEPS = '/work/proj/target/debug/deps';

describe('keyOfArtifact', () => {
  test.each([
    ['rlib', `${DEPS}/libfoo-abc.rlib`, 'foo-abc'],
    ['rmeta', `${DEPS}/libfoo-abc.rmeta`, 'foo-abc'],
    ['proc-macro .so', `${DEPS}/libserde_derive-0123abcd4567ef89.so`, 'serde_derive-0123abcd4567ef89'],
    ['proc-macro .dylib', `${DEPS}/libserde_derive-0123abcd4567ef89.dylib`, 'serde_derive-0123abcd4567ef89'],
    ['staticlib .a', `${DEPS}/libnative-1a2b.a`, 'native-1a2b'],
    ['bin (no lib prefix, no extension)', `${DEPS}/mytool-9f8e7d6c5b4a3210`, 'mytool-9f8e7d6c5b4a3210'],
    ['bin whose name starts with lib', `${DEPS}/library_tool-1234`, 'library_tool-1234'],
    ['crate named lib… (liblib-x.rlib)', `${DEPS}/liblib-x.rlib`, 'lib-x'],
    ['crate libc', `${DEPS}/liblibc-5e5b7e3c.rlib`, 'libc-5e5b7e3c'],
    ['bare file name', 'libfoo-abc.rlib', 'foo-abc'],
    ['no extra filename', `${DEPS}/libfoo.rlib`, 'foo'],
  ])('%s: %s → %s', (_name, path, key) => {
    expect(keyOfArtifact(path)).toBe(key);
  });

  test('rlib, rmeta and proc-macro of one unit share a key', () => {
    const keys = ['rlib', 'rmeta', 'so'].map((ext) => keyOfArtifact(`${DEPS}/libfoo-abc.${ext}`));
    expect(new Set(keys)).toEqual(new Set(['foo-abc']));
  });
});

describe('unitKey', () => {
  test.each([
    ['foo', '-abc', 'foo-abc'],
    ['serde_derive', '-0123abcd4567ef89', 'serde_derive-0123abcd4567ef89'],
    ['foo', undefined, 'foo'],
    ['foo', '', 'foo'],
  ] as const)('unitKey(%p, %p) = %p', (crate, extra, key) => {
    expect(unitKey(crate, extra)).toBe(key);
  });

  test('matches the key read back from the unit’s artifact', () => {
    for (const [crate, extra] of [['foo', '-abc'], ['lib', '-x'], ['libc', '-5e5b7e3c']] as const) {
      expect(keyOfArtifact(`${DEPS}/lib${unitKey(crate, extra)}.rlib`)).toBe(unitKey(crate, extra));
    }
  });
});
