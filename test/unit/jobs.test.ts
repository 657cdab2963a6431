import { afterEach, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineCpus, jobsArgs, jobsInArgs } from '../../src/cli/jobs.ts';
import { engineInfoPath } from '../../src/engine/broker/protocol.ts';

describe("cargo's jobs by the engine's cores", () => {
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

  test("4 jobs per engine core (the broker holds compiles to one per core), at most 4 per local core; not for cargo doc", () => {
    const { cwd, env } = project();
    const jobs = (n: number) => ['--config', `build.jobs=${n}`];
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engineCpus: 32 })).toEqual(jobs(32));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 16, engineCpus: 3 })).toEqual(jobs(12));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engineCpus: 64 })).toEqual(jobs(8));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engineCpus: 2 })).toEqual([]); // cargo's default already
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engineCpus: 2 })).toEqual(jobs(8));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 4, engineCpus: 1 })).toEqual([]);
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engineCpus: 1 })).toEqual(jobs(4));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engineCpus: undefined })).toEqual([]);
    expect(jobsArgs({ args: ['doc', '--no-deps'], env, cwd, cpus: 2, engineCpus: 32 })).toEqual([]);
  });

  test("the user's choice wins: -j, CARGO_BUILD_JOBS, build.jobs in any config file cargo reads", () => {
    const { root, cwd, env } = project();
    const big = { cwd, cpus: 2, engineCpus: 6 };
    expect(jobsArgs({ ...big, args: ['build', '-j2'], env })).toEqual([]);
    expect(jobsArgs({ ...big, args: ['build'], env: { ...env, CARGO_BUILD_JOBS: '2' } })).toEqual([]);
    expect(jobsArgs({ ...big, args: ['build'], env: { ...env, CARGO_BUILD_JOBS: '' } })).toEqual([]);

    mkdirSync(join(root, 'ws', '.cargo'));
    writeFileSync(join(root, 'ws', '.cargo', 'config.toml'), '[build]\ntarget-dir = "t"\n\n[env]\nJOBS_NOTE = "x"\n');
    expect(jobsArgs({ ...big, args: ['build'], env })).toEqual(['--config', 'build.jobs=8']);
    for (const text of ['[build]\ntarget-dir = "t"\njobs = 2\n', 'build.jobs = 2\n', 'build = { jobs = 2 }\n', 'not [toml\n']) {
      writeFileSync(join(root, 'ws', '.cargo', 'config.toml'), text);
      expect(jobsArgs({ ...big, args: ['build'], env })).toEqual([]);
    }
    rmSync(join(root, 'ws', '.cargo'), { recursive: true });
    writeFileSync(join(env.CARGO_HOME, 'config.toml'), '[build]\njobs = 4\n');
    expect(jobsArgs({ ...big, args: ['build'], env })).toEqual([]);
  });

  test("the engine's cores as the broker left them beside its socket; nothing usable there is no figure", () => {
    const { root } = project();
    const socket = join(root, 'broker.sock');
    expect(engineCpus(socket)).toBeUndefined();
    expect(engineCpus(undefined)).toBeUndefined();
    writeFileSync(engineInfoPath(socket), JSON.stringify({ cpus: 48 }));
    expect(engineCpus(socket)).toBe(48);
    for (const bad of ['{"cpus":0}', '{"cpus":"8"}', 'not json']) {
      writeFileSync(engineInfoPath(socket), bad);
      expect(engineCpus(socket)).toBeUndefined();
    }
  });
});
