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
import { chmodSync, closeSync, existsSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeSync } from 'node:fs';
import { createZstdDecompress } from 'node:zlib';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { bridge, encodeGraph, type BridgeResult, type BridgeSolveRequest, type BridgeSolveResponse, type ReadDirRequest, type ReadFileRequest, type SolveRequest, type SolveResponse, type Stat, type StatusResponse, type Vertex, type VertexLog } from './proto.ts';
import { GO_MODE } from './context-sync.ts';
import { Gate } from './gate.ts';
import { ProgressLog } from './progress-log.ts';
import { untar } from './untar.ts';
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
/** How BuildKit says a step was cancelled, not failed. */
const CANCELLED = /context canceled|^canceled/;
/** The log messages kept per step until it is done (replayed if it failed). */
const STEP_LOG_MESSAGES = 64;
/** The context dirs a held build remembers (one per target dir that sent it units). */
const CONTEXTS_KEPT = 16;

/** What an engine that does not hold builds for a client answers (the API or the request is not known to it). */
const REFUSALS: readonly grpc.status[] = [grpc.status.UNIMPLEMENTED, grpc.status.INVALID_ARGUMENT];

export class GatewayRefused extends Error {
  override name = 'GatewayRefused';
}

/** A unit names an image tag that this build resolved to another image: it needs a build of its own. */
export class ImageMoved extends Error {
  override name = 'ImageMoved';
}

export class HeldBuild {
  readonly ref = randomBytes(12).toString('hex');
  private readonly metadata = new grpc.Metadata();
  private readonly born = Date.now();
  private inFlight = 0;
  private solved = 0;
  private idle: ReturnType<typeof setTimeout> | undefined;
  private retiring = false;
  /** why the held Solve ended, once it has, and whether the engine refused to hold it at all */
  private ended: string | undefined;
  private refused = false;
  private statusLost = false;
  private returned = false;
  private readonly finished: Promise<void>;
  private held: grpc.ClientUnaryCall | undefined;
  private readonly status: grpc.ClientReadableStream<StatusResponse>;
  /** each unit's log, by the digests of its ops; and the last state of every vertex the build reported */
  private readonly watchers = new Map<string, Set<ProgressLog>>();
  private readonly seen = new Map<string, Vertex>();
  /** the log lines of steps not yet done: a failed step's are replayed to later units that include it */
  private readonly stepLogs = new Map<string, VertexLog[]>();
  private readonly wakers = new Set<() => void>();
  /** the context dirs of the target dirs that sent units, newest first, and how many of each are in flight */
  private readonly contexts: string[] = [];
  private readonly contextsInFlight = new Map<string, number>();
  /** the images its units named, tag → content ID (see fits) */
  private readonly imageIds = new Map<string, string>();

  constructor(
    control: HeldControl,
    private readonly bridge: BridgeClient,
    private readonly session: BuildSession,
    private readonly onEnd: (build: HeldBuild) => void,
    /** the units' solves, at most as many at once as the engine has cores (their reads are not held back) */
    private readonly solves: Gate = new Gate(Number.POSITIVE_INFINITY),
  ) {
    this.metadata.set('buildkit-controlapi-buildid', this.ref);
    this.status = control.Status({ Ref: this.ref });
    this.status.on('data', (s: StatusResponse) => this.dispatch(s));
    // Without its status a unit can tell neither a cache hit nor why it failed: no new units here.
    const lost = () => {
      this.statusLost = true;
      if (!this.ended) this.retiring = true;
      for (const wake of this.wakers) wake();
    };
    this.status.on('error', lost);
    this.status.on('end', lost);
    const job = { dirFor: (name: string, paths: readonly string[]) => this.dirFor(name, paths) };
    this.finished = session
      .serve(job, () =>
        new Promise<SolveResponse>((resolve, reject) =>
          // Internal: kept out of the engine's build history, like every unit of ours.
          (this.held = control.Solve({ Ref: this.ref, Session: session.id, Frontend: '', FrontendAttrs: {}, Exporter: '', ExporterAttrs: {}, Internal: true }, (err, res) =>
            err || !res ? reject(err ?? new Error('no answer')) : resolve(res),
          )),
        ),
      )
      .then(
        () => this.end('returned'),
        (err: grpc.ServiceError) => {
          // An engine that does not take a build without a definition or a frontend (an old BuildKit).
          this.refused = this.solved === 0 && REFUSALS.includes(err.code);
          this.end(`the held build ended: ${err.details || err.message}`);
        },
      );
  }

  /** Whether new units may use this build (it is neither ending nor too old). */
  get accepting(): boolean {
    return !this.ended && !this.retiring && Date.now() - this.born < HELD_MAX_AGE_MS && this.session.usable;
  }

  /**
   * Whether a unit that names these images (tag → content ID) may be solved here. The build resolves a
   * tag once: after the tag is moved to another image (a rebuilt base image), its units need a new build.
   */
  fits(imageIds: Readonly<Record<string, string>> = {}): boolean {
    return Object.entries(imageIds).every(([tag, id]) => (this.imageIds.get(tag) ?? id) === id);
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
    // Checked and recorded before anything is awaited: two units naming one tag differently never share a build.
    if (!this.fits(req.imageIds)) throw new ImageMoved();
    for (const [tag, id] of Object.entries(req.imageIds ?? {})) this.imageIds.set(tag, id);
    this.useContext(req.context, +1);
    this.inFlight++;
    clearTimeout(this.idle);
    this.watch(progress, digests);
    let code = 0;
    let interrupted: string | undefined;
    const synced = this.syncAhead(req.llb, digests, cancel);
    try {
      const answer = await this.solves.run(() => {
        progress.mark('solve');
        return this.evaluate(definition, cancel);
      }, cancel);
      progress.mark('answer');
      const id = answer.result?.ref?.id ?? answer.result?.refDeprecated ?? answer.ref;
      if (!id) throw new Error('the engine answered without a result');
      this.solved++;
      progress.mark('export');
      await readResult((r) => this.call<{ entries: Stat[] }>(cancel, (md, cb) => this.bridge.ReadDir(r, md, cb)), (r) => this.call<{ Data: Uint8Array }>(cancel, (md, cb) => this.bridge.ReadFile(r, md, cb)), id, req.outputDir, { dirs: req.llb.resultDirs, pack: req.llb.resultPack, note: (line) => progress.note(line) });
      progress.mark('export written');
      if (own) await this.until(() => progress.settled(own), STATUS_GRACE_MS);
    } catch (err) {
      code = 1;
      const e = err as grpc.ServiceError;
      const why = e.details || e.message;
      // What the failure was is known after a little: a step that failed reports its log (rustc's
      // stderr tail, the sandbox's marker) on the status stream, which may trail the answer; a build
      // that broke ends (the held Solve's own error says whether the engine refused it).
      const dropped = e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.CANCELLED;
      if (!cancel?.aborted && !dropped && e.code !== grpc.status.UNIMPLEMENTED) await this.until(() => progress.failedStep || !this.session.usable, STATUS_GRACE_MS);
      // The very first solve tells whether the engine holds builds for us at all (an old BuildKit,
      // an engine that refuses the gateway): the client then builds units one by one.
      if (this.solved === 0 && !cancel?.aborted && (e.code === grpc.status.UNIMPLEMENTED || this.refused)) throw new GatewayRefused(this.ended ?? why);
      progress.error(why);
      if (!cancel?.aborted && (dropped || !this.session.usable || this.ended)) interrupted = `the connection to the engine broke (${this.ended ?? why})`;
    } finally {
      await synced;
      this.unwatch(progress, digests);
      this.useContext(req.context, -1);
      // A retired build ends with its last unit; an idle one after a while.
      if (--this.inFlight === 0) {
        if (this.retiring) void this.retire();
        else this.idle = setTimeout(() => void this.retire(), HELD_IDLE_MS);
      }
    }
    const result: BuildResult = { code, log: progress.text(), seconds: (performance.now() - started) / 1000 };
    if (interrupted) result.interrupted = interrupted;
    return result;
  }

  /**
   * A unit that must wait for the engine's share (`solves`) has its local sources synced meanwhile, each
   * solved on its own (the unit's solve then finds them done): a sync is round trips and bytes, no cores,
   * and behind the gate the first units of a build on a new machine, which sync every source, would
   * queue for them one by one. Sources this build has synced already, and units that need not wait, skip
   * it. Settles when the syncs have; their failures are the unit's solve's to report.
   */
  private syncAhead(llb: LlbGraph, digests: readonly string[], cancel?: AbortSignal): Promise<unknown> | undefined {
    if (!this.solves.full) return undefined;
    const sources = llb.ops.flatMap((op, i) => ('source' in op && op.source.identifier.startsWith('local://') && !this.seen.get(digests[i]!)?.completed ? [op] : []));
    if (sources.length === 0) return undefined;
    return Promise.allSettled(
      sources.map((op) => this.evaluate(encodeGraph({ ops: [op], result: { op: 0, output: 0 } }).definition, cancel)),
    );
  }

  /** A definition solved in this build now (not lazily), its result kept for reading. */
  private evaluate(definition: BridgeSolveRequest['Definition'], cancel?: AbortSignal): Promise<BridgeSolveResponse> {
    return this.call<BridgeSolveResponse>(cancel, (md, cb) => this.bridge.Solve({ Definition: definition, Frontend: '', allowResultReturn: true, allowResultArrayRef: true, Evaluate: true }, md, cb));
  }

  /**
   * No new units; the build ends when those in flight are done. Resolves when it has ended: until then
   * the engine holds its sources' copies, and a sync of the same paths by another build (a successor
   * broker's) would find them locked and send everything again into new ones.
   */
  retire(): Promise<void> {
    this.retiring = true;
    if (this.inFlight > 0 || this.ended || this.returned) return this.finished;
    this.returned = true;
    clearTimeout(this.idle);
    this.bridge.Return({ result: {} }, this.metadata, () => undefined);
    // An engine that does not answer the Return: the session's end ends the build for it.
    const timer = setTimeout(() => this.end('did not end after its return'), 10_000);
    return this.finished.then(() => clearTimeout(timer));
  }

  private end(why: string): void {
    if (this.ended) return;
    this.ended = why;
    clearTimeout(this.idle);
    // Whatever ended it, the engine must not keep the build (and every result it holds) alive.
    this.held?.cancel();
    this.status.cancel();
    this.session.close();
    for (const wake of this.wakers) wake();
    this.onEnd(this);
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

  private useContext(dir: string, delta: 1 | -1): void {
    const count = (this.contextsInFlight.get(dir) ?? 0) + delta;
    if (count > 0 || this.contexts.includes(dir)) this.contextsInFlight.set(dir, count);
    else this.contextsInFlight.delete(dir);
    if (delta < 0) return;
    const at = this.contexts.indexOf(dir);
    if (at === 0) return;
    if (at > 0) this.contexts.splice(at, 1);
    this.contexts.unshift(dir);
    for (const gone of this.contexts.splice(CONTEXTS_KEPT)) if (!this.contextsInFlight.get(gone)) this.contextsInFlight.delete(gone);
  }

  /**
   * The context dir that holds what the engine asks for. Context paths are named by their content, so
   * any target dir's context that holds them holds the same bytes; one with units in flight first (a
   * target dir whose run has ended may prune its context).
   */
  private dirFor(name: string, paths: readonly string[]): string | undefined {
    if (name !== 'context') return undefined;
    const holds = (dir: string) => paths.every((p) => existsSync(join(dir, p)));
    const busy = this.contexts.filter((dir) => (this.contextsInFlight.get(dir) ?? 0) > 0);
    return busy.find(holds) ?? this.contexts.find(holds);
  }

  private watch(log: ProgressLog, digests: readonly string[]): void {
    const known: Vertex[] = [];
    for (const d of digests) {
      let set = this.watchers.get(d);
      if (!set) this.watchers.set(d, (set = new Set()));
      set.add(log);
      const v = this.seen.get(d);
      // Ops an earlier unit of this build solved are not reported again, and this unit did not make
      // them: for it they come from the cache (a second checkout, a rebuilt target dir in one build).
      if (v) known.push(v.completed && !v.error ? { ...v, cached: true } : v);
    }
    // A step that failed in this build fails again for this unit without running: its log (the
    // sandbox's marker, rustc's stderr tail) is what says why.
    const logs = known.filter((v) => v.error).flatMap((v) => this.stepLogs.get(v.digest) ?? []);
    if (known.length > 0) log.add({ vertexes: known, statuses: [], logs });
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
    for (const l of s.logs) {
      let kept = this.stepLogs.get(l.vertex);
      if (!kept) this.stepLogs.set(l.vertex, (kept = []));
      // A step's tail is what a failure needs (the script prints the marker and 8 kB of stderr last).
      if (kept.push(l) > STEP_LOG_MESSAGES) kept.shift();
    }
    for (const v of s.vertexes) {
      // A cancelled step (every unit that wanted it went away) is not remembered: BuildKit runs it again.
      if (CANCELLED.test(v.error)) {
        this.seen.delete(v.digest);
        this.stepLogs.delete(v.digest);
      } else this.seen.set(v.digest, v);
      if (v.completed && !v.error) this.stepLogs.delete(v.digest);
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
    while (!cond() && !this.ended && !this.statusLost) {
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

const TYPE_BITS = GO_MODE.dir + GO_MODE.symlink + GO_MODE.device + GO_MODE.pipe + GO_MODE.socket + GO_MODE.charDevice + GO_MODE.irregular;
/** A Go file mode's type bits (unsigned: JS bitwise operators are signed 32-bit, and the dir bit is bit 31). */
const typeOf = (mode: number) => (mode & TYPE_BITS) >>> 0;

/** Where a result is known to be laid out: its root's directories, and its packed copy's path, if it may have one. */
export interface ResultLayout {
  dirs?: readonly string[];
  pack?: string;
  /** told how the result was read: packed (and how many bytes for how many), or why its pack was not used */
  note?: (line: string) => void;
}

/**
 * A result's tree written to `dest` (made anew, its parent must exist), as the tar export writes it:
 * directories, files with their permission bits, symlinks, hard links. With `layout.dirs` the result's
 * root is not listed first (one round trip less); with `layout.pack`, a packed copy found there is read
 * instead of the files one by one (see readPacked). It settles only when nothing it started still runs:
 * after a failure no write of its can land anywhere.
 */
export async function readResult(readDir: ReadDir, readFile: ReadFile, ref: string, dest: string, layout: ResultLayout = {}): Promise<void> {
  const reads = new Gate(READS_IN_FLIGHT);
  const limit = <T>(fn: () => Promise<T>) => reads.run(fn);
  const list = async (rel: string): Promise<Stat[]> => {
    const { entries } = await limit(() => readDir({ Ref: ref, DirPath: rel || '/', IncludePattern: '' }));
    // A listing names the directory's own entries: anything else would be written outside it.
    const names = new Set<string>();
    for (const st of entries) {
      if (st.path === '' || st.path === '.' || st.path === '..' || st.path.includes('/') || names.has(st.path)) throw new Error(`the result holds an entry named ${JSON.stringify(st.path)}`);
      names.add(st.path);
    }
    return entries;
  };
  const { dirs, pack, note } = layout;
  if (!dirs) return readTree(list, readFile, limit, ref, dest, [['', undefined]]);
  // The pack's first range is asked for with the listings, before they say it is there: one round trip
  // less for every unit whose pack fits in a range. BuildKit answers a range past a file's end with what
  // the file holds, and a missing file with an error (an image without zstd): the files are read then.
  const head = pack ? readFile({ Ref: ref, FilePath: pack, Range: { Offset: 0, Length: READ_CHUNK } }).then(({ Data }) => Data, () => undefined) : undefined;
  const listings = await Promise.all(dirs.map(async (d) => [d, await list(d)] as [string, Stat[]])).finally(() => head);
  const packDir = pack?.slice(0, pack.lastIndexOf('/'));
  const packed = listings.find(([d]) => d === packDir)?.[1].find((st) => `${packDir}/${st.path}` === pack && typeOf(st.mode) === 0 && st.linkname === '');
  if (!pack || !packed) return readTree(list, readFile, limit, ref, dest, listings);
  // The pack is not part of the result: it is what the result's other files are, packed.
  const files = listings.map(([d, entries]) => [d, d === packDir ? entries.filter((st) => st !== packed) : entries] as [string, Stat[]]);
  // What the pack unpacks to is checked against the listings, which name the dirs' own entries only: a
  // result with a directory below them (rustc writes none) is read file by file, every level listed.
  if (files.some(([, entries]) => entries.some((st) => typeOf(st.mode) === GO_MODE.dir))) return readTree(list, readFile, limit, ref, dest, files);
  try {
    await readPacked(readFile, limit, ref, pack, packed.size, dest, files, await head);
    const bytes = files.flatMap(([, entries]) => entries).reduce((sum, st) => sum + (typeOf(st.mode) === 0 ? st.size : 0), 0);
    note?.(`result read packed: ${packed.size} B for ${bytes} B`);
  } catch (err) {
    // The engine or the connection failing is not the pack's fault: that is the unit's failure to say.
    if (typeof (err as Partial<grpc.ServiceError>).code === 'number') throw err;
    // A pack that does not unpack to what the listings say is not used: the files one by one are.
    note?.(`WARNING: the packed result was not used (${(err as Error).message}): reading its files one by one`);
    return readTree(list, readFile, limit, ref, dest, files);
  }
}

type Limit = <T>(fn: () => Promise<T>) => Promise<T>;

/** One range of a file, checked: a short or long read is an error, never bytes we cannot vouch for. */
async function readRange(readFile: ReadFile, limit: Limit, ref: string, rel: string, offset: number, length: number, check: () => void): Promise<Uint8Array> {
  const { Data } = await limit(() => {
    check();
    return readFile({ Ref: ref, FilePath: rel, Range: { Offset: offset, Length: length } });
  });
  if (Data.length !== length) throw new Error(`reading ${rel} at ${offset} gave ${Data.length} bytes, not ${length}`);
  return Data;
}

/** The ranges of a file of `size` bytes. */
function ranges(size: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at < size; at += READ_CHUNK) out.push([at, Math.min(READ_CHUNK, size - at)]);
  return out;
}

/**
 * The packed copy (a zstd-compressed tar of the result's dirs) read in order, several ranges ahead, and
 * unpacked into `dest` as it arrives. Vouched for twice: zstd checks its frame's checksum, and the tree
 * it made must be what the engine's listings of those dirs say (names, kinds, file sizes), else this
 * throws and the caller reads the files one by one.
 */
async function readPacked(readFile: ReadFile, limit: Limit, ref: string, pack: string, size: number, dest: string, listings: ReadonlyArray<[string, Stat[]]>, head?: Uint8Array): Promise<void> {
  const { unpack, done } = untar(dest);
  const unpacked = done.then(
    () => undefined,
    (err: Error) => err,
  );
  const z = createZstdDecompress();
  z.on('error', (err) => unpack.destroy(err));
  z.pipe(unpack);
  let failed = false;
  const check = () => {
    if (failed) throw new Error('reading the result failed');
  };
  const todo = ranges(size);
  const ahead: Array<Promise<Uint8Array>> = [];
  // The first range read ahead counts when it is as long as the listing says that range is.
  const first = todo[0];
  if (head && first && head.length === first[1]) {
    todo.shift();
    ahead.push(Promise.resolve(head));
  }
  const next = () => {
    const r = todo.shift();
    if (!r) return;
    const read = readRange(readFile, limit, ref, pack, r[0], r[1], check);
    // Awaited in order, later: a failure meanwhile is not an unhandled rejection.
    read.catch(() => undefined);
    ahead.push(read);
  };
  for (let i = 0; i < READS_IN_FLIGHT; i++) next();
  try {
    while (ahead.length > 0) {
      const data = await ahead.shift()!;
      next();
      // A stream that failed never drains: its failure ends the wait.
      if (!z.write(data)) await Promise.race([new Promise((resolve) => z.once('drain', resolve)), unpacked.then((e) => Promise.reject(e ?? new Error('the packed result ended early')))]);
    }
    z.end();
  } catch (err) {
    failed = true;
    await Promise.allSettled(ahead);
    z.destroy(err as Error);
    unpack.destroy(err as Error);
    await unpacked;
    throw err;
  }
  const err = await unpacked;
  if (err) throw err;
  const sameNames = (here: string[], listed: string[]) => here.sort().join('\0') === listed.sort().join('\0');
  if (!sameNames(readdirSync(dest), listings.map(([dir]) => dir))) throw new Error(`the packed result holds ${readdirSync(dest).join(', ')} at its root`);
  for (const [dir, entries] of listings) {
    const here = readdirSync(join(dest, dir));
    if (!sameNames(here, entries.map((st) => st.path))) throw new Error(`the packed result's ${dir}/ holds ${here.join(', ')}, the engine's ${entries.map((st) => st.path).join(', ')}`);
    for (const st of entries) {
      const path = join(dest, dir, st.path);
      const got = lstatSync(path);
      const type = typeOf(st.mode);
      // fsutil names a second hard link by the first, with no size: it must be that very file.
      const same =
        type === GO_MODE.symlink
          ? got.isSymbolicLink() && readlinkSync(path) === st.linkname
          : type === 0 && got.isFile() && (st.linkname !== '' ? got.ino === lstatSync(join(dest, dir, st.linkname), { throwIfNoEntry: false })?.ino : got.size === st.size && (got.mode & 0o777) === (st.mode & 0o777));
      if (!same) throw new Error(`the packed result's ${dir}/${st.path} is not what the engine lists`);
    }
  }
}

/** The trees below `roots` (each a directory and its listing, or undefined to list it) read file by file. */
async function readTree(list: (rel: string) => Promise<Stat[]>, readFile: ReadFile, limit: Limit, ref: string, dest: string, roots: ReadonlyArray<[string, Stat[] | undefined]>): Promise<void> {
  rmSync(dest, { recursive: true, force: true });
  // Not recursive: when the wrapper that asked has gone and removed its work dir, nothing is recreated.
  mkdirSync(dest);
  let failed = false;
  /** Every task run, and the first failure thrown only once all have settled. */
  const all = async (tasks: Array<Promise<void>>): Promise<void> => {
    const outcomes = await Promise.allSettled(tasks);
    const rejected = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (rejected) {
      failed = true;
      throw rejected.reason;
    }
  };
  const check = () => {
    if (failed) throw new Error('reading the result failed');
  };
  const fill = async (rel: string, listed?: Stat[]): Promise<void> => {
    const entries = listed ?? (await list(rel));
    check();
    // fsutil names the second path of a hard-linked file by the first, with no size: linked once that one is written.
    const isLink = (st: Stat) => typeOf(st.mode) === 0 && st.linkname !== '';
    const names = new Set(entries.map((st) => st.path));
    await all(entries.filter((st) => !isLink(st)).map((st) => place(rel, st)));
    for (const st of entries.filter(isLink)) {
      if (!names.has(st.linkname)) throw new Error(`the result links ${st.path} to ${JSON.stringify(st.linkname)}, which its directory does not hold`);
      linkSync(join(dest, rel, st.linkname), join(dest, rel, st.path));
    }
  };
  const place = async (parent: string, st: Stat): Promise<void> => {
    check();
    const rel = parent ? `${parent}/${st.path}` : st.path;
    const path = join(dest, rel);
    const type = typeOf(st.mode);
    if (type === GO_MODE.dir) {
      mkdirSync(path);
      return fill(rel);
    }
    if (type === GO_MODE.symlink) return symlinkSync(st.linkname, path);
    if (type !== 0) throw new Error(`the result holds ${rel}, which is neither a file, a directory nor a symlink`);
    const fd = openSync(path, 'wx', 0o600);
    try {
      await all(
        ranges(st.size).map(async ([offset, length]) => {
          const data = await readRange(readFile, limit, ref, rel, offset, length, check);
          check();
          writeSync(fd, data, 0, length, offset);
        }),
      );
    } finally {
      closeSync(fd);
    }
    chmodSync(path, st.mode & 0o777);
  };
  await all(
    roots.map(async ([rel, listed]) => {
      if (rel) mkdirSync(join(dest, rel));
      return fill(rel, listed);
    }),
  );
}
