/**
 * Writing to our stdout/stderr. Bun's `process.stdout`/`process.stderr` streams cost ~12 ms to set up,
 * more than the rest of a wrapper call's start-up; `Bun.write` on the raw descriptors costs nothing.
 */
export function writeStdout(data: string | Uint8Array): Promise<number> {
  return Bun.write(Bun.stdout, data);
}

export function writeStderr(data: string | Uint8Array): Promise<number> {
  return Bun.write(Bun.stderr, data);
}
