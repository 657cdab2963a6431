/**
 * Raw connections to a docker daemon, the way the docker client makes them (unix socket, tcp with or
 * without TLS, or `ssh host docker system dial-stdio`), and the HTTP upgrade that turns one into a
 * BuildKit control connection (`POST /grpc`) or a build session (`POST /session`).
 */
import { spawn } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { connect as netConnect, isIP } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { dockerConfigDir, dockerContext, dockerHost } from '../endpoint.ts';
import { sha256 } from '../../toolchain.ts';
import { sshMuxEnv } from '../ssh-mux.ts';

export type Dialer = () => Promise<Duplex>;

export class DialError extends Error {
  override name = 'DialError';
}

const DEFAULT_HOST = 'unix:///var/run/docker.sock';

/**
 * A dialer for the daemon the docker client would reach with this environment. ssh:// runs the user's
 * `ssh` with connection sharing (src/engine/ssh-mux.ts), so every dial after the first is a channel on
 * the one connection the broker keeps.
 */
export function dockerDialer(env: Record<string, string | undefined>, cacheDir: string): { host: string; dial: Dialer } {
  const host = dockerHost(env) || DEFAULT_HOST;
  const url = parseHost(host);
  switch (url.protocol) {
    case 'unix:':
      return { host, dial: () => connectSocket(() => netConnect(url.pathname)) };
    case 'tcp:': {
      const port = Number(url.port || (tlsWanted(env) ? 2376 : 2375));
      const tls = tlsWanted(env) ? tlsOptions(env) : undefined;
      const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
      // SNI carries names only (TLS forbids an address there); the certificate is checked against either.
      const servername = isIP(hostname) ? {} : { servername: hostname };
      if (!tls) return { host, dial: () => connectSocket(() => netConnect(port, hostname)) };
      // A session's HTTP/2 server, handed a TLS socket itself, writes TLS records into it (seen with Bun:
      // the daemon read "frame too large"): it gets a plain stream over the socket instead.
      return { host, dial: async () => {
        const socket = await connectSocket(() => tlsConnect({ host: hostname, port, ...servername, ...tls }), 'secureConnect');
        return relayStream(socket, socket, () => socket.destroy());
      } };
    }
    case 'ssh:': {
      const argv = ['-T', '-o', 'ConnectTimeout=30'];
      if (url.username) argv.push('-l', decodeURIComponent(url.username));
      if (url.port) argv.push('-p', url.port);
      argv.push('--', url.hostname, 'docker', 'system', 'dial-stdio');
      const sshEnv = { ...env, ...sshMuxEnv(env, cacheDir) };
      return { host, dial: () => Promise.resolve(sshStream(argv, sshEnv)) };
    }
    default:
      throw new DialError(`DOCKER_HOST=${host}: this scheme is not one the broker can reach (unix://, tcp://, ssh://)`);
  }
}

function parseHost(host: string): URL {
  try {
    return new URL(host);
  } catch {
    throw new DialError(`DOCKER_HOST=${host} is not a URL`);
  }
}

/** The TLS material of the docker context in use, when it was made with some (`contexts/tls/<sha256 of its name>/docker/`). */
function contextTlsDir(env: Record<string, string | undefined>): string | undefined {
  const context = !env.DOCKER_HOST ? dockerContext(env) : undefined;
  const dir = context !== undefined ? join(dockerConfigDir(env), 'contexts', 'tls', sha256(context), 'docker') : undefined;
  return dir !== undefined && existsSync(dir) ? dir : undefined;
}

function tlsWanted(env: Record<string, string | undefined>): boolean {
  return Boolean(env.DOCKER_TLS_VERIFY || env.DOCKER_TLS) || contextTlsDir(env) !== undefined;
}

/**
 * As the docker client reads them: ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH, else the docker
 * context's own (`contexts/tls/<sha256 of its name>/docker/`), else ~/.docker.
 */
function tlsOptions(env: Record<string, string | undefined>): { ca?: Buffer; cert?: Buffer; key?: Buffer; rejectUnauthorized: boolean } {
  const contextTls = contextTlsDir(env);
  const dir = env.DOCKER_CERT_PATH || contextTls || dockerConfigDir(env);
  const read = (name: string) => (existsSync(join(dir, name)) ? readFileSync(join(dir, name)) : undefined);
  return { ca: read('ca.pem'), cert: read('cert.pem'), key: read('key.pem'), rejectUnauthorized: Boolean(env.DOCKER_TLS_VERIFY) || (contextTls !== undefined && dir === contextTls) };
}

function connectSocket(open: () => Duplex, ready = 'connect'): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const s = open();
    s.once('error', reject);
    s.once(ready, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

/** A plain duplex stream reading `input` and writing `output`; `close` runs when it is closed. */
function relayStream(input: Readable, output: Writable, close: () => void, what = 'connection'): Duplex {
  const stream = new Duplex({
    read: () => input.resume(),
    write: (chunk: Buffer, _enc, done) => output.write(chunk, done),
    final: (done) => output.end(done),
  });
  input.on('data', (d: Buffer) => {
    if (!stream.push(d)) input.pause();
  });
  let ended = false;
  input.on('end', () => {
    ended = true;
    stream.push(null);
  });
  // Closed without an end (a reset): an error. After an end, what is buffered is delivered first.
  input.on('close', () => (ended ? setImmediate(() => stream.destroy()) : stream.destroy(new DialError(`${what}: closed`))));
  // The peer gone while we write (a dropped connection): an error on this stream, never an uncaught EPIPE.
  for (const side of new Set<Readable | Writable>([input, output])) side.on('error', (err: Error) => stream.destroy(new DialError(`${what}: ${err.message}`)));
  stream.on('close', close);
  return stream;
}

/** `ssh … docker system dial-stdio` as a stream; destroying the stream ends the process. */
function sshStream(argv: string[], env: Record<string, string | undefined>): Duplex {
  const child = spawn('ssh', argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  const stream = relayStream(child.stdout, child.stdin, () => child.kill(), 'ssh');
  child.on('error', (err) => stream.destroy(new DialError(`ssh: ${err.message}`)));
  child.on('exit', (code) => {
    if (code) stream.destroy(new DialError(`ssh exited ${code}: ${stderr.trim().split('\n').at(-1) ?? ''}`));
  });
  return stream;
}

/**
 * `POST <path>` with `Upgrade: h2c`: the daemon answers 101 and the connection becomes HTTP/2, in which
 * we are the client (/grpc) or the server (/session). Bytes after the response head stay in the stream.
 */
export function upgrade(stream: Duplex, path: string, headers: Record<string, string | string[]> = {}, timeoutMs = 30_000): Promise<Duplex> {
  const lines = Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((one) => `${k}: ${one}\r\n`));
  stream.write(`POST ${path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n${lines.join('')}\r\n`);
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new DialError(`no answer to POST ${path} within ${timeoutMs / 1000} s`)), timeoutMs);
    const fail = (err: Error) => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('error', fail);
      stream.off('end', onEnd);
      stream.pause();
      const status = head.subarray(0, head.indexOf('\r\n')).toString();
      if (!/^HTTP\/1\.[01] 101 /.test(status)) {
        stream.destroy();
        return reject(new DialError(`POST ${path}: ${status} (${head.subarray(end + 4).toString().trim().slice(0, 200)})`));
      }
      const rest = head.subarray(end + 4);
      if (rest.length > 0) stream.unshift(rest);
      resolve(stream);
    };
    const onEnd = () => fail(new DialError(`the connection closed before POST ${path} was answered`));
    stream.on('data', onData);
    stream.once('error', fail);
    stream.once('end', onEnd);
  });
}

/**
 * `GET <path>` on a new connection, its JSON body (the daemon's own API: `/info`). HTTP/1.0, so the
 * daemon answers with the body whole and closes: no chunked encoding to undo. `timeoutMs` bounds the
 * whole exchange, the dial included (a connect to a host that is gone).
 */
export async function getJson(dial: Dialer, path: string, timeoutMs = 30_000, maxBytes = 1 << 20): Promise<unknown> {
  const deadline = performance.now() + timeoutMs;
  const late = () => new DialError(`no answer to GET ${path} within ${timeoutMs / 1000} s`);
  const dialing = dial();
  let dialTimer: ReturnType<typeof setTimeout> | undefined;
  let stream: Duplex;
  try {
    stream = await Promise.race([dialing, new Promise<never>((_, reject) => (dialTimer = setTimeout(() => reject(late()), timeoutMs)))]);
  } catch (err) {
    dialing.then((s) => s.destroy(), () => undefined); // a dial that ends after all is not kept
    throw err;
  } finally {
    clearTimeout(dialTimer);
  }
  stream.write(`GET ${path} HTTP/1.0\r\nHost: docker\r\n\r\n`);
  let received = Buffer.alloc(0);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(late()), Math.max(0, deadline - performance.now()));
      const done = (err?: Error) => (clearTimeout(timer), err ? reject(err) : resolve());
      stream.on('data', (d: Buffer) => {
        received = Buffer.concat([received, d]);
        if (received.length > maxBytes) return done(new DialError(`GET ${path}: more than ${maxBytes} bytes`));
        // A peer that keeps the connection open (a proxy) is done once the announced body is here.
        const head = received.indexOf('\r\n\r\n');
        const length = head < 0 ? undefined : /\r\ncontent-length:\s*(\d+)/i.exec(received.subarray(0, head).toString('latin1'))?.[1];
        if (length !== undefined && received.length >= head + 4 + Number(length)) done();
      });
      stream.once('error', (err: Error) => done(err));
      stream.once('end', () => done());
    });
  } finally {
    stream.destroy();
  }
  const text = received.toString('utf8');
  const end = text.indexOf('\r\n\r\n');
  const status = text.slice(0, text.indexOf('\r\n'));
  if (end < 0 || !/^HTTP\/1\.[01] 200 /.test(status)) throw new DialError(`GET ${path}: ${status || 'no answer'}`);
  return JSON.parse(text.slice(end + 4));
}
