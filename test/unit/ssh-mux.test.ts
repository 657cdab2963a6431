import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSsh, muxOptions, shimScript, sshMuxEnv } from '../../src/engine/ssh-mux';
import { describeEndpoint, dockerHost, endpointOf } from '../../src/engine/endpoint';
import { sha256 } from '../../src/toolchain';

const root = mkdtempSync(join(tmpdir(), 'rcbx-sshmux-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function fakeSsh(dir: string, body = 'exit 0'): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'ssh');
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

describe('ssh connection sharing for DOCKER_HOST=ssh://', () => {
  test('the shim runs the user\'s ssh with the sharing options and every argument docker gives it', () => {
    const real = fakeSsh(join(root, 'user bin'), 'printf "%s\\n" "$@"');
    const shim = join(root, 'shim');
    writeFileSync(shim, shimScript(real, '/tmp/ctl dir'));
    chmodSync(shim, 0o755);
    const out = Bun.spawnSync([shim, '-l', 'me', '--', 'host', 'docker', 'system', 'dial-stdio']).stdout.toString();
    expect(out.trim().split('\n')).toEqual([...muxOptions('/tmp/ctl dir'), '-l', 'me', '--', 'host', 'docker', 'system', 'dial-stdio']);
  });

  test('findSsh: the first executable ssh on PATH that is not a shim', () => {
    const a = fakeSsh(join(root, 'a'));
    const shims = join(root, 'cache', 'ssh-mux', 'x');
    fakeSsh(shims);
    mkdirSync(join(root, 'empty'), { recursive: true });
    expect(findSsh([shims, join(root, 'empty'), join(root, 'a')].join(':'), (d) => d === shims)).toBe(a);
    expect(findSsh(join(root, 'empty'), () => false)).toBeUndefined();
  });

  test('only for ssh:// endpoints, and off when asked', () => {
    const cache = join(root, 'cache2');
    const path = join(root, 'a');
    expect(sshMuxEnv({ PATH: path }, cache)).toEqual({});
    expect(sshMuxEnv({ PATH: path, DOCKER_HOST: 'unix:///run/docker.sock' }, cache)).toEqual({});
    expect(sshMuxEnv({ PATH: path, DOCKER_HOST: 'ssh://box', RUSTCBUILDX_SSH_MUX: 'off' }, cache)).toEqual({});
    const env = sshMuxEnv({ PATH: path, DOCKER_HOST: 'ssh://me@box' }, cache);
    const shimDir = (env.PATH ?? '').split(':')[0] as string;
    expect(env.PATH).toBe(`${shimDir}:${path}`);
    expect(readFileSync(join(shimDir, 'ssh'), 'utf8')).toContain(`'${join(root, 'a', 'ssh')}' '-o' 'ControlMaster=auto'`);
    // Asked again (another wrapper, with the shim already first on PATH): the same shim, not a shim of a shim.
    expect(sshMuxEnv({ PATH: env.PATH, DOCKER_HOST: 'ssh://me@box' }, cache).PATH).toBe(`${shimDir}:${env.PATH}`);
  });

  test('the endpoint is resolved as docker does: DOCKER_HOST, else DOCKER_CONTEXT, else the config\'s current context', () => {
    const config = join(root, 'docker-config');
    const meta = (name: string, host: string) => {
      const dir = join(config, 'contexts', 'meta', sha256(name));
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'meta.json'), JSON.stringify({ Name: name, Endpoints: { docker: { Host: host, SkipTLSVerify: false } } }));
    };
    meta('big-box', 'ssh://me@big-box');
    meta('ci', 'tcp://ci:2376');
    writeFileSync(join(config, 'config.json'), JSON.stringify({ currentContext: 'big-box' }));
    expect(dockerHost({ DOCKER_CONFIG: config, DOCKER_HOST: 'unix:///x.sock' })).toBe('unix:///x.sock');
    expect(dockerHost({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'ci' })).toBe('tcp://ci:2376');
    expect(dockerHost({ DOCKER_CONFIG: config })).toBe('ssh://me@big-box');
    expect(dockerHost({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'default' })).toBeUndefined();
    expect(dockerHost({ DOCKER_CONFIG: join(root, 'no-config') })).toBeUndefined();
    expect(sshMuxEnv({ DOCKER_CONFIG: config, PATH: join(root, 'a') }, join(root, 'cache3')).PATH).toMatch(/ssh-mux/);
    // Messages name a context chosen with `docker context use`, as a setting a command can carry.
    expect(describeEndpoint(endpointOf('docker', { DOCKER_CONFIG: config }))).toBe('docker (DOCKER_CONTEXT=big-box)');
  });
});
