/**
 * The least an engine call can cost here: the docker client alone (`docker buildx version`), and a whole
 * `docker buildx build` of a one-file, fully cached Dockerfile exported to a directory, which is the shape
 * of every unit's call with nothing to solve or compile. Per-unit overhead above this floor is ours (or the
 * size of the Dockerfile); the floor itself can only be removed by making fewer calls.
 *
 * The same cached build is also measured through rustcbuildx's own engine path (`rustcbuildx engine
 * build`: the CLI adapters with RUSTCBUILDX_BROKER=off, the broker by default), and each of these against
 * the remote engine over ssh:// with the relay's latency, when there is one: the broker's remote floor
 * minus its local floor is the per-unit price of the network. `engine build` sends a Dockerfile, so these
 * arms time the broker's build-per-unit route (the fallback); the units themselves are solved in a build
 * held open, and their own figure comes from the profiled runs' `engine_call` (bench/lib/targets.ts).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { baseEnv, BenchError, capture, RUSTCBUILDX, type Env } from './proc.ts';
import { remoteEnv, type RemoteEngine } from './remote.ts';
import { median, round } from './stats.ts';
import type { EngineFloor } from './types.ts';

/** Median wall time of `runs` calls, after one unmeasured call (it fills the cache, starts a broker). */
async function medianMs(argv: string[], runs: number, env: Env = baseEnv()): Promise<number> {
  const times: number[] = [];
  for (let i = -1; i < runs; i++) {
    const started = performance.now();
    const res = await capture(argv, { env });
    const ms = performance.now() - started;
    if (res.code !== 0) throw new BenchError(`\`${argv.join(' ')}\` exited ${res.code}: ${res.stderr.trim().split('\n').slice(-5).join('\n')}`);
    if (i >= 0) times.push(ms);
  }
  return round(median(times), 1);
}

/** An arm that may fail for reasons of the product or the remote, not the harness: null and a note then. */
async function arm(what: string, notes: string[], measure: () => Promise<number>): Promise<number | null> {
  try {
    return await measure();
  } catch (err) {
    if (!(err instanceof BenchError)) throw err;
    notes.push(`engine floor, ${what}: not measured, ${err.message}`);
    return null;
  }
}

/**
 * Whether this rustcbuildx has `engine build` (one build through the wrapper's engine path): `--help`
 * succeeds, or fails with that command's own usage line (not "unknown command").
 */
async function hasEngineBuild(): Promise<boolean> {
  const res = await capture([RUSTCBUILDX, 'engine', 'build', '--help']);
  return res.code === 0 || /usage: engine build /.test(res.stderr + res.stdout);
}

/**
 * Each raw `docker buildx build` over ssh:// is a new ssh login (several round trips) and costs seconds
 * with the relay's latency: fewer runs of that arm keep the floor from dominating a project's time.
 */
const REMOTE_DOCKER_RUNS = 5;

export interface FloorOptions {
  runs: number;
  /** measure the remote arms too */
  remote?: RemoteEngine | undefined;
  /** RUSTCBUILDX_CACHE_DIR of the rustcbuildx arms: the harness's own */
  cacheDir: string;
}

export async function engineFloor(scratch: string, opts: FloorOptions): Promise<{ floor: EngineFloor; notes: string[] }> {
  const notes: string[] = [];
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(join(scratch, 'ctx'), { recursive: true });
  writeFileSync(join(scratch, 'ctx', 'file'), 'rustcbuildx bench\n');
  const dockerfile = join(scratch, 'Dockerfile');
  writeFileSync(dockerfile, 'FROM scratch AS x\nCOPY file /file\n');
  const build = ['docker', 'buildx', 'build', '--progress=plain', '-f', dockerfile, '--output', `type=local,dest=${join(scratch, 'out')}`, join(scratch, 'ctx')];
  const floor: EngineFloor = {
    docker_client_ms: await medianMs(['docker', 'buildx', 'version'], opts.runs),
    cached_build_ms: await medianMs(build, opts.runs),
    remote_cached_build_ms: null,
    remote_latency_ms: opts.remote?.latencyMs ?? null,
    rustcbuildx: null,
  };
  const remote = opts.remote;
  if (remote) floor.remote_cached_build_ms = await arm(`docker buildx build on ${remote.dockerHost}`, notes, () => medianMs(build, Math.min(opts.runs, REMOTE_DOCKER_RUNS), remoteEnv(remote)));

  if (!(await hasEngineBuild())) {
    notes.push('engine floor through rustcbuildx: not measured, this rustcbuildx has no `engine build` command (`rustcbuildx engine build --help` failed without its usage)');
  } else {
    const ours = [RUSTCBUILDX, 'engine', 'build', '-f', dockerfile, '--output', join(scratch, 'out-rcbx'), join(scratch, 'ctx')];
    const settings = (broker: boolean): Env => ({ RUSTCBUILDX_CACHE_DIR: opts.cacheDir, RUSTCBUILDX_LOCAL_CACHE: 'off', ...(broker ? {} : { RUSTCBUILDX_BROKER: 'off' }) });
    floor.rustcbuildx = {
      local_cli_ms: await arm('rustcbuildx engine build, RUSTCBUILDX_BROKER=off', notes, () => medianMs(ours, opts.runs, baseEnv(settings(false)))),
      local_broker_ms: await arm('rustcbuildx engine build through the broker', notes, () => medianMs(ours, opts.runs, baseEnv(settings(true)))),
      remote_cli_ms: remote ? await arm(`rustcbuildx engine build on ${remote.dockerHost}, RUSTCBUILDX_BROKER=off`, notes, () => medianMs(ours, opts.runs, remoteEnv(remote, settings(false)))) : null,
      remote_broker_ms: remote ? await arm(`rustcbuildx engine build on ${remote.dockerHost} through the broker`, notes, () => medianMs(ours, opts.runs, remoteEnv(remote, settings(true)))) : null,
    };
  }
  rmSync(scratch, { recursive: true, force: true });
  return { floor, notes };
}
