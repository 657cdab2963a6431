/**
 * A build session: the connection on which the engine calls *us*, for the build's local directories
 * (FileSync), for the export (FileSend) and to check we are alive (Health). The docker daemon opens it
 * with `POST /session` (an HTTP/2 connection in which it is the client); a session serves one build: a
 * unit of its own, or a build held open for many units (gateway.ts).
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Duplex } from 'node:stream';
import { sessionMethods, type BytesMessage, type Packet } from './proto.ts';
import { serveContext } from './context-sync.ts';
import { untar } from './untar.ts';
import { upgrade, type Dialer } from './dial.ts';
import type { KeepSynced } from '../engine.ts';
import type { BuildMoment } from './progress-log.ts';

/** `.dockerignore`, `Dockerfile.dockerignore`, `.containerignore`: what a frontend fetches on its own. */
const IGNORE_FILE = /(^|\/)[^/]*(dockerignore|containerignore)$/;

/** What one build gives the session: its local dirs, and where its tar export goes. */
export interface SessionJob {
  /** the host dir the engine means by a local source's name and the paths it follows */
  dirFor: (name: string, paths: readonly string[]) => string | undefined;
  /** subdirectories listed whole even when the engine asks for less (BuildRequest.keepSynced) */
  keep?: KeepSynced;
  exportDir?: string;
  /** told when the engine asks for the context, when we have sent it, and likewise for the export */
  mark?: (moment: BuildMoment) => void;
}

export class SessionError extends Error {
  override name = 'SessionError';
}

export class BuildSession {
  readonly id = randomUUID();
  private job: SessionJob | undefined;
  private exported: Promise<void> | undefined;
  private conn: Duplex | undefined;
  private server = new grpc.Server();
  private closedReason: string | undefined;
  /** the context transfers (DiffCopy calls) of this session, served one after another */
  private transfers: Promise<void> = Promise.resolve();

  private constructor(readonly sharedKey: string) {
    const unimplemented = { code: grpc.status.UNAVAILABLE, details: 'no build is using this session' };
    this.server.addService(
      { FileSync: sessionMethods.FileSyncDiffCopy, FileSend: sessionMethods.FileSendDiffCopy, Check: sessionMethods.HealthCheck },
      {
        FileSync: (call: grpc.ServerDuplexStream<Packet, Packet>) => {
          const name = String(call.metadata.get('dir-name')[0] ?? '');
          // A key sent several times arrives joined by ", " (HTTP/2 header folding); our context paths
          // never hold a comma (the renderer refuses them).
          const list = (key: string) => call.metadata.get(key).flatMap((v) => String(v).split(', ')).filter(Boolean);
          const follow = list('followpaths');
          const dir = this.job?.dirFor(name, follow);
          if (!dir) return call.emit('error', this.job ? { code: grpc.status.NOT_FOUND, details: `no local directory named ${name} holds ${follow.join(', ') || 'what the engine asks for'}` } : unimplemented);
          // The Dockerfile frontend names what it needs as follow paths (the .dockerignore, the COPY
          // sources); as in fsutil's walker, they restrict what is sent like include patterns do.
          const include = [...list('include-patterns'), ...follow];
          const exclude = list('exclude-patterns');
          // The engine's copy loses what a sync leaves out: shared, content-named dirs are always listed
          // (their stats; the engine asks only for files it lacks), without what is being staged in them.
          // Not for a request of ignore files alone (older frontends fetch .dockerignore under a key of
          // its own), and no patterns means everything anyway.
          const keep = this.job?.keep;
          if (keep && include.length > 0 && !include.every((p) => IGNORE_FILE.test(p))) include.push(...keep.dirs), exclude.push(...keep.except);
          const mark = this.job?.mark;
          mark?.('context');
          call.on('finish', () => mark?.('context sent'));
          // One transfer at a time on this session's connection: under Bun's node:http2, a stream's data
          // can wait behind another stream's frames queued on a used-up window until the peer sends a
          // frame (oven-sh/bun#43422); two transfers of one session then waited on each other for good
          // (remote builds over ssh:// hung). The engine needs no transfer to end another.
          const turn = this.transfers.then(() => serveContext(call, dir, { include, exclude }));
          this.transfers = turn.catch(() => undefined);
          turn.catch((err: Error) => {
            call.emit('error', { code: grpc.status.INTERNAL, details: err.message });
          });
        },
        FileSend: (call: grpc.ServerDuplexStream<BytesMessage, BytesMessage>) => {
          const dest = this.job?.exportDir;
          if (!dest) return call.emit('error', unimplemented);
          const mark = this.job?.mark;
          mark?.('export');
          this.exported = receiveTar(call, dest);
          this.exported.then(
            () => {
              mark?.('export written');
              call.end();
            },
            (err: Error) => call.emit('error', { code: grpc.status.INTERNAL, details: err.message }),
          );
        },
        Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<{ status: number }>) => done(null, { status: 1 }),
      },
    );
  }

  /** Opens a session on the daemon behind `dial`; `sharedKey` lets the engine reuse its copy of our dirs. */
  static async open(dial: Dialer, sharedKey: string): Promise<BuildSession> {
    const session = new BuildSession(sharedKey);
    const methods = Object.values(sessionMethods).map((m) => m.path);
    const conn = await upgrade(await dial(), '/session', {
      'X-Docker-Expose-Session-Uuid': session.id,
      'X-Docker-Expose-Session-Name': 'rustcbuildx',
      'X-Docker-Expose-Session-Sharedkey': sharedKey,
      'X-Docker-Expose-Session-Grpc-Method': methods,
    });
    session.conn = conn;
    conn.on('close', () => (session.closedReason ??= 'the engine closed the session'));
    conn.on('error', (err: Error) => (session.closedReason ??= `session connection: ${err.message}`));
    widenWindows(session.server, () => session.server.createConnectionInjector(grpc.ServerCredentials.createInsecure())).injectConnection(conn);
    conn.resume();
    return session;
  }

  get usable(): boolean {
    return this.closedReason === undefined;
  }

  /** Runs `build` with this session serving `job`; the export has been written when it resolves. */
  async serve<T>(job: SessionJob, build: () => Promise<T>): Promise<T> {
    if (this.job) throw new SessionError('a session serves one build at a time');
    this.job = job;
    this.exported = undefined;
    try {
      const result = await build();
      await this.exported;
      return result;
    } finally {
      this.job = undefined;
    }
  }

  close(): void {
    this.closedReason ??= 'closed';
    this.server.forceShutdown();
    this.conn?.destroy();
  }
}

/** HTTP/2 flow-control window for what the engine sends us (exports): big enough for a remote link. */
const WINDOW = 16 * 1024 * 1024;

/**
 * grpc-js offers no setting for a server's HTTP/2 windows, and the default 64 KiB caps an export at one
 * window per round trip (1.6 MB/s at 40 ms). Its http2 server options are set before the injector makes
 * the server, and each new HTTP/2 session's connection window is raised; when grpc-js's internals differ
 * from what this expects, the defaults stay (slower, still correct).
 */
function widenWindows<T>(server: grpc.Server, makeInjector: () => T): T {
  const internals = server as unknown as { commonServerOptions?: { settings?: Record<string, unknown> }; http2Servers?: Map<{ on: (e: string, f: (s: { setLocalWindowSize?: (n: number) => void }) => void) => void }, unknown> };
  if (internals.commonServerOptions) internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: WINDOW };
  const injector = makeInjector();
  for (const h2 of internals.http2Servers?.keys() ?? []) h2.on('session', (s) => s.setLocalWindowSize?.(WINDOW));
  return injector;
}

/** Receives a tar export (FileSend's DiffCopy: the tar's bytes as BytesMessages) and unpacks it into `dest`. */
function receiveTar(call: grpc.ServerDuplexStream<BytesMessage, BytesMessage>, dest: string): Promise<void> {
  const { unpack, done } = untar(dest);
  call.on('data', (m: BytesMessage) => {
    if (!unpack.write(Buffer.from(m.data))) {
      call.pause();
      unpack.once('drain', () => call.resume());
    }
  });
  call.on('end', () => unpack.end(() => undefined));
  call.on('error', (err: Error) => unpack.destroy(err));
  // A cancelled call emits neither 'end' nor 'error'.
  call.on('cancelled', () => unpack.destroy(new SessionError('the engine cancelled the export')));
  return done;
}
