/**
 * sccache as the comparison point: installed once with `cargo install --locked` into a cache dir outside
 * the repo (it takes minutes to compile on two cores, so it is reused across runs), run with its own
 * cache dir and server port so that a user's sccache is neither used nor disturbed.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { baseEnv, capture, timed, type Env } from './proc.ts';

export const SCCACHE_VERSION = '0.19.0';

export interface Sccache {
  bin: string;
  version: string;
}

/** The installed sccache, installing it when `install` allows; a reason when it cannot be had. */
export async function findOrInstallSccache(root: string, install: boolean, logFile: string, say: (line: string) => void): Promise<Sccache | { skipped: string }> {
  const bin = join(root, 'bin', 'sccache');
  const version = async () => {
    const res = await capture([bin, '--version']);
    return res.code === 0 ? res.stdout.trim() : undefined;
  };
  const existing = existsSync(bin) ? await version() : undefined;
  if (existing) return { bin, version: existing };
  if (!install) return { skipped: `sccache is not installed at ${bin} and installing it was not allowed` };
  say(`installing sccache ${SCCACHE_VERSION} into ${root} (once; several minutes on two cores; log: ${logFile})`);
  mkdirSync(root, { recursive: true });
  try {
    await timed(['cargo', 'install', '--locked', 'sccache', '--version', `=${SCCACHE_VERSION}`, '--root', root], { cwd: root, env: baseEnv(), logFile, label: 'install sccache' });
  } catch (err) {
    return { skipped: `cargo install --locked sccache failed: ${(err as Error).message.split('\n')[0]}` };
  }
  const installed = await version();
  return installed ? { bin, version: installed } : { skipped: `sccache was installed at ${bin} but does not run` };
}

/**
 * The environment of an sccache build. Incremental compilation is off because sccache cannot cache
 * incremental compiles (its docs require CARGO_INCREMENTAL=0); a private port keeps its server ours.
 */
export function sccacheEnv(s: Sccache, cacheDir: string, targetDir: string): Env {
  return baseEnv({
    RUSTC_WRAPPER: s.bin,
    CARGO_INCREMENTAL: '0',
    CARGO_TARGET_DIR: targetDir,
    SCCACHE_DIR: cacheDir,
    SCCACHE_SERVER_PORT: '4391',
    SCCACHE_IDLE_TIMEOUT: '0',
    SCCACHE_CACHE_SIZE: '20G',
  });
}

/** The server reads SCCACHE_DIR when it starts: it is restarted whenever the cache dir changes. */
export async function restartServer(s: Sccache, env: Env): Promise<void> {
  await stopServer(s, env);
  const res = await capture([s.bin, '--start-server'], { env });
  if (res.code !== 0) throw new Error(`sccache --start-server failed: ${res.stderr.trim()}`);
}

export async function stopServer(s: Sccache, env: Env): Promise<void> {
  await capture([s.bin, '--stop-server'], { env }); // not running is fine
}
