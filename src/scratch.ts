/**
 * Temporary paths (a unit's work dir, a snapshot being staged) removed on every way out of the process:
 * normal return, an exception, or a signal (Ctrl-C reaches every wrapper of a cargo run at once). Signal
 * handlers are installed with the first path, so probes never pay for them.
 */
import { rmSync } from 'node:fs';

const live = new Set<string>();
let installed = false;

const SIGNALS = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;

function removeAll(): void {
  for (const path of live) {
    // A broker may still be writing into a work dir for an instant (until it sees its wrapper gone):
    // a removal that loses that race is tried again.
    for (let tries = 3; tries > 0; tries--) {
      try {
        rmSync(path, { recursive: true, force: true });
        break;
      } catch {}
    }
  }
  live.clear();
}

function install(): void {
  installed = true;
  process.on('exit', removeAll);
  for (const [name, number] of Object.entries(SIGNALS)) {
    process.on(name, () => {
      removeAll();
      // What the shell reports for a process killed by that signal; a process with its own handler
      // (the broker's orderly shutdown) ends itself.
      if (process.listenerCount(name) === 1) process.exit(128 + number);
    });
  }
}

/** Removes `path` now and forgets it. */
export function removeScratch(path: string): void {
  rmSync(path, { recursive: true, force: true });
  live.delete(path);
}

/** Remembers `path` for removal on exit or signal; returns it. */
export function scratch(path: string): string {
  if (!installed) install();
  live.add(path);
  return path;
}

/** Forgets `path` without removing it (it was renamed into place). */
export function keepScratch(path: string): void {
  live.delete(path);
}
