/**
 * One long-lived connection to an engine's BuildKit: the control API (gRPC over the daemon's `/grpc`
 * upgrade, reached through a private unix socket that grpc-js dials, since grpc-js cannot be handed a
 * connection) and build sessions opened ahead of need. A unit's build is then one Solve call and its
 * Status stream on connections that are already open: no process, no handshake.
 *
 * A session serves one build only: BuildKit keys a local directory by session ID, name and patterns,
 * not by content, so a second build on the same session would get the first one's files. Each build
 * slot (one per concurrent build) keeps its next session open in advance, under a shared key of its own:
 * the engine keeps its copy of our context per shared key and syncs only what changed, and two
 * concurrent builds never sync into the same copy.
 */
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { control, encodeGraph, filesDefinition, type InfoResponse, type SolveRequest, type SolveResponse, type StatusResponse } from './proto.ts';
import { upgrade, type Dialer } from './dial.ts';
import { BuildSession } from './session.ts';
import { bridgeOn, GatewayRefused, HeldBuild, ImageMoved, type BridgeClient } from './gateway.ts';
import { Gate } from './gate.ts';
import { ProgressLog } from './progress-log.ts';
import type { BuildRequest, BuildResult } from '../engine.ts';

type ControlClient = grpc.Client & {
  Solve: (req: SolveRequest, callback: (err: grpc.ServiceError | null, res?: SolveResponse) => void) => grpc.ClientUnaryCall;
  Status: (req: { Ref: string }) => grpc.ClientReadableStream<StatusResponse>;
  Info: (req: Record<string, never>, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, res?: InfoResponse) => void) => grpc.ClientUnaryCall;
};

const ControlClient = grpc.makeGenericClientConstructor(control, 'moby.buildkit.v1.Control') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ClientOptions,
) => ControlClient;

/**
 * How many builds run at once through one client (more wait for a slot), and how many slots keep their
 * next session opened ahead. Over ssh every session is a channel on the one shared connection, and
 * OpenSSH allows 10 per connection by default (`MaxSessions`): the control connection, 6 builds and 3
 * sessions opened ahead stay within it.
 */
export interface SessionLimits {
  slots: number;
  openedAhead: number;
}
export const UNLIMITED: SessionLimits = { slots: Number.POSITIVE_INFINITY, openedAhead: Number.POSITIVE_INFINITY };
export const SSH_LIMITS: SessionLimits = { slots: 6, openedAhead: 3 };

export class BuildkitClient {
  /** per slot: whether a build uses it, and its next session (opening or open) */
  private slots: Array<{ busy: boolean; next: Promise<BuildSession | undefined> }> = [];
  private open = new Set<BuildSession>();
  private broken: string | undefined;
  private closed = false;
  /** builds waiting for a slot, when all `limits.slots` are busy */
  private waiting: Array<() => void> = [];
  /** the build held open for LLB units (gateway.ts), and why the engine will not hold one, if it will not */
  private held: HeldBuild | undefined;
  private heldOpening: Promise<HeldBuild> | undefined;
  private gatewayRefused: string | undefined;
  private readonly bridge: BridgeClient;
  /**
   * Units the engine works on at once: one per engine core. cargo runs more jobs than that when the
   * engine is ours (src/cli/jobs.ts), so that cached units, which cost round trips and bytes but no
   * cores, overlap; a unit that compiles waits here rather than crowding the engine's cores. Unlimited
   * until the engine's cores are known.
   */
  private readonly engineWork = new Gate(Number.POSITIVE_INFINITY);

  private constructor(
    private readonly dial: Dialer,
    private readonly proxy: Server,
    private readonly proxyPath: string,
    private readonly client: ControlClient,
    /** the engine keeps its copy of a session's dirs under this key (plus the slot), for the next sync */
    private readonly sharedKeyBase: string,
    readonly version: string,
    private readonly limits: SessionLimits,
  ) {
    this.bridge = bridgeOn(client);
  }

  /** Connects and asks the engine who it is; throws when the daemon refuses the API route. */
  static async connect(dial: Dialer, proxyPath: string, sharedKeyBase: string, limits: SessionLimits = UNLIMITED): Promise<BuildkitClient> {
    rmSync(proxyPath, { force: true });
    const proxy = createServer((local) => {
      local.pause();
      dial()
        .then((raw) => upgrade(raw, '/grpc'))
        .then((remote) => {
          local.pipe(remote);
          remote.pipe(local);
          remote.on('error', () => local.destroy());
          local.on('error', () => remote.destroy());
          remote.on('close', () => local.destroy());
          local.on('close', () => remote.destroy());
          local.resume();
          remote.resume();
        })
        .catch(() => local.destroy());
    });
    await new Promise<void>((resolve, reject) => {
      proxy.once('error', reject);
      proxy.listen(proxyPath, resolve);
    });
    const client = new ControlClient(`unix://${proxyPath}`, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'localhost',
      // BuildKit's own clients send large definitions and receive large status updates.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
      'grpc.keepalive_time_ms': 30_000,
      'grpc-node.flow_control_window': 16 * 1024 * 1024,
    });
    try {
      const info = await new Promise<InfoResponse>((resolve, reject) =>
        client.Info({}, { deadline: Date.now() + 30_000 }, (err, res) => (err || !res ? reject(err ?? new Error('no answer')) : resolve(res))),
      );
      const v = info.buildkitVersion;
      return new BuildkitClient(dial, proxy, proxyPath, client, sharedKeyBase, v ? `${v.package} ${v.version}` : 'unknown', limits);
    } catch (err) {
      client.close();
      proxy.close();
      throw err;
    }
  }

  /** The engine's cores, when known: as many units are worked on at once. */
  set engineCpus(cpus: number) {
    this.engineWork.resize(Math.max(1, Math.floor(cpus)));
  }

  get sessionCount(): number {
    return this.open.size;
  }

  /** Why this client cannot be used any more (the engine went away), or undefined. */
  get failure(): string | undefined {
    return this.broken;
  }

  /** Why the engine will not hold a build open for our units (they are then built one by one), or undefined. */
  get gatewayRefusal(): string | undefined {
    return this.gatewayRefused;
  }

  /** One build; `cancel` aborts it (the wrapper that asked for it has gone: nobody wants its export). */
  async build(req: BuildRequest, cancel?: AbortSignal): Promise<BuildResult> {
    if (!req.outputDir) throw new Error('the API route exports to a directory; image builds use the CLI');
    const started = performance.now();
    const failed = (why: string): BuildResult => ({ code: 1, log: `ERROR: ${why}\n`, seconds: (performance.now() - started) / 1000 });
    const { llb, outputDir } = req;
    if (llb && !this.gatewayRefused) {
      for (let attempt = 0; ; attempt++) {
        let held: HeldBuild;
        try {
          held = await this.heldBuild(req.imageIds);
        } catch (err) {
          this.broken = `cannot open a build session: ${(err as Error).message}`;
          return { ...failed(this.broken), interrupted: this.broken };
        }
        try {
          const result = await held.solve({ ...req, llb, outputDir }, cancel);
          if (result.interrupted) this.broken = result.interrupted;
          return result;
        } catch (err) {
          // Another unit got the build that was opening for this one, naming the image as it was before:
          // the next heldBuild() retires it, as it no longer fits. A tag moving all the time: a build of
          // its own resolves it afresh.
          if (err instanceof ImageMoved) {
            if (attempt < 3) continue;
            break;
          }
          if (!(err instanceof GatewayRefused)) throw err;
          this.gatewayRefused = err.message;
          break;
        }
      }
    }
    // Encoded before a slot is taken: it needs none, and a request that cannot be made holds nothing.
    let solve: ReturnType<typeof solveRequest>;
    try {
      solve = solveRequest(req);
    } catch (err) {
      return failed((err as Error).message);
    }
    // A build of its own holds its engine share until its export is written: its solve and export are one call.
    const result = await this.engineWork.run(() => this.buildAlone({ ...req, outputDir }, solve, started, failed, cancel), cancel);
    // The export took the unit's whole meta dir, its pack too, which the result does not hold (gateway.ts).
    if (req.llb?.resultPack) rmSync(join(outputDir, req.llb.resultPack), { force: true });
    return result;
  }

  /** A unit as a build of its own (the Dockerfile route, and every unit of an engine that holds no build). */
  private async buildAlone(req: BuildRequest & { outputDir: string }, solve: ReturnType<typeof solveRequest>, started: number, failed: (why: string) => BuildResult, cancel?: AbortSignal): Promise<BuildResult> {
    const slot = await this.takeSlot();
    let session: BuildSession;
    try {
      session = await this.sessionFor(slot);
    } catch (err) {
      this.release(slot);
      this.broken = `cannot open a build session: ${(err as Error).message}`;
      return failed(this.broken);
    }
    const ref = randomBytes(12).toString('hex');
    const progress = new ProgressLog();
    const status = this.client.Status({ Ref: ref });
    const statusDone = new Promise<void>((resolve) => {
      status.on('data', (s: StatusResponse) => progress.add(s));
      status.on('error', () => resolve());
      status.on('end', () => resolve());
    });
    let code = 0;
    try {
      const dirFor = (name: string) => (name === 'context' ? req.context : undefined);
      // Our LLB has a source per path, which the engine keeps a copy of each: nothing to keep whole.
      const keep = req.keepSynced && !req.llb ? { keep: req.keepSynced } : {};
      progress.mark('solve');
      await session.serve({ dirFor, exportDir: req.outputDir, mark: (m) => progress.mark(m), ...keep }, () =>
        new Promise<SolveResponse>((resolve, reject) => {
          // Internal: a unit is not a build the user asked for. Kept out of the engine's build history,
          // it also skips the history record BuildKit writes after the export (~35 ms a unit, measured).
          const call = this.client.Solve(
            { ...solve, Ref: ref, Session: session.id, Exporter: 'tar', ExporterAttrs: {}, Internal: true },
            (err, res) => {
              progress.mark('answer');
              return err || !res ? reject(err ?? new Error('no answer')) : resolve(res);
            },
          );
          if (cancel?.aborted) call.cancel();
          cancel?.addEventListener('abort', () => {
            call.cancel();
            session.close();
          });
        }),
      );
    } catch (err) {
      code = 1;
      const e = err as grpc.ServiceError;
      progress.error(e.details || e.message);
      // A dropped connection (the control one, or the session's) says nothing about the unit. A build
      // cancelled because its wrapper went away closed its own session: that is not the engine's doing.
      if (!cancel?.aborted && (e.code === grpc.status.UNAVAILABLE || !session.usable)) this.broken = `the connection to the engine broke (${e.details || e.message})`;
    } finally {
      this.discard(session);
      this.release(slot);
    }
    // The status stream ends with the job; its last updates may trail the Solve answer a little.
    await Promise.race([statusDone, Bun.sleep(2_000)]);
    status.cancel();
    const result: BuildResult = { code, log: progress.text(), seconds: (performance.now() - started) / 1000 };
    if (code !== 0 && this.broken) result.interrupted = this.broken;
    return result;
  }

  /**
   * A build held open ready for the units about to come (a run asked about the engine: its units
   * follow), so the first of them does not wait for its session and its Solve: round trips over ssh.
   */
  prepare(): void {
    if (this.gatewayRefused || this.closed) return;
    this.heldBuild().catch(() => undefined); // the first unit's own try says what is wrong
  }

  /** The build held open for units, opened when none is or the last one stopped taking units. */
  private heldBuild(imageIds?: Readonly<Record<string, string>>): Promise<HeldBuild> {
    if (this.held?.accepting && this.held.fits(imageIds)) return Promise.resolve(this.held);
    void this.held?.retire();
    this.held = undefined;
    // Units arriving together wait for the same build; a failure to open it is theirs, the next tries again.
    this.heldOpening ??= this.openHeld().finally(() => (this.heldOpening = undefined));
    return this.heldOpening;
  }

  private async openHeld(): Promise<HeldBuild> {
    const session = await BuildSession.open(this.dial, `${this.sharedKeyBase}-held`);
    if (this.closed) {
      session.close();
      throw new Error('the client was closed');
    }
    this.open.add(session);
    const held = new HeldBuild(
      this.client,
      this.bridge,
      session,
      (build) => {
        this.open.delete(session);
        if (this.held === build) this.held = undefined;
      },
      this.engineWork,
    );
    this.held = held;
    return held;
  }

  private async takeSlot(): Promise<number> {
    for (;;) {
      let i = this.slots.findIndex((slot) => !slot.busy);
      if (i < 0 && this.slots.length < this.limits.slots) i = this.slots.push({ busy: false, next: Promise.resolve(undefined) }) - 1;
      if (i >= 0) {
        this.slots[i]!.busy = true;
        return i;
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private release(slot: number): void {
    this.slots[slot]!.busy = false;
    this.waiting.shift()?.();
  }

  /** The slot's session opened in advance (or a new one), and the next one opening behind it. */
  private async sessionFor(slot: number): Promise<BuildSession> {
    const s = this.slots[slot]!;
    const ready = await s.next;
    s.next = slot < this.limits.openedAhead ? this.openSession(slot).catch(() => undefined) : Promise.resolve(undefined);
    if (ready?.usable) return ready;
    if (ready) this.discard(ready);
    return this.openSession(slot);
  }

  private async openSession(slot: number): Promise<BuildSession> {
    const session = await BuildSession.open(this.dial, `${this.sharedKeyBase}-${slot}`);
    if (this.closed) {
      session.close();
      throw new Error('the client was closed');
    }
    this.open.add(session);
    return session;
  }

  private discard(session: BuildSession): void {
    session.close();
    this.open.delete(session);
  }

  /** Ends the held build (waiting a little for the engine to let go of it), then every connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.held) await Promise.race([this.held.retire(), Bun.sleep(3_000)]);
    for (const s of this.open) s.close();
    this.client.close();
    this.proxy.close();
    rmSync(this.proxyPath, { force: true });
  }
}

/**
 * What to build: the request's LLB when it has some (no frontend, nothing to convert), else its
 * Dockerfile through the engine's Dockerfile frontend.
 */
function solveRequest(req: BuildRequest): Pick<SolveRequest, 'Definition' | 'Frontend' | 'FrontendAttrs' | 'FrontendInputs'> {
  if (req.llb) return { Definition: encodeGraph(req.llb).definition, Frontend: '', FrontendAttrs: {} };
  const filename = basename(req.dockerfile);
  const attrs: Record<string, string> = { filename };
  if (req.target) attrs.target = req.target;
  if (req.noNetwork) attrs['force-network-mode'] = 'none';
  // The Dockerfile travels in the request: no session round trips to fetch it (3 over a remote link).
  // So does its ignore file: the frontend reads `<Dockerfile>.dockerignore` beside the Dockerfile
  // before it would fetch the context's `.dockerignore` (one more round trip). We send the one it
  // would find, as the CLI picks it (beside the Dockerfile, else in the context). None, or an empty
  // one, is sent as a comment: an empty input file can read as absent, and the fetch would follow.
  const ignore = readIfFile(`${req.dockerfile}.dockerignore`) ?? readIfFile(join(req.context, '.dockerignore'));
  const dockerfile = filesDefinition([
    [`/${filename}`, readFileSync(req.dockerfile)],
    [`/${filename}.dockerignore`, ignore?.length ? ignore : '# nothing is ignored\n'],
  ]);
  return { Frontend: 'dockerfile.v0', FrontendAttrs: attrs, FrontendInputs: { dockerfile } };
}

function readIfFile(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch (err) {
    if (['ENOENT', 'ENOTDIR', 'EISDIR'].includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
    throw err;
  }
}
