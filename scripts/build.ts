/**
 * Compiles the `rustcbuildx` executable into dist/, bundles the build broker beside it
 * (dist/rustcbuildx-broker.js, which the executable runs as bun: kept out of the executable's own
 * bundle, where its gRPC code would slow every wrapper's start-up), and links `cargo-buildx`. Skips the
 * work when dist/ is newer than every source, so `npm run setup` run again changes nothing.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

const OUT = 'dist/rustcbuildx';
const BROKER = 'dist/rustcbuildx-broker.js';

function newestSource(): number {
  let newest = statSync('package.json').mtimeMs;
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else newest = Math.max(newest, statSync(path).mtimeMs);
    }
  };
  walk('src');
  return newest;
}

const built = (path: string) => (existsSync(path) ? statSync(path).mtimeMs : 0);
const upToDate = Math.min(built(OUT), built(BROKER)) > newestSource() && !process.argv.includes('--force');
if (!upToDate) {
  mkdirSync('dist', { recursive: true });
  // Built beside and renamed over: a cargo run may be executing the old binary right now (ETXTBSY).
  const tmp = `${OUT}.tmp-${process.pid}`;
  const result = Bun.spawnSync(['bun', 'build', '--compile', '--minify', '--sourcemap', 'src/main.ts', '--outfile', tmp], { stdout: 'inherit', stderr: 'inherit' });
  if (result.exitCode !== 0) process.exit(result.exitCode ?? 1);
  const brokerTmp = `${tmp}.broker`;
  const broker = Bun.spawnSync(
    ['bun', 'build', '--target=bun', '--minify', '--sourcemap=linked', 'src/engine/broker/main.ts', '--outdir', brokerTmp, '--entry-naming', 'rustcbuildx-broker.[ext]'],
    { stdout: 'ignore', stderr: 'inherit' },
  );
  if (broker.exitCode !== 0) process.exit(broker.exitCode ?? 1);
  renameSync(tmp, OUT);
  renameSync(`${tmp}.map`, `${OUT}.map`);
  renameSync(join(brokerTmp, 'rustcbuildx-broker.js.map'), `${BROKER}.map`);
  renameSync(join(brokerTmp, 'rustcbuildx-broker.js'), BROKER);
  rmSync(brokerTmp, { recursive: true, force: true });
}
// cargo finds subcommands as `cargo-<name>` on PATH; the executable dispatches on the name it was run as.
rmSync('dist/cargo-buildx', { force: true });
symlinkSync('rustcbuildx', 'dist/cargo-buildx');
