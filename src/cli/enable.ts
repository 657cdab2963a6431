/**
 * `rustcbuildx enable | disable [--project]`: cargo's own config names the wrapper (`build.rustc-wrapper`),
 * so a plain `cargo build` builds through rustcbuildx. Then nothing of ours starts when cargo has nothing
 * to compile (a `cargo buildx` is a second cargo and a process of ours before it: twice a no-op's time).
 *
 * The user's config file is edited as text (comments and layout kept), and the result is checked by
 * parsing both: the edit must change exactly that one key, or nothing is written.
 */
import { closeSync, existsSync, fchmodSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { UsageError } from './usage.ts';
import { workspaceRoot } from '../plan/cargo-env.ts';

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
  const file = lstatSync(legacy, { throwIfNoEntry: false }) ? legacy : join(dir, 'config.toml');
  // A link, even one whose target does not exist yet, is written through: never replaced by a file.
  return lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink() ? resolve(dirname(file), readlinkSync(file)) : file;
}

type Change = { text: string; said: string } | { unchanged: string };

/** The config text with `build.rustc-wrapper = wrapper` set (`on`) or removed; what to tell the user. */
export function editCargoConfig(text: string, file: string, wrapper: string, on: boolean): Change {
  const before = parse(text, file);
  const current = before.build?.[KEY];
  // A bare name is looked up on PATH, as cargo does; a relative path is the config dir's parent's.
  const configured = typeof current === 'string' ? (current.includes('/') ? resolve(dirname(dirname(file)), current) : (Bun.which(current) ?? current)) : undefined;
  const ours = configured !== undefined && isOurs(configured, wrapper);
  // A rustcbuildx that is gone (a moved checkout) is replaced by this one.
  const gone = ours && configured !== wrapper && !existsSync(configured);
  if (on) {
    if (ours && !gone) return { unchanged: `${file} already names ${current} as cargo's rustc wrapper` };
    if (current !== undefined && !gone) {
      throw new CargoConfigError(`${file} already sets build.${KEY} = ${JSON.stringify(current)}; rustcbuildx cannot be chained with another wrapper, so nothing was changed (remove that line first)`);
    }
  } else {
    if (current === undefined) return { unchanged: `${file} names no rustc wrapper: nothing to disable` };
    if (!ours) throw new CargoConfigError(`${file} sets build.${KEY} = ${JSON.stringify(current)}, which is not rustcbuildx; nothing was changed`);
  }
  const without = !on || gone ? withoutKey(text) : text;
  const edited = on && without !== undefined ? withKey(without, wrapper) : without;
  // Exactly that one key may differ, whatever the file looked like: else the user edits it, not us.
  const after = edited === undefined ? undefined : tryParse(edited);
  const expected = structuredClone(before);
  if (on) (expected.build ??= {})[KEY] = wrapper;
  else delete expected.build?.[KEY];
  if (edited === undefined || after === undefined || after instanceof Error || !Bun.deepEquals(after, expected)) {
    const line = `[build]\n${KEY} = ${JSON.stringify(wrapper)}`;
    throw new CargoConfigError(`${file} has its [build] settings in a form this command does not edit; nothing was changed. ${on ? `Add this yourself:\n${line}` : `Remove build.${KEY} yourself.`}`);
  }
  return { text: edited, said: on ? `cargo now builds through ${wrapper} (${file}: build.${KEY}, a path on this machine: not for a file others share); \`rustcbuildx disable\` undoes it` : `${file}: build.${KEY} removed; cargo builds without rustcbuildx` };
}

/**
 * Edits the file atomically, its mode kept: written whole and flushed beside it (cargoConfigFile followed
 * any link), then renamed over it; on any failure the file is as it was and nothing is left beside it.
 */
export function applyCargoConfig(file: string, wrapper: string, on: boolean): string {
  if (basename(wrapper).startsWith('bun')) {
    throw new CargoConfigError(`this is rustcbuildx run from its sources by ${wrapper}, which cargo cannot call as a wrapper: run \`dist/rustcbuildx ${on ? 'enable' : 'disable'}\` (npm run build makes it)`);
  }
  let text: string;
  try {
    text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  } catch (err) {
    throw new CargoConfigError(`cannot read ${file} (${(err as Error).message}); nothing was changed`);
  }
  const change = editCargoConfig(text, file, wrapper, on);
  if ('unchanged' in change) return change.unchanged;
  const tmp = `${file}.rustcbuildx-${process.pid}`;
  try {
    const mode = existsSync(file) ? statSync(file).mode & 0o7777 : 0o644;
    mkdirSync(dirname(file), { recursive: true });
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, change.text);
      fchmodSync(fd, mode);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new CargoConfigError(`cannot write ${file} (${(err as Error).message}); it was not changed`);
  }
  return change.said;
}

type CargoConfig = { build?: Record<string, unknown> } & Record<string, unknown>;

function parse(text: string, file: string): CargoConfig {
  const parsed = tryParse(text);
  if (parsed instanceof Error) throw new CargoConfigError(`${file} is not valid TOML (${parsed.message}); nothing was changed`);
  return parsed;
}

function tryParse(text: string): CargoConfig | Error {
  try {
    return Bun.TOML.parse(text) as CargoConfig;
  } catch (err) {
    return err as Error;
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
