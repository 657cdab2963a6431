/**
 * The wrapper's hot path: decide, without loading the rest of the wrapper, whether a call is a probe for
 * the local rustc or a compile to sandbox. Light imports only: this runs once per rustc call.
 */
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import { readVersionMemo, rememberVersion, versionMemoFile } from '../rustc/version-memo.ts';
import { classifyRustcCall } from '../rustc/args.ts';
import { writeStderr } from '../io.ts';
import { GUARD, runLocal, splitCompilerCall, type CompilerCall } from './compiler-call.ts';

export function looksLikeCompiler(arg: string | undefined): boolean {
  if (arg === undefined) return false;
  const name = basename(arg);
  return arg.includes('/') || name === 'rustc' || name === 'clippy-driver' || name.startsWith('rustc') || name.endsWith('-rustc');
}

export async function dispatchCompilerCall(argv: string[]): Promise<number> {
  const call = splitCompilerCall(argv);
  if (isSelf(call.rustc)) {
    await writeStderr(`rustcbuildx: RUSTC points at rustcbuildx itself (${call.rustc}); set RUSTC to a real rustc\n`);
    return 1;
  }
  if (process.env[GUARD]) return runLocal(argv);
  const version = await versionProbe(call);
  if (version !== undefined) return version;
  if (classifyRustcCall(call.rustcArgs) === 'probe') return runLocal(argv);
  const { wrap } = await import('./wrap.ts');
  return wrap(call);
}

/** Whether `program` is this very executable (by its real path). */
export function isSelf(program: string): boolean {
  try {
    return realpathSync(program) === realpathSync(process.execPath);
  } catch {
    return false;
  }
}

/**
 * `rustc -vV`, which cargo asks several times per run: its answer depends only on the binary, so it is
 * remembered per binary (path, size, mtime, inode) and answered without starting rustc.
 */
async function versionProbe(call: CompilerCall): Promise<number | undefined> {
  if (call.driver || call.rustcArgs.length !== 1 || call.rustcArgs[0] !== '-vV') return undefined;
  const file = versionMemoFile(call.rustc);
  if (file === undefined) return undefined;
  const known = readVersionMemo(file);
  if (known) {
    await Bun.write(Bun.stdout, known);
    return 0;
  }
  const res = Bun.spawnSync([call.rustc, '-vV'], { env: { ...process.env, [GUARD]: '1' }, stdout: 'pipe', stderr: 'inherit' });
  await Bun.write(Bun.stdout, res.stdout);
  if (res.exitCode === 0) rememberVersion(file, res.stdout);
  return res.exitCode ?? 1;
}
