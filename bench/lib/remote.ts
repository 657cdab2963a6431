/**
 * The remote engine of the remote scenarios: scripts/remote-engine.sh's second dockerd (its own network
 * namespace and store) behind sshd, reached as DOCKER_HOST=ssh://rcbx-remote-slow through the delaying
 * relay (bench/lib/delay-relay.ts), so every round trip costs what a real network's would. Its base
 * image is made there by `rustcbuildx base build`, as a user would.
 */
import { join } from 'node:path';
import { baseEnv, capture, DIST, ROOT, RUSTCBUILDX, type Env } from './proc.ts';

const SCRIPT = join(ROOT, 'scripts', 'remote-engine.sh');
const STATE = process.env.RCBX_REMOTE_STATE || '/var/lib/rcbx-remote';

export interface RemoteEngine {
  /** ssh://rcbx-remote-slow */
  dockerHost: string;
  /** added each way by the relay */
  latencyMs: number;
  /** the script's `ssh` (its ssh_config: user, key, known_hosts), first on PATH like ~/.ssh/config would be */
  binDir: string;
  /** stop it when the benchmark ends: it was not running before */
  stopAtEnd: boolean;
}

/** What the remote's users get on top of the harness's environment: its DOCKER_HOST, the script's ssh on PATH. */
export function remoteEnv(r: RemoteEngine, extra: Env = {}): Env {
  return baseEnv({ DOCKER_HOST: r.dockerHost, PATH: `${DIST}:${r.binDir}:${process.env.PATH ?? ''}`, ...extra });
}

function lastLines(text: string, n = 8): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

/**
 * Starts the engine and the relay (idempotent) and makes sure the base image is there. A reason instead
 * when it cannot: not root, the script fails, or the base image cannot be built.
 */
export async function startRemote(latencyMs: number, logFile: string, say: (line: string) => void): Promise<RemoteEngine | { skipped: string }> {
  if (process.getuid?.() !== 0) return { skipped: 'the remote engine needs root (a network namespace, a second dockerd, sshd); run the benchmark as root for remote-cold and remote-warm' };
  // An engine someone else started is left running at the end (a relay this run added to it stays too).
  const wasUp = (await capture(['bash', SCRIPT, 'status'])).code === 0;
  say(`remote engine: ${wasUp ? 'already running' : 'starting'} (scripts/remote-engine.sh start --latency-ms ${latencyMs})`);
  const started = await capture(['bash', SCRIPT, 'start', '--latency-ms', String(latencyMs)]);
  const host = /^RCBX_REMOTE_SLOW_HOST=(.+)$/m.exec(started.stdout)?.[1];
  if (started.code !== 0 || !host) return { skipped: `scripts/remote-engine.sh start --latency-ms ${latencyMs} failed (exit ${started.code}): ${lastLines(started.stderr + started.stdout, 4)}` };
  const remote: RemoteEngine = { dockerHost: host, latencyMs, binDir: join(STATE, 'bin'), stopAtEnd: !wasUp };
  // Our base image on that engine: made there once (its store is its own), then found by `base show`.
  const env = remoteEnv(remote);
  if ((await capture([RUSTCBUILDX, 'base', 'show'], { env })).code !== 0) {
    say(`remote engine: building its base image (rustcbuildx base build, DOCKER_HOST=${host}; output in ${logFile})`);
    const built = await capture([RUSTCBUILDX, 'base', 'build'], { env });
    await Bun.write(logFile, `=== rustcbuildx base build on ${host}: exit ${built.code}\n${built.stdout}${built.stderr}`);
    if (built.code !== 0) {
      await stopRemote(remote);
      return { skipped: `rustcbuildx base build on the remote engine failed (exit ${built.code}, see ${logFile}): ${lastLines(built.stderr, 4)}` };
    }
  }
  return remote;
}

/** Empties the remote builder's build cache (images, the base among them, stay): the next build there is cold. */
export async function pruneRemote(r: RemoteEngine): Promise<string | undefined> {
  const res = await capture(['docker', 'builder', 'prune', '-af'], { env: remoteEnv(r) });
  return res.code === 0 ? undefined : `docker builder prune -af on ${r.dockerHost} failed (exit ${res.code}): ${lastLines(res.stderr, 3)}`;
}

export async function stopRemote(r: RemoteEngine): Promise<void> {
  if (r.stopAtEnd) await capture(['bash', SCRIPT, 'stop']);
}
