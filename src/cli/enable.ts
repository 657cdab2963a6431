/**
 * `rustcbuildx enable | disable [--project]`: cargo's own config names the wrapper (`build.rustc-wrapper`),
 * so a plain `cargo build` builds through rustcbuildx. Then nothing of ours starts when cargo has nothing
 * to compile (a `cargo buildx` is a second cargo and a process of ours before it: twice a no-op's time).
 *
 * The user's config file is edited as text (comments and layout kept), and the result is checked by
 * parsing both: the edit must change exactly that one key, or nothing is written.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { UsageError } from './usage.ts';

const KEY = 'rustc-wrapper';

export class CargoConfigError extends Error {
  override name = 'CargoConfigError';
}

/** The file to edit: the user's `$CARGO_HOME/config.toml`, or the project's `.cargo/config.toml`. */
export function cargoConfigFile(args: readonly string[], env: Record<string, string | undefined>, cwd: string): string {
  const unknown = args.find((a) => a !== '--project');
  if (unknown !== undefined) throw new UsageError(`unexpected argument "${unknown}" (only --project)`);
  const dir = args.includes('--project') ? join(cwd, '.cargo') : resolve(env.CARGO_HOME || join(homedir(), '.cargo'));
  // cargo reads `config` when it is the only one (its older name), so that is the one to edit then.
  const legacy = join(dir, 'config');
  return existsSync(legacy) && !existsSync(join(dir, 'config.toml')) ? legacy : join(dir, 'config.toml');
}

export type Change = { text: string; said: string } | { unchanged: string };

/** The config text with `build.rustc-wrapper = wrapper` set (`on`) or removed; what to tell the user. */
export function editCargoConfig(text: string, file: string, wrapper: string, on: boolean): Change {
  const before = parse(text, file);
  const current = before.build?.[KEY];
  const ours = typeof current === 'string' && isOurs(current, wrapper);
  if (on) {
    if (ours) return { unchanged: `${file} already names ${current} as cargo's rustc wrapper` };
    if (current !== undefined) {
      throw new CargoConfigError(`${file} already sets build.${KEY} = ${JSON.stringify(current)}; rustcbuildx cannot be chained with another wrapper, so nothing was changed (remove that line first)`);
    }
  } else {
    if (current === undefined) return { unchanged: `${file} names no rustc wrapper: nothing to disable` };
    if (!ours) throw new CargoConfigError(`${file} sets build.${KEY} = ${JSON.stringify(current)}, which is not rustcbuildx; nothing was changed`);
  }
  const edited = on ? withKey(text, wrapper) : withoutKey(text);
  // Exactly that one key may differ, whatever the file looked like: else the user edits it, not us.
  const after = edited === undefined ? undefined : parseOrUndefined(edited);
  const expected = structuredClone(before);
  if (on) (expected.build ??= {})[KEY] = wrapper;
  else delete expected.build?.[KEY];
  if (edited === undefined || after === undefined || !Bun.deepEquals(after, expected)) {
    const line = `[build]\n${KEY} = ${JSON.stringify(wrapper)}`;
    throw new CargoConfigError(`${file} has its [build] settings in a form this command does not edit; nothing was changed. ${on ? `Add this yourself:\n${line}` : `Remove build.${KEY} yourself.`}`);
  }
  return { text: edited, said: on ? `cargo now builds through ${wrapper} (${file}: build.${KEY}); \`rustcbuildx disable\` undoes it` : `${file}: build.${KEY} removed; cargo builds without rustcbuildx` };
}

/** Edits the file atomically (its mode kept); the message for the user. */
export function applyCargoConfig(file: string, wrapper: string, on: boolean): string {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const change = editCargoConfig(text, file, wrapper, on);
  if ('unchanged' in change) return change.unchanged;
  const tmp = `${file}.rustcbuildx-${process.pid}`;
  const mode = existsSync(file) ? statSync(file).mode & 0o777 : 0o644;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(tmp, change.text, { mode });
  renameSync(tmp, file);
  return change.said;
}

type CargoConfig = { build?: Record<string, unknown> } & Record<string, unknown>;

function parse(text: string, file: string): CargoConfig {
  try {
    return Bun.TOML.parse(text) as CargoConfig;
  } catch (err) {
    throw new CargoConfigError(`${file} is not valid TOML (${(err as Error).message}); nothing was changed`);
  }
}

function parseOrUndefined(text: string): CargoConfig | undefined {
  try {
    return Bun.TOML.parse(text) as CargoConfig;
  } catch {
    return undefined;
  }
}

/** The same executable, however it was named (a link on PATH, the file itself). */
function isOurs(configured: string, wrapper: string): boolean {
  if (configured === wrapper) return true;
  try {
    return statSync(configured).ino === statSync(wrapper).ino;
  } catch {
    return false;
  }
}

/** The key under an existing `[build]` header, else a new table at the end. */
function withKey(text: string, wrapper: string): string {
  const line = `${KEY} = ${JSON.stringify(wrapper)}`;
  const header = /^[ \t]*\[build\][ \t]*(#.*)?$/m.exec(text);
  if (header) {
    const at = header.index + header[0].length;
    return `${text.slice(0, at)}\n${line}${text.slice(at)}`;
  }
  const sep = text === '' || text.endsWith('\n\n') ? '' : text.endsWith('\n') ? '\n' : '\n\n';
  return `${text}${sep}[build]\n${line}\n`;
}

/** Without the key's line (the check after it says whether that was the right line). */
function withoutKey(text: string): string | undefined {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => new RegExp(`^[ \\t]*${KEY}[ \\t]*=`).test(l));
  if (at < 0) return undefined;
  lines.splice(at, 1);
  return lines.join('\n');
}
