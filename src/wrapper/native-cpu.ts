/**
 * What `-C target-cpu=native` is on this machine, remembered in the user's cache dir per rustc binary
 * (path, size, mtime, inode) and host CPU: resolving it costs a few rustc runs, and with
 * RUSTFLAGS=-Ctarget-cpu=native every unit of every cargo run asks.
 */
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cacheBaseDir } from '../config/config.ts';
import { writeAtomic } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import { NativeCpuProbeError, probeNativeCpu, type NativeCpu, type NativeQuery } from '../rustc/native-cpu.ts';

/** Bump when what is stored, or how it is found, changes. */
const FORMAT = 'rcbx-native-1';

export async function nativeCpuFor(q: NativeQuery): Promise<NativeCpu> {
  const file = memoFile(q);
  if (file !== undefined) {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as NativeCpu;
    } catch {
      // not resolved yet on this machine with this rustc
    }
  }
  let resolved: NativeCpu;
  try {
    resolved = await probeNativeCpu(q);
  } catch (err) {
    // rustc did not answer: nothing is known, so nothing is remembered.
    if (err instanceof NativeCpuProbeError) return { kind: 'local', reason: err.message, features: [] };
    throw err;
  }
  if (file !== undefined) writeAtomic(file, JSON.stringify(resolved));
  return resolved;
}

/** Where the answer for this query is kept; undefined without a CPU identity (not Linux) or a rustc to stat. */
function memoFile(q: NativeQuery): string | undefined {
  const cpu = hostCpuIdentity();
  const st = statSync(q.rustc, { throwIfNoEntry: false });
  if (cpu === undefined || st === undefined) return undefined;
  const key = sha256([FORMAT, q.rustc, st.size, st.mtimeMs, st.ino, cpu, q.target ?? '', ...q.features].join('\0'));
  return join(cacheBaseDir(), 'native-cpu', key);
}

/** /proc/cpuinfo's lines that say which CPU this is and what it can do (not its clock or core ids). */
const IDENTITY_LINE = /^(vendor_id|cpu family|model|model name|stepping|flags|Features|CPU implementer|CPU architecture|CPU variant|CPU part|CPU revision|isa|uarch|cpu)\s*:/;

/** The first processor's identity lines of a /proc/cpuinfo text; undefined when it has none. */
export function cpuIdentity(cpuinfo: string): string | undefined {
  const first = cpuinfo.split(/\n[ \t]*\n/)[0] ?? '';
  const lines = first.split('\n').filter((l) => IDENTITY_LINE.test(l)).map((l) => l.replace(/\s+/g, ' ').trim());
  return lines.length > 0 ? lines.join('\n') : undefined;
}

function hostCpuIdentity(): string | undefined {
  let fd: number;
  try {
    fd = openSync('/proc/cpuinfo', 'r');
  } catch {
    return undefined;
  }
  // Only the first processor's block is needed: on a many-core machine the whole file is large.
  try {
    const buf = Buffer.alloc(64 * 1024);
    let len = 0;
    while (len < buf.length && !buf.subarray(0, len).includes('\n\n')) {
      const n = readSync(fd, buf, len, buf.length - len, null);
      if (n === 0) break;
      len += n;
    }
    return cpuIdentity(buf.subarray(0, len).toString('utf8'));
  } finally {
    closeSync(fd);
  }
}
