import { afterEach, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRemoteHost, jobsInArgs, remoteJobsEnv } from '../../src/cli/remote-jobs.ts';

describe('jobs for a remote engine', () => {
  const dirs: string[] = [];
  const project = () => {
    const root = mkdtempSync(join(tmpdir(), 'rcbx-jobs-'));
    dirs.push(root);
    const cwd = join(root, 'ws', 'crates', 'app');
    mkdirSync(cwd, { recursive: true });
    mkdirSync(join(root, 'home'));
    return { root, cwd, env: { CARGO_HOME: join(root, 'home') } };
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  test('remote means another machine: ssh://, tcp:// to a name or address that is not this one', () => {
    expect(isRemoteHost('ssh://me@big-box')).toBe(true);
    expect(isRemoteHost('tcp://10.0.0.5:2376')).toBe(true);
    expect(isRemoteHost('tcp://builder.example:2376')).toBe(true);
    expect(isRemoteHost('tcp://127.0.0.1:2375')).toBe(false);
    expect(isRemoteHost('tcp://localhost:2375')).toBe(false);
    expect(isRemoteHost('tcp://[::1]:2375')).toBe(false);
    expect(isRemoteHost('unix:///var/run/docker.sock')).toBe(false);
    expect(isRemoteHost(undefined)).toBe(false);
  });

  test("the user's -j on cargo's command line, before the program's own arguments", () => {
    expect(jobsInArgs(['build', '-j', '3'])).toBe(true);
    expect(jobsInArgs(['build', '-j3'])).toBe(true);
    expect(jobsInArgs(['build', '--jobs', '3'])).toBe(true);
    expect(jobsInArgs(['build', '--jobs=3'])).toBe(true);
    expect(jobsInArgs(['build', '--config', 'build.jobs=3'])).toBe(true);
    expect(jobsInArgs(['build', '--config=build.jobs=3'])).toBe(true);
    expect(jobsInArgs(['run', '--release', '--', '-j', '3'])).toBe(false);
    expect(jobsInArgs(['build', '--release'])).toBe(false);
  });

  test('a remote engine gets at least 8 jobs, or one per local core when there are more', () => {
    const { cwd, env } = project();
    expect(remoteJobsEnv({ args: ['build'], env, host: 'ssh://big-box', cwd, cpus: 2 })).toEqual({ CARGO_BUILD_JOBS: '8' });
    expect(remoteJobsEnv({ args: ['build'], env, host: 'ssh://big-box', cwd, cpus: 32 })).toEqual({ CARGO_BUILD_JOBS: '32' });
    expect(remoteJobsEnv({ args: ['build'], env, host: 'unix:///var/run/docker.sock', cwd, cpus: 2 })).toEqual({});
    expect(remoteJobsEnv({ args: ['build'], env, host: undefined, cwd, cpus: 2 })).toEqual({});
  });

  test("the user's choice wins: -j, CARGO_BUILD_JOBS, build.jobs in any config file cargo reads", () => {
    const { root, cwd, env } = project();
    const remote = { host: 'ssh://big-box', cwd, cpus: 2 };
    expect(remoteJobsEnv({ ...remote, args: ['build', '-j2'], env })).toEqual({});
    expect(remoteJobsEnv({ ...remote, args: ['build'], env: { ...env, CARGO_BUILD_JOBS: '2' } })).toEqual({});

    mkdirSync(join(root, 'ws', '.cargo'));
    writeFileSync(join(root, 'ws', '.cargo', 'config.toml'), '[build]\ntarget-dir = "t"\n\n[env]\nJOBS_NOTE = "x"\n');
    expect(remoteJobsEnv({ ...remote, args: ['build'], env })).toEqual({ CARGO_BUILD_JOBS: '8' });
    for (const text of ['[build]\ntarget-dir = "t"\njobs = 2\n', 'build.jobs = 2\n', 'build = { jobs = 2 }\n']) {
      writeFileSync(join(root, 'ws', '.cargo', 'config.toml'), text);
      expect(remoteJobsEnv({ ...remote, args: ['build'], env })).toEqual({});
    }
    rmSync(join(root, 'ws', '.cargo'), { recursive: true });
    writeFileSync(join(env.CARGO_HOME, 'config.toml'), '[build]\njobs = 4\n');
    expect(remoteJobsEnv({ ...remote, args: ['build'], env })).toEqual({});
  });
});
