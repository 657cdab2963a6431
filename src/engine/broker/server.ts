/**
 * The build broker: one long-lived process per user and engine endpoint (sccache's server model). It
 * keeps one BuildKit client (control connection and build sessions, src/engine/buildkit/) and serves the
 * wrappers' build requests over a unix socket, so a unit costs one Solve on open connections instead of
 * a docker CLI process, its plugin, a new connection and a new session. It exits when idle.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { mkdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { writeAtomic } from '../../run-state.ts';
import { BuildkitClient, SSH_LIMITS, UNLIMITED } from '../buildkit/client.ts';
import { DialError, dockerDialer, getJson, type Dialer } from '../buildkit/dial.ts';
import { sha256 } from '../../toolchain.ts';
import { endpointElsewhere } from '../endpoint.ts';
import { engineInfoPath, HEARTBEAT_MS, type BrokerReply, type BrokerRequest, type BrokerStatus, type EngineInfo } from './protocol.ts';
import { imageInfoOf, type BuildRequest, type DockerImageConfig, type ImageInfo } from '../engine.ts';

export interface BrokerOptions {
  socket: string;
  idleSeconds: number;
  env: Record<string, string | undefined>;
  cacheDir: string;
  /** told when the socket is claimed, by this broker or by another that answers on it */
  claimed?: () => void;
}

export async function serveBroker(opts: BrokerOptions): Promise<number> {
  const say = (msg: string) => process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
  // A bug of ours in a callback must not take the builds in flight with it: their wrappers would wait
  // for the silence limit. Logged; the broker goes on (a broken client is replaced on the next build).
  process.on('uncaughtException', (err) => say(`internal error: ${err.stack ?? err.message}`));
  process.on('unhandledRejection', (err) => say(`internal error: ${String((err as Error)?.stack ?? err)}`));
  let dialer: { host: string; dial: Dialer } | undefined;
  let unsupported: string | undefined;
  try {
    dialer = dockerDialer(opts.env, opts.cacheDir);
  } catch (err) {
    unsupported = (err as Error).message;
  }
  const endpoint = dialer?.host ?? opts.env.DOCKER_HOST ?? '?';
  const startedAt = new Date();
  let client: Promise<BuildkitClient> | undefined;
  let lastError = '';
  let builds = 0;
  let inFlight = 0;
  let lastActivity = Date.now();
  let stopping = false;
  let refusalSaid = false;

  // The engine's cores, for `cargo buildx` to size cargo's jobs by (src/cli/jobs.ts): its next run reads
  // them beside the socket. Best effort: without them cargo keeps its default.
  let engineCpus: number | undefined;
  const askEngineCpus = async (dial: Dialer): Promise<number | undefined> => {
    try {
      const info = (await getJson(dial, '/info')) as { NCPU?: unknown };
      if (typeof info.NCPU !== 'number' || info.NCPU < 1) throw new Error(`/info says NCPU ${JSON.stringify(info.NCPU)}`);
      return info.NCPU;
    } catch (err) {
      say(`the engine's cores are unknown: ${(err as Error).message}`);
      return undefined;
    }
  };
  // Kept for `cargo buildx` only once builds go through this broker, whose gate holds compiles to the
  // engine's cores: the jobs it gives cargo count on that. An earlier broker's figure may be another
  // engine's now (an ssh alias pointed elsewhere): it goes when this one cannot say.
  const recordEngineCpus = (client: BuildkitClient, cpus: number | undefined) => {
    if (cpus === undefined) return rmSync(engineInfoPath(opts.socket), { force: true });
    engineCpus = cpus;
    client.engineCpus = cpus;
    writeAtomic(engineInfoPath(opts.socket), JSON.stringify({ cpus, elsewhere: endpointElsewhere(endpoint) } satisfies EngineInfo));
  };
  const connect = (): Promise<BuildkitClient> => {
    if (client) return client;
    if (!dialer) return Promise.reject(new Error(unsupported));
    const d = dialer;
    // The engine keeps its copies of our context under this key: the same for every broker of this
    // socket on this machine, so a successor (after an idle exit, a fresh clone's run) finds them
    // filled. Their files are named by content, so whatever a copy holds is what we would send.
    // Another machine's copies are their own (each sync drops what it does not list): containers
    // often share a hostname, so the machine is a random key kept in the cache dir.
    const sharedKeyBase = sha256(`${machineKey(opts.cacheDir)}\0${opts.socket}`).slice(0, 16);
    // The engine's cores are asked for alongside: they size the engine's work before the first unit
    // (waited for a little; a late answer still does, from then on).
    const cpus = askEngineCpus(d.dial);
    const made: Promise<BuildkitClient> = BuildkitClient.connect(d.dial, `${opts.socket}.${process.pid}.grpc`, sharedKeyBase, d.host.startsWith('ssh://') ? SSH_LIMITS : UNLIMITED).then(
      async (c) => {
        say(`connected to ${d.host}: BuildKit ${c.version}`);
        const recorded = cpus.then((n) => recordEngineCpus(c, n));
        await Promise.race([recorded, Bun.sleep(5_000)]);
        return c;
      },
      (err: Error) => {
        if (client === made) client = undefined;
        lastError = err.message;
        // The daemon answered, but not with BuildKit's API: an engine the CLI must drive.
        if (err instanceof DialError && /^POST \/grpc: HTTP/.test(err.message)) unsupported = `${d.host} does not offer BuildKit's API (${err.message})`;
        throw err;
      },
    );
    client = made;
    return made;
  };
  connect().catch(() => undefined); // warm up while the first wrapper sends its request

  const build = async (req: BuildRequest, cancel: AbortSignal): Promise<BrokerReply> => {
    if (unsupported) return { unsupported };
    let c: BuildkitClient;
    const current = connect();
    try {
      c = await current;
    } catch (err) {
      if (unsupported) return { unsupported };
      // Not the unit's failure: the wrapper says so once and uses the CLI for the rest of its run.
      return { error: `cannot reach ${endpoint}: ${(err as Error).message}` };
    }
    const result = await c.build(req, cancel);
    if (c.gatewayRefusal && !refusalSaid) {
      refusalSaid = true;
      say(`the engine does not hold a build open for units (${c.gatewayRefusal}): each unit is a build of its own`);
    }
    if (c.failure && client === current) {
      say(c.failure);
      client = undefined;
      void c.close();
    }
    return { result };
  };

  // The first wrappers of a run ask together: one answer each for the same question.
  const factsAsked = new Map<string, Promise<BrokerReply>>();
  const engineFacts = (images: readonly string[]): Promise<BrokerReply> => {
    const key = JSON.stringify(images);
    let asked = factsAsked.get(key);
    if (!asked) {
      asked = askEngine(images).finally(() => factsAsked.delete(key));
      factsAsked.set(key, asked);
    }
    return asked;
  };
  const askEngine = async (images: readonly string[]): Promise<BrokerReply> => {
    if (!dialer) return { unsupported: unsupported ?? `cannot dial ${endpoint}` };
    const { dial } = dialer;
    try {
      // Each bounded, dial included, within the wrapper's silence limit.
      const [version, ...infos] = await Promise.all([getJson(dial, '/version', FACTS_TIMEOUT_MS), ...images.map((ref) => inspectImage(dial, ref))]);
      const server = (version as { Version?: unknown }).Version;
      if (typeof server !== 'string' || !server) return { error: `${endpoint}'s /version names no version` };
      return { engine: { server, images: Object.fromEntries(images.map((ref, i) => [ref, infos[i] ?? null])) } };
    } catch (err) {
      return { error: `cannot reach ${endpoint}: ${(err as Error).message}` };
    }
  };

  const status = async (): Promise<BrokerStatus> => {
    const c = client ? await client.catch(() => undefined) : undefined;
    return {
      pid: process.pid,
      endpoint,
      engine: c ? `BuildKit ${c.version}${engineCpus ? `, ${engineCpus} CPUs` : ''}${c.gatewayRefusal ? `, a build per unit (${c.gatewayRefusal})` : ''}` : unsupported ?? (lastError || 'not connected yet'),
      connected: Boolean(c),
      startedAt: startedAt.toISOString(),
      builds,
      inFlight,
      sessions: c?.sessionCount ?? 0,
      idleSeconds: inFlight > 0 ? 0 : Math.round((Date.now() - lastActivity) / 1000),
      idleLimitSeconds: opts.idleSeconds,
    };
  };

  const server = createServer((conn: Socket) => {
    let buf = '';
    const reply = (r: BrokerReply) => {
      if (!conn.destroyed) conn.write(JSON.stringify(r) + '\n');
    };
    conn.on('error', () => undefined);
    // Decoded as a stream: a request of hundreds of kB arrives in chunks, and a character split
    // between two (a package author's name) must not turn into U+FFFD in what gets built.
    conn.setEncoding('utf8');
    conn.on('data', async (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '\u0000'; // one request per connection
      let request: BrokerRequest;
      try {
        request = JSON.parse(line) as BrokerRequest;
      } catch {
        reply({ error: 'not a request' });
        return conn.end();
      }
      if (request.op === 'status') {
        reply({ status: await status() });
        return conn.end();
      }
      if (request.op === 'stop' || stopping) {
        // A build that finds this broker going is asked again of the next one (see the client).
        reply({ stopping: true });
        conn.end();
        return request.op === 'stop' ? shutdown('asked to stop') : undefined;
      }
      // Only builds count as activity (and a run's question before its builds): a status query must not
      // keep an idle broker alive.
      lastActivity = Date.now();
      if (request.op === 'engine') {
        // A run is starting: its units follow.
        connect().then((c) => c.prepare(), () => undefined);
        reply(await engineFacts(request.images));
        return conn.end();
      }
      inFlight++;
      builds++;
      let beats = 0;
      const heartbeat = setInterval(() => reply({ beat: ++beats }), HEARTBEAT_MS);
      // The wrapper gone (Ctrl-C, killed): stop its build, whose work dir it has removed.
      const gone = new AbortController();
      conn.on('close', () => gone.abort());
      try {
        reply(await build(request.req, gone.signal));
      } catch (err) {
        reply({ error: `broker: ${(err as Error).message}` });
      } finally {
        clearInterval(heartbeat);
        inFlight--;
        lastActivity = Date.now();
        conn.end();
      }
    });
  });

  let bound: number | undefined;
  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    say(`stopping: ${why}`);
    server.close();
    // The socket goes at once, so the next wrapper starts a new broker instead of waiting for this one;
    // only if it is still ours (a successor may have bound the path already).
    if (bound !== undefined && statSync(opts.socket, { throwIfNoEntry: false })?.ino === bound) rmSync(opts.socket, { force: true });
    // Builds in flight finish (their wrappers are waiting), within reason.
    for (let waited = 0; inFlight > 0 && waited < 60_000; waited += 100) await Bun.sleep(100);
    await (await client?.catch(() => undefined))?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => void shutdown('SIGHUP'));

  bound = await claimSocket(server, opts.socket);
  opts.claimed?.();
  if (bound === undefined) {
    say(`another broker answers on ${opts.socket}: leaving it the work`);
    await (await client?.catch(() => undefined))?.close();
    return 0;
  }
  say(`listening on ${opts.socket} for ${endpoint} (pid ${process.pid}, idle limit ${opts.idleSeconds} s)`);
  const idleCheck = setInterval(() => {
    if (inFlight === 0 && Date.now() - lastActivity > opts.idleSeconds * 1000) void shutdown(`idle for ${opts.idleSeconds} s`);
  }, Math.min(5_000, opts.idleSeconds * 250));
  idleCheck.unref?.();
  await new Promise(() => undefined); // runs until shutdown exits the process
  return 0;
}

/**
 * One broker per socket. Binding a unix socket is atomic: the first to bind the path is the broker. A
 * path left by a broker that died is taken over under a lock dir, so two starting brokers never both
 * remove it and both listen. Returns the bound socket's inode, or undefined when a live broker has it.
 */
async function claimSocket(server: Server, path: string): Promise<number | undefined> {
  const listen = () =>
    new Promise<boolean>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err));
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve(true);
      });
    });
  const lock = `${path}.takeover`;
  for (let attempt = 0; attempt < 50; attempt++) {
    if (await listen()) return statSync(path).ino;
    if (await answers(path)) return undefined;
    try {
      mkdirSync(lock);
    } catch {
      // another broker is taking over; a lock older than 10 s is a leftover of one that died doing it
      const st = statSync(lock, { throwIfNoEntry: false });
      if (st && Date.now() - st.mtimeMs > 10_000) rmdirSync(lock);
      await Bun.sleep(100);
      continue;
    }
    try {
      if (await answers(path)) return undefined;
      rmSync(path, { force: true });
      if (await listen()) return statSync(path).ino;
    } finally {
      rmdirSync(lock);
    }
  }
  return undefined;
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = createConnection(path);
    conn.once('connect', () => {
      conn.destroy();
      resolve(true);
    });
    conn.once('error', () => resolve(false));
  });
}

const FACTS_TIMEOUT_MS = 15_000;

/** `docker image inspect REF` asked of the daemon itself; undefined when its store lacks the image. */
async function inspectImage(dial: Dialer, ref: string): Promise<ImageInfo | undefined> {
  try {
    const image = (await getJson(dial, `/images/${encodeURI(ref)}/json`, FACTS_TIMEOUT_MS, 8 << 20)) as { Id?: unknown; Config?: DockerImageConfig | null };
    if (typeof image.Id !== 'string') throw new DialError(`the engine describes ${ref} without an ID`);
    return imageInfoOf(image.Id, image.Config);
  } catch (err) {
    if (err instanceof DialError && / 404 /.test(err.message)) return undefined;
    throw err;
  }
}

/** This machine's key, made once: a random 16 bytes in the cache dir (a key that cannot be kept is made anew). */
function machineKey(cacheDir: string): string {
  const file = join(cacheDir, 'machine-key');
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{32}$/.test(key)) return key;
  } catch {
    // not made yet
  }
  const key = randomBytes(16).toString('hex');
  try {
    writeAtomic(file, key);
    // Two brokers starting at once: the file holds the key of whichever renamed last.
    return readFileSync(file, 'utf8').trim();
  } catch {
    return key; // a read-only cache dir: this broker's copies are its own
  }
}
