/** Compiles the single `rustcbuildx` executable into dist/ and links `cargo-buildx` beside it. */
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';

mkdirSync('dist', { recursive: true });
const result = Bun.spawnSync(['bun', 'build', '--compile', '--minify', '--sourcemap', 'src/main.ts', '--outfile', 'dist/rustcbuildx'], { stdout: 'inherit', stderr: 'inherit' });
if (result.exitCode !== 0) process.exit(result.exitCode ?? 1);
// cargo finds subcommands as `cargo-<name>` on PATH; the executable dispatches on the name it was run as.
rmSync('dist/cargo-buildx', { force: true });
symlinkSync('rustcbuildx', 'dist/cargo-buildx');
