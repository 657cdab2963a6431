/**
 * The team-warm scenario's world: a real registry (Debian's docker-registry, scripts/registry.sh) on
 * this machine, the base image pushed there from the local engine and pulled into the remote one (so
 * both sandboxes have one image ID, and so one key per unit), and a delaying relay in front of the
 * registry for the second machine, whose reads then pay the network's round trip as its engine calls do.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { capture, ROOT, RUSTCBUILDX, baseEnv } from './proc.ts';
import { remoteEnv, type RemoteEngine } from './remote.ts';

const REGISTRY = join(ROOT, 'scripts', 'registry.sh');

export interface TeamStore {
  /** what the first machine pushes to (`oci://127.0.0.1:PORT/bench`, no latency) */
  pushTo: string;
  /** what the second machine reads from, read-only, through the relay */
  readFrom: string;
  dir: string;
  port: number;
  relay: Bun.Subprocess;
}

function lastLines(text: string, n = 6): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

export async function startTeam(remote: RemoteEngine, work: string, say: (line: string) => void): Promise<TeamStore | { skipped: string }> {
  const dir = join(work, 'registry');
  mkdirSync(dir, { recursive: true });
  const port = 5700 + (process.pid % 200);
  const started = await capture(['bash', REGISTRY, 'start', dir, String(port)]);
  if (started.code !== 0) return { skipped: `scripts/registry.sh start failed (exit ${started.code}): ${lastLines(started.stderr + started.stdout)}` };
  const ref = `127.0.0.1:${port}/bench/base:team`;
  say(`team: pushing the local base image to ${ref}, pulling it into ${remote.dockerHost}`);
  const pushed = await capture([RUSTCBUILDX, 'base', 'push', ref], { env: baseEnv() });
  if (pushed.code !== 0) return stopped(dir, port, `rustcbuildx base push ${ref} failed: ${lastLines(pushed.stderr + pushed.stdout)}`);
  const pulled = await capture([RUSTCBUILDX, 'base', 'pull', ref], { env: remoteEnv(remote) });
  if (pulled.code !== 0) return stopped(dir, port, `rustcbuildx base pull ${ref} on ${remote.dockerHost} failed: ${lastLines(pulled.stderr + pulled.stdout)}`);
  const relay = Bun.spawn(['bun', join(ROOT, 'bench', 'lib', 'delay-relay.ts'), '--listen', '127.0.0.1:0', '--to', `127.0.0.1:${port}`, '--delay-ms', String(remote.latencyMs)], { stdout: 'pipe', stderr: 'inherit', stdin: 'ignore' });
  const listening = await firstLine(relay.stdout);
  const relayPort = /^listening \S*:(\d+)\b/.exec(listening)?.[1];
  if (!relayPort) {
    relay.kill();
    return stopped(dir, port, `the delay relay in front of the registry did not start (it said: ${listening})`);
  }
  return { pushTo: `oci://127.0.0.1:${port}/bench`, readFrom: `ro:oci://127.0.0.1:${relayPort}/bench`, dir, port, relay };
}

export async function stopTeam(team: TeamStore): Promise<void> {
  team.relay.kill();
  await capture(['bash', REGISTRY, 'stop', team.dir, String(team.port)]);
}

async function stopped(dir: string, port: number, why: string): Promise<{ skipped: string }> {
  await capture(['bash', REGISTRY, 'stop', dir, String(port)]);
  return { skipped: why };
}

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  let text = '';
  while (!text.includes('\n')) {
    const next = await reader.read();
    if (next.done) break;
    text += new TextDecoder().decode(next.value);
  }
  reader.releaseLock();
  return text.split('\n')[0] ?? '';
}
