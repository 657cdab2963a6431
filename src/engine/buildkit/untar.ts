/**
 * Unpacking a tar of a build's result into a directory, as it arrives (never whole in memory), and never
 * through a symlink it made: an engine cannot write outside the directory. The tar export of a build of
 * its own and a held build's packed result (gateway.ts) both come this way.
 */
import { chmodSync, createWriteStream, linkSync, mkdirSync, rmSync, symlinkSync, type WriteStream } from 'node:fs';
import { dirname, isAbsolute, join, normalize } from 'node:path';
import { extract, type Extract } from 'tar-stream';

export class UntarError extends Error {
  override name = 'UntarError';
}

/**
 * `dest` made anew (its parent must exist), and the stream to write the tar's bytes to; `done` settles
 * when the tar has ended and every file is written, or with the first error.
 */
export function untar(dest: string): { unpack: Extract; done: Promise<void> } {
  rmSync(dest, { recursive: true, force: true });
  // Not recursive: when the wrapper that asked has gone and removed its work dir, nothing is recreated.
  mkdirSync(dest);
  const unpack = extract();
  /** symlinks written so far: nothing is ever written through one (an engine cannot reach out of `dest`) */
  const links: string[] = [];
  /** the file being written: a failure settles only once it is closed, so no write of ours outlives `done` */
  let writing: WriteStream | undefined;
  const done = new Promise<void>((resolve, reject) => {
    let failed = false;
    const fail = (err: Error) => {
      if (failed) return;
      failed = true;
      unpack.destroy(err);
      const open = writing && !writing.closed ? writing : undefined;
      if (!open) return reject(err);
      open.once('close', () => reject(err));
      open.destroy();
    };
    unpack.on('entry', (header, stream, next) => {
      // Before anything can fail: an entry's stream is destroyed with the unpack, and says so.
      stream.on('error', fail);
      const rel = normalize(header.name).replace(/^\/+/, '').replace(/\/+$/, '');
      if (rel === '' || rel === '.') {
        stream.resume();
        return next();
      }
      if (escapes(rel) || links.some((l) => rel === l || rel.startsWith(`${l}/`))) return fail(new UntarError(`the export holds a path that leaves its directory: ${header.name}`));
      const path = join(dest, rel);
      try {
        if (header.type !== 'directory') {
          mkdirBelow(dest, dirname(rel));
          rmSync(path, { recursive: true, force: true });
        }
        if (header.type === 'directory') mkdirBelow(dest, rel);
        else if (header.type === 'symlink') {
          symlinkSync(header.linkname ?? '', path);
          links.push(rel);
        } else if (header.type === 'link') {
          const target = normalize(header.linkname ?? '').replace(/^\/+/, '');
          if (escapes(target) || links.some((l) => target === l || target.startsWith(`${l}/`))) return fail(new UntarError(`the export links to a path outside it: ${header.linkname}`));
          linkSync(join(dest, target), path);
        }
      } catch (err) {
        return fail(err as Error);
      }
      if (header.type !== 'file') {
        stream.resume();
        return next();
      }
      // Streamed to disk, never whole in memory: a debug binary can be gigabytes.
      const out = createWriteStream(path, { flags: 'wx' });
      writing = out;
      stream.on('data', (chunk: unknown) => {
        if (!out.write(chunk as Buffer)) {
          stream.pause();
          out.once('drain', () => stream.resume());
        }
      });
      let ended = false;
      stream.on('end', () => {
        ended = true;
        out.end();
      });
      // tar-stream destroys an entry's stream when it is itself destroyed: its file is not whole then.
      stream.on('close', () => {
        if (!ended) fail(new UntarError(`the tar ended inside ${header.name}`));
      });
      out.on('error', fail);
      out.on('finish', () => {
        try {
          chmodSync(path, (header.mode ?? 0o644) & 0o777);
          next();
        } catch (err) {
          fail(err as Error);
        }
      });
    });
    unpack.on('finish', resolve);
    unpack.on('error', fail);
  });
  return { unpack, done };
}

/**
 * `rel`'s directories made one level at a time below `dest`, never `dest` itself nor above it: once the
 * wrapper that asked has gone and removed its work dir, a write still in flight fails instead of
 * recreating that dir.
 */
function mkdirBelow(dest: string, rel: string): void {
  let at = dest;
  for (const part of rel.split('/')) {
    if (part === '' || part === '.') continue;
    at = join(at, part);
    try {
      mkdirSync(at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

const escapes = (rel: string) => rel === '..' || rel.startsWith('../') || isAbsolute(rel);
