import { afterAll, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, SETTINGS, SETTING_KEYS } from '../../src/config/config.ts';
import { loadProjectConfig } from '../../src/config/files.ts';
import { crateConfig } from '../../src/wrapper/run-config.ts';

const root = mkdtempSync(join(tmpdir(), 'rcbx-config-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
/** A user config dir and a workspace with one member, each file given (or absent). */
function project(files: { user?: string; workspace?: string; member?: string }) {
  const dir = join(root, String(n++));
  const ws = join(dir, 'ws');
  mkdirSync(join(dir, 'xdg', 'rustcbuildx'), { recursive: true });
  mkdirSync(join(ws, 'app'), { recursive: true });
  if (files.user !== undefined) writeFileSync(join(dir, 'xdg', 'rustcbuildx', 'config.toml'), files.user);
  writeFileSync(join(ws, 'Cargo.toml'), `[workspace]\nmembers = ["app"]\n${files.workspace ?? ''}`);
  writeFileSync(join(ws, 'app', 'Cargo.toml'), `[package]\nname = "app"\nversion = "0.1.0"\n${files.member ?? ''}`);
  const env = { XDG_CONFIG_HOME: join(dir, 'xdg'), CARGO_HOME: join(dir, 'cargo-home') };
  return { ws, env, userFile: join(dir, 'xdg', 'rustcbuildx', 'config.toml'), manifest: join(ws, 'Cargo.toml'), member: join(ws, 'app') };
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('no error');
}

describe('layered configuration', () => {
  test('the table lists every setting once, each with its variable', () => {
    expect(SETTINGS.map((s) => s.key)).toEqual([...SETTING_KEYS]);
    for (const s of SETTINGS) expect(s.env).toBe(`RUSTCBUILDX_${s.key.replace('.', '_').replaceAll('-', '_').toUpperCase()}`);
  });

  test('every level overrides the one below: default < user file < workspace < profile < environment', async () => {
    const p = project({
      user: 'log = "info"\nincremental = "local"\nbroker-idle = 30\nshare = ["a"]\n[profile.ci]\nshare = ["c"]\n',
      workspace: '[workspace.metadata.rustcbuildx]\nincremental = "sandbox"\nbroker-idle = 40\nshare = ["b"]\n[workspace.metadata.rustcbuildx.profile.ci]\nbroker-idle = 50\n',
    });
    const userOnly = await loadProjectConfig(p.env, undefined);
    expect(userOnly).toMatchObject({ log: 'info', incremental: 'local', brokerIdleSeconds: 30, share: ['a'], runner: undefined });
    expect(userOnly.sources).toMatchObject({ log: p.userFile, runner: 'default' });

    const ws = await loadProjectConfig(p.env, p.ws);
    expect(ws).toMatchObject({ log: 'info', incremental: 'sandbox', brokerIdleSeconds: 40, share: ['b'], profile: undefined });
    expect(ws.sources.incremental).toBe(`${p.manifest} [workspace.metadata.rustcbuildx]`);

    // CI=true applies the ci profile of every file (the workspace's above the user's)
    const ci = await loadProjectConfig({ ...p.env, CI: 'true' }, p.ws);
    expect(ci).toMatchObject({ profile: 'ci', brokerIdleSeconds: 50, share: ['c'], incremental: 'sandbox' });
    expect(ci.sources['broker-idle']).toBe(`${p.manifest} [workspace.metadata.rustcbuildx] [profile.ci]`);

    const env = await loadProjectConfig({ ...p.env, CI: 'true', RUSTCBUILDX_BROKER_IDLE: '60', RUSTCBUILDX_SHARE: 'd,e' }, p.ws);
    expect(env).toMatchObject({ brokerIdleSeconds: 60, share: ['d', 'e'] });
    expect(env.sources['broker-idle']).toBe('environment RUSTCBUILDX_BROKER_IDLE');
  });

  test('a named profile; one that no file defines is an error listing those that are', async () => {
    const p = project({ user: '[profile.fast]\nbroker = false\n[profile.slow]\nbroker-idle = 9\n' });
    expect(await loadProjectConfig({ ...p.env, RUSTCBUILDX_PROFILE: 'fast' }, p.ws)).toMatchObject({ profile: 'fast', broker: false });
    expect(await loadProjectConfig({ ...p.env, CI: 'true' }, p.ws)).toMatchObject({ profile: undefined, broker: true });
    expect(await errorOf(loadProjectConfig({ ...p.env, RUSTCBUILDX_PROFILE: 'ci' }, p.ws))).toBe(`RUSTCBUILDX_PROFILE=ci: no [profile.ci] in ${p.userFile}; defined: fast, slow`);
  });

  test('base extras: packages sorted, a Dockerfile snippet, each from its own level', async () => {
    const p = project({ user: '[base]\npackages = ["pkg-config", "libssl-dev"]\n', workspace: '[workspace.metadata.rustcbuildx.base]\ndockerfile = "RUN true"\n' });
    const cfg = await loadProjectConfig(p.env, p.ws);
    expect(cfg.base).toEqual({ packages: ['libssl-dev', 'pkg-config'], dockerfile: 'RUN true' });
    expect((await loadProjectConfig({ ...p.env, RUSTCBUILDX_BASE_PACKAGES: 'zlib1g-dev' }, p.ws)).base).toEqual({ packages: ['zlib1g-dev'], dockerfile: 'RUN true' });
  });

  test('per crate: [crate.NAME] rules, the crate\'s own manifest above the workspace, a profile above both', async () => {
    const p = project({
      user: '[crate."app*"]\nset-envs = ["FROM_USER"]\n',
      workspace: '[workspace.metadata.rustcbuildx]\nset-envs = ["GLOBAL"]\n[workspace.metadata.rustcbuildx.crate.app]\nlocal = true\nbuild-scripts = "host"\n[workspace.metadata.rustcbuildx.profile.ci.crate.app]\nlocal = true\n',
      member: '[package.metadata.rustcbuildx]\nlocal = false\nset-envs = ["OWN"]\n',
    });
    const unit = { ...p.env, CARGO_PKG_NAME: 'app', CARGO_MANIFEST_DIR: p.member };
    const cfg = await loadProjectConfig(p.env, p.ws);
    const mine = await crateConfig(cfg, unit, p.ws);
    expect(mine.crate).toEqual({ local: false, setEnvs: ['OWN'], buildScripts: 'host' });
    expect(mine.cfg.setEnvs).toEqual(['GLOBAL', 'OWN']);
    expect(mine.cfg.buildScripts).toBe('host');
    expect(mine.sources).toEqual([`${p.userFile} [crate.app*]`, `${p.manifest} [workspace.metadata.rustcbuildx] [crate.app]`, `${join(p.member, 'Cargo.toml')} [package.metadata.rustcbuildx]`]);
    // the ci profile's rule wins over the crate's own table
    expect((await crateConfig(await loadProjectConfig({ ...p.env, CI: 'true' }, p.ws), unit, p.ws)).crate.local).toBe(true);
    // a variable beats every file for the keys it names
    expect((await crateConfig(await loadProjectConfig({ ...p.env, RUSTCBUILDX_BUILD_SCRIPTS: 'sandbox' }, p.ws), unit, p.ws)).cfg.buildScripts).toBe('sandbox');
    // another crate: only the glob that matches it
    expect((await crateConfig(cfg, { ...unit, CARGO_PKG_NAME: 'other', CARGO_MANIFEST_DIR: join(p.env.CARGO_HOME, 'registry', 'src', 'x', 'other-1.0.0') }, p.ws)).crate).toEqual({});
  });

  test('a registry crate\'s own [package.metadata.rustcbuildx] is not read', async () => {
    const p = project({});
    const dep = join(p.env.CARGO_HOME, 'registry', 'src', 'index', 'dep-1.0.0');
    mkdirSync(dep, { recursive: true });
    writeFileSync(join(dep, 'Cargo.toml'), '[package]\nname = "dep"\nversion = "1.0.0"\n[package.metadata.rustcbuildx]\nlocal = true\nset-envs = ["AWS_SECRET"]\n');
    const cfg = await loadProjectConfig(p.env, p.ws);
    expect((await crateConfig(cfg, { ...p.env, CARGO_PKG_NAME: 'dep', CARGO_MANIFEST_DIR: dep }, p.ws)).crate).toEqual({});
  });

  test('errors name the file, the key and what it accepts', async () => {
    const user = project({ user: 'runner = "dockr"\n' });
    expect(await errorOf(loadProjectConfig(user.env, user.ws))).toBe(`${user.userFile}: runner: "dockr" is not accepted; accepted: docker, docker-build, podman, none; unset: the first that works`);

    const unknown = project({ user: 'runer = "docker"\n' });
    expect(await errorOf(loadProjectConfig(unknown.env, unknown.ws))).toStartWith(`${unknown.userFile}: runer: unknown key; accepted: runner, base-image, log,`);

    const toml = project({ user: 'runner = "docker\n' });
    expect(await errorOf(loadProjectConfig(toml.env, toml.ws))).toStartWith(`${toml.userFile}: not valid TOML (line 1, column`);

    const ws = project({ workspace: '[workspace.metadata.rustcbuildx.base]\npackages = ["libssl-dev", "Bad Name"]\n' });
    expect(await errorOf(loadProjectConfig(ws.env, ws.ws))).toBe(`${ws.manifest} [workspace.metadata.rustcbuildx]: base.packages: "Bad Name" is not a Debian package name; accepted: Debian package names (["libssl-dev", "pkg-config"])`);

    const prof = project({ workspace: '[workspace.metadata.rustcbuildx.profile.ci]\nbroker-idle = "soon"\n' });
    expect(await errorOf(loadProjectConfig(prof.env, prof.ws))).toBe(`${prof.manifest} [workspace.metadata.rustcbuildx] [profile.ci]: broker-idle: "soon" is not a number of seconds; accepted: seconds, 1 to 9999999`);

    const member = project({ member: '[package.metadata.rustcbuildx]\nlocal = "yes"\n' });
    const cfg = await loadProjectConfig(member.env, member.ws);
    expect(await errorOf(crateConfig(cfg, { ...member.env, CARGO_PKG_NAME: 'app', CARGO_MANIFEST_DIR: member.member }, member.ws))).toBe(`${join(member.member, 'Cargo.toml')} [package.metadata.rustcbuildx]: local: "yes" is not true or false; accepted: true, false`);

    const crate = project({ user: '[crate.app]\nlocl = true\n' });
    expect(await errorOf(loadProjectConfig(crate.env, crate.ws))).toBe(`${crate.userFile}: crate.app: locl: unknown key; accepted keys: local, set-envs, build-scripts`);

    const env = project({});
    expect(await errorOf(loadProjectConfig({ ...env.env, RUSTCBUILDX_BASE_PACKAGES: 'ok,not ok' }, env.ws))).toBe('RUSTCBUILDX_BASE_PACKAGES=ok,not ok: "not ok" is not a Debian package name; accepted: Debian package names (["libssl-dev", "pkg-config"])');

    expect(await errorOf(loadProjectConfig({ ...env.env, RUSTCBUILDX_CONFIG: join(root, 'none.toml') }, env.ws))).toBe(`RUSTCBUILDX_CONFIG=${join(root, 'none.toml')}: no such file`);
  });
});
