/**
 * RUSTFLAGS=-Ctarget-cpu=native through the sandbox: the target features a crate sees equal plain
 * cargo's, no new rustc warning appears, and what reaches the engine names the CPU, never "native".
 * Real cargo, rustc and engine; test/fixtures/native-cpu's bin prints every feature cfg! sees.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { parseNativeCpuName, probeNativeCpu } from '../../src/rustc/native-cpu.ts';
import { BASE_BUILD_TIMEOUT, buildx, cargo, CLEANUP_TIMEOUT, copyProject, ensureBaseImage, removeProject, compileRecords } from './harness.ts';

// Whatever ran before: the base image this file builds with is made here if missing.
beforeAll(() => ensureBaseImage('docker'), BASE_BUILD_TIMEOUT);

const LONG = 900_000;
const RUSTC = (await run(['rustup', 'which', 'rustc'])).stdout.trim();
const CPU = parseNativeCpuName((await run([RUSTC, '--print', 'target-cpus'])).stdout);
/** What this machine's native is, as the wrapper will find it. */
const NATIVE = await probeNativeCpu({ rustc: RUSTC, target: undefined, features: [] });
/** Toggles the wrapper cannot spell without a warning (unstable features, say): the user may give them. */
const UNSPELLABLE = NATIVE.kind === 'local' ? NATIVE.features : [];

/** rustc's warnings in a cargo run's stderr, sorted (units finish in any order). */
const warnings = (stderr: string): string[] => stderr.split('\n').filter((l) => l.startsWith('warning:')).sort();

describe('-C target-cpu=native', () => {
  let dir = '';
  beforeAll(() => {
    dir = copyProject('test/fixtures/native-cpu');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  /** Plain cargo and cargo buildx with these RUSTFLAGS: the same program output and the same warnings. */
  async function compare(rustflags: string) {
    const plainTarget = join(dir, 'plain-target');
    const plain = await cargo(dir, ['build', '--locked'], { RUSTFLAGS: rustflags, CARGO_TARGET_DIR: plainTarget });
    expect(plain.code).toBe(0);
    const runs = join(dir, 'target', '.rustcbuildx', 'runs');
    rmSync(runs, { recursive: true, force: true });
    const ours = await buildx(dir, ['build', '--locked'], { RUSTFLAGS: rustflags, RUSTCBUILDX_LOG: 'debug' });
    expect(ours.code).toBe(0);
    const expected = (await run([join(plainTarget, 'debug', 'native-cpu')])).stdout;
    expect(expected).toContain('sse2');
    expect((await run([join(dir, 'target', 'debug', 'native-cpu')])).stdout).toBe(expected);
    const files = existsSync(runs) ? readdirSync(runs) : [];
    const records = files.filter((f) => f.endsWith('.jsonl')).flatMap((f) => compileRecords(join(runs, f)));
    const log = files.filter((f) => f.endsWith('.log')).map((f) => readFileSync(join(runs, f), 'utf8')).join('\n');
    expect(records.length).toBe(2); // the build script and the bin
    return { plain, ours, records, log };
  }

  /** Every Dockerfile in the run's debug log compiles for the named CPU. */
  function expectNamedCpu(log: string): void {
    const cpus = [...log.matchAll(/^\s+target-cpu=(\S+)/gm)].map((m) => m[1]);
    expect(cpus.length).toBeGreaterThan(0);
    expect(new Set(cpus)).toEqual(new Set([CPU]));
  }

  test(`RUSTFLAGS='-C target-cpu=native': ${NATIVE.kind === 'named' ? 'sandboxed as the named CPU' : 'the local rustc, said once'}`, async () => {
    expect(CPU).toBeDefined();
    const { plain, ours, records, log } = await compare('-C target-cpu=native');
    if (NATIVE.kind === 'named') {
      expect(records.filter((r) => r.outcome === 'fallback')).toEqual([]);
      expect(warnings(ours.stderr)).toEqual(warnings(plain.stderr));
      expectNamedCpu(log);
    } else {
      // This CPU differs from every name rustc has by features it cannot toggle without a warning.
      expect(records.every((r) => r.outcome === 'fallback' && r.reason?.startsWith('-C target-cpu=native: '))).toBe(true);
      expect(ours.stderr.match(/rustcbuildx: note: -C target-cpu=native: /g)?.length).toBe(1);
    }
  }, LONG);

  test.if(UNSPELLABLE.length > 0)(`with the user's own -C target-feature=${UNSPELLABLE.join(',')}: sandboxed, same warnings`, async () => {
    const { plain, ours, records, log } = await compare(`-C target-cpu=native -C target-feature=${UNSPELLABLE.join(',')}`);
    expect(records.filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(warnings(plain.stderr).length).toBeGreaterThan(0);
    expect(warnings(ours.stderr)).toEqual(warnings(plain.stderr));
    expectNamedCpu(log);
  }, LONG);
});
