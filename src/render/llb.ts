/**
 * LLB rendering: a unit's build as BuildKit's own graph, for engines reached through BuildKit's API. It
 * is what the Dockerfile of dockerfile.ts asks for, without the Dockerfile frontend's conversion (~0.5 ms
 * a stage, on every unit, for the whole closure) and without its copies: a unit's outputs and its
 * streams are mounts of their own, which dependents and the export take as they are.
 *
 * Data in, data out: ops name their inputs by index in the graph, and everything is plain JSON (it
 * travels from the wrapper to the broker); src/engine/buildkit/proto.ts encodes it and computes digests.
 */
import { SANDBOX } from '../plan/sandbox-paths.ts';
import { outputsOf as outputsDirOf, packs, RESULT_PACK, stageName, unitScript, type ClosureEntry, type UnitSpec } from './dockerfile.ts';

/** An op's output: `op` is an index into `LlbGraph.ops`, always of an earlier op. */
export interface LlbRef {
  op: number;
  output: number;
}

export interface LlbMount {
  /** index into the op's inputs; -1 for an empty directory */
  input: number;
  selector?: string;
  dest: string;
  /** the output index this mount's result gets, or -1 when it is discarded */
  output: number;
  readonly?: boolean;
  /** 3: a cache mount (`cacheOpt`), kept by the engine across builds and never part of a result; else a bind */
  mountType?: number;
  /** `sharing` 2: locked, one build at a time */
  cacheOpt?: { ID: string; sharing: number };
}

/** A copy as the Dockerfile's COPY (or ADD, which unpacks a local tarball) makes it. */
export interface LlbCopy {
  src: string;
  dest: string;
  /** -1: keep the source's */
  mode: number;
  /** -1: keep the source's */
  timestamp: number;
  followSymlink: boolean;
  dirCopyContents: boolean;
  attemptUnpackDockerCompatibility: boolean;
  createDestPath: boolean;
  allowWildcard: boolean;
  allowEmptyWildcard: boolean;
}

export interface LlbFileAction {
  /** what the action acts on: an input's index, an earlier action's (inputs count + action index), or -1 for scratch */
  input: number;
  secondaryInput: number;
  /** the op's output index for this action's result, or -1 */
  output: number;
  copy?: LlbCopy;
  /** data: text in a graph that travels as JSON, bytes where it does not */
  mkfile?: { path: string; mode: number; data: string | Uint8Array; timestamp: number };
}

export type LlbOp = { inputs: LlbRef[]; name?: string } & (
  | { source: { identifier: string; attrs: Record<string, string> } }
  | { exec: { meta: { args: string[]; env: string[]; cwd: string; user: string }; mounts: LlbMount[]; network: number } }
  | { file: { actions: LlbFileAction[] } }
);

export interface LlbGraph {
  ops: LlbOp[];
  result: LlbRef;
  /** the op that is the unit's own step: whether it ran or came from the cache is the build's outcome */
  own?: number;
  /** the directories at the result's root, which a reader of the result may take without listing it */
  resultDirs?: string[];
  /** where in the result its packed copy is, when the step could make one (`RESULT_PACK`) */
  resultPack?: string;
}


/** What the Dockerfile frontend gives a RUN step when the image sets no PATH. */
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const NET_NONE = 2;
const MOUNT_CACHE = 3;
/** one build at a time, as the Dockerfile's `sharing=locked` */
const CACHE_LOCKED = 2;
const CONTEXT = 'context';

export class LlbError extends Error {
  override name = 'LlbError';
}

/**
 * The graph that builds `own` (and whatever of its closure the engine has not cached) and ends in the
 * export: `/out` (its outputs) and `/meta` (rustc's streams and status), as the Dockerfile's export stage.
 */
export function renderUnitLlb(closure: readonly ClosureEntry[], own: UnitSpec, opts: { noNetwork: boolean }): LlbGraph {
  const g = new Builder();
  const outputsOf = new Map<string, LlbRef>();
  for (const entry of closure) {
    if (entry.kind === 'outputs') outputsOf.set(entry.key, g.copyFromContext(entry.ctxPath, 'tree', `[${stageName.outputs(entry.key)}] outputs`));
    else outputsOf.set(entry.spec.key, unit(entry.spec).out);
  }
  const built = unit(own);
  const exported = g.add(`export`, {
    inputs: [built.out, built.meta],
    file: {
      actions: [
        { input: -1, secondaryInput: 0, output: -1, copy: copyOf('/', '/out', { dirCopyContents: true }) },
        { input: 2, secondaryInput: 1, output: 0, copy: copyOf('/', '/meta', { dirCopyContents: true }) },
      ],
    },
    name: `[${stageName.export(own.key)}] export`,
  });
  return { ops: g.ops, result: { op: exported, output: 0 }, own: built.out.op, resultDirs: ['out', 'meta'], ...(packs(own) ? { resultPack: `meta/${RESULT_PACK}` } : {}) };

  function unit(spec: UnitSpec): { out: LlbRef; meta: LlbRef } {
    const config = spec.baseImageConfig;
    if (!config) throw new LlbError(`the plan of ${spec.key} does not say what its base image's environment is`);
    const image = g.add(`image ${spec.baseImage}`, {
      inputs: [],
      source: { identifier: `docker-image://${normalizeImageRef(spec.baseImage)}`, attrs: {} },
      name: `[internal] ${spec.baseImage}`,
    });
    const inputs: LlbRef[] = [{ op: image, output: 0 }];
    // The root must have an output to be writable (rustc's linker writes in /tmp), though nobody reads it.
    const mounts: LlbMount[] = [{ input: 0, dest: '/', output: 0 }];
    const mountFrom = (ref: LlbRef, dest: string, selector?: string) => {
      mounts.push({ input: inputs.push(ref) - 1, dest, output: -1, readonly: true, ...(selector ? { selector } : {}) });
    };
    if (spec.source) {
      const { staged, mountTarget } = spec.source;
      const src = g.copyFromContext(staged.ctxPath, staged.kind, `[${stageName.source(spec.key)}] source`);
      mountFrom(src, mountTarget, staged.kind === 'archive' ? `/${staged.topDir}` : undefined);
    }
    spec.inputs.forEach((input, n) => {
      if (input.kind === 'tree') return mountFrom(g.copyFromContext(input.ctxPath, 'tree', `[${stageName.input(spec.key, n)}] input`), input.target);
      const ref = outputsOf.get(input.key);
      if (!ref) throw new LlbError(`${spec.key} needs ${input.key}, which its closure does not hold`);
      mountFrom(ref, input.target);
    });
    // Outputs and streams are mounts of their own: each is then a result by itself, with nothing to copy.
    mounts.push({ input: -1, dest: outputsDirOf(spec), output: 0 }, { input: -1, dest: SANDBOX.meta, output: 0 });
    // The Dockerfile frontend names a cache mount `/<id>`: the same name here, so both routes share the state.
    if (spec.incremental) mounts.push({ input: -1, dest: SANDBOX.incremental, output: -1, mountType: MOUNT_CACHE, cacheOpt: { ID: `/${spec.incremental.id}`, sharing: CACHE_LOCKED } });
    // BuildKit mounts in the order given, so a mount below another comes after it (as llb sorts them).
    mounts.sort((a, b) => (a.dest < b.dest ? -1 : a.dest > b.dest ? 1 : 0));
    let outputs = 0;
    for (const m of mounts) if (m.output >= 0) m.output = outputs++;
    const env = config.env.some((e) => e.startsWith('PATH=')) ? config.env : [...config.env, DEFAULT_PATH];
    const exec = g.add(`unit ${spec.key}`, {
      inputs,
      exec: { meta: { args: ['/bin/sh', '-c', unitScript(spec, ' ', { pack: packs(spec) })], env, cwd: '/', user: config.user }, mounts, network: opts.noNetwork ? NET_NONE : 0 },
      name: `[${stageName.unit(spec.key)}] RUN ${spec.program.join(' ')} ${spec.key}`,
    });
    const outputOf = (dest: string) => ({ op: exec, output: mounts.find((m) => m.dest === dest)!.output });
    return { out: outputOf(outputsDirOf(spec)), meta: outputOf(SANDBOX.meta) };
  }
}

function copyOf(src: string, dest: string, flags: Partial<LlbCopy>): LlbCopy {
  return {
    src,
    dest,
    mode: -1,
    timestamp: -1,
    followSymlink: true,
    dirCopyContents: false,
    attemptUnpackDockerCompatibility: false,
    createDestPath: true,
    allowWildcard: false,
    allowEmptyWildcard: false,
    ...flags,
  };
}

/** Ops added once each, by a key that says what they are (a dependency shared by many dependents). */
class Builder {
  readonly ops: LlbOp[] = [];
  private readonly byKey = new Map<string, number>();

  add(key: string, op: LlbOp): number {
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const at = this.ops.push(op) - 1;
    this.byKey.set(key, at);
    return at;
  }

  /**
   * `COPY <ctxPath> /` (a tree's contents) or `ADD <ctxPath> /` (a tarball, unpacked) onto scratch, from
   * a local source of that one path. Context paths are named by their content, so a source is the same
   * op wherever it appears: a build held open syncs it once for all its units, and the engine keeps a
   * copy per path (`sharedkeyhint`) that any later sync of it finds complete, from any target dir.
   */
  copyFromContext(ctxPath: string, kind: 'archive' | 'tree', name: string): LlbRef {
    const source = this.add(`local ${ctxPath}`, {
      inputs: [],
      source: { identifier: `local://${CONTEXT}`, attrs: { 'local.followpaths': JSON.stringify([ctxPath]), 'local.sharedkeyhint': ctxPath } },
      name: `[internal] load ${ctxPath}`,
    });
    const flags = kind === 'archive' ? { attemptUnpackDockerCompatibility: true } : { dirCopyContents: true };
    const op = this.add(`copy ${kind} ${ctxPath}`, {
      inputs: [{ op: source, output: 0 }],
      file: { actions: [{ input: -1, secondaryInput: 0, output: 0, copy: copyOf(`/${ctxPath}`, '/', flags) }] },
      name,
    });
    return { op, output: 0 };
  }
}

/** `name[:tag]` as BuildKit's image source names it: `docker.io/library/name:latest` for `name`. */
export function normalizeImageRef(ref: string): string {
  const slash = ref.indexOf('/');
  const first = slash < 0 ? '' : ref.slice(0, slash);
  const hasRegistry = first.includes('.') || first.includes(':') || first === 'localhost';
  let named = hasRegistry ? ref : slash < 0 ? `docker.io/library/${ref}` : `docker.io/${ref}`;
  const lastPart = named.slice(named.lastIndexOf('/') + 1);
  if (!lastPart.includes(':') && !lastPart.includes('@')) named += ':latest';
  return named;
}
