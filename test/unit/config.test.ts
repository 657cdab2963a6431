import { describe, expect, test } from 'bun:test';
import { ConfigError, loadConfig, RUNNERS, SETTING_KEYS, type SettingKey } from '../../src/config/config.ts';

function configErrorOf(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  test('defaults with an empty environment', () => {
    expect(loadConfig({})).toEqual({
      runner: undefined,
      baseImage: undefined,
      log: 'off',
      dockerClient: 'docker',
      podmanClient: 'podman',
      setEnvs: [],
      broker: true,
      brokerIdleSeconds: 600,
      incremental: 'auto',
      buildScripts: 'sandbox',
      stores: [],
      share: [],
      base: { packages: [], dockerfile: undefined },
      profile: undefined,
      crates: [],
      sources: Object.fromEntries(SETTING_KEYS.map((k) => [k, 'default'])) as Record<SettingKey, string>,
    });
  });

  test('shared stores: dirs and registries in order, read-only with ro:, plain HTTP only when asked', () => {
    const { stores } = loadConfig({ RUSTCBUILDX_CACHE: 'ro:oci://registry.example.com:5000/team/rcbx, dir:/ci/cache/ ,oci+http://10.0.0.2/x' });
    expect(stores).toEqual([
      { kind: 'oci', location: 'registry.example.com:5000/team/rcbx', http: false, writable: false, text: 'ro:oci://registry.example.com:5000/team/rcbx' },
      { kind: 'dir', location: '/ci/cache', http: false, writable: true, text: 'dir:/ci/cache/' },
      { kind: 'oci', location: '10.0.0.2/x', http: true, writable: true, text: 'oci+http://10.0.0.2/x' },
    ]);
  });

  test('a store the setting cannot mean is an error that says what it accepts', () => {
    expect(configErrorOf({ RUSTCBUILDX_CACHE: 'dir:relative/path' }).message).toContain('"dir:relative/path" is not an absolute directory; the setting is a comma-separated list of dir:/ABSOLUTE/PATH and oci://');
    expect(configErrorOf({ RUSTCBUILDX_CACHE: 'oci://host/Team' }).message).toContain('not a valid repository name');
    expect(configErrorOf({ RUSTCBUILDX_CACHE: 's3://bucket' }).message).toContain('is neither a dir: nor an oci:// store');
    expect(configErrorOf({ RUSTCBUILDX_CACHE: 'oci://host-only' }).message).toContain('is neither');
    for (const host of ['user@host', 'my_host:5000', 'host:99999999']) expect(configErrorOf({ RUSTCBUILDX_CACHE: `oci://${host}/x` }).message).toContain(`names the host "${host}", which is not HOST or HOST:PORT`);
  });

  test('crates named to share: names and globs', () => {
    expect(loadConfig({ RUSTCBUILDX_SHARE: 'my-crate, acme-*' }).share).toEqual(['my-crate', 'acme-*']);
    expect(configErrorOf({ RUSTCBUILDX_SHARE: '../x' }).message).toContain('"../x" is not a crate name or glob');
  });

  test('build scripts: on the host or in the sandbox', () => {
    for (const mode of ['host', 'sandbox'] as const) expect(loadConfig({ RUSTCBUILDX_BUILD_SCRIPTS: mode }).buildScripts).toBe(mode);
    expect(() => loadConfig({ RUSTCBUILDX_BUILD_SCRIPTS: 'on' })).toThrow('RUSTCBUILDX_BUILD_SCRIPTS=on: "on" is not accepted; accepted: host, sandbox');
  });

  test('incremental: auto, local or sandbox', () => {
    for (const mode of ['auto', 'local', 'sandbox'] as const) expect(loadConfig({ RUSTCBUILDX_INCREMENTAL: mode }).incremental).toBe(mode);
    expect(() => loadConfig({ RUSTCBUILDX_INCREMENTAL: 'on' })).toThrow('RUSTCBUILDX_INCREMENTAL=on: "on" is not accepted; accepted: auto, local, sandbox');
  });

  test('the broker: on or off, and an idle time in seconds', () => {
    expect(loadConfig({ RUSTCBUILDX_BROKER: 'off', RUSTCBUILDX_BROKER_IDLE: '30' })).toMatchObject({ broker: false, brokerIdleSeconds: 30 });
    for (const bad of [{ RUSTCBUILDX_BROKER: 'yes' }, { RUSTCBUILDX_BROKER_IDLE: '0' }, { RUSTCBUILDX_BROKER_IDLE: '10m' }]) {
      expect(() => loadConfig(bad)).toThrow(/RUSTCBUILDX_BROKER/);
    }
  });

  test('blank values count as unset', () => {
    expect(
      loadConfig({
        RUSTCBUILDX_RUNNER: '  ',
        RUSTCBUILDX_BASE_IMAGE: '',
        RUSTCBUILDX_LOG: ' ',
        RUSTCBUILDX_DOCKER: '',
        RUSTCBUILDX_PODMAN: '   ',
        RUSTCBUILDX_SET_ENVS: ' , ,',
      }),
    ).toEqual(loadConfig({}));
  });

  test('unrelated variables are ignored', () => {
    expect(loadConfig({ PATH: '/usr/bin', RUNNER: 'bogus', RUSTCBUILDX: 'x' })).toEqual(loadConfig({}));
  });

  test.each([...RUNNERS])('runner %s is accepted', (runner) => {
    expect(loadConfig({ RUSTCBUILDX_RUNNER: runner }).runner).toBe(runner);
    expect(loadConfig({ RUSTCBUILDX_RUNNER: ` ${runner}\n` }).runner).toBe(runner);
  });

  test('the runner list is docker, docker-build, podman, none', () => {
    expect([...RUNNERS]).toEqual(['docker', 'docker-build', 'podman', 'none']);
  });

  test.each(['off', 'info', 'debug'] as const)('log level %s is accepted', (log) => {
    expect(loadConfig({ RUSTCBUILDX_LOG: log }).log).toBe(log);
  });

  test('other settings are read and trimmed', () => {
    const cfg = loadConfig({
      RUSTCBUILDX_BASE_IMAGE: ' ghcr.io/me/rust:1.95 ',
      RUSTCBUILDX_DOCKER: '/opt/bin/docker',
      RUSTCBUILDX_PODMAN: 'podman-remote',
      RUSTCBUILDX_SET_ENVS: 'FOO, _BAR ,Baz_9',
    });
    expect(cfg.baseImage).toBe('ghcr.io/me/rust:1.95');
    expect(cfg.dockerClient).toBe('/opt/bin/docker');
    expect(cfg.podmanClient).toBe('podman-remote');
    expect(cfg.setEnvs).toEqual(['FOO', '_BAR', 'Baz_9']);
  });

  test.each(['Docker', 'buildkit', 'docker build', 'nerdctl'])('invalid runner %p → ConfigError naming RUSTCBUILDX_RUNNER', (runner) => {
    const err = configErrorOf({ RUSTCBUILDX_RUNNER: runner });
    expect(err.message).toContain('RUSTCBUILDX_RUNNER');
    expect(err.message).toContain(runner);
    expect(err.name).toBe('ConfigError');
  });

  test.each(['verbose', 'DEBUG', 'trace', '1'])('invalid log level %p → ConfigError naming RUSTCBUILDX_LOG', (log) => {
    const err = configErrorOf({ RUSTCBUILDX_LOG: log });
    expect(err.message).toContain('RUSTCBUILDX_LOG');
    expect(err.message).toContain(log);
  });

  test.each([
    ['FOO,1BAD', '1BAD'],
    ['FOO-BAR', 'FOO-BAR'],
    ['A,B C', 'B C'],
    ['OK,X=1', 'X=1'],
    ['$HOME', '$HOME'],
  ])('RUSTCBUILDX_SET_ENVS=%p → ConfigError naming the variable and %p', (value, bad) => {
    const err = configErrorOf({ RUSTCBUILDX_SET_ENVS: value });
    expect(err.message).toContain('RUSTCBUILDX_SET_ENVS');
    expect(err.message).toContain(`"${bad}"`);
  });
});
