/**
 * One ssh connection for every docker call to an ssh:// engine (DOCKER_HOST, or a docker context). The docker client opens a
 * new ssh connection (handshake, login, a remote `docker system dial-stdio`) for each command, which cost
 * 3.5 s per unit here; with OpenSSH's connection sharing (a master per host, ControlPersist), every call
 * after the first is a new channel on the same connection: ~40 ms instead of ~300 ms on loopback, and no
 * handshake over a real network. The docker client runs `ssh` from PATH, so the engine's client processes
 * get a PATH whose first `ssh` is a small script that adds the sharing options and runs the user's own
 * ssh (their ~/.ssh/config, keys and known_hosts apply as before).
 */
import { chmodSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { writeAtomic } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import { dockerHost } from './endpoint.ts';
import { privateDir } from './private-dir.ts';

/** How long the shared connection outlives its last use. */
export const PERSIST_SECONDS = 600;

/** The options that make ssh share one connection per user@host:port, kept in `controlDir`. */
export function muxOptions(controlDir: string): string[] {
  return ['-o', 'ControlMaster=auto', '-o', `ControlPath=${controlDir}/%C`, '-o', `ControlPersist=${PERSIST_SECONDS}`];
}

/** The script placed first on PATH as `ssh`: the user's ssh with the sharing options. */
export function shimScript(realSsh: string, controlDir: string): string {
  const words = [realSsh, ...muxOptions(controlDir)].map((w) => `'${w.replace(/'/g, `'\\''`)}'`).join(' ');
  return `#!/bin/sh\n# rustcbuildx: docker calls to DOCKER_HOST=ssh://… share one ssh connection (src/engine/ssh-mux.ts)\nexec ${words} "$@"\n`;
}

/** The first executable `ssh` on PATH that is not one of our shims. */
export function findSsh(path: string | undefined, isShimDir: (dir: string) => boolean): string | undefined {
  for (const dir of (path ?? '').split(delimiter)) {
    if (!dir || isShimDir(dir)) continue;
    const candidate = join(dir, 'ssh');
    const st = statSync(candidate, { throwIfNoEntry: false });
    if (st?.isFile() && st.mode & 0o111) return candidate;
  }
  return undefined;
}

/**
 * Environment additions for the engine's client processes: a PATH with the shim first when DOCKER_HOST
 * is `ssh://` and sharing is possible; nothing otherwise (RUSTCBUILDX_SSH_MUX=off turns it off).
 */
export function sshMuxEnv(env: Record<string, string | undefined>, cacheDir: string): Record<string, string> {
  if (!dockerHost(env)?.startsWith('ssh://') || env.RUSTCBUILDX_SSH_MUX === 'off') return {};
  const shimRoot = join(cacheDir, 'ssh-mux');
  const realSsh = findSsh(env.PATH, (dir) => dir.startsWith(shimRoot + '/'));
  const controlDir = privateControlDir();
  if (!realSsh || !controlDir) return {};
  const shimDir = join(shimRoot, sha256(`${realSsh}\0${controlDir}`).slice(0, 16));
  const shim = join(shimDir, 'ssh');
  if (!existsSync(shim)) {
    writeAtomic(shim, shimScript(realSsh, controlDir));
    chmodSync(shim, 0o755);
  }
  return { PATH: `${shimDir}${delimiter}${env.PATH ?? ''}` };
}

/**
 * A directory for the control sockets that only this user can enter: anyone who can reach a master's
 * socket can use its login. Short (a socket path holds ~100 bytes), so under /tmp, not the cache dir.
 * Undefined when it exists with other owners or modes: then no sharing, never someone else's socket.
 */
function privateControlDir(): string | undefined {
  return privateDir(join(tmpdir(), `rustcbuildx-ssh-${process.getuid?.() ?? 0}`));
}
