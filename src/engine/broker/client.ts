/**
 * The wrapper's side of the broker: an Engine that hands `docker buildx build`-shaped requests to the
 * broker for its endpoint, starting it when none answers. Whatever goes wrong with the broker (it cannot
 * start, dies, stops answering) costs one warning per cargo run and the CLI path for the rest of it: the
 * build never fails because of the broker.
 */
import { openSync, closeSync, existsSync, realpathSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { HEARTBEAT_MS, type BrokerReply, type BrokerRequest, type BrokerStatus, type EngineFacts } from './protocol.ts';
import type { BuildRequest, BuildResult, Engine, ImageInfo } from '../engine.ts';
import type { Captured } from '../../exec.ts';

/** What the broker's fate means for the rest of the cargo run (kept in the run's state by the caller). */
export interface BrokerHooks {
  /** true when an earlier unit of this run found the broker unusable: go straight to the CLI */
  skip(): boolean;
  /** the broker failed: remember it for the run, warn once */
  lost(reason: string): Promise<void>;
  /** the engine has no API route: remember it, no warning (the CLI is the right path there) */
  unsupported(reason: string): void;
  /** the broker's connection to the engine broke during a build, which is tried once more: say so, once per run */
  interrupted(reason: string): Promise<void>;
}

/** How long the wrapper waits for a new broker's socket. */
const START_TIMEOUT_MS = 5_000;
/** No word from the broker for this long, heartbeats included, means it hangs. */
const SILENCE_LIMIT_MS = Math.max(20_000, 10 * HEARTBEAT_MS);

type Outcome = { result: BuildResult } | { unsupported: string } | { lost: string };

export class BrokeredEngine implements Engine {
  constructor(
    private readonly cli: Engine,
    private readonly socket: string,
    private readonly idleSeconds: number,
    private readonly hooks: BrokerHooks,
  ) {}

  get runner() {
    return this.cli.runner;
  }
  get endpoint() {
    return this.cli.endpoint;
  }
  get description() {
    return this.cli.description;
  }

  async build(req: BuildRequest): Promise<BuildResult> {
    if (!req.outputDir || this.hooks.skip()) return this.cli.build(req);
    let outcome = await this.viaBroker(req);
    if ('result' in outcome && outcome.result.interrupted) {
      // The broker reconnects for the next request: a dropped ssh connection costs a retry, not the unit.
      await this.hooks.interrupted(outcome.result.interrupted);
      outcome = await this.viaBroker(req);
      // Twice in a row is not a blip: the CLI path for the rest of the run.
      if ('result' in outcome && outcome.result.interrupted) outcome = { lost: outcome.result.interrupted };
    }
    if ('result' in outcome) return outcome.result;
    if ('unsupported' in outcome) this.hooks.unsupported(outcome.unsupported);
    else await this.hooks.lost(outcome.lost);
    return this.cli.build(req);
  }

  private async viaBroker(req: BuildRequest): Promise<Outcome> {
    // The broker runs elsewhere (cwd `/`): every path it is given is absolute.
    const at = (p: string) => resolve(p);
    const e = await ask(this.socket, { op: 'build', req: { ...req, dockerfile: at(req.dockerfile), context: at(req.context), ...(req.outputDir ? { outputDir: at(req.outputDir) } : {}) } }, this.idleSeconds, SILENCE_LIMIT_MS);
    if ('lost' in e) return e;
    const r = e.reply;
    if ('result' in r) return { result: r.result };
    if ('unsupported' in r) return { unsupported: r.unsupported };
    return { lost: `the build broker failed: ${'error' in r ? r.error : 'an unexpected reply'}` };
  }

  inspectImage(ref: string): Promise<ImageInfo | undefined> {
    return this.cli.inspectImage(ref);
  }
  registryHas(ref: string): Promise<boolean> {
    return this.cli.registryHas(ref);
  }
  answers(): Promise<boolean> {
    return this.cli.answers();
  }
  pull(ref: string): Promise<Captured> {
    return this.cli.pull(ref);
  }
  importRootfs(tarball: string, ref: string): Promise<Captured> {
    return this.cli.importRootfs(tarball, ref);
  }
  saveImage(ref: string, toFile: string): Promise<Captured> {
    return this.cli.saveImage(ref, toFile);
  }
  loadImage(archive: ReadableStream<Uint8Array>): Promise<Captured> {
    return this.cli.loadImage(archive);
  }
}

/** One request of the broker on `socket`, started when none answers; its final reply, or why there is none. */
async function ask(socket: string, request: BrokerRequest, idleSeconds: number, silenceMs: number): Promise<{ reply: BrokerReply } | { lost: string }> {
  let e = await talk(socket, request, silenceMs);
  if ('absent' in e) {
    const failed = await startBroker(socket, idleSeconds);
    if (failed) return { lost: failed };
    for (let waited = 0; 'absent' in e && waited < START_TIMEOUT_MS; waited += 25) {
      await Bun.sleep(25);
      e = await talk(socket, request, silenceMs);
      // A broker that was stopping (idle, `broker stop`) has left its socket to the new one.
      if ('absent' in e && waited % 1000 === 975) await startBroker(socket, idleSeconds);
    }
  }
  if ('absent' in e) return { lost: `the build broker did not start within ${START_TIMEOUT_MS / 1000} s (its log: ${socket}.log)` };
  return e;
}

/**
 * The engine's version and these images as its store has them, asked of the broker (started if need
 * be). Else why not: the broker cannot be had (`lost`), the engine has no API route (`unsupported`), or
 * the engine did not answer it (`error`, which the docker CLI's own detection will say better).
 */
export async function engineFacts(socket: string, images: string[], idleSeconds: number): Promise<EngineFacts | { lost: string } | { unsupported: string } | { error: string }> {
  const e = await ask(socket, { op: 'engine', images }, idleSeconds, SILENCE_LIMIT_MS);
  if ('lost' in e) return e;
  const r = e.reply;
  if ('engine' in r) return r.engine;
  if ('unsupported' in r) return { unsupported: r.unsupported };
  return { error: 'error' in r ? r.error : 'an unexpected reply' };
}

/** The broker's final reply to one request, that no broker listens (`absent`), or why the exchange broke. */
type Exchange = { reply: BrokerReply } | { absent: true } | { lost: string };

/**
 * Sends one request and waits for its final reply; heartbeats keep the wait alive. Bun's own socket,
 * not node:net, whose module alone adds ~7 ms to a wrapper's start.
 */
async function talk(socket: string, request: BrokerRequest, silenceMs: number): Promise<Exchange> {
  let settle: (e: Exchange) => void = () => undefined;
  const done = new Promise<Exchange>((resolve) => (settle = resolve));
  let buf = '';
  const utf8 = new TextDecoder();
  let watchdog: Timer | undefined;
  // Bun's socket keeps nothing the kernel did not take: what is left of the request goes on each drain.
  let unsent = Buffer.from(JSON.stringify(request) + '\n');
  const send = (s: { write(data: Uint8Array): number }) => {
    if (unsent.length > 0) unsent = unsent.subarray(Math.max(0, s.write(unsent)));
  };
  const silent = () => settle({ lost: `the build broker stopped answering (nothing for ${silenceMs / 1000} s)` });
  let conn: Awaited<ReturnType<typeof Bun.connect>>;
  try {
    conn = await Bun.connect({
      unix: socket,
      socket: {
        data(_s, chunk) {
          clearTimeout(watchdog);
          watchdog = setTimeout(silent, silenceMs);
          buf += utf8.decode(chunk, { stream: true });
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            let reply: BrokerReply;
            try {
              reply = JSON.parse(line) as BrokerReply;
            } catch {
              return settle({ lost: 'the build broker sent something that is not a reply' });
            }
            // A broker on its way out answers `stopping` to a build: as if none listened.
            if ('stopping' in reply && (request.op === 'build' || request.op === 'engine')) return settle({ absent: true });
            if (!('beat' in reply)) return settle({ reply });
          }
        },
        drain: send,
        error(_s, err) {
          settle({ lost: `the build broker's connection failed (${err.message})` });
        },
        close() {
          settle({ lost: 'the build broker exited during the build' });
        },
      },
    });
  } catch {
    return { absent: true };
  }
  watchdog = setTimeout(silent, silenceMs);
  send(conn);
  const result = await done;
  clearTimeout(watchdog);
  conn.end();
  return result;
}

/**
 * Starts the broker for `socket` unless one listens: `cargo buildx` does it before cargo starts, so the
 * broker's start and its engine connection overlap cargo's own start instead of the first unit's build.
 */
export async function warmBroker(socket: string, idleSeconds: number): Promise<void> {
  try {
    const conn = await Bun.connect({ unix: socket, socket: { data() {} } });
    conn.end();
  } catch {
    await startBroker(socket, idleSeconds);
  }
}

/** The broker's status when one answers on `socket` within `timeoutMs`. */
export async function brokerStatus(socket: string, timeoutMs = 2_000): Promise<BrokerStatus | undefined> {
  const e = await talk(socket, { op: 'status' }, timeoutMs);
  return 'reply' in e && 'status' in e.reply ? e.reply.status : undefined;
}

/** Asks the broker on `socket` to stop; false when none answered. */
export async function stopBroker(socket: string, timeoutMs = 2_000): Promise<boolean> {
  const e = await talk(socket, { op: 'stop' }, timeoutMs);
  return 'reply' in e && 'stopping' in e.reply;
}

/**
 * How the broker is run. It is a separate bundle (dist/rustcbuildx-broker.js, run by this same
 * executable as bun): its gRPC and protobuf code would add ~20 ms to every wrapper's start-up if it
 * were part of the executable's own bundle. From source, bun runs the broker's entry file.
 */
function brokerCommand(): string[] | undefined {
  if (basename(process.execPath).startsWith('bun')) return [process.execPath, join(import.meta.dir, 'main.ts')];
  const script = join(dirname(realpathSync(process.execPath)), 'rustcbuildx-broker.js');
  return existsSync(script) ? [process.execPath, script] : undefined;
}

/**
 * Starts a broker for `socket` in its own session (cargo's Ctrl-C does not reach it), logging beside
 * its socket. Returns why it could not be started, or undefined.
 */
export async function startBroker(socket: string, idleSeconds: number): Promise<string | undefined> {
  const { spawn } = await import('node:child_process');
  // One wrapper of a cold `-jN` start spawns; the others wait for its socket (a marker older than the
  // start timeout is a leftover).
  const marker = `${socket}.starting`;
  try {
    closeSync(openSync(marker, 'wx', 0o600));
  } catch {
    const st = statSync(marker, { throwIfNoEntry: false });
    if (st && Date.now() - st.mtimeMs < START_TIMEOUT_MS) return undefined;
    rmSync(marker, { force: true });
    return startBroker(socket, idleSeconds);
  }
  const self = brokerCommand();
  if (!self) return `the build broker is not installed beside ${process.execPath} (rustcbuildx-broker.js; \`npm run build\` makes it)`;
  let log: number | 'ignore' = 'ignore';
  try {
    log = openSync(`${socket}.log`, 'a', 0o600);
  } catch {
    // no log then
  }
  try {
    const child = spawn(self[0] as string, [...self.slice(1), '--socket', socket, '--idle', String(idleSeconds)], {
      detached: true,
      // Not the crate's directory: a long-lived process must not hold it (or a mount) busy.
      cwd: '/',
      env: { ...process.env, BUN_BE_BUN: '1', RUSTCBUILDX_BROKER_STARTING: marker },
      stdio: ['ignore', log, log],
    });
    child.on('error', () => undefined);
    child.unref();
    return undefined;
  } catch (err) {
    return `the build broker could not be started: ${(err as Error).message}`;
  } finally {
    if (typeof log === 'number') closeSync(log);
  }
}
