import { afterEach, describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineInfo, jobsArgs, jobsInArgs } from '../../src/cli/jobs.ts';
import { engineInfoPath } from '../../src/engine/broker/protocol.ts';
import { endpointElsewhere, engineOnThisMachine } from '../../src/engine/endpoint.ts';
import { editsCompileHere } from '../../src/wrapper/edits.ts';

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

  test("an engine elsewhere: 4 jobs per engine core (the broker holds compiles to one per core), at most 4 per local core; on this machine its cores; not for cargo doc", () => {
    const { cwd, env } = project();
    const jobs = (n: number) => ['--config', `build.jobs=${n}`];
    const remote = (cpus: number) => ({ cpus, elsewhere: true });
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engine: remote(32) })).toEqual(jobs(32));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 16, engine: remote(3) })).toEqual(jobs(12));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engine: remote(64) })).toEqual(jobs(8));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engine: remote(2) })).toEqual([]); // cargo's default already
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engine: remote(2) })).toEqual(jobs(8));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engine: remote(1) })).toEqual(jobs(4));
    // On this machine the engine's cores are ours: cargo's default (a VM with fewer gets fewer).
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engine: { cpus: 2, elsewhere: false } })).toEqual([]);
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 8, engine: { cpus: 4, elsewhere: false } })).toEqual(jobs(4));
    expect(jobsArgs({ args: ['build'], env, cwd, cpus: 2, engine: undefined })).toEqual([]);
    expect(jobsArgs({ args: ['doc', '--no-deps'], env, cwd, cpus: 2, engine: remote(32) })).toEqual([]);
  });

  test('where an endpoint is: a local socket or a loopback address is this machine', () => {
    for (const host of ['unix:///var/run/docker.sock', 'npipe:////./pipe/docker_engine', 'tcp://127.0.0.1:2376', 'tcp://localhost:2375', 'tcp://[::1]:2376']) expect(endpointElsewhere(host)).toBe(false);
    for (const host of ['ssh://big-box', 'ssh://user@127.0.0.1', 'tcp://10.0.0.5:2376', 'tcp://builder.example:2376']) expect(endpointElsewhere(host)).toBe(true);
    expect(engineOnThisMachine('docker', { HOME: '/nonexistent' })).toBe(true);
    expect(engineOnThisMachine('docker', { DOCKER_HOST: 'ssh://big-box' })).toBe(false);
    expect(engineOnThisMachine('podman', { DOCKER_HOST: 'ssh://big-box' })).toBe(true);
    expect(engineOnThisMachine('podman', { CONTAINER_HOST: 'ssh://core@builder/run/podman/podman.sock' })).toBe(false);
    expect(engineOnThisMachine('podman', { CONTAINER_CONNECTION: 'builder' })).toBe(false);
    expect(engineOnThisMachine('docker', { HOME: '/nonexistent', BUILDX_BUILDER: 'big-box' })).toBe(false);
    // RUSTCBUILDX_INCREMENTAL: auto follows where the engine is; local and sandbox say it outright
    const here = { HOME: '/nonexistent' };
    const remote = { HOME: '/nonexistent', DOCKER_HOST: 'ssh://big-box' };
    expect(editsCompileHere({ incremental: 'auto', runner: undefined }, here)).toBe(true);
    expect(editsCompileHere({ incremental: 'auto', runner: undefined }, remote)).toBe(false);
    expect(editsCompileHere({ incremental: 'auto', runner: 'podman' }, remote)).toBe(true);
    expect(editsCompileHere({ incremental: 'local', runner: undefined }, remote)).toBe(true);
    expect(editsCompileHere({ incremental: 'sandbox', runner: undefined }, here)).toBe(false);
  });

  test("the user's choice wins: -j, CARGO_BUILD_JOBS, build.jobs in any config file cargo reads", () => {
    const { root, cwd, env } = project();
    const big = { cwd, cpus: 2, engine: { cpus: 6, elsewhere: true } };
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

  test("the engine as the broker left it beside its socket; nothing usable there is no figure", () => {
    const { root } = project();
    const socket = join(root, 'broker.sock');
    expect(engineInfo(socket)).toBeUndefined();
    expect(engineInfo(undefined)).toBeUndefined();
    writeFileSync(engineInfoPath(socket), JSON.stringify({ cpus: 48, elsewhere: true }));
    expect(engineInfo(socket)).toEqual({ cpus: 48, elsewhere: true });
    // An older broker's record says nothing of where: this machine, cargo's default then.
    writeFileSync(engineInfoPath(socket), JSON.stringify({ cpus: 48 }));
    expect(engineInfo(socket)).toEqual({ cpus: 48, elsewhere: false });
    for (const bad of ['{"cpus":0}', '{"cpus":"8"}', 'not json']) {
      writeFileSync(engineInfoPath(socket), bad);
      expect(engineInfo(socket)).toBeUndefined();
    }
  });
});
