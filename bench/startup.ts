/**
 * Start-up cost of the compiled executable, which cargo pays once per rustc call: the median wall time
 * of `rustcbuildx --version`, and of the probe path `rustcbuildx rustc -vV` against `rustc -vV`.
 * Usage: bun bench/startup.ts [runs]   (after `npm run build`)
 */
import { join, resolve } from 'node:path';

const runs = Number(process.argv[2] ?? 101);
const exe = join(resolve(import.meta.dir, '..'), 'dist', 'rustcbuildx');
const rustc = Bun.spawnSync(['rustup', 'which', 'rustc']).stdout.toString().trim() || 'rustc';

function medianMs(argv: string[]): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const r = Bun.spawnSync(argv, { stdout: 'ignore', stderr: 'ignore' });
    times.push(performance.now() - t);
    if (r.exitCode !== 0) throw new Error(`${argv.join(' ')} exited ${r.exitCode}`);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] as number;
}

const version = medianMs([exe, '--version']);
const probe = medianMs([exe, rustc, '-vV']);
const direct = medianMs([rustc, '-vV']);
console.log(JSON.stringify({ runs, version_ms: +version.toFixed(2), probe_ms: +probe.toFixed(2), rustc_vV_ms: +direct.toFixed(2), probe_ratio: +(probe / direct).toFixed(2) }));
