/**
 * One build held open on the engine for many units: BuildKit's gateway API, used as a frontend uses it.
 * `Control.Solve` with neither a definition nor a frontend stays open until we `Return`; each unit is an
 * `LLBBridge.Solve` inside it (the build's ref in the call's metadata), and its result is read in place
 * with `ReadDir`/`ReadFile` instead of being exported through the session.
 *
 * What a unit saves: a session and its context sync per unit (a content-named source syncs once per held
 * build, whichever units name it), the export's round trips, and the solver's lookups of every op the
 * build has already solved (the dependencies that dependents share). Over ssh a cached unit is then its
 * Solve and two rounds of reads, plus its bytes.
 *
 * The engine keeps every result of a held build until it ends, so a build is retired when it has been
 * idle for a while or has grown old; units in flight finish on it, new ones open the next.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bridge, encodeGraph, type BridgeResult, type BridgeSolveRequest, type BridgeSolveResponse, type ReadDirRequest, type ReadFileRequest, type SolveRequest, type SolveResponse, type Stat, type StatusResponse, type Vertex } from './proto.ts';
import { GO_MODE } from './context-sync.ts';
import { ProgressLog } from './progress-log.ts';
import type { BuildSession } from './session.ts';
import type { BuildRequest, BuildResult } from '../engine.ts';
import type { LlbGraph } from '../../render/llb.ts';

type Unary<Req, Res> = (req: Req, metadata: grpc.Metadata, callback: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;

export type BridgeClient = grpc.Client & {
  Solve: Unary<BridgeSolveRequest, BridgeSolveResponse>;
  ReadFile: Unary<ReadFileRequest, { Data: Uint8Array }>;
  ReadDir: Unary<ReadDirRequest, { entries: Stat[] }>;
  Return: Unary<{ result: BridgeResult }, Record<string, never>>;
};

/** What the held build needs of the control API. */
export interface HeldControl {
  Solve: (req: SolveRequest, callback: (err: grpc.ServiceError | null, res?: SolveResponse) => void) => grpc.ClientUnaryCall;
  Status: (req: { Ref: string }) => grpc.ClientReadableStream<StatusResponse>;
}

const BridgeConstructor = grpc.makeGenericClientConstructor(bridge, 'moby.buildkit.v1.frontend.LLBBridge') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ClientOptions,
) => BridgeClient;

/** A bridge client on the control client's own channel: no second connection (nor ssh channel). */
export function bridgeOn(control: grpc.Client): BridgeClient {
  return new BridgeConstructor('unused', grpc.credentials.createInsecure(), { channelOverride: control.getChannel() });
}

/** How long a held build waits for its next unit before it ends, and how long it takes units at all. */
export const HELD_IDLE_MS = 10_000;
export const HELD_MAX_AGE_MS = 15 * 60_000;
/** A result's files are read in ranges of this size, several at once. */
const READ_CHUNK = 4 * 1024 * 1024;
const READS_IN_FLIGHT = 16;
/** How long a unit's step waits for its own status to arrive after the answer (it usually came first). */
const STATUS_GRACE_MS = 1_000;
/** The context dirs a held build remembers (one per target dir that sent it units). */
const CONTEXTS_KEPT = 16;

export class GatewayRefused extends Error {
  override name = 'GatewayRefused';
}

export class HeldBuild {
  readonly ref = randomBytes(12).toString('hex');
  private readonly metadata = new grpc.Metadata();
  private readonly born = Date.now();
  private inFlight = 0;
  private solved = 0;
  private idle: ReturnType<typeof setTimeout> | undefined;
  private retiring = false;
  /** why the held Solve ended, once it has */
  private ended: string | undefined;
  private readonly finished: Promise<void>;
  private readonly status: grpc.ClientReadableStream<StatusResponse>;
  /** each unit's log, by the digests of its ops; and the last state of every vertex the build reported */
  private readonly watchers = new Map<string, Set<ProgressLog>>();
  private readonly seen = new Map<string, Vertex>();
  private readonly wakers = new Set<() => void>();
  private readonly contexts: string[] = [];

  constructor(
    control: HeldControl,
    private readonly bridge: BridgeClient,
    private readonly session: BuildSession,
    private readonly onEnd: (build: HeldBuild, why: string) => void,
  ) {
    this.metadata.set('buildkit-controlapi-buildid', this.ref);
    this.status = control.Status({ Ref: this.ref });
    this.status.on('data', (s: StatusResponse) => this.dispatch(s));
    this.status.on('error', () => undefined);
    const job = { dirFor: (name: string, paths: readonly string[]) => this.dirFor(name, paths) };
    this.finished = session
      .serve(job, () =>
        new Promise<SolveResponse>((resolve, reject) =>
          // Internal: kept out of the engine's build history, like every unit of ours.
          control.Solve({ Ref: this.ref, Session: session.id, Frontend: '', FrontendAttrs: {}, Exporter: '', ExporterAttrs: {}, Internal: true }, (err, res) =>
            err || !res ? reject(err ?? new Error('no answer')) : resolve(res),
          ),
        ),
      )
      .then(
        () => this.end('returned'),
        (err: grpc.ServiceError) => this.end(`the held build ended: ${err.details || err.message}`),
      );
  }

  /** Whether new units may use this build (it is neither ending nor too old). */
  get accepting(): boolean {
    return !this.ended && !this.retiring && Date.now() - this.born < HELD_MAX_AGE_MS && this.session.usable;
  }

  /**
   * One unit: its LLB solved in this build, its result written to `req.outputDir` as the tar export
   * would have written it. Throws GatewayRefused when the engine will not hold builds at all.
   */
  async solve(req: BuildRequest & { llb: LlbGraph; outputDir: string }, cancel?: AbortSignal): Promise<BuildResult> {
    const started = performance.now();
    const progress = new ProgressLog();
    let encoded: ReturnType<typeof encodeGraph>;
    try {
      encoded = encodeGraph(req.llb);
    } catch (err) {
      progress.error((err as Error).message);
      return { code: 1, log: progress.text(), seconds: (performance.now() - started) / 1000 };
    }
    const { definition, digests } = encoded;
    const own = req.llb.own === undefined ? undefined : digests[req.llb.own];
    this.useContext(req.context);
    this.inFlight++;
    clearTimeout(this.idle);
    this.watch(progress, digests);
    let code = 0;
    let interrupted: string | undefined;
    try {
      progress.mark('solve');
      const answer = await this.call<BridgeSolveResponse>(cancel, (md, cb) => this.bridge.Solve({ Definition: definition, Frontend: '', allowResultReturn: true, allowResultArrayRef: true, Evaluate: true }, md, cb));
      progress.mark('answer');
      const id = answer.result?.ref?.id ?? answer.result?.refDeprecated ?? answer.ref;
      if (!id) throw new Error('the engine answered without a result');
      this.solved++;
      progress.mark('export');
      await readResult((r) => this.call<{ entries: Stat[] }>(cancel, (md, cb) => this.bridge.ReadDir(r, md, cb)), (r) => this.call<{ Data: Uint8Array }>(cancel, (md, cb) => this.bridge.ReadFile(r, md, cb)), id, req.outputDir, req.llb.resultDirs);
      progress.mark('export written');
      if (own) await this.until(() => progress.settled(own), STATUS_GRACE_MS);
    } catch (err) {
      code = 1;
      const e = err as grpc.ServiceError;
      const why = e.details || e.message;
      // The very first solve tells whether the engine holds builds for us at all (an old BuildKit,
      // an engine that refuses the gateway): the client then builds units one by one.
      if (this.solved === 0 && !cancel?.aborted && (e.code === grpc.status.UNIMPLEMENTED || (this.ended && e.code !== grpc.status.UNAVAILABLE))) throw new GatewayRefused(this.ended ?? why);
      progress.error(why);
      if (cancel?.aborted) interrupted = undefined;
      else if (e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.CANCELLED || !this.session.usable || this.ended) interrupted = `the connection to the engine broke (${this.ended ?? why})`;
      // A step that failed reports its log (rustc's stderr tail, the sandbox's marker) on the status
      // stream, which may trail the answer.
      else await this.until(() => progress.failedStep, STATUS_GRACE_MS);
    } finally {
      this.unwatch(progress, digests);
      if (--this.inFlight === 0) this.idle = setTimeout(() => this.retire(), HELD_IDLE_MS);
    }
    const result: BuildResult = { code, log: progress.text(), seconds: (performance.now() - started) / 1000 };
    if (interrupted) result.interrupted = interrupted;
    return result;
  }

  /** No new units; the build ends when those in flight are done. */
  retire(): void {
    this.retiring = true;
    if (this.inFlight > 0 || this.ended) return;
    clearTimeout(this.idle);
    this.bridge.Return({ result: {} }, this.metadata, () => undefined);
    // An engine that does not answer the Return: the session's end ends the build for it.
    const timer = setTimeout(() => this.end('did not end after its return'), 10_000);
    void this.finished.then(() => clearTimeout(timer));
  }

  private end(why: string): void {
    if (this.ended) return;
    this.ended = why;
    clearTimeout(this.idle);
    this.status.cancel();
    this.session.close();
    for (const wake of this.wakers) wake();
    this.onEnd(this, why);
  }

  /** A unary bridge call in this build, cancelled when the unit's wrapper goes away. */
  private call<T>(cancel: AbortSignal | undefined, start: (md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: T) => void) => grpc.ClientUnaryCall): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const call = start(this.metadata, (err, res) => {
        cancel?.removeEventListener('abort', abort);
        return err || res === undefined ? reject(err ?? new Error('no answer')) : resolve(res);
      });
      const abort = () => call.cancel();
      if (cancel?.aborted) call.cancel();
      cancel?.addEventListener('abort', abort);
    });
  }

  private useContext(dir: string): void {
    const at = this.contexts.indexOf(dir);
    if (at === 0) return;
    if (at > 0) this.contexts.splice(at, 1);
    this.contexts.unshift(dir);
    this.contexts.length = Math.min(this.contexts.length, CONTEXTS_KEPT);
  }

  /**
   * The context dir that holds what the engine asks for. Context paths are named by their content, so
   * any target dir's context that holds them holds the same bytes.
   */
  private dirFor(name: string, paths: readonly string[]): string | undefined {
    if (name !== 'context') return undefined;
    return this.contexts.find((dir) => paths.every((p) => existsSync(join(dir, p))));
  }

  private watch(log: ProgressLog, digests: readonly string[]): void {
    const known: Vertex[] = [];
    for (const d of digests) {
      let set = this.watchers.get(d);
      if (!set) this.watchers.set(d, (set = new Set()));
      set.add(log);
      const v = this.seen.get(d);
      if (v) known.push(v);
    }
    // Ops an earlier unit of this build solved are not reported again: this unit's log starts from their state.
    if (known.length > 0) log.add({ vertexes: known, statuses: [], logs: [] });
  }

  private unwatch(log: ProgressLog, digests: readonly string[]): void {
    for (const d of digests) {
      const set = this.watchers.get(d);
      set?.delete(log);
      if (set?.size === 0) this.watchers.delete(d);
    }
  }

  /** The build's status, each part to the logs of the units whose ops it is about. */
  private dispatch(s: StatusResponse): void {
    const parts = new Map<ProgressLog, StatusResponse>();
    const partFor = (log: ProgressLog) => {
      let p = parts.get(log);
      if (!p) parts.set(log, (p = { vertexes: [], statuses: [], logs: [] }));
      return p;
    };
    for (const v of s.vertexes) {
      this.seen.set(v.digest, v);
      for (const log of this.watchers.get(v.digest) ?? []) partFor(log).vertexes.push(v);
    }
    for (const st of s.statuses) for (const log of this.watchers.get(st.vertex) ?? []) partFor(log).statuses.push(st);
    for (const l of s.logs) for (const log of this.watchers.get(l.vertex) ?? []) partFor(log).logs.push(l);
    for (const [log, part] of parts) log.add(part);
    for (const wake of this.wakers) wake();
  }

  /** Resolves when `cond` holds (checked on each status update) or after `ms`. */
  private async until(cond: () => boolean, ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (!cond() && !this.ended) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      this.wakers.add(wake);
      const timer = setTimeout(wake, left);
      await woken;
      clearTimeout(timer);
      this.wakers.delete(wake);
    }
  }
}

type ReadDir = (req: ReadDirRequest) => Promise<{ entries: Stat[] }>;
type ReadFile = (req: ReadFileRequest) => Promise<{ Data: Uint8Array }>;

const TYPE_BITS = GO_MODE.dir | GO_MODE.symlink | GO_MODE.device | GO_MODE.pipe | GO_MODE.socket | GO_MODE.charDevice | GO_MODE.irregular;

/**
 * A result's tree written to `dest` (made anew, its parent must exist), as the tar export writes it:
 * directories, files with their permission bits, symlinks. `dirs` are the directories the result's root
 * is known to hold, read without listing the root first (one round trip less).
 */
export async function readResult(readDir: ReadDir, readFile: ReadFile, ref: string, dest: string, dirs?: readonly string[]): Promise<void> {
  rmSync(dest, { recursive: true, force: true });
  // Not recursive: when the wrapper that asked has gone and removed its work dir, nothing is recreated.
  mkdirSync(dest);
  const limit = limiter(READS_IN_FLIGHT);
  const listDir = async (rel: string): Promise<void> => {
    const { entries } = await limit(() => readDir({ Ref: ref, DirPath: rel || '/', IncludePattern: '' }));
    await Promise.all(entries.map((st) => place(rel, st)));
  };
  const place = async (parent: string, st: Stat): Promise<void> => {
    // A listing names the directory's own entries: anything else would be written outside it.
    const name = st.path;
    if (name === '' || name === '.' || name === '..' || name.includes('/')) throw new Error(`the result holds an entry named ${JSON.stringify(name)}`);
    const rel = parent ? `${parent}/${name}` : name;
    const path = join(dest, rel);
    const type = st.mode & TYPE_BITS;
    if (type === GO_MODE.dir) {
      mkdirSync(path);
      return listDir(rel);
    }
    if (type === GO_MODE.symlink) return symlinkSync(st.linkname, path);
    if (type !== 0) throw new Error(`the result holds ${rel}, which is neither a file, a directory nor a symlink`);
    await readInto(rel, path, st.size, st.mode & 0o777);
  };
  const readInto = async (rel: string, path: string, size: number, mode: number) => {
    const fd = openSync(path, 'wx', 0o600);
    try {
      const offsets: number[] = [];
      for (let at = 0; at < size; at += READ_CHUNK) offsets.push(at);
      await Promise.all(
        offsets.map(async (offset) => {
          const length = Math.min(READ_CHUNK, size - offset);
          const { Data } = await limit(() => readFile({ Ref: ref, FilePath: rel, Range: { Offset: offset, Length: length } }));
          // Never bytes we cannot vouch for: a short or long read is an error, not a file.
          if (Data.length !== length) throw new Error(`reading ${rel} at ${offset} gave ${Data.length} bytes, not ${length}`);
          writeSync(fd, Data, 0, length, offset);
        }),
      );
    } finally {
      closeSync(fd);
    }
    chmodSync(path, mode);
  };
  if (dirs) {
    await Promise.all(
      dirs.map((d) => {
        mkdirSync(join(dest, d));
        return listDir(d);
      }),
    );
  } else await listDir('');
}

/** At most `n` of the calls given run at once. */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let running = 0;
  const queue: Array<() => void> = [];
  return async (fn) => {
    if (running >= n) await new Promise<void>((resolve) => queue.push(resolve));
    running++;
    try {
      return await fn();
    } finally {
      running--;
      queue.shift()?.();
    }
  };
}
