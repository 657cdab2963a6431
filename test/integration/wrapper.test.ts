/**
 * The wrapper on a real project (examples/demo: serde derive, build scripts probing rustc, crates.io
 * dependencies), with real cargo, rustc and the engine set up by `npm run setup`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { appendFileSync, chmodSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { KEEP_RUNS } from '../../src/prune.ts';
import { artifactNames, BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ENGINE_ONLY, ensureBaseImage, plainCompileCount, removeProject, RUSTCBUILDX, stats, testEnv, compileRecords } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 900_000;

describe('cargo buildx on examples/demo', () => {
  let dir = '';
  let plainTarget = '';
  beforeAll(() => {
    dir = copyProject('examples/demo');
    plainTarget = join(dir, 'plain-target');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test('builds through BuildKit: the binary runs and every compile was sandboxed', async () => {
    const res = await buildx(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    expect(res.stderr).toMatch(/rustcbuildx: \d+ units compiled/);
    const bin = await run([join(dir, 'target/debug/rustcbuildx-demo')]);
    expect(bin.code).toBe(0);
    expect(bin.stdout).toContain('hello from a binary built by rustcbuildx');
    const s = await stats(dir);
    expect(s.fallback).toBe(0);
    expect(s.units).toBe(await plainCompileCount(dir, plainTarget));
    expect(s.cached + s.built).toBe(s.units);
  }, LONG);

  test('the file names under deps/ and build/ equal plain cargo\'s', () => {
    expect(artifactNames(join(dir, 'target'))).toEqual(artifactNames(plainTarget));
  });

  test('nothing changed: cargo sees everything fresh and compiles nothing', async () => {
    const res = await buildx(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    expect(res.stderr).not.toContain('Compiling');
  }, LONG);

  test('after cargo clean every unit is served from the cache', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    const s = await stats(dir);
    expect(s.built).toBe(0);
    expect(s.fallback).toBe(0);
    expect(s.cached).toBe(s.units);
    expect((await run([join(dir, 'target/debug/rustcbuildx-demo')])).code).toBe(0);
  }, LONG);

  test('stats shows the wall time the summary line printed, and the units\' summed time beside it', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked']);
    const printed = Number(/^rustcbuildx: \d+ units compiled: .*, ([\d.]+) s$/m.exec(res.stderr)?.[1]);
    const s = await stats(dir);
    expect(Math.abs(s.seconds - printed)).toBeLessThanOrEqual(0.1);
    expect(s.unitSeconds).toBeGreaterThan(0);
    const text = await run([RUSTCBUILDX, 'stats'], { cwd: dir, env: testEnv() });
    expect(text.stdout).toContain(`, ${printed.toFixed(1)} s (units' own times summed: `);
    // A bare RUSTC_WRAPPER run: first unit start to last unit end, within cargo's own wall time.
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const started = performance.now();
    expect((await cargo(dir, ['build', '--locked'], { RUSTC_WRAPPER: RUSTCBUILDX })).code).toBe(0);
    const bare = await stats(dir);
    expect(bare.seconds).toBeGreaterThan(0);
    expect(bare.seconds).toBeLessThanOrEqual((performance.now() - started) / 1000);
  }, LONG);

  test('target/.rustcbuildx stays bounded over 50 edit-build cycles', async () => {
    const state = join(dir, 'target', '.rustcbuildx');
    const size = () => {
      let files = 0;
      let bytes = 0;
      for (const f of new Bun.Glob('**/*').scanSync({ cwd: state, dot: true })) {
        files++;
        bytes += statSync(join(state, f)).size;
      }
      return { files, bytes };
    };
    const cycle = async (n: number) => {
      appendFileSync(join(dir, 'src/main.rs'), `\n// edit ${n} ${crypto.randomUUID()}\n`);
      expect((await buildx(dir, ['build', '--locked'])).code).toBe(0);
    };
    // Each cycle adds a snapshot of the edited crate and a run's files; pruning takes them away again
    // once the newest KEEP_RUNS runs are there: from then on, the size stays put.
    for (let n = 0; n < KEEP_RUNS + 5; n++) await cycle(n);
    const steady = size();
    for (let n = KEEP_RUNS + 5; n < 50; n++) await cycle(n);
    const after50 = size();
    expect(after50.files).toBeLessThanOrEqual(steady.files + 2);
    expect(after50.bytes).toBeLessThanOrEqual(steady.bytes * 1.1);
    expect(readdirSync(join(state, 'ctx', 'ws')).length).toBeLessThanOrEqual(2);
  }, LONG);

  test('plain cargo build in the same target dir afterwards works', async () => {
    const res = await cargo(dir, ['build', '--locked']);
    expect(res.code).toBe(0);
    expect((await run([join(dir, 'target/debug/rustcbuildx-demo')])).stdout).toContain('hello');
  }, LONG);

  test('without an engine: the build completes with the local rustc and one warning', async () => {
    expect((await cargo(dir, ['clean'])).code).toBe(0);
    const res = await buildx(dir, ['build', '--locked'], { RUSTCBUILDX_RUNNER: 'docker', RUSTCBUILDX_DOCKER: '/nonexistent/docker' });
    expect(res.code).toBe(0);
    expect(res.stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
    const s = await stats(dir);
    expect(s.fallback).toBe(s.units);
    expect((await run([join(dir, 'target/debug/rustcbuildx-demo')])).code).toBe(0);
  }, LONG);
});

describe('the edit loop on a local engine, with cargo told to use the wrapper (`rustcbuildx enable --project`)', () => {
  let dir = '';
  const auto = { RUSTCBUILDX_INCREMENTAL: 'auto' };
  const runFiles = () => readdirSync(join(dir, 'target', '.rustcbuildx', 'runs')).filter((f) => f.endsWith('.jsonl'));
  const latest = () => compileRecords(join(dir, 'target', '.rustcbuildx', 'runs', runFiles().sort((a, b) => statSync(join(dir, 'target', '.rustcbuildx', 'runs', a)).mtimeMs - statSync(join(dir, 'target', '.rustcbuildx', 'runs', b)).mtimeMs).at(-1) as string));
  const program = async () => (await run([join(dir, 'target/debug/rustcbuildx-demo')])).stdout;
  beforeAll(() => {
    dir = copyProject('examples/demo');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test('enable: plain `cargo build` builds through rustcbuildx; a no-op starts nothing of ours', async () => {
    const enabled = await run([RUSTCBUILDX, 'enable', '--project'], { cwd: dir, env: testEnv() });
    expect(enabled.code).toBe(0);
    expect(enabled.stdout).toContain('cargo now builds through');
    const res = await cargo(dir, ['build', '--locked'], auto);
    expect(res.code).toBe(0);
    const s = await stats(dir);
    expect(s.units).toBeGreaterThan(10);
    expect(s.cached + s.built).toBe(s.units);
    const runs = runFiles().length;
    const noop = await cargo(dir, ['build', '--locked'], auto);
    expect(noop.code).toBe(0);
    expect(noop.stderr).not.toContain('Compiling');
    expect(runFiles().length).toBe(runs);
  }, LONG);

  test('an edit is compiled with the local rustc and cargo\'s incremental state; in the sandbox when asked', async () => {
    appendFileSync(join(dir, 'src/main.rs'), `\nconst _EDIT: u32 = 1; // ${crypto.randomUUID()}\n`);
    expect((await cargo(dir, ['build', '--locked'], auto)).code).toBe(0);
    expect(latest().map((r) => [r.crate, r.outcome])).toEqual([['rustcbuildx_demo', 'local']]);
    expect(readdirSync(join(dir, 'target/debug/incremental')).some((d) => d.startsWith('rustcbuildx_demo-'))).toBe(true);
    expect(await program()).toContain('hello from a binary built by rustcbuildx');
    appendFileSync(join(dir, 'src/main.rs'), `\nconst _EDIT2: u32 = 2; // ${crypto.randomUUID()}\n`);
    expect((await cargo(dir, ['build', '--locked'], { RUSTCBUILDX_INCREMENTAL: 'sandbox' })).code).toBe(0);
    expect(latest().map((r) => [r.crate, r.outcome])).toEqual([['rustcbuildx_demo', 'built']]);
    expect(await program()).toContain('hello from a binary built by rustcbuildx');
  }, LONG);

  test('disable: cargo builds without rustcbuildx again', async () => {
    const disabled = await run([RUSTCBUILDX, 'disable', '--project'], { cwd: dir, env: testEnv() });
    expect(disabled.code).toBe(0);
    expect(disabled.stdout).toContain('removed');
    const runs = runFiles().length;
    appendFileSync(join(dir, 'src/main.rs'), `\nconst _EDIT3: u32 = 3; // ${crypto.randomUUID()}\n`);
    const res = await cargo(dir, ['build', '--locked'], auto);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('Compiling rustcbuildx-demo');
    expect(runFiles().length).toBe(runs);
  }, LONG);
});

describe('probes', () => {
  test('`rustcbuildx RUSTC -vV` answers exactly as rustc does, first time and from its memo', async () => {
    const rustc = (await run(['rustup', 'which', 'rustc'])).stdout.trim();
    const direct = await run([rustc, '-vV']);
    for (let i = 0; i < 2; i++) {
      const ours = await run([RUSTCBUILDX, rustc, '-vV'], { env: testEnv() });
      expect(ours.code).toBe(0);
      expect(ours.stdout).toBe(direct.stdout);
    }
    const probe = await run([RUSTCBUILDX, rustc, '-', '--crate-name', '___', '--print=cfg', '--crate-type', 'lib'], { env: testEnv() });
    expect(probe.stdout).toBe((await run([rustc, '-', '--crate-name', '___', '--print=cfg', '--crate-type', 'lib'])).stdout);
  });
});

describe('an engine that dies mid-build', () => {
  test('each unit falls back to the local rustc, the failure is kept as a bug report, the build succeeds', async () => {
    const dir = copyProject('examples/demo');
    // The real docker client, killed as soon as the build has started (its first progress line): the
    // engine sees its client vanish mid-build. This is the CLI adapter's path (no broker); the broker's
    // own deaths are in broker.test.ts, the engine's in remote.test.ts.
    const shim = join(dir, 'dying-docker');
    writeFileSync(
      shim,
      [
        '#!/bin/sh',
        'if [ "$1" = buildx ] && [ "$2" = build ]; then',
        '  fifo=$(mktemp -u); mkfifo "$fifo"',
        '  docker "$@" 2>"$fifo" & pid=$!',
        '  head -n 1 "$fifo" >/dev/null',
        '  kill -9 $pid; wait $pid; status=$?; rm -f "$fifo"; exit $status',
        'fi',
        'exec docker "$@"',
        '',
      ].join('\n'),
    );
    chmodSync(shim, 0o755);
    try {
      const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, RUSTCBUILDX_RUNNER: 'docker', RUSTCBUILDX_DOCKER: shim, RUSTCBUILDX_BROKER: 'off' });
      expect(res.code).toBe(0);
      const s = await stats(dir);
      expect(s.units).toBeGreaterThan(10);
      expect(s.fallback).toBe(s.units);
      expect(readdirSync(join(dir, 'target/.rustcbuildx/failures')).filter((f) => f.endsWith('.log')).length).toBeGreaterThan(0);
      expect((await run([join(dir, 'target/debug/rustcbuildx-demo')])).stdout).toContain('hello');
    } finally {
      removeProject(dir);
    }
  }, LONG);
});

describe('Ctrl-C', () => {
  test('interrupting a build leaves no work dir and no half-staged snapshot behind', async () => {
    const dir = copyProject('examples/demo');
    const tmp = join(dir, 'target', '.rustcbuildx', 'tmp');
    try {
      // Its own process group, as a terminal's foreground job is: Ctrl-C reaches cargo and every wrapper.
      const job = Bun.spawn(['setsid', 'cargo', 'buildx', 'build', '--locked'], { cwd: dir, env: testEnv(ENGINE_ONLY), stdout: 'ignore', stderr: 'ignore' });
      const deadline = Date.now() + 120_000;
      while (!(existsSync(tmp) && readdirSync(tmp).length > 0) && Date.now() < deadline) await Bun.sleep(20);
      expect(readdirSync(tmp).length).toBeGreaterThan(0); // a unit was being built when the signal came
      process.kill(-job.pid, 'SIGINT');
      await job.exited;
      // setsid has returned long before (it forks when it leads a group): what matters is that cargo and
      // every wrapper have finished their handlers. Zombies have, they only wait to be reaped.
      const running = () =>
        readdirSync('/proc').some((pid) => {
          if (!/^\d+$/.test(pid)) return false;
          try {
            const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
            const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
            return state !== 'Z' && Number(pgrp) === job.pid;
          } catch {
            return false; // gone while we looked
          }
        });
      const settled = Date.now() + 30_000;
      while (running() && Date.now() < settled) await Bun.sleep(20);
      expect(running()).toBe(false);
      expect(readdirSync(tmp)).toEqual([]);
      const ctx = join(dir, 'target', '.rustcbuildx', 'ctx');
      const halfStaged = [...new Bun.Glob('**/*.tmp-*').scanSync({ cwd: ctx, onlyFiles: false, dot: true })];
      expect(halfStaged).toEqual([]);
    } finally {
      removeProject(dir);
    }
  }, LONG);
});

describe('compile errors', () => {
  test('same diagnostics and exit code as plain cargo', async () => {
    const dir = copyProject('test/fixtures/broken');
    try {
      const args = ['build', '--message-format=json'];
      const plain = await cargo(dir, args, { CARGO_TARGET_DIR: join(dir, 'plain-target') });
      const ours = await buildx(dir, args);
      expect(plain.code).toBe(101);
      expect(ours.code).toBe(plain.code);
      const diagnostics = (out: string) => out.split('\n').filter((l) => l.includes('"reason":"compiler-message"')).map((l) => JSON.parse(l).message);
      expect(diagnostics(ours.stdout).length).toBeGreaterThan(0);
      expect(diagnostics(ours.stdout)).toEqual(diagnostics(plain.stdout));
      // The sandbox's failure is never the last word: the local rustc decided, and these diagnostics are its.
      expect(await stats(dir)).toMatchObject({ units: 1, fallback: 1 });
      const reasons = () => {
        const runs = join(dir, 'target', '.rustcbuildx', 'runs');
        const newest = readdirSync(runs).filter((f) => f.endsWith('.jsonl')).sort((a, b) => statSync(join(runs, b)).mtimeMs - statSync(join(runs, a)).mtimeMs)[0] as string;
        return compileRecords(join(runs, newest)).map((r) => r.reason);
      };
      expect(reasons()).toEqual([expect.stringMatching(/^rustc exited with status 1 in the sandbox \(.+\); the local rustc decides$/)]);
      // Again: the same inputs go straight to the local rustc, with the same answer.
      const again = await buildx(dir, args);
      expect(again.code).toBe(plain.code);
      expect(diagnostics(again.stdout)).toEqual(diagnostics(plain.stdout));
      expect(reasons()).toEqual([expect.stringMatching(/^these exact inputs failed in the sandbox before: rustc exited with status 1 in the sandbox \(.+\); the local rustc decides$/)]);
    } finally {
      removeProject(dir);
    }
  }, LONG);
});
