/**
 * What the wrapper and the broker say to each other, and where the broker listens. One JSON object per
 * line over a unix socket in the user's runtime dir. Kept free of heavy imports: the wrapper loads it.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../../toolchain.ts';
import { chosenBuildxBuilder, dockerContext, dockerHost } from '../endpoint.ts';
import type { BuildRequest, BuildResult, ImageInfo } from '../engine.ts';
import { privateDir } from '../private-dir.ts';

export type BrokerRequest = { op: 'build'; req: BuildRequest } | { op: 'engine'; images: string[] } | { op: 'status' } | { op: 'stop' };

/**
 * What a cargo run's first wrapper asks before its first unit: the engine's version and the images it
 * may build on, answered on the broker's connection (a docker CLI call per question costs a new ssh
 * channel and a process: ~300 ms each over a remote link, ~70 ms here).
 */
export interface EngineFacts {
  server: string;
  /** each image asked for, as `docker image inspect` gives it; null when the engine's store lacks it */
  images: Record<string, ImageInfo | null>;
}

export type BrokerReply =
  /** the build is running: sent every HEARTBEAT_MS, so a wrapper can tell a long compile from a hung broker */
  | { beat: number }
  | { result: BuildResult }
  | { engine: EngineFacts }
  /** the engine does not offer the API route: the wrapper uses the CLI, quietly (capability, not failure) */
  | { unsupported: string }
  | { error: string }
  | { status: BrokerStatus }
  | { stopping: true };

export interface BrokerStatus {
  pid: number;
  endpoint: string;
  /** BuildKit's version, or why the broker is not connected */
  engine: string;
  connected: boolean;
  startedAt: string;
  builds: number;
  inFlight: number;
  sessions: number;
  idleSeconds: number;
  idleLimitSeconds: number;
}

/** What a broker learnt of its engine, kept beside its socket for `cargo buildx` (src/cli/jobs.ts). */
export interface EngineInfo {
  cpus: number;
  /** the engine runs on another machine (its endpoint is not a local socket nor a loopback address) */
  elsewhere: boolean;
}

export function engineInfoPath(socket: string): string {
  return `${socket}.engine.json`;
}

export const HEARTBEAT_MS = 1_000;
/** Bumped when the messages change: a broker of another version has another socket. */
const PROTOCOL = 2;

/**
 * `$XDG_RUNTIME_DIR/rustcbuildx`, else `/tmp/rustcbuildx-<uid>`: only this user may enter it (whoever
 * reaches the socket builds with this user's engine). Undefined when it is not ours and private.
 */
export function runtimeDir(env: Record<string, string | undefined> = process.env): string | undefined {
  return privateDir(env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'rustcbuildx') : join(tmpdir(), `rustcbuildx-${process.getuid?.() ?? 0}`));
}

/** The socket of the broker for this user, engine endpoint and rustcbuildx executable. */
export function brokerSocket(dir: string, env: Record<string, string | undefined> = process.env): string {
  // What the broker's own connections depend on (it keeps the environment it started with): the
  // endpoint, its TLS material, the ssh agent and sharing; and which code it runs (an upgraded
  // executable, or from source the entry script, gets a broker of its own).
  const code = [process.execPath, Bun.main].map((p) => {
    const st = statSync(p, { throwIfNoEntry: false });
    return st ? `${p}:${st.size}:${st.mtimeMs}` : p;
  });
  const identity = [
    PROTOCOL,
    dockerHost(env) ?? '',
    dockerContext(env) ?? '',
    env.DOCKER_TLS_VERIFY ?? '',
    env.DOCKER_TLS ?? '',
    env.DOCKER_CERT_PATH ?? '',
    env.SSH_AUTH_SOCK ?? '',
    env.RUSTCBUILDX_SSH_MUX ?? '',
    ...code,
  ].join('\0');
  return join(dir, `broker-${sha256(identity).slice(0, 16)}.sock`);
}

/**
 * Whether auto-detection (no runner chosen) would find a docker endpoint to start a broker for: it may
 * settle on podman, and a broker for a docker that does not exist only waits and idles.
 */
export function dockerEndpointExists(env: Record<string, string | undefined> = process.env): boolean {
  return Boolean(dockerHost(env)) || existsSync('/var/run/docker.sock');
}

/** The broker socket for builds on this runner, or undefined when they go through the CLI. */
export function brokerSocketFor(broker: boolean, runner: string, env: Record<string, string | undefined> = process.env): string | undefined {
  if (!broker || (runner !== 'docker' && runner !== 'docker-build') || chosenBuildxBuilder(env)) return undefined;
  const dir = runtimeDir(env);
  return dir ? brokerSocket(dir, env) : undefined;
}
