/**
 * The build broker (src/engine/broker/): started by the first build, found through its socket, the same
 * artifacts as the CLI path, and never the reason a build fails: killed or hung in the middle of a build,
 * the build still succeeds with one warning. Real cargo, rustc, crates.io and the local docker engine.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { engineFacts } from '../../src/engine/broker/client.ts';
import { brokerStatuses, busyBuild, buildx, CLEANUP_TIMEOUT, copyProject, depsDigests, ENGINE_ONLY, ensureBaseImage, plainCargoAgrees, removeProject, runRecords, RUSTCBUILDX, TEST_RUNTIME_DIR, testEnv } from './harness.ts';

const LONG = 900_000;

beforeAll(() => ensureBaseImage('docker'), 1_800_000);

describe('the build broker', () => {
  let dir = '';
  beforeAll(() => {
    dir = copyProject('examples/demo');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test("the first build starts it; `broker status` shows it; artifacts byte-identical to the CLI path; it answers a run's questions about the engine", async () => {
    const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, CARGO_TARGET_DIR: join(dir, 't-broker') });
    expect(res.code).toBe(0);
    expect(res.stderr).not.toContain('warning');
    expect(runRecords(join(dir, 't-broker')).filter((r) => r.outcome === 'fallback')).toEqual([]);
    const [status] = await brokerStatuses();
    expect(status?.connected).toBe(true);
    expect(status?.builds).toBeGreaterThan(15);

    const cli = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_BROKER: 'off', CARGO_TARGET_DIR: join(dir, 't-cli') });
    expect(cli.code).toBe(0);
    expect(depsDigests(join(dir, 't-cli'))).toEqual(depsDigests(join(dir, 't-broker')));

    const human = await run([RUSTCBUILDX, 'broker', 'status'], { env: testEnv() });
    expect(human.stdout).toMatch(/^\* broker pid \d+ for unix:\/\/\/var\/run\/docker\.sock: BuildKit /m);
    // The engine's cores, which the next `cargo buildx` sizes cargo's jobs by (src/cli/jobs.ts).
    const ncpu = (await run(['docker', 'info', '--format', '{{.NCPU}}'], { env: testEnv() })).stdout.trim();
    expect(ncpu).toMatch(/^\d+$/);
    expect(human.stdout).toContain(`, ${ncpu} CPUs`);

    // What a run's first wrapper asks before its units, answered from the daemon as the CLI would.
    const listed = JSON.parse((await run([RUSTCBUILDX, 'broker', 'status', '--json'], { env: testEnv() })).stdout) as Array<{ socket: string; current: boolean }>;
    const socket = listed.find((b) => b.current)?.socket ?? '';
    const image = (JSON.parse((await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: testEnv() })).stdout) as { image: string; id: string }).image;
    const facts = await engineFacts(socket, [image, 'rcbx-test/never-made:1'], 60);
    const server = (await run(['docker', 'version', '--format', '{{.Server.Version}}'], { env: testEnv() })).stdout.trim();
    const id = (await run(['docker', 'image', 'inspect', '--format', '{{.Id}}', image], { env: testEnv() })).stdout.trim();
    expect(facts).toMatchObject({ server, images: { [image]: { id }, 'rcbx-test/never-made:1': null } });
  }, LONG);

  test('units are solved in one build held open, as LLB; crates sent once stay in the engine, for every target dir', async () => {
    const runLogs = (target: string) => {
      const runs = join(target, '.rustcbuildx', 'runs');
      return readdirSync(runs).filter((f) => f.endsWith('.log')).map((f) => readFileSync(join(runs, f), 'utf8')).join('');
    };
    const target = join(dir, 't-ctx');
    const first = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_LOG: 'debug', CARGO_TARGET_DIR: target });
    expect(first.code).toBe(0);
    const log = runLogs(target);
    // Units reach the engine as LLB: no Dockerfile for a frontend to convert, no `.dockerignore` to fetch.
    expect(log).toMatch(/^#\d+ \[u-itoa-[0-9a-f]+\] RUN rustc /m);
    expect(log).not.toContain('[internal] /Dockerfile');
    expect(log).not.toContain('load .dockerignore');
    // Each is a solve in the held build, its result read in place after the answer (no export, no session of its own).
    expect(log).toMatch(/^timeline: solve \d+, answer \d+, export \d+-\d+ ms$/m);
    expect(log).not.toMatch(/^timeline: .*context/m);
    // Our base image has zstd: every unit's step packed its result, which was read instead of its files.
    const packed = [...log.matchAll(/^result read packed: (\d+) B for (\d+) B$/gm)].map((m) => [Number(m[1]), Number(m[2])]);
    expect(packed.length).toBe([...log.matchAll(/^timeline: solve /gm)].length);
    expect(packed.reduce((sum, [p]) => sum + p!, 0) * 2).toBeLessThan(packed.reduce((sum, [, r]) => sum + r!, 0));
    expect(log).not.toContain('the packed result was not used');

    // A fresh clone's run (a new target dir, so a new context dir) on a new broker (so a new held build,
    // which has synced nothing): the engine kept its copy of each crate, so only their stats travel.
    await run([RUSTCBUILDX, 'broker', 'stop', '--all'], { env: testEnv() });
    const fresh = join(dir, 't-ctx-fresh');
    const second = await buildx(dir, ['build', '--locked', '-j', '1'], { ...ENGINE_ONLY, RUSTCBUILDX_LOG: 'debug', CARGO_TARGET_DIR: fresh });
    expect(second.code).toBe(0);
    expect(runRecords(fresh).filter((r) => r.outcome !== 'cached')).toEqual([]);
    const sent = [...runLogs(fresh).matchAll(/transferring context: (\d+) B done/g)].map((m) => Number(m[1]));
    expect(sent.length).toBeGreaterThanOrEqual(3);
    const crates = join(fresh, '.rustcbuildx', 'ctx', 'crates');
    const cratesBytes = readdirSync(crates).reduce((sum, f) => sum + statSync(join(crates, f)).size, 0);
    expect(cratesBytes).toBeGreaterThan(500_000);
    expect(sent.reduce((a, b) => a + b, 0)).toBeLessThan(cratesBytes / 20);
  }, LONG);

  test('a base image without zstd (not ours): results read file by file, artifacts byte-identical', async () => {
    const work = join(dir, 'no-zstd');
    mkdirSync(work, { recursive: true });
    const base = (await run([RUSTCBUILDX, 'base', 'show', '--json'], { env: testEnv() })).stdout;
    const image = (JSON.parse(base) as { image: string }).image;
    writeFileSync(join(work, 'Dockerfile'), `FROM ${image}\nRUN rm /usr/bin/zstd && ! command -v zstd\n`);
    const tag = 'rcbx-test/no-zstd:latest';
    const made = await run(['docker', 'build', '-q', '-t', tag, work], { env: testEnv({ DOCKER_BUILDKIT: '1' }) });
    expect(made.stderr + made.stdout).toMatch(/sha256:/);
    expect(made.code).toBe(0);
    try {
      const target = join(dir, 't-no-zstd');
      const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_LOG: 'debug', RUSTCBUILDX_BASE_IMAGE: tag, CARGO_TARGET_DIR: target });
      expect(res.code).toBe(0);
      expect(res.stderr).not.toContain('warning');
      expect(runRecords(target).filter((r) => r.outcome === 'fallback')).toEqual([]);
      const runs = join(target, '.rustcbuildx', 'runs');
      const log = readdirSync(runs).filter((f) => f.endsWith('.log')).map((f) => readFileSync(join(runs, f), 'utf8')).join('');
      expect(log).toMatch(/^timeline: solve \d+, answer \d+, export \d+-\d+ ms$/m);
      expect(log).not.toContain('result read packed');
      expect(depsDigests(target)).toEqual(depsDigests(join(dir, 't-broker')));
    } finally {
      await run(['docker', 'image', 'rm', '-f', tag], { env: testEnv() });
    }
  }, LONG);

  test('`rustcbuildx engine build` with paths relative to where it runs: the export lands there', async () => {
    const work = join(dir, 'engine-build');
    mkdirSync(join(work, 'ctx'), { recursive: true });
    writeFileSync(join(work, 'ctx', 'file'), 'through the broker\n');
    writeFileSync(join(work, 'Dockerfile'), 'FROM scratch AS x\nCOPY file /file\n');
    const res = await run([RUSTCBUILDX, 'engine', 'build', '-f', 'Dockerfile', '--target', 'x', '--output', 'out', 'ctx'], { cwd: work, env: testEnv() });
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(readFileSync(join(work, 'out', 'file'), 'utf8')).toBe('through the broker\n');
  }, LONG);

  test('ignore files count as with the CLI: `<Dockerfile>.dockerignore` beside the Dockerfile, else the context\'s', async () => {
    const work = join(dir, 'engine-ignore');
    mkdirSync(join(work, 'ctx'), { recursive: true });
    for (const f of ['kept', 'secret', 'big']) writeFileSync(join(work, 'ctx', f), `${f}\n`);
    writeFileSync(join(work, 'ctx', '.dockerignore'), 'secret\n');
    writeFileSync(join(work, 'Dockerfile'), 'FROM scratch AS x\nCOPY . /\n');
    const exported = async (out: string, broker: boolean) => {
      const res = await run([RUSTCBUILDX, 'engine', 'build', '-f', 'Dockerfile', '--target', 'x', '--output', out, 'ctx'], { cwd: work, env: testEnv(broker ? {} : { RUSTCBUILDX_BROKER: 'off' }) });
      expect(res.code).toBe(0);
      return readdirSync(join(work, out)).sort();
    };
    expect(await exported('broker-1', true)).toEqual(['.dockerignore', 'big', 'kept']);
    expect(await exported('cli-1', false)).toEqual(['.dockerignore', 'big', 'kept']);
    writeFileSync(join(work, 'Dockerfile.dockerignore'), 'big\n.dockerignore\n');
    expect(await exported('broker-2', true)).toEqual(['kept', 'secret']);
    expect(await exported('cli-2', false)).toEqual(['kept', 'secret']);
  }, LONG);

  test('killed in the middle of a build: the build succeeds, one warning, target/ intact', async () => {
    const target = join(dir, 't-killed');
    const { job, broker } = await busyBuild(dir, target);
    process.kill(broker.pid, 'SIGKILL');
    const [stderr, code] = await Promise.all([new Response(job.stderr).text(), job.exited]);
    expect(code).toBe(0);
    expect(stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
    expect(stderr).toContain('the build broker exited during the build');
    await plainCargoAgrees(dir, target);
  }, LONG);

  test('hung in the middle of a build: after its silence limit, the CLI path; one warning', async () => {
    const target = join(dir, 't-hung');
    const { job, broker } = await busyBuild(dir, target);
    process.kill(broker.pid, 'SIGSTOP');
    try {
      const [stderr, code] = await Promise.all([new Response(job.stderr).text(), job.exited]);
      expect(code).toBe(0);
      expect(stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
      expect(stderr).toContain('the build broker stopped answering');
      await plainCargoAgrees(dir, target);
    } finally {
      process.kill(broker.pid, 'SIGKILL');
    }
  }, LONG);

  test('an idle broker exits by itself after RUSTCBUILDX_BROKER_IDLE', async () => {
    await run([RUSTCBUILDX, 'broker', 'stop', '--all'], { env: testEnv() });
    // Engine only: every unit goes through the broker, so it is busy until the build ends.
    const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_BROKER_IDLE: '2', CARGO_TARGET_DIR: join(dir, 't-idle') });
    expect(res.code).toBe(0);
    const deadline = Date.now() + 30_000;
    while ((await brokerStatuses()).length > 0 && Date.now() < deadline) await Bun.sleep(250);
    expect(await brokerStatuses()).toEqual([]);
    // Its log (beside its socket) says why it went.
    const logs = readdirSync(join(TEST_RUNTIME_DIR, 'rustcbuildx')).filter((f) => f.endsWith('.sock.log'));
    const said = logs.map((f) => readFileSync(join(TEST_RUNTIME_DIR, 'rustcbuildx', f), 'utf8')).join('');
    expect(said).toMatch(/idle limit 2 s\)\n(.*\n)*.*stopping: idle for 2 s/);
    expect(existsSync(join(dir, 't-idle', 'debug', 'rustcbuildx-demo'))).toBe(true);
  }, LONG);
});
