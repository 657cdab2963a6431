/**
 * A TCP relay that adds latency: every chunk, in each direction, is forwarded `--delay-ms` after it
 * arrived, in order, with no bandwidth cap. It stands in for a real network's round trip where the
 * kernel has no netem (scripts/remote-engine.sh puts it in front of the remote engine's sshd):
 *
 *   bun bench/lib/delay-relay.ts --listen 127.0.0.1:2223 --to 127.0.0.1:2222 --delay-ms 20
 *
 * A round trip through it costs 2 × delay more than without. Half-close is relayed (a side's FIN reaches
 * the other side after the delay, like its data); an error or reset on either side ends both. Flow control
 * is TCP's own: a slow reader pauses the other side instead of growing the queue without bound.
 * SIGTERM or SIGINT closes the listener and every connection, then exits 0. Prints `listening HOST:PORT`
 * on stdout once it accepts connections (`--listen 127.0.0.1:0` picks a free port).
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

interface Options {
  listenHost: string;
  listenPort: number;
  toHost: string;
  toPort: number;
  delayMs: number;
  verbose: boolean;
}

function hostPort(value: string, what: string): [string, number] {
  const m = /^(.*):(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || !(port >= 0 && port < 65536)) throw new Error(`${what} must be HOST:PORT, got ${value}`);
  return [m[1].replace(/^\[(.*)\]$/, '$1'), port];
}

function parseArgs(argv: string[]): Options {
  let listen: string | undefined;
  let to: string | undefined;
  let delay = '20';
  let verbose = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--listen') listen = value();
    else if (arg === '--to') to = value();
    else if (arg === '--delay-ms') delay = value();
    else if (arg === '--verbose') verbose = true;
    else throw new Error(`unknown option ${arg} (usage: --listen HOST:PORT --to HOST:PORT [--delay-ms N] [--verbose])`);
  }
  if (!listen || !to) throw new Error('--listen HOST:PORT and --to HOST:PORT are required');
  const delayMs = Number(delay);
  if (!Number.isFinite(delayMs) || delayMs < 0) throw new Error(`--delay-ms must be a number ≥ 0, got ${delay}`);
  const [listenHost, listenPort] = hostPort(listen, '--listen');
  const [toHost, toPort] = hostPort(to, '--to');
  return { listenHost, listenPort, toHost, toPort, delayMs, verbose };
}

const END = Symbol('end');

/**
 * One direction of a connection: chunks read from `from` are written to `to` once `delayMs` has passed
 * since each arrived. The queue is FIFO and every item waits the same time, so the head is always the
 * next one due: one timer, armed for the head, suffices, and order is kept.
 */
class DelayedPipe {
  private readonly queue: Array<{ due: number; item: Uint8Array | typeof END }> = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** the source's FIN has arrived (it is queued like data) */
  sawEnd = false;
  /** the FIN has been passed on: this direction is finished */
  ended = false;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly delayMs: number,
  ) {
    from.on('data', (chunk: Uint8Array) => this.push(chunk));
    from.on('end', () => {
      this.sawEnd = true;
      this.push(END);
    });
    to.on('drain', () => from.resume());
  }

  private push(item: Uint8Array | typeof END): void {
    this.queue.push({ due: performance.now() + this.delayMs, item });
    if (this.timer === undefined) this.arm();
  }

  private arm(): void {
    const head = this.queue[0];
    if (!head) return;
    this.timer = setTimeout(() => this.flush(), Math.max(0, head.due - performance.now()));
  }

  private flush(): void {
    this.timer = undefined;
    const now = performance.now();
    // A timer may fire a little early or late: write everything that is due (never something that is not).
    while (this.queue.length > 0 && (this.queue[0] as { due: number }).due <= now + 0.5) {
      const { item } = this.queue.shift() as { item: Uint8Array | typeof END };
      if (this.to.destroyed) {
        this.queue.length = 0;
        return;
      }
      if (item === END) {
        this.ended = true;
        this.to.end();
      } else if (!this.to.write(item)) {
        // The reader is slower than the writer: stop reading until it drains (queued chunks still go out).
        this.from.pause();
      }
    }
    this.arm();
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  const log = (line: string) => {
    if (opts.verbose) process.stderr.write(`delay-relay: ${line}\n`);
  };
  const open = new Set<Socket>();
  let next = 0;

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    const id = ++next;
    const upstream = createConnection({ host: opts.toHost, port: opts.toPort, allowHalfOpen: true });
    open.add(client);
    open.add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const up = new DelayedPipe(client, upstream, opts.delayMs);
    const down = new DelayedPipe(upstream, client, opts.delayMs);
    let closed = false;
    const closeBoth = (why: string) => {
      if (closed) return;
      closed = true;
      log(`#${id} closed (${why})`);
      up.stop();
      down.stop();
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    // Reading starts only once the upstream accepted, so nothing is lost or sent to a refused connection.
    upstream.once('connect', () => {
      log(`#${id} ${client.remoteAddress}:${client.remotePort} → ${opts.toHost}:${opts.toPort}`);
      client.resume();
    });
    client.on('error', (err) => closeBoth(`client: ${err.message}`));
    upstream.on('error', (err) => closeBoth(`upstream: ${err.message}`));
    // A side that closed cleanly (its FIN received, ours passed on to it) may still have data and its FIN
    // queued for the other side: that side then ends by itself once they are delivered. Any other close
    // (a reset, an error, a destroyed socket) ends both at once.
    const onClose = (side: string, from: DelayedPipe, into: DelayedPipe) => (hadError: boolean) => {
      if (up.ended && down.ended) closeBoth('done');
      else if (hadError || !from.sawEnd || !into.ended) closeBoth(`${side} closed`);
    };
    client.on('close', onClose('client', up, down));
    upstream.on('close', onClose('upstream', down, up));
  });

  server.on('error', (err) => {
    process.stderr.write(`delay-relay: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(opts.listenPort, opts.listenHost, () => {
    const addr = server.address() as AddressInfo;
    process.stdout.write(`listening ${addr.address}:${addr.port} → ${opts.toHost}:${opts.toPort}, ${opts.delayMs} ms each way\n`);
  });

  const shutdown = (signal: string) => {
    log(`${signal}: closing ${open.size / 2} connection(s)`);
    server.close();
    for (const socket of open) socket.destroy();
    open.clear();
    process.exit(0);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

try {
  main();
} catch (err) {
  process.stderr.write(`delay-relay: ${(err as Error).message}\n`);
  process.exit(2);
}
