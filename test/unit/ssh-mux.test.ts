import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSsh, muxOptions, shimScript, sshMuxEnv } from '../../src/engine/ssh-mux';

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
});
