/**
 * The build broker: one long-lived process per user and engine endpoint (sccache's server model). It
 * keeps one BuildKit client (control connection and build sessions, src/engine/buildkit/) and serves the
 * wrappers' build requests over a unix socket, so a unit costs one Solve on open connections instead of
 * a docker CLI process, its plugin, a new connection and a new session. It exits when idle.
 */
import { createServer, type Socket } from 'node:net';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { BuildkitClient } from '../buildkit/client.ts';
import { DialError, dockerDialer, type Dialer } from '../buildkit/dial.ts';
import { sha256 } from '../../toolchain.ts';
import { HEARTBEAT_MS, type BrokerReply, type BrokerRequest, type BrokerStatus } from './protocol.ts';
import type { BuildRequest } from '../engine.ts';

export interface BrokerOptions {
  socket: string;
  idleSeconds: number;
  env: Record<string, string | undefined>;
  cacheDir: string;
}

export async function serveBroker(opts: BrokerOptions): Promise<number> {
  const pidFile = `${opts.socket}.pid`;
  if (!takeLock(pidFile)) return 0; // another broker for this endpoint runs or is starting
  const say = (msg: string) => process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
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

  const connect = (): Promise<BuildkitClient> => {
    if (!dialer) throw new Error(unsupported);
    const d = dialer;
    client ??= BuildkitClient.connect(d.dial, `${opts.socket}.grpc`, sha256(`${opts.socket}\0${process.pid}`).slice(0, 16)).then(
      (c) => {
        say(`connected to ${d.host}: BuildKit ${c.version}`);
        return c;
      },
      (err: Error) => {
        client = undefined;
        lastError = err.message;
        // The daemon answered, but not with BuildKit's API: an engine the CLI must drive.
        if (err instanceof DialError && /^POST \/grpc: HTTP/.test(err.message)) unsupported = `${d.host} does not offer BuildKit's API (${err.message})`;
        throw err;
      },
    );
    return client;
  };
  connect().catch(() => undefined); // warm up while the first wrapper sends its request

  const build = async (req: BuildRequest, cancel: AbortSignal): Promise<BrokerReply> => {
    if (unsupported) return { unsupported };
    let c: BuildkitClient;
    try {
      c = await connect();
    } catch (err) {
      if (unsupported) return { unsupported };
      return { result: { code: 1, log: `rustcbuildx broker: cannot reach ${endpoint}: ${(err as Error).message}\n`, seconds: 0 } };
    }
    const result = await c.build(req, cancel);
    if (c.failure) {
      say(c.failure);
      client = undefined;
      c.close();
    }
    return { result };
  };

  const status = async (): Promise<BrokerStatus> => {
    const c = client ? await client.catch(() => undefined) : undefined;
    return {
      pid: process.pid,
      endpoint,
      engine: c ? `BuildKit ${c.version}` : unsupported ?? (lastError || 'not connected yet'),
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
    conn.on('data', async (d: Buffer) => {
      buf += d.toString();
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
      if (request.op === 'stop') {
        reply({ stopping: true });
        conn.end();
        return shutdown('asked to stop');
      }
      if (stopping) {
        reply({ error: 'the broker is stopping' });
        return conn.end();
      }
      // Only builds count as activity: a status query must not keep an idle broker alive.
      lastActivity = Date.now();
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

  const shutdown = async (why: string) => {
    if (stopping) return;
    stopping = true;
    say(`stopping: ${why}`);
    server.close();
    rmSync(opts.socket, { force: true });
    // Builds in flight finish (their wrappers are waiting), within reason.
    for (let waited = 0; inFlight > 0 && waited < 60_000; waited += 100) await Bun.sleep(100);
    (await client?.catch(() => undefined))?.close();
    rmSync(pidFile, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => void shutdown('SIGHUP'));

  rmSync(opts.socket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socket, resolve);
  });
  say(`listening on ${opts.socket} for ${endpoint} (pid ${process.pid}, idle limit ${opts.idleSeconds} s)`);
  const idleCheck = setInterval(() => {
    if (inFlight === 0 && Date.now() - lastActivity > opts.idleSeconds * 1000) void shutdown(`idle for ${opts.idleSeconds} s`);
  }, Math.min(5_000, opts.idleSeconds * 250));
  idleCheck.unref?.();
  await new Promise(() => undefined); // runs until shutdown exits the process
  return 0;
}

/** One broker per socket: an O_EXCL pid file, taken over when its process is gone. */
function takeLock(pidFile: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(pidFile, 'wx', 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch {
      let pid = 0;
      try {
        pid = Number(readFileSync(pidFile, 'utf8').trim());
      } catch {
        // removed meanwhile: try again
      }
      if (pid > 0 && pid !== process.pid && alive(pid)) return false;
      rmSync(pidFile, { force: true });
    }
  }
  return false;
}

/**
 * Whether `pid` is a running broker. A killed broker whose parent is gone can linger as a zombie (not
 * every init reaps), which signal 0 still finds, and its pid may be reused: /proc says which.
 */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/^\d+ \(.*\) Z /.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--socket');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && existsSync('/proc/self/stat')) return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
