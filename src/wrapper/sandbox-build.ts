/**
 * One sandboxed step, from its rendered build to its exported result: replayed from the local memo when
 * it holds these exact inputs, else built by the engine and remembered. Every way it can go wrong ends in
 * a reason to run the program here instead (the caller does), never in a failed build.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunState } from '../run-state.ts';
import type { Logger } from '../log.ts';
import { describeEndpoint } from '../engine/endpoint.ts';
import { manifestOf, type LocalCache, type ManifestFile } from '../store/local-cache.ts';
import { stageName } from '../render/dockerfile.ts';
import type { LlbGraph } from '../render/llb.ts';
import { SHARED_CONTEXT_DIRS, STAGING_GLOBS } from '../plan/sources.ts';
import { readSandboxResult, sandboxFailure, servedFromCache, type SandboxResult } from './replay.ts';
import { removeScratch, scratch } from '../scratch.ts';
import { keepBugReport, type CachedSetup, type RunEngine } from './engine-run.ts';

export interface SandboxStep {
  /** the unit's key: names its stages and its work dir */
  key: string;
  /** how messages name it (`serde-0123abcd`) */
  unit: string;
  dockerfileText: string;
  llb: LlbGraph | undefined;
  /** built with incremental state: correct, but never offered beyond this user's memo */
  incremental: boolean;
  /** what runs in the step, and who decides when it fails there: for messages */
  program: string;
  decides: string;
  /** what a failure's reason quotes, from the tail of the program's stderr: rustc's first error unless said */
  explain?: (tail: readonly string[]) => string | undefined;
}

export interface SandboxBuilt {
  result: SandboxResult;
  /** holds the Dockerfile and the export (`<work>/export`); removed by the caller */
  work: string;
  /** served by BuildKit's cache or the local memo of it, not run */
  fromCache: boolean;
  /** sha256 of each exported file, by its path in the export (`out/<name>`) */
  digests: Map<string, string>;
}

export type SandboxOutcome = SandboxBuilt | { fallback: string; warn: boolean };

export async function buildInSandbox(step: SandboxStep, setup: RunEngine, state: RunState, memo: LocalCache | undefined, log: Logger): Promise<SandboxOutcome> {
  const { key, unit, dockerfileText, llb } = step;
  const memoKey = memo && setup.baseImageId ? memo.key(dockerfileText, setup.baseImageId) : undefined;
  const failedBefore = memoKey ? memo?.failedRecently(memoKey) : undefined;
  if (failedBefore) return { fallback: `these exact inputs failed in the sandbox before: ${failedBefore}`, warn: false };
  const work = scratch(state.path('tmp', `${key}-${process.pid}-${Date.now()}`));
  mkdirSync(work, { recursive: true });
  const exportDir = join(work, 'export');
  const dockerfile = join(work, 'Dockerfile');
  writeFileSync(dockerfile, dockerfileText);
  const restored = memoKey ? memo?.restore(memoKey, exportDir, (damage) => log.debug(damage)) : undefined;
  if (restored) {
    const result = readSandboxResult(exportDir);
    log.debug(`local cache hit ${memoKey} for ${dockerfile}`);
    if (result) return { result, work, fromCache: true, digests: digestsOf(restored) };
  }
  log.debug(`build ${setup.engine.runner}: ${dockerfile}\n${dockerfileText}`);
  const built = await setup.engine.build({
    dockerfile,
    context: state.path('ctx'),
    target: stageName.export(key),
    outputDir: exportDir,
    noNetwork: true,
    keepSynced: { dirs: SHARED_CONTEXT_DIRS, except: STAGING_GLOBS },
    ...(llb ? { llb } : {}),
    ...(setup.baseImageId ? { imageIds: { [setup.baseImage]: setup.baseImageId } } : {}),
  });
  log.debug(`engine exit ${built.code} in ${built.seconds.toFixed(2)} s\n${built.log}`);
  const result = built.code === 0 ? readSandboxResult(exportDir) : undefined;
  if (!result) {
    removeScratch(work);
    // The program failed inside: maybe the crate's error, maybe the sandbox's (a file or variable it was
    // not given, the network, memory, disk). The step failed, so BuildKit kept nothing; here decides.
    const failure = sandboxFailure(built.log);
    if (failure) {
      const detail = step.explain ? step.explain(failure.tail) : failure.firstError;
      const reason = `${step.program} exited with status ${failure.status} in the sandbox${detail ? ` (${detail.slice(0, 200)})` : ''}; ${step.decides}`;
      if (memoKey) memo?.rememberFailure(memoKey, reason);
      return { fallback: reason, warn: false };
    }
    keepBugReport(state, key, dockerfileText, built.log);
    const failed = `the build of ${unit} on ${describeEndpoint(setup.engine.endpoint)} failed (exit ${built.code}); kept as a bug report in ${state.path('failures')}`;
    // An engine that has gone (a remote that died, a dropped connection) would fail every unit after
    // this one, each after its own wait: the rest of the run uses the local rustc, said once.
    if (await setup.engine.answers()) return { fallback: failed, warn: false };
    const gone = `${describeEndpoint(setup.engine.endpoint)} stopped answering during the build (${failed})`;
    state.writeCached('engine', { unavailable: gone } satisfies CachedSetup);
    return { fallback: gone, warn: true };
  }
  if (result.status !== 0) {
    removeScratch(work);
    return { fallback: `${step.program} exited with status ${result.status} in the sandbox; ${step.decides}`, warn: false };
  }
  const files = memoKey && memo ? memo.store(memoKey, exportDir, { incremental: step.incremental }) : manifestOf(exportDir);
  return { result, work, fromCache: servedFromCache(built.log, stageName.unit(key)), digests: digestsOf(files) };
}

function digestsOf(files: readonly ManifestFile[]): Map<string, string> {
  return new Map(files.map((f) => [f.path, f.sha256]));
}
