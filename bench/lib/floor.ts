/**
 * The least an engine call can cost here: the docker client alone (`docker buildx version`), and a whole
 * `docker buildx build` of a one-file, fully cached Dockerfile exported to a directory, which is the shape
 * of every unit's call with nothing to solve or compile. Per-unit overhead above this floor is ours (or the
 * size of the Dockerfile); the floor itself can only be removed by making fewer calls.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BenchError, capture } from './proc.ts';
import { median, round } from './stats.ts';
import type { EngineFloor } from './types.ts';

async function medianMs(argv: string[], runs: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const res = await capture(argv);
    times.push(performance.now() - started);
    if (res.code !== 0) throw new BenchError(`\`${argv.join(' ')}\` exited ${res.code}: ${res.stderr.trim().split('\n').slice(-5).join('\n')}`);
  }
  return round(median(times), 1);
}

export async function engineFloor(scratch: string, runs: number): Promise<EngineFloor> {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(join(scratch, 'ctx'), { recursive: true });
  writeFileSync(join(scratch, 'ctx', 'file'), 'rustcbuildx bench\n');
  writeFileSync(join(scratch, 'Dockerfile'), 'FROM scratch AS x\nCOPY file /file\n');
  const build = ['docker', 'buildx', 'build', '--progress=plain', '-f', join(scratch, 'Dockerfile'), '--output', `type=local,dest=${join(scratch, 'out')}`, join(scratch, 'ctx')];
  await capture(build); // fills the cache: the runs measured below are all cache hits
  const result = { docker_client_ms: await medianMs(['docker', 'buildx', 'version'], runs), cached_build_ms: await medianMs(build, runs) };
  rmSync(scratch, { recursive: true, force: true });
  return result;
}
