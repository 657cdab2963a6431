/** `cargo buildx <cargo command> [args]`: cargo with rustcbuildx as its RUSTC_WRAPPER, then a summary line. */
import { mkdtempSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { passthrough, run } from './exec.ts';
import { SANDBOX } from './sandbox-paths.ts';
import { optionValue } from './argv.ts';
import { formatSummary, readRecords, summarize } from './run-state.ts';
import { writeStderr, writeStdout } from './io.ts';

export async function cargoBuildx(args: string[]): Promise<number> {
  if (args.length === 0 || args[0] === '--help' || args[0] === '-h') {
    await writeStdout('usage: cargo buildx <cargo command> [args]   e.g. cargo buildx build --release\n');
    return args.length === 0 ? 2 : 0;
  }
  const self = process.execPath;
  const existing = process.env.RUSTC_WRAPPER;
  if (existing && !existing.endsWith('rustcbuildx')) {
    await writeStderr(`cargo-buildx: error: RUSTC_WRAPPER is already set to ${existing}; unset it to build with rustcbuildx (they cannot be chained)\n`);
    return 2;
  }
  const dir = mkdtempSync(join(tmpdir(), 'cargo-buildx-'));
  const summaryFile = join(dir, 'units.jsonl');
  const started = performance.now();
  try {
    const code = await passthrough([process.env.CARGO || 'cargo', ...args], {
      ...process.env,
      ...(await prefixMapFlags(args)),
      RUSTC_WRAPPER: self,
      RUSTCBUILDX_RUN_ID: `b${process.pid}-${Date.now()}`,
      RUSTCBUILDX_SUMMARY_FILE: summaryFile,
    });
    const records = readRecords(summaryFile);
    if (records.length > 0) await writeStderr(formatSummary(summarize(records, (performance.now() - started) / 1000)) + '\n');
    return code;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Build scripts run on the host, and C compilers write the host paths of sources into objects (DWARF's
 * comp_dir, __FILE__). A build script's OUT_DIR is an input of its crate, so those paths would make the
 * crate's key differ per CARGO_HOME, checkout and target dir. Mapping them to the sandbox's fixed paths
 * (`-ffile-prefix-map`, which cc and cmake crates pass on from CFLAGS/CXXFLAGS) keeps C outputs the same.
 */
async function prefixMapFlags(args: readonly string[]): Promise<Record<string, string>> {
  const maps: Array<[string, string]> = [[process.env.CARGO_HOME || join(homedir(), '.cargo'), SANDBOX.cargoHome]];
  const manifest = optionValue(args, '--manifest-path');
  const meta = await run([process.env.CARGO || 'cargo', 'metadata', '--no-deps', '--format-version', '1', '--offline', ...(manifest ? ['--manifest-path', manifest] : [])], {
    timeoutMs: 60_000,
  });
  if (meta.code === 0) {
    const { workspace_root, target_directory } = JSON.parse(meta.stdout) as { workspace_root: string; target_directory: string };
    maps.push([resolve(optionValue(args, '--target-dir') ?? process.env.CARGO_TARGET_DIR ?? target_directory), SANDBOX.target], [workspace_root, SANDBOX.workspace]);
  }
  // Longest host prefix first: gcc applies the first map that matches.
  const flags = maps
    .sort((a, b) => b[0].length - a[0].length)
    .map(([host, sandbox]) => `-ffile-prefix-map=${host}=${sandbox}`)
    .join(' ');
  const withUser = (name: string) => (process.env[name] ? `${process.env[name]} ${flags}` : flags);
  return { CFLAGS: withUser('CFLAGS'), CXXFLAGS: withUser('CXXFLAGS') };
}
