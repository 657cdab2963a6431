import { describe, expect, test } from 'bun:test';
import { officialImage, parseRustcVersion, sha256, TOOLCHAIN_REPO, toolchainTag, ToolchainParseError, type Channel } from '../../src/toolchain';

// `rustc -vV` as printed by real toolchains (stable copied from this machine; the others follow the
// same layout with the channel's release string).
const STABLE = `rustc 1.95.0 (59807616e 2026-04-14)
binary: rustc
commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860
commit-date: 2026-04-14
host: x86_64-unknown-linux-gnu
release: 1.95.0
LLVM version: 22.1.2
`;

const BETA = `rustc 1.96.0-beta.3 (a1b2c3d4e 2026-05-02)
binary: rustc
commit-hash: a1b2c3d4e5f60718293a4b5c6d7e8f9011223344
commit-date: 2026-05-02
host: x86_64-unknown-linux-gnu
release: 1.96.0-beta.3
LLVM version: 22.1.4
`;

const NIGHTLY = `rustc 1.97.0-nightly (0f1e2d3c4 2026-05-10)
binary: rustc
commit-hash: 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c
commit-date: 2026-05-10
host: aarch64-apple-darwin
release: 1.97.0-nightly
LLVM version: 22.1.5
`;

// A toolchain built from a rust-lang/rust checkout with `./x build`.
const DEV = `rustc 1.98.0-dev
binary: rustc
commit-hash: 5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f
commit-date: 2026-05-20
host: x86_64-unknown-linux-gnu
release: 1.98.0-dev
LLVM version: 22.1.5
`;

// A distro / from-tarball build that does not know its commit.
const CUSTOM = `rustc 1.95.0
binary: rustc
commit-hash: unknown
commit-date: unknown
host: x86_64-unknown-linux-gnu
release: 1.95.0
LLVM version: 21.1.0
`;

interface Case {
  name: string;
  text: string;
  release: string;
  commitHash: string | undefined;
  commitDate: string | undefined;
  host: string;
  channel: Channel;
}

const CASES: Case[] = [
  { name: 'stable', text: STABLE, release: '1.95.0', commitHash: '59807616e1fa2540724bfbac14d7976d7e4a3860', commitDate: '2026-04-14', host: 'x86_64-unknown-linux-gnu', channel: 'stable' },
  { name: 'beta', text: BETA, release: '1.96.0-beta.3', commitHash: 'a1b2c3d4e5f60718293a4b5c6d7e8f9011223344', commitDate: '2026-05-02', host: 'x86_64-unknown-linux-gnu', channel: 'beta' },
  { name: 'nightly', text: NIGHTLY, release: '1.97.0-nightly', commitHash: '0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c', commitDate: '2026-05-10', host: 'aarch64-apple-darwin', channel: 'nightly' },
  { name: 'dev', text: DEV, release: '1.98.0-dev', commitHash: '5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f', commitDate: '2026-05-20', host: 'x86_64-unknown-linux-gnu', channel: 'dev' },
  { name: 'custom (commit unknown)', text: CUSTOM, release: '1.95.0', commitHash: undefined, commitDate: undefined, host: 'x86_64-unknown-linux-gnu', channel: 'custom' },
];

describe('parseRustcVersion', () => {
  test.each(CASES)('$name', (c) => {
    const tc = parseRustcVersion(c.text);
    expect(tc.release).toBe(c.release);
    expect(tc.commitHash).toBe(c.commitHash);
    expect(tc.commitDate).toBe(c.commitDate);
    expect(tc.host).toBe(c.host);
    expect(tc.channel).toBe(c.channel);
    expect(tc.verbose).toBe(c.text.trim());
  });

  test('CRLF line endings parse the same fields', () => {
    const tc = parseRustcVersion(STABLE.replace(/\n/g, '\r\n'));
    expect(tc.release).toBe('1.95.0');
    expect(tc.host).toBe('x86_64-unknown-linux-gnu');
    expect(tc.channel).toBe('stable');
  });

  test('a release with an unrecognised suffix but a commit is custom', () => {
    const tc = parseRustcVersion(STABLE.replace('release: 1.95.0', 'release: 1.95.0-rc1'));
    expect(tc.channel).toBe('custom');
    expect(tc.commitHash).toBe('59807616e1fa2540724bfbac14d7976d7e4a3860');
  });

  test.each([
    ['empty', ''],
    ['plain text', 'hello world\n'],
    ['`rustc -V` (not verbose)', 'rustc 1.95.0 (59807616e 2026-04-14)\n'],
    ['no host line', STABLE.replace(/^host: .*\n/m, '')],
    ['no release line', STABLE.replace(/^release: .*\n/m, '')],
    ['error output', 'error: toolchain \'nightly-x86_64-unknown-linux-gnu\' is not installed\n'],
  ])('garbage input (%s) → ToolchainParseError', (_name, text) => {
    expect(() => parseRustcVersion(text)).toThrow(ToolchainParseError);
  });

  test('the error is an Error named ToolchainParseError quoting the input', () => {
    let caught: unknown;
    try {
      parseRustcVersion('bogus output');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(Error);
    expect((caught as Error).name).toBe('ToolchainParseError');
    expect((caught as Error).message).toContain('bogus output');
  });
});

const DOCKER_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

function tagPart(ref: string): string {
  const prefix = `${TOOLCHAIN_REPO}:`;
  expect(ref.startsWith(prefix)).toBe(true);
  return ref.slice(prefix.length);
}

describe('toolchainTag', () => {
  test.each(CASES)('$name: valid docker tag under the toolchain repo', (c) => {
    const tag = tagPart(toolchainTag(parseRustcVersion(c.text)));
    expect(tag).toMatch(DOCKER_TAG);
    expect(tag.length).toBeLessThanOrEqual(128);
    expect(tag.startsWith(c.release)).toBe(true);
  });

  test('stable tag is release, short commit, host', () => {
    expect(toolchainTag(parseRustcVersion(STABLE))).toBe('rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu');
  });

  test('every toolchain above gets its own tag', () => {
    const tags = CASES.map((c) => toolchainTag(parseRustcVersion(c.text)));
    expect(new Set(tags).size).toBe(CASES.length);
  });

  test('the same toolchain always gets the same tag', () => {
    for (const c of CASES) {
      expect(toolchainTag(parseRustcVersion(c.text))).toBe(toolchainTag(parseRustcVersion(c.text)));
    }
  });

  test('same release, different commit → different tags', () => {
    const other = STABLE.replace('59807616e1fa2540724bfbac14d7976d7e4a3860', '11111111e1fa2540724bfbac14d7976d7e4a3860');
    expect(toolchainTag(parseRustcVersion(other))).not.toBe(toolchainTag(parseRustcVersion(STABLE)));
  });

  test('same release and commit, different host → different tags', () => {
    const other = STABLE.replace('host: x86_64-unknown-linux-gnu', 'host: aarch64-unknown-linux-gnu');
    expect(toolchainTag(parseRustcVersion(other))).not.toBe(toolchainTag(parseRustcVersion(STABLE)));
  });

  test('custom builds are identified by a hash of their -vV text', () => {
    const tc = parseRustcVersion(CUSTOM);
    const tag = tagPart(toolchainTag(tc));
    expect(tag).toBe(`1.95.0-h${sha256(CUSTOM.trim()).slice(0, 12)}-x86_64-unknown-linux-gnu`);
    // Two custom builds that differ only in their LLVM get different tags.
    const otherLlvm = parseRustcVersion(CUSTOM.replace('LLVM version: 21.1.0', 'LLVM version: 20.1.8'));
    expect(toolchainTag(otherLlvm)).not.toBe(toolchainTag(tc));
    // Surrounding whitespace is not part of the identity.
    expect(toolchainTag(parseRustcVersion(`\n${CUSTOM}\n\n`))).toBe(toolchainTag(tc));
  });

  test('characters docker forbids are replaced and the tag is cut to 128', () => {
    const weird = CUSTOM.replace('release: 1.95.0', 'release: 1.95.0+local/build ' + 'x'.repeat(200)).replace(
      'host: x86_64-unknown-linux-gnu',
      'host: x86_64-unknown-linux-gnu:custom',
    );
    const tag = tagPart(toolchainTag(parseRustcVersion(weird)));
    expect(tag).toMatch(DOCKER_TAG);
    expect(tag.length).toBe(128);
    expect(tag.startsWith('1.95.0_local_build_xxx')).toBe(true);
  });
});

describe('officialImage', () => {
  test.each(CASES)('$name', (c) => {
    const tc = parseRustcVersion(c.text);
    expect(officialImage(tc)).toBe(c.channel === 'stable' ? `docker.io/library/rust:${c.release}-slim` : undefined);
  });

  test('stable gives the slim image of that exact release', () => {
    expect(officialImage(parseRustcVersion(STABLE))).toBe('docker.io/library/rust:1.95.0-slim');
  });
});
