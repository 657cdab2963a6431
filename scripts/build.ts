/**
 * Compiles the single `rustcbuildx` executable into dist/ and links `cargo-buildx` beside it. Skips the
 * compile when dist/rustcbuildx is newer than every source, so `npm run setup` run again changes nothing.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

const OUT = 'dist/rustcbuildx';

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

const upToDate = existsSync(OUT) && statSync(OUT).mtimeMs > newestSource() && !process.argv.includes('--force');
if (!upToDate) {
  mkdirSync('dist', { recursive: true });
  // Built beside and renamed over: a cargo run may be executing the old binary right now (ETXTBSY).
  const tmp = `${OUT}.tmp-${process.pid}`;
  const result = Bun.spawnSync(['bun', 'build', '--compile', '--minify', '--sourcemap', 'src/main.ts', '--outfile', tmp], { stdout: 'inherit', stderr: 'inherit' });
  if (result.exitCode !== 0) process.exit(result.exitCode ?? 1);
  renameSync(tmp, OUT);
  renameSync(`${tmp}.map`, `${OUT}.map`);
}
// cargo finds subcommands as `cargo-<name>` on PATH; the executable dispatches on the name it was run as.
rmSync('dist/cargo-buildx', { force: true });
symlinkSync('rustcbuildx', 'dist/cargo-buildx');
