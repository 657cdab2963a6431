/** Running child processes: one small seam so every caller gets the same error shape. */

export interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** a stream is passed on as it comes (an image archive for `docker load`), never whole in memory */
  stdin?: string | Uint8Array | ReadableStream<Uint8Array>;
  timeoutMs?: number;
}

/** Runs a command to completion and captures its output. A missing program is exit code 127, not a throw. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<Captured> {
  let proc;
  try {
    proc = Bun.spawn([...argv], {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdin: opts.stdin === undefined ? 'ignore' : opts.stdin instanceof ReadableStream ? opts.stdin : new Blob([opts.stdin]),
      stdout: 'pipe',
      stderr: 'pipe',
      timeout: opts.timeoutMs,
      killSignal: 'SIGKILL',
    });
  } catch (err) {
    return { code: 127, stdout: '', stderr: `${argv[0]}: ${(err as Error).message}\n` };
  }
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code: proc.signalCode ? 128 + 9 : code, stdout, stderr };
}

/**
 * Runs argv with our stdio and resolves with its exit code. `keepFds` are passed on at the same numbers
 * (Bun passes only 0-2 by default): cargo's jobserver pipes must reach the rustc we run for it.
 */
export async function passthrough(argv: readonly string[], env: Record<string, string | undefined> = process.env, keepFds: readonly number[] = []): Promise<number> {
  const stdio: Array<'inherit' | 'ignore' | number> = ['inherit', 'inherit', 'inherit'];
  for (let fd = 3; fd <= Math.max(2, ...keepFds); fd++) stdio.push(keepFds.includes(fd) ? fd : 'ignore');
  // Bun takes a descriptor number at index 3 and up (child fd = index); its type definitions do not say so.
  const proc = Bun.spawn([...argv], { env, stdio: stdio as unknown as ['inherit', 'inherit', 'inherit'] });
  const code = await proc.exited;
  return proc.signalCode ? 128 + (signalNumber(String(proc.signalCode)) ?? 1) : code;
}

function signalNumber(name: string): number | undefined {
  const table: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };
  return table[name];
}
