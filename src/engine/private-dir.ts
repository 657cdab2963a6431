/** A directory only this user can enter, for sockets that grant what this user may do. */
import { lstatSync, mkdirSync } from 'node:fs';

/**
 * Makes `dir` (0700) and returns it when it is ours and private; undefined when it exists with another
 * owner or wider modes (never use someone else's socket) or cannot be made.
 */
export function privateDir(dir: string): string | undefined {
  const uid = process.getuid?.() ?? 0;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0 ? dir : undefined;
  } catch {
    return undefined;
  }
}
