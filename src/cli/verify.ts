/**
 * `rustcbuildx verify [--crate NAME]… [--against DOCKER_HOST] [-- CARGO BUILD ARGS]`: builds the current
 * project once more, in a target dir of its own, with every unit's own step run by the engine whatever
 * its cache holds (the local engine, or the one named), and compares the sha256 of each output with what
 * the memo or a shared store serves for the same key. Lists the units that differ and exits 1 if any do:
 * a cache, a builder or a middle party that altered a result is caught; so is a crate that does not build
 * reproducibly (the same inputs, other bytes).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRecords, STATE_DIR_NAME } from '../run-state.ts';
import { writeStderr, writeStdout } from '../io.ts';
import { UsageError } from './usage.ts';
import type { VerifyRecord } from '../wrapper/verify.ts';

const USAGE = 'usage: rustcbuildx verify [--crate NAME]… [--against DOCKER_HOST] [--json] [-- CARGO BUILD ARGS]';

export async function verifyCommand(args: string[], targetDir: () => Promise<string>): Promise<number> {
  const crates: string[] = [];
  let against: string | undefined;
  let json = false;
  let cargoArgs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      cargoArgs = args.slice(i + 1);
      break;
    }
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (flag === '--json') {
      json = true;
      continue;
    }
    const value = inline ?? args[++i];
    if ((flag !== '--crate' && flag !== '--against') || value === undefined) throw new UsageError(`unexpected argument "${arg}"; ${USAGE}`);
    if (flag === '--crate') {
      if (!/^[A-Za-z0-9_*?-]+$/.test(value)) throw new UsageError(`--crate ${value}: a crate name or glob (letters, digits, _, -, * and ?)`);
      crates.push(value);
    } else against = value;
  }
  const target = join(await targetDir(), 'rustcbuildx-verify');
  // A fresh target dir: cargo compiles every unit, and nothing of an earlier verify is reused.
  rmSync(target, { recursive: true, force: true });
  const dir = mkdtempSync(join(tmpdir(), 'rustcbuildx-verify-'));
  const file = join(dir, 'verified.jsonl');
  const saved = { ...process.env };
  try {
    Object.assign(process.env, {
      CARGO_TARGET_DIR: target,
      RUSTCBUILDX_VERIFY: file,
      RUSTCBUILDX_VERIFY_CRATES: crates.join(','),
      // The engine named, and nothing else choosing one: docker's own context or builder, our runner.
      ...(against ? { DOCKER_HOST: against, RUSTCBUILDX_RUNNER: 'docker' } : {}),
    });
    if (against) for (const name of ['DOCKER_CONTEXT', 'BUILDX_BUILDER']) delete process.env[name];
    const { cargoBuildx } = await import('../cargo-buildx.ts');
    await writeStderr(`rustcbuildx: verify: building ${crates.length ? crates.join(', ') : 'every unit'} again on ${against ?? 'the local engine'}, whatever its cache holds, in ${target}\n`);
    const code = await cargoBuildx(['build', ...cargoArgs]);
    // A unit built twice (a variable it reads, passed the second time) counts once: as it ended.
    const verified = [...new Map(readVerified(file).map((v) => [v.unit, v])).values()];
    const done = new Set(verified.map((v) => v.unit));
    const notVerified = unitRecords(target).filter((r) => (r.outcome === 'fallback' || r.outcome === 'local') && !done.has(r.unit));
    const differ = verified.filter((v) => v.differ.length > 0);
    const compared = verified.filter((v) => v.served !== null);
    if (json) {
      await writeStdout(JSON.stringify({ verified, notVerified: notVerified.map((r) => ({ unit: r.unit, crate: r.crate, reason: r.reason ?? '' })), cargoExit: code }) + '\n');
    } else {
      const lines = differ.map((v) => `DIFFERS  ${v.crate} ${v.version} (${v.kind}, ${v.unit}), served by the ${v.served === 'memo' ? 'local memo' : 'shared store'}: ${v.differ.join(', ')}`);
      for (const r of notVerified) lines.push(`not verified  ${r.crate} (${r.unit}): ${r.reason ?? 'built locally'}`);
      const uncached = verified.length - compared.length;
      lines.push(
        `verify: ${compared.length} units compared with what the cache serves: ${compared.length - differ.length} identical, ${differ.length} differ` +
          `${uncached ? `; ${uncached} not in any cache (nothing to compare)` : ''}${notVerified.length ? `; ${notVerified.length} not built in the sandbox` : ''}`,
      );
      await writeStdout(lines.join('\n') + '\n');
    }
    if (code !== 0) {
      await writeStderr(`rustcbuildx: verify: cargo exited with ${code}\n`);
      return code;
    }
    if (compared.length === 0) {
      await writeStderr(
        verified.length === 0
          ? 'rustcbuildx: verify: no unit was built in the sandbox, so nothing was verified (see the reasons above)\n'
          : 'rustcbuildx: verify: no unit is in any cache under these keys, so nothing was compared: a build here (or `cache pull`) fills the memo; another base image (`base show`) makes other keys\n',
      );
      return 1;
    }
    return differ.length > 0 ? 1 : 0;
  } finally {
    for (const name of ['CARGO_TARGET_DIR', 'RUSTCBUILDX_VERIFY', 'RUSTCBUILDX_VERIFY_CRATES', 'DOCKER_HOST', 'DOCKER_CONTEXT', 'BUILDX_BUILDER', 'RUSTCBUILDX_RUNNER']) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function readVerified(file: string): VerifyRecord[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as VerifyRecord);
  } catch {
    return [];
  }
}

/** The records of the verify build's one run. */
function unitRecords(target: string): ReturnType<typeof readRecords> {
  const runs = join(target, STATE_DIR_NAME, 'runs');
  try {
    return readdirSync(runs)
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => readRecords(join(runs, f)));
  } catch {
    return [];
  }
}
