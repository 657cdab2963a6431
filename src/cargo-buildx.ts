/** `cargo buildx <cargo command> [args]`: cargo with rustcbuildx as its RUSTC_WRAPPER, then a summary line. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { passthrough } from './exec.ts';
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
