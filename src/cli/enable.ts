/**
 * `rustcbuildx enable | disable [--project]`: cargo's own config names the wrapper (`build.rustc-wrapper`),
 * so a plain `cargo build` builds through rustcbuildx. Then nothing of ours starts when cargo has nothing
 * to compile (a `cargo buildx` is a second cargo and a process of ours before it: twice a no-op's time).
 *
 * The user's config file is edited as text (comments and layout kept), and the result is checked by
 * parsing both: the edit must change exactly that one key, or nothing is written.
 */
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { UsageError } from './usage.ts';
import { workspaceRoot } from './cargo-env.ts';

const KEY = 'rustc-wrapper';

export class CargoConfigError extends Error {
  override name = 'CargoConfigError';
}

/**
 * The file to edit: the user's `$CARGO_HOME/config.toml`, or the workspace's `.cargo/config.toml` (the
 * workspace root's, so builds started there see it). A link is followed, so a managed dotfile stays one.
 */
export function cargoConfigFile(args: readonly string[], env: Record<string, string | undefined>, cwd: string): string {
  const unknown = args.find((a) => a !== '--project');
  if (unknown !== undefined) throw new UsageError(`unexpected argument "${unknown}" (only --project)`);
  const dir = args.includes('--project') ? join(workspaceRoot(cwd) ?? cwd, '.cargo') : resolve(env.CARGO_HOME || join(homedir(), '.cargo'));
  // cargo reads `config` (its older name) whenever it exists, config.toml beside it or not.
  const legacy = join(dir, 'config');
  const file = existsSync(legacy) ? legacy : join(dir, 'config.toml');
  return existsSync(file) ? realpathSync(file) : file;
}

type Change = { text: string; said: string } | { unchanged: string };

/** The config text with `build.rustc-wrapper = wrapper` set (`on`) or removed; what to tell the user. */
export function editCargoConfig(text: string, file: string, wrapper: string, on: boolean): Change {
  const before = parse(text, file);
  const current = before.build?.[KEY];
  const ours = typeof current === 'string' && isOurs(current, wrapper);
  // A rustcbuildx that is gone (a moved checkout) is replaced by this one.
  const gone = ours && current !== wrapper && !existsSync(current);
  if (on) {
    if (ours && !gone) return { unchanged: `${file} already names ${current} as cargo's rustc wrapper` };
    if (current !== undefined && !gone) {
      throw new CargoConfigError(`${file} already sets build.${KEY} = ${JSON.stringify(current)}; rustcbuildx cannot be chained with another wrapper, so nothing was changed (remove that line first)`);
    }
  } else {
    if (current === undefined) return { unchanged: `${file} names no rustc wrapper: nothing to disable` };
    if (!ours) throw new CargoConfigError(`${file} sets build.${KEY} = ${JSON.stringify(current)}, which is not rustcbuildx; nothing was changed`);
  }
  const edited = !on ? withoutKey(text) : gone ? mapDefined(withoutKey(text), (t) => withKey(t, wrapper)) : withKey(text, wrapper);
  // Exactly that one key may differ, whatever the file looked like: else the user edits it, not us.
  const after = edited === undefined ? undefined : parseOrUndefined(edited);
  const expected = structuredClone(before);
  if (on) (expected.build ??= {})[KEY] = wrapper;
  else delete expected.build?.[KEY];
  if (edited === undefined || after === undefined || !Bun.deepEquals(after, expected)) {
    const line = `[build]\n${KEY} = ${JSON.stringify(wrapper)}`;
    throw new CargoConfigError(`${file} has its [build] settings in a form this command does not edit; nothing was changed. ${on ? `Add this yourself:\n${line}` : `Remove build.${KEY} yourself.`}`);
  }
  return { text: edited, said: on ? `cargo now builds through ${wrapper} (${file}: build.${KEY}, a path on this machine: not for a file others share); \`rustcbuildx disable\` undoes it` : `${file}: build.${KEY} removed; cargo builds without rustcbuildx` };
}

/** Edits the file atomically (its mode kept); the message for the user. */
export function applyCargoConfig(file: string, wrapper: string, on: boolean): string {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const change = editCargoConfig(text, file, wrapper, on);
  if ('unchanged' in change) return change.unchanged;
  const tmp = `${file}.rustcbuildx-${process.pid}`;
  const mode = existsSync(file) ? statSync(file).mode & 0o777 : 0o644;
  mkdirSync(dirname(file), { recursive: true });
  // Beside the file (cargoConfigFile followed any link): the rename replaces the file, never a link.
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

/**
 * The same executable, however it was named (a link on PATH, the file itself); or a rustcbuildx that is
 * gone (a moved checkout), which `disable` must still take out since cargo fails on it.
 */
function isOurs(configured: string, wrapper: string): boolean {
  if (configured === wrapper) return true;
  const there = statSync(configured, { throwIfNoEntry: false });
  if (!there) return basename(configured) === basename(wrapper);
  const here = statSync(wrapper, { throwIfNoEntry: false });
  return here !== undefined && here.ino === there.ino && here.dev === there.dev;
}

function mapDefined<T, U>(value: T | undefined, fn: (v: T) => U): U | undefined {
  return value === undefined ? undefined : fn(value);
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
