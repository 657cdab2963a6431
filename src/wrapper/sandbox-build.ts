/**
 * One sandboxed step, from its rendered build to its exported result: replayed from the local memo when
 * it holds these exact inputs, else built by the engine and remembered. Every way it can go wrong ends in
 * a reason to run the program here instead (the caller does), never in a failed build.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { sha256 } from '../toolchain.ts';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { RunState } from '../run-state.ts';
import type { Logger } from '../log.ts';
import { describeEndpoint } from '../engine/endpoint.ts';
import { manifestOf, resultKey, type EntryMeta, type LocalCache, type ManifestFile } from '../store/local-cache.ts';
import { outputsOf, renderBuildDockerfile, renderUnitStages, stageName, type ClosureEntry, type UnitSpec } from '../render/dockerfile.ts';
import { LlbError, renderUnitLlb, type LlbGraph } from '../render/llb.ts';
import { SHARED_CONTEXT_DIRS, STAGING_GLOBS } from '../plan/sources.ts';
import { missingPartHint } from '../plan/system-packages.ts';
import { readSandboxResult, sandboxFailure, servedFromCache, type SandboxResult } from './replay.ts';
import { removeScratch, scratch } from '../scratch.ts';
import { keepBugReport, type CachedSetup, type RunEngine } from './engine-run.ts';
import { docOf, type RunStores } from './run-stores.ts';
import { differingFiles, recordVerified, verifyFile } from './verify.ts';

export interface SandboxStep {
  /** the unit's key: names its stages and its work dir */
  key: string;
  /** how messages name it (`serde-0123abcd`) */
  unit: string;
  dockerfileText: string;
  /** the same build as LLB, made only when the engine is called (it may stage dependencies' outputs) */
  llb: () => LlbGraph | undefined;
  /** the same step rendered with a nonce in its script (UnitSpec.fresh): for `rustcbuildx verify` */
  fresh: (nonce: string) => Rendered;
  /**
   * What is wrong with a served result's file list for this step (another unit's file names), if
   * anything: a memo entry or a store's result that fails it is not used (and not kept).
   */
  accept?: (paths: readonly string[]) => string | undefined;
  /** what the result is of, and whether it may leave this machine (incremental: never, unless named) */
  meta: EntryMeta;
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
  /** where the result came from: the local memo, a shared store, BuildKit's cache, or a run of the step */
  source: ResultSource;
  /** sha256 of each exported file, by its path in the export (`out/<name>`) */
  digests: Map<string, string>;
  /** the engine's id (engineId) when its cache holds this step's result, as far as we know */
  onEngine: string | undefined;
  /**
   * Offers the result to the writable shared stores (RunStores.offer): called by the caller once it has
   * accepted the result, before it moves the files out of the export.
   */
  share: () => Promise<void>;
}

export interface Rendered {
  dockerfileText: string;
  llb: () => LlbGraph | undefined;
}

export type ResultSource = 'memo' | 'store' | 'engine' | 'built';

export type SandboxOutcome = SandboxBuilt | { fallback: string; warn: boolean };

/** Where results are kept: the user's memo, and the shared stores configured for the run. */
export interface ResultStores {
  memo: LocalCache | undefined;
  shared: RunStores | undefined;
}

export async function buildInSandbox(step: SandboxStep, setup: RunEngine, state: RunState, stores: ResultStores, log: Logger): Promise<SandboxOutcome> {
  const { key, unit, dockerfileText } = step;
  const { memo, shared } = stores;
  // One key for the memo and the shared stores; none without the base image's content ID.
  const storeKey = setup.baseImageId ? resultKey(dockerfileText, setup.baseImageId, setup.baseImage) : undefined;
  const memoKey = memo ? storeKey : undefined;
  const engine = engineId(setup);
  // `rustcbuildx verify`: what the cache would serve is set beside, and the step runs whatever it holds.
  const verifying = storeKey ? verifyFile(step.meta) : undefined;
  const failedBefore = memoKey && !verifying ? memo?.failedRecently(memoKey) : undefined;
  if (failedBefore) return { fallback: `these exact inputs failed in the sandbox before: ${failedBefore}`, warn: false };
  const work = scratch(state.path('tmp', `${key}-${process.pid}-${Date.now()}`));
  mkdirSync(work, { recursive: true });
  const exportDir = join(work, 'export');
  const dockerfile = join(work, 'Dockerfile');
  // Verifying, the step runs whatever the cache holds: its script names a nonce (the key stays this text's).
  const toBuild: Rendered = verifying ? step.fresh(randomUUID()) : { dockerfileText, llb: step.llb };
  writeFileSync(dockerfile, toBuild.dockerfileText);
  const served = verifying && storeKey ? await servedBy(storeKey, join(work, 'served'), stores, unit, step.meta) : undefined;
  let restored = memoKey && !verifying ? memo?.restore(memoKey, exportDir, (damage) => log.debug(damage)) : undefined;
  const foreign = restored && step.accept?.(restored.map((f) => f.path));
  if (foreign && memoKey) {
    log.debug(`local memo entry ${memoKey} ${foreign}; removed it`);
    memo?.remove(memoKey);
    rmSync(exportDir, { recursive: true, force: true });
    restored = undefined;
  }
  if (restored && memoKey) {
    const result = readSandboxResult(exportDir);
    log.debug(`local cache hit ${memoKey} for ${dockerfile}`);
    if (result) {
      const share = async () => shared?.offer(memoKey, exportDir, docOf(restored as ManifestFile[], step.meta), memo);
      return { result, work, source: 'memo', digests: digestsOf(restored), onEngine: memo?.engineHad(memoKey, engine) ? engine : undefined, share };
    }
  }
  // A shared store's copy, unpacked only once every byte matches its manifest, then kept in the memo.
  if (shared && storeKey && !restored && !verifying && (await shared.fetch(storeKey, exportDir, unit, step.meta, step.accept))) {
    const result = readSandboxResult(exportDir);
    if (result?.status === 0) {
      const files = memo && memoKey ? memo.store(memoKey, exportDir, step.meta) : manifestOf(exportDir);
      return { result, work, source: 'store', digests: digestsOf(files), onEngine: undefined, share: nothingToShare };
    }
    rmSync(exportDir, { recursive: true, force: true });
  }
  log.debug(`build ${setup.engine.runner}: ${dockerfile}\n${toBuild.dockerfileText}`);
  let llb: LlbGraph | undefined;
  try {
    llb = toBuild.llb();
  } catch (err) {
    // Staging a dependency's outputs failed (one was replaced since, the disk is full): here decides.
    removeScratch(work);
    return { fallback: `could not stage the inputs of ${unit}: ${(err as Error).message}`, warn: false };
  }
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
      // A library, header or tool the image lacks: the package that would let it build here next time.
      const hint = missingPartHint(failure.tail.join('\n'));
      const reason = `${step.program} exited with status ${failure.status} in the sandbox${detail ? ` (${detail.slice(0, 200)})` : ''}${hint ? `; ${hint}` : ''}; ${step.decides}`;
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
  if (verifying && storeKey) {
    const files = manifestOf(exportDir);
    const { crate, version, kind } = step.meta;
    recordVerified(verifying, { unit: key, crate, version, kind, key: storeKey, served: served?.from ?? null, differ: served ? differingFiles(served.files, files) : [] });
    // The build goes on with what the cache serves, when it serves something: each dependent is then
    // checked against the inputs its key names, and one unit that differs does not make all after it differ.
    const servedResult = served ? readSandboxResult(join(work, 'served')) : undefined;
    if (served && servedResult) {
      rmSync(exportDir, { recursive: true, force: true });
      renameSync(join(work, 'served'), exportDir);
      return { result: servedResult, work, source: served.from, digests: digestsOf(served.files), onEngine: undefined, share: nothingToShare };
    }
    return { result, work, source: 'built', digests: digestsOf(files), onEngine: undefined, share: nothingToShare };
  }
  const files = memoKey && memo ? memo.store(memoKey, exportDir, step.meta) : manifestOf(exportDir);
  if (memoKey) memo?.markEngine(memoKey, engine);
  const share = async () => (storeKey ? shared?.offer(storeKey, exportDir, docOf(files, step.meta), memo) : undefined);
  return { result, work, source: servedFromCache(built.log, stageName.unit(key)) ? 'engine' : 'built', digests: digestsOf(files), onEngine: engine, share };
}

/** What the memo, else a shared store, would serve for the key (verified against its manifest), laid out in `into`. */
async function servedBy(key: string, into: string, stores: ResultStores, unit: string, meta: EntryMeta): Promise<{ from: 'memo' | 'store'; files: ManifestFile[] } | undefined> {
  const fromMemo = stores.memo?.restore(key, into);
  if (fromMemo) return { from: 'memo', files: fromMemo };
  if (await stores.shared?.fetch(key, into, unit, meta)) return { from: 'store', files: manifestOf(into) };
  return undefined;
}

/**
 * A step's Dockerfile (which is its key) and, when it can be had, the same as LLB for the broker's
 * route, made when first asked for: from closure entries `forLlb` (with the run's base image
 * configuration, and dependencies the engine lacks given by their outputs). An LlbError is ours, not the
 * unit's: logged, and the Dockerfile is built instead, as the CLI builds it.
 */
export function renderStep(spec: UnitSpec, closure: readonly ClosureEntry[], forLlb: () => readonly ClosureEntry[], log: Logger): Rendered & { snippet: string } {
  const snippet = renderUnitStages(spec);
  const dockerfileText = renderBuildDockerfile(spec.key, closure, snippet, outputsOf(spec));
  let made: { llb: LlbGraph | undefined } | undefined;
  const llb = () => {
    if (made) return made.llb;
    try {
      made = { llb: renderUnitLlb(forLlb(), spec, { noNetwork: true }) };
    } catch (err) {
      if (!(err instanceof LlbError)) throw err;
      log.debug(`no LLB for ${spec.key}: ${err.message}`);
      made = { llb: undefined };
    }
    return made.llb;
  };
  return { snippet, dockerfileText, llb };
}

/** A result from a store is there already; one that verify built is not offered. */
const nothingToShare = async (): Promise<void> => undefined;

/** Which engine a result is on: where it is (DOCKER_HOST, context, builder), not what it is called here. */
export function engineId(setup: RunEngine): string {
  return sha256(describeEndpoint(setup.engine.endpoint)).slice(0, 16);
}

function digestsOf(files: readonly ManifestFile[]): Map<string, string> {
  return new Map(files.map((f) => [f.path, f.sha256]));
}
