/**
 * The one executable. Cargo calls it as a RUSTC_WRAPPER (`rustcbuildx /path/to/rustc ARGS…`), as a
 * subcommand (`cargo-buildx buildx …`), and users call its admin CLI (`rustcbuildx base …`). The wrapper
 * path is hot (once per rustc call): it loads nothing of the CLI.
 */
import { basename } from 'node:path';
import { dispatchCompilerCall, looksLikeCompiler } from './wrapper/dispatch.ts';
import { BUILD_SCRIPT_COMMAND } from './build-script-command.ts';

const args = process.argv.slice(2);
const invokedAs = basename(process.argv0);

let code: number;
if (invokedAs === 'cargo-buildx') {
  // cargo runs `cargo-buildx buildx <cmd> …`
  const { cargoBuildx } = await import('./cargo-buildx.ts');
  code = await cargoBuildx(args[0] === 'buildx' ? args.slice(1) : args);
} else if (args[0] === BUILD_SCRIPT_COMMAND) {
  // cargo runs a build script, whose shim sends it here (src/plan/build-script.ts)
  const { runBuildScript } = await import('./wrapper/build-script.ts');
  code = await runBuildScript(args.slice(1));
} else if (looksLikeCompiler(args[0])) {
  code = await dispatchCompilerCall(args);
} else {
  const { cli } = await import('./cli.ts');
  code = await cli(args);
}
process.exit(code);
