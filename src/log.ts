/** The per-run debug log (`RUSTCBUILDX_LOG=debug`): never the terminal, which stays cargo's. */
import { appendFileSync } from 'node:fs';

export interface Logger {
  debug(msg: string): void;
  enabled: boolean;
}

export const silentLogger: Logger = { debug: () => {}, enabled: false };

export function fileLogger(file: string, unit: string): Logger {
  return {
    enabled: true,
    debug(msg) {
      appendFileSync(file, `${new Date().toISOString()} [${process.pid} ${unit}] ${msg}\n`);
    },
  };
}
