import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, resolveConfig } from '../../src/config/config.ts';
import { baseTarget, withBasePackages, writeBasePackages } from '../../src/config/edit.ts';
import { userLayer, workspaceLayer } from '../../src/config/files.ts';

const dir = mkdtempSync(join(tmpdir(), 'rcbx-edit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('withBasePackages: a text edit that keeps the rest of the file', () => {
  const pkgs = ['pkg-config', 'zlib1g-dev'];
  test.each([
    ['an empty file gets the table', '', ['base'], '[base]\npackages = ["pkg-config", "zlib1g-dev"]\n'],
    ['a file without the table gets it at the end, after a blank line', 'runner = "docker" # mine\n', ['base'], 'runner = "docker" # mine\n\n[base]\npackages = ["pkg-config", "zlib1g-dev"]\n'],
    ['a one-line list is replaced, comments around it stay', '# top\n[base]\n# libs\npackages = ["pkg-config"] # old\ndockerfile = "RUN true"\n', ['base'], '# top\n[base]\n# libs\n# old\npackages = ["pkg-config", "zlib1g-dev"]\ndockerfile = "RUN true"\n'],
    ['a list over several lines is replaced whole, its comments kept above it', '[base]\npackages = [\n  "pkg-config", # for -sys crates\n  "a#b", # not a comment in the string\n]\n[crate.x]\nlocal = true\n', ['base'], '[base]\n# for -sys crates\n# not a comment in the string\npackages = ["pkg-config", "zlib1g-dev"]\n[crate.x]\nlocal = true\n'],
    ['a table without the key gets it under its header', '[base]\ndockerfile = "RUN true"\n', ['base'], '[base]\npackages = ["pkg-config", "zlib1g-dev"]\ndockerfile = "RUN true"\n'],
    ['the workspace table of a manifest', '[workspace]\nmembers = ["a"]\n\n[workspace.metadata.rustcbuildx.base]\npackages = []\n', ['workspace', 'metadata', 'rustcbuildx', 'base'], '[workspace]\nmembers = ["a"]\n\n[workspace.metadata.rustcbuildx.base]\npackages = ["pkg-config", "zlib1g-dev"]\n'],
    ['only the table named: another table\'s packages stay', '[profile.ci.base]\npackages = ["x"]\n', ['base'], '[profile.ci.base]\npackages = ["x"]\n\n[base]\npackages = ["pkg-config", "zlib1g-dev"]\n'],
  ] as const)('%s', (_name, before, table, after) => {
    expect(withBasePackages(before, table, pkgs)).toBe(after);
  });
});

describe('writeBasePackages', () => {
  test('writes the file (made when missing) and keeps its mode', async () => {
    const file = join(dir, 'sub', 'config.toml');
    await writeBasePackages({ file, table: ['base'] }, ['zlib1g-dev']);
    expect(readFileSync(file, 'utf8')).toBe('[base]\npackages = ["zlib1g-dev"]\n');
    chmodSync(file, 0o600);
    await writeBasePackages({ file, table: ['base'] }, ['pkg-config', 'zlib1g-dev']);
    expect(readFileSync(file, 'utf8')).toBe('[base]\npackages = ["pkg-config", "zlib1g-dev"]\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  test('a config file that is a link stays one: the file it points at is written', async () => {
    const real = join(dir, 'dotfiles', 'rustcbuildx.toml');
    mkdirSync(join(dir, 'dotfiles'), { recursive: true });
    writeFileSync(real, '# managed\n');
    const link = join(dir, 'linked.toml');
    symlinkSync(real, link);
    await writeBasePackages({ file: link, table: ['base'] }, ['zlib1g-dev']);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(real, 'utf8')).toBe('# managed\n\n[base]\npackages = ["zlib1g-dev"]\n');
  });

  test('a layout the text edit cannot handle (an inline table) is refused, with the lines to add, and the file is untouched', async () => {
    const file = join(dir, 'inline.toml');
    const before = 'base = { packages = ["pkg-config"] }\n';
    writeFileSync(file, before);
    const err = await writeBasePackages({ file, table: ['base'] }, ['zlib1g-dev']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`add by hand to ${file}:\n[base]\npackages = ["zlib1g-dev"]`);
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(existsSync(`${file}.rustcbuildx-${process.pid}.tmp`)).toBe(false);
  });
});

describe('baseTarget: the file and table that set base.packages now', () => {
  test('default: the user file', async () => {
    const cfg = resolveConfig([], {});
    expect(baseTarget(cfg, { HOME: '/home/u' })).toEqual({ file: '/home/u/.config/rustcbuildx/config.toml', table: ['base'] });
  });
  test('the user file, and its profile', async () => {
    const file = join(dir, 'user.toml');
    writeFileSync(file, '[base]\npackages = ["a"]\n[profile.ci.base]\npackages = ["b"]\n');
    const layer = (await userLayer({ RUSTCBUILDX_CONFIG: file }))!;
    expect(baseTarget(resolveConfig([layer], {}), {})).toEqual({ file, table: ['base'] });
    expect(baseTarget(resolveConfig([layer], { RUSTCBUILDX_PROFILE: 'ci' }), {})).toEqual({ file, table: ['profile', 'ci', 'base'] });
  });
  test('the workspace manifest', async () => {
    writeFileSync(join(dir, 'Cargo.toml'), '[workspace]\n[workspace.metadata.rustcbuildx.base]\npackages = ["a"]\n');
    const layer = (await workspaceLayer(dir))!;
    expect(baseTarget(resolveConfig([layer], {}), {})).toEqual({ file: join(dir, 'Cargo.toml'), table: ['workspace', 'metadata', 'rustcbuildx', 'base'] });
  });
  test('a variable: no file to edit, the error says where to add them', () => {
    expect(() => baseTarget(resolveConfig([], { RUSTCBUILDX_BASE_PACKAGES: 'a' }), {})).toThrow('base.packages comes from RUSTCBUILDX_BASE_PACKAGES: add the packages there');
  });
});
