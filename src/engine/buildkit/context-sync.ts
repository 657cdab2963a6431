/**
 * Serving a local directory to BuildKit: the sending side of fsutil's DiffCopy protocol, which is how
 * every BuildKit client sends a build context. We send one STAT packet per entry in walk order (names
 * sorted within each directory, a directory before what it holds) and an empty STAT to end the list; the
 * engine compares them with its copy from the last sync and asks (REQ, by the entry's index) for the
 * files that changed; each is sent as DATA packets and an empty DATA; FIN ends the exchange.
 */
import { createReadStream, lstatSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { PacketType, type Packet, type Stat } from './proto.ts';

/** Go's os.FileMode bits, which fsutil puts on the wire instead of unix mode bits. */
export const GO_MODE = { dir: 2 ** 31, symlink: 2 ** 27, device: 2 ** 26, pipe: 2 ** 25, socket: 2 ** 24, setuid: 2 ** 23, setgid: 2 ** 22, charDevice: 2 ** 21, sticky: 2 ** 20, irregular: 2 ** 19 };

export function goFileMode(st: BigIntStats): number {
  const mode = Number(st.mode);
  let m = mode & 0o777;
  if (mode & 0o4000) m += GO_MODE.setuid;
  if (mode & 0o2000) m += GO_MODE.setgid;
  if (mode & 0o1000) m += GO_MODE.sticky;
  if (st.isDirectory()) m += GO_MODE.dir;
  else if (st.isSymbolicLink()) m += GO_MODE.symlink;
  else if (st.isFIFO()) m += GO_MODE.pipe;
  else if (st.isSocket()) m += GO_MODE.socket;
  else if (st.isCharacterDevice()) m += GO_MODE.device + GO_MODE.charDevice;
  else if (st.isBlockDevice()) m += GO_MODE.device;
  return m;
}

export interface SyncFilter {
  /** fsutil include patterns: only these paths (and what is below them) are sent */
  include: string[];
  /** .dockerignore-style exclude patterns, `!` re-includes */
  exclude: string[];
}

interface Entry {
  stat: Stat;
  /** the host file, for entries whose data can be asked for (regular files) */
  file?: string;
}

const clean = (p: string) => p.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');

function matcher(patterns: readonly string[]): Array<{ glob: InstanceType<typeof Bun.Glob>; text: string; negate: boolean }> {
  return patterns
    .map((raw) => ({ negate: raw.startsWith('!'), text: clean(raw.startsWith('!') ? raw.slice(1) : raw) }))
    .filter((p) => p.text !== '')
    .map((p) => ({ ...p, glob: new Bun.Glob(p.text) }));
}

const matches = (m: { glob: InstanceType<typeof Bun.Glob>; text: string }, path: string) =>
  path === m.text || path.startsWith(`${m.text}/`) || m.glob.match(path);

/** The entries of `root` to send, in fsutil's walk order. */
export function walkContext(root: string, filter: SyncFilter): Entry[] {
  const include = matcher(filter.include);
  const exclude = matcher(filter.exclude);
  const literalIncludes = include.every((m) => !/[*?[\\]/.test(m.text));
  const entries: Entry[] = [];
  const excluded = (path: string) => {
    let out = false;
    for (const m of exclude) if (matches(m, path)) out = !m.negate;
    return out;
  };
  const included = (path: string) => include.length === 0 || include.some((m) => matches(m, path));
  // A directory is worth entering when something below it may be included.
  const mayHoldIncluded = (path: string) => include.length === 0 || !literalIncludes || include.some((m) => matches(m, path) || m.text.startsWith(`${path}/`));

  const walk = (hostDir: string, rel: string, pendingParents: Entry[]) => {
    let dirents;
    try {
      dirents = readdirSync(hostDir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && rel !== '') return; // removed meanwhile
      throw err;
    }
    dirents.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const dirent of dirents) {
      const path = rel ? `${rel}/${dirent.name}` : dirent.name;
      // Decided by the name first: siblings that other wrappers are staging or pruning right now are
      // never looked at, so they cannot fail this transfer (and a build costs no stat per snapshot).
      if (dirent.isDirectory() ? !mayHoldIncluded(path) : !included(path) || excluded(path)) continue;
      const host = join(hostDir, dirent.name);
      let st: BigIntStats;
      try {
        st = lstatSync(host, { bigint: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      const entry: Entry = { stat: statOf(path, host, st) };
      if (st.isFile()) entry.file = host;
      if (st.isDirectory()) {
        if (included(path) && !excluded(path)) {
          entries.push(...pendingParents.splice(0), entry);
          walk(host, path, []);
        } else {
          walk(host, path, [...pendingParents, entry]);
        }
        continue;
      }
      entries.push(...pendingParents.splice(0), entry);
    }
  };
  walk(root, '', []);
  return entries;
}


function statOf(path: string, host: string, st: BigIntStats): Stat {
  return {
    path,
    mode: goFileMode(st),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: st.isFile() ? Number(st.size) : 0,
    // int64 nanoseconds: protobufjs takes the decimal string, a JS number would round it.
    modTime: st.mtimeNs.toString() as unknown as number,
    linkname: st.isSymbolicLink() ? readlinkSync(host) : '',
    devmajor: 0,
    devminor: 0,
  };
}

/**
 * A data packet's payload, so that the whole gRPC message (5 bytes of framing, a few of protobuf) fits in
 * one HTTP/2 frame of the default maximum size. Under Bun, a message on a server stream that outgrows the
 * peer's flow-control window could stall for good (see also the session's PING pump, session.ts).
 */
const CHUNK = 16 * 1024 - 64;

type Call = ServerDuplexStream<Packet, Packet>;

function send(call: Call, p: Partial<Packet> & { type: number }): Promise<void> {
  const packet: Packet = { ID: 0, data: new Uint8Array(), ...p };
  // Resolved when the packet is handed to HTTP/2 (write's callback): flow control without 'drain',
  // which grpc-js's server streams do not emit reliably under Bun.
  return new Promise((resolve, reject) => {
    if (call.destroyed) return reject(new Error('the engine closed the context transfer'));
    call.write(packet, (err?: Error | null) => (err ? reject(err) : resolve()));
  });
}

/** Serves one DiffCopy call for `root`; resolves when the engine has everything it asked for. */
export async function serveContext(call: Call, root: string, filter: SyncFilter): Promise<void> {
  const entries = walkContext(root, filter);
  const requests: number[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: Error | undefined;
  call.on('data', (p: Packet) => {
    if (p.type === PacketType.REQ) requests.push(p.ID);
    else if (p.type === PacketType.FIN) finished = true;
    else if (p.type === PacketType.ERR) failure = new Error(`the engine failed to receive the context: ${Buffer.from(p.data).toString()}`);
    wake?.();
  });
  call.on('end', () => {
    finished = true;
    wake?.();
  });
  // A cancelled call (the build was cancelled, the session closed) emits neither 'end' nor 'error'.
  call.on('cancelled', () => {
    failure = new Error('the engine cancelled the context transfer');
    wake?.();
  });
  call.on('error', (err: Error) => {
    failure = err;
    wake?.();
  });

  for (const entry of entries) await send(call, { type: PacketType.STAT, stat: entry.stat });
  await send(call, { type: PacketType.STAT });
  for (;;) {
    if (failure) throw failure;
    const id = requests.shift();
    if (id !== undefined) {
      const file = entries[id]?.file;
      if (!file) throw new Error(`the engine asked for entry ${id}, which is not a file`);
      for await (const chunk of createReadStream(file, { highWaterMark: CHUNK })) {
        await send(call, { type: PacketType.DATA, ID: id, data: chunk as Buffer });
      }
      await send(call, { type: PacketType.DATA, ID: id });
      continue;
    }
    if (finished) break;
    await new Promise<void>((resolve) => (wake = resolve));
    wake = undefined;
  }
  await send(call, { type: PacketType.FIN }).catch(() => undefined);
  call.end();
}
