/**
 * Writing `base.packages` back into the file it comes from, for `base build --add-suggested`. The edit is
 * a text edit (the user's comments, order and layout stay), and it is checked by parsing the result: the
 * document must be the old one with only that list changed, or nothing is written.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError, type Config } from './config.ts';
import { parseToml, userConfigFile } from './files.ts';

const WORKSPACE_TABLE = ' [workspace.metadata.rustcbuildx]';

/** Where `base.packages` is written: a file and the path of its `[base]` table. */
export interface BaseTarget {
  file: string;
  table: string[];
}

/**
 * The file and table that set `base.packages` now (its source), else the user's file. A variable has no
 * file to edit: the error says to set it there.
 */
export function baseTarget(cfg: Config, env: Record<string, string | undefined>): BaseTarget {
  let source = cfg.sources['base.packages'];
  if (source.startsWith('environment')) throw new ConfigError(`base.packages comes from ${source.slice('environment '.length)}: add the packages there`);
  if (source === 'default') {
    const file = userConfigFile(env);
    if (!file) throw new ConfigError('no user config file to write base.packages to: set HOME, XDG_CONFIG_HOME or RUSTCBUILDX_CONFIG');
    return { file, table: ['base'] };
  }
  const table = ['base'];
  const profile = / \[profile\.([A-Za-z0-9_-]+)\]$/.exec(source);
  if (profile) {
    table.unshift('profile', profile[1]!);
    source = source.slice(0, profile.index);
  }
  if (source.endsWith(WORKSPACE_TABLE)) {
    table.unshift('workspace', 'metadata', 'rustcbuildx');
    source = source.slice(0, -WORKSPACE_TABLE.length);
  }
  return { file: source, table };
}

/** A table header's dotted path (`[ a . "b" ]` → a, b), or undefined when the line is not one. */
function headerPath(line: string): string[] | undefined {
  const m = /^\s*\[\s*([^[\]]+?)\s*\]\s*(?:#.*)?$/.exec(line);
  return m ? m[1]!.split('.').map((k) => k.trim().replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1')) : undefined;
}

/** The line index after the value that starts on `start` (an array may span lines). */
function valueEnd(lines: readonly string[], start: number): number {
  let depth = 0;
  for (let i = start; i < lines.length; i++) {
    const code = lines[i]!.replace(/"[^"]*"|'[^']*'/g, '""').replace(/#.*$/, '');
    const from = i === start ? code.indexOf('=') + 1 : 0;
    for (const ch of code.slice(from)) depth += ch === '[' ? 1 : ch === ']' ? -1 : 0;
    if (depth <= 0) return i + 1;
  }
  return lines.length;
}

/** The text with `packages` of the table set to `packages`: replaced in place, added under the header, or a new table at the end. */
export function withBasePackages(text: string, table: readonly string[], packages: readonly string[]): string {
  const line = `packages = [${packages.map((p) => `"${p}"`).join(', ')}]`;
  const lines = text.split('\n');
  const header = lines.findIndex((l) => headerPath(l)?.join('.') === table.join('.'));
  if (header < 0) return `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${text.trim() ? '\n' : ''}[${table.join('.')}]\n${line}\n`;
  let end = header + 1;
  while (end < lines.length && !/^\s*\[/.test(lines[end]!)) end++;
  const key = lines.slice(header + 1, end).findIndex((l) => /^\s*(?:packages|"packages")\s*=/.test(l));
  if (key < 0) return [...lines.slice(0, header + 1), line, ...lines.slice(header + 1)].join('\n');
  const at = header + 1 + key;
  const after = valueEnd(lines, at);
  // The comments of the old value stay, each on a line of its own above the new one.
  const comments = lines.slice(at, after).flatMap((l) => {
    const m = /#.*$/.exec(l.replace(/"[^"]*"|'[^']*'/g, (q) => ' '.repeat(q.length)));
    return m ? [l.slice(m.index).trimEnd()] : [];
  });
  return [...lines.slice(0, at), ...comments, line, ...lines.slice(after)].join('\n');
}

/** JSON with sorted keys: two parsed documents compared whatever their order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object' && !(value instanceof Date)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/**
 * Sets `packages` in the target's table and writes the file (made if missing, atomically, mode kept),
 * once a parse of the result shows that nothing else changed. Otherwise a ConfigError with the lines to
 * add by hand, and the file untouched.
 */
export async function writeBasePackages(target: BaseTarget, packages: readonly string[]): Promise<void> {
  const old = existsSync(target.file) ? readFileSync(target.file, 'utf8') : '';
  const text = withBasePackages(old, target.table, packages);
  const byHand = `add by hand to ${target.file}:\n[${target.table.join('.')}]\npackages = [${packages.map((p) => `"${p}"`).join(', ')}]`;
  const expected = await parseToml(target.file, old);
  let node: Record<string, unknown> = expected;
  for (const key of target.table) node = (node[key] ??= {}) as Record<string, unknown>;
  node.packages = [...packages];
  let got: Record<string, unknown>;
  try {
    got = await parseToml(target.file, text);
  } catch {
    throw new ConfigError(`${target.file}: its [${target.table.join('.')}] could not be edited safely; ${byHand}`);
  }
  if (canonical(got) !== canonical(expected)) throw new ConfigError(`${target.file}: its [${target.table.join('.')}] could not be edited safely; ${byHand}`);
  // A config file that is a link (a dotfile manager's) stays one: the file it points at is written.
  const file = existsSync(target.file) ? realpathSync(target.file) : target.file;
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.rustcbuildx-${process.pid}.tmp`;
  writeFileSync(tmp, text);
  if (existsSync(file)) chmodSync(tmp, statSync(file).mode & 0o7777);
  renameSync(tmp, file);
}
