import { afterAll, describe, expect, test } from 'bun:test';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyCargoConfig, CargoConfigError, cargoConfigFile, editCargoConfig } from '../../src/cli/enable';
import { UsageError } from '../../src/cli/usage';

const root = mkdtempSync(join(tmpdir(), 'rcbx-enable-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const W = '/opt/rcbx/bin/rustcbuildx';

function edited(text: string, on = true): string {
  const change = editCargoConfig(text, 'config.toml', W, on);
  if (!('text' in change)) throw new Error(`unchanged: ${change.unchanged}`);
  return change.text;
}

describe('editCargoConfig', () => {
  test('an empty file, or one without [build]: a [build] table at the end; comments and layout kept', () => {
    expect(edited('')).toBe(`[build]\nrustc-wrapper = "${W}"\n`);
    const text = '# mine\n[net]\ngit-fetch-with-cli = true # why\n';
    expect(edited(text)).toBe(`${text}\n[build]\nrustc-wrapper = "${W}"\n`);
    expect(Bun.TOML.parse(edited('[net]\noffline = true'))).toEqual({ net: { offline: true }, build: { 'rustc-wrapper': W } });
  });

  test('an existing [build] table gets the key under its header, its other keys untouched', () => {
    const text = '[build]\njobs = 4\n\n[env]\nX = "1"\n';
    expect(Bun.TOML.parse(edited(text))).toEqual({ build: { jobs: 4, 'rustc-wrapper': W }, env: { X: '1' } });
    expect(edited(text)).toStartWith(`[build]\nrustc-wrapper = "${W}"\njobs = 4\n`);
  });

  test('enable then disable gives the file back', () => {
    for (const text of ['', '[build]\njobs = 4\n', '# c\n[alias]\nb = "build"\n']) {
      const back = edited(edited(text), false);
      expect(Bun.TOML.parse(back)).toEqual(Bun.TOML.parse(text === '' ? '[build]' : text.includes('[build]') ? text : `${text}\n[build]\n`));
    }
    expect(edited(edited('[build]\njobs = 4\n'), false)).toBe('[build]\njobs = 4\n');
  });

  test('already ours: nothing to do; another wrapper: refused, nothing changed', () => {
    const ours = `[build]\nrustc-wrapper = "${W}"\n`;
    expect(editCargoConfig(ours, 'f', W, true)).toEqual({ unchanged: `f already names ${W} as cargo's rustc wrapper` });
    expect(() => editCargoConfig('[build]\nrustc-wrapper = "sccache"\n', 'f', W, true)).toThrow(CargoConfigError);
    expect(() => editCargoConfig('[build]\nrustc-wrapper = "sccache"\n', 'f', W, false)).toThrow('which is not rustcbuildx');
    expect(editCargoConfig('', 'f', W, false)).toEqual({ unchanged: 'f names no rustc wrapper: nothing to disable' });
  });

  test('a rustcbuildx that is gone (a moved checkout) is replaced by enable and removed by disable; another missing wrapper is not ours', () => {
    const moved = `[build]\nrustc-wrapper = "/gone/dist/rustcbuildx"\n`;
    expect(Bun.TOML.parse(edited(moved))).toEqual({ build: { 'rustc-wrapper': W } });
    expect(Bun.TOML.parse(edited(moved, false))).toEqual({ build: {} });
    expect(() => editCargoConfig('[build]\nrustc-wrapper = "/gone/sccache"\n', 'f', W, false)).toThrow('which is not rustcbuildx');
  });

  test('a form it does not edit (a dotted key, an inline table) or broken TOML: a clear error, never a wrong file', () => {
    expect(() => editCargoConfig('build.jobs = 2\n', 'f', W, true)).toThrow('Add this yourself');
    expect(() => editCargoConfig('build = { jobs = 2 }\n', 'f', W, true)).toThrow(CargoConfigError);
    expect(() => editCargoConfig(`build.rustc-wrapper = "${W}"\n`, 'f', W, false)).toThrow('Remove build.rustc-wrapper yourself');
    expect(() => editCargoConfig('[build\n', 'f', W, true)).toThrow('is not valid TOML');
  });
});

describe('applyCargoConfig and the file it picks', () => {
  test("CARGO_HOME/config.toml by default, the workspace root's .cargo/config.toml with --project, `config` whenever it exists (cargo reads it then), links followed", () => {
    expect(cargoConfigFile([], { CARGO_HOME: '/h/.cargo' }, '/p')).toBe('/h/.cargo/config.toml');
    const ws = join(root, 'ws');
    mkdirSync(join(ws, 'member'), { recursive: true });
    writeFileSync(join(ws, 'Cargo.toml'), '[workspace]\nmembers = ["member"]\n');
    writeFileSync(join(ws, 'member', 'Cargo.toml'), '[package]\nname = "member"\n');
    expect(cargoConfigFile(['--project'], {}, join(ws, 'member'))).toBe(join(ws, '.cargo', 'config.toml'));
    const home = join(root, 'legacy');
    mkdirSync(home);
    writeFileSync(join(home, 'config'), '');
    writeFileSync(join(home, 'config.toml'), '');
    expect(cargoConfigFile([], { CARGO_HOME: home }, '/p')).toBe(join(home, 'config'));
    const linked = join(root, 'linked');
    mkdirSync(linked);
    writeFileSync(join(root, 'dotfile.toml'), '');
    symlinkSync(join(root, 'dotfile.toml'), join(linked, 'config.toml'));
    expect(cargoConfigFile([], { CARGO_HOME: linked }, '/p')).toBe(join(root, 'dotfile.toml'));
    expect(() => cargoConfigFile(['--global'], {}, '/p')).toThrow(UsageError);
  });

  test('writes the file (its mode kept), a link to the executable counts as ours', () => {
    const dir = join(root, 'apply');
    mkdirSync(dir);
    const exe = join(dir, 'rustcbuildx');
    writeFileSync(exe, '');
    symlinkSync(exe, join(dir, 'link'));
    const file = join(dir, 'config.toml');
    writeFileSync(file, '[build]\njobs = 2\n', { mode: 0o600 });
    expect(applyCargoConfig(file, exe, true)).toContain('cargo now builds through');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(Bun.TOML.parse(readFileSync(file, 'utf8'))).toEqual({ build: { jobs: 2, 'rustc-wrapper': exe } });
    expect(applyCargoConfig(file, join(dir, 'link'), true)).toContain('already names');
    expect(applyCargoConfig(file, exe, false)).toContain('removed');
    expect(readFileSync(file, 'utf8')).toBe('[build]\njobs = 2\n');
  });

  test('a link, even to a file not there yet, is written through; a failed write leaves the file and nothing beside it; bun is refused', () => {
    const dir = join(root, 'through');
    mkdirSync(dir);
    const exe = join(dir, 'rustcbuildx');
    writeFileSync(exe, '');
    symlinkSync(join(dir, 'managed.toml'), join(dir, 'config.toml'));
    const file = cargoConfigFile([], { CARGO_HOME: dir }, '/p');
    expect(file).toBe(join(dir, 'managed.toml'));
    applyCargoConfig(file, exe, true);
    expect(lstatSync(join(dir, 'config.toml')).isSymbolicLink()).toBe(true);
    expect(Bun.TOML.parse(readFileSync(join(dir, 'config.toml'), 'utf8'))).toEqual({ build: { 'rustc-wrapper': exe } });
    // a directory where the file should be: the rename fails
    const blocked = join(dir, 'blocked');
    mkdirSync(join(blocked, 'config.toml'), { recursive: true });
    expect(() => applyCargoConfig(join(blocked, 'config.toml'), exe, true)).toThrow(CargoConfigError);
    expect(readdirSync(blocked)).toEqual(['config.toml']);
    expect(() => applyCargoConfig(join(dir, 'other.toml'), '/x/node_modules/bun/bin/bun.exe', true)).toThrow('run from its sources');
  });
});
