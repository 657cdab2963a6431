/**
 * A compiler call as cargo makes it through RUSTC_WRAPPER, and running it with the local rustc: shared by
 * the hot path (dispatch.ts) and the sandboxed path (wrap.ts), so neither imports the other.
 */
import { fstatSync } from 'node:fs';
import { basename } from 'node:path';
import { passthrough } from '../exec.ts';

/** Set for the local rustc we run, so a wrapper under it can never recurse into us. */
export const GUARD = 'RUSTCBUILDX_ACTIVE';

export interface CompilerCall {
  /** cargo's argv after our own name: `[rustc, …]` or `[clippy-driver, rustc, …]` */
  argv: string[];
  /** `clippy-driver` when cargo clippy put a driver before rustc */
  driver: string | undefined;
  /** the rustc that cargo chose */
  rustc: string;
  rustcArgs: string[];
}

export function splitCompilerCall(argv: string[]): CompilerCall {
  const [program = '', next, ...rest] = argv;
  if (basename(program).startsWith('clippy-driver') && next !== undefined && basename(next).startsWith('rustc')) {
    return { argv, driver: basename(program), rustc: next, rustcArgs: rest };
  }
  return { argv, driver: undefined, rustc: program, rustcArgs: argv.slice(1) };
}

export function runLocal(argv: readonly string[]): Promise<number> {
  return passthrough(argv, { ...process.env, [GUARD]: '1' }, jobserverFds(process.env.CARGO_MAKEFLAGS));
}

/** The pipe descriptors of cargo's jobserver (`--jobserver-auth=R,W`), if they are open here. */
export function jobserverFds(makeflags: string | undefined): number[] {
  const m = /--jobserver-(?:auth|fds)=(\d+),(\d+)/.exec(makeflags ?? '');
  if (!m) return [];
  return [Number(m[1]), Number(m[2])].filter((fd) => {
    try {
      fstatSync(fd);
      return true;
    } catch {
      return false;
    }
  });
}
