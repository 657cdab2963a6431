/**
 * The Debian packages that give the sandbox the system libraries this project links (`base suggest`,
 * and `base build`, which offers to add them). Each library its units asked for (`-l`, recorded in their
 * plans) and the base image's linker lacks is looked up where this machine's linker finds it
 * (`cc -print-file-name`), and that file's package is asked of dpkg: so the sandbox links what this
 * machine links. Libraries a build script built (in an OUT_DIR) need nothing.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../exec.ts';
import { readRecords, STATE_DIR_NAME, type UnitRecord } from '../run-state.ts';
import { packagesAdvised } from '../plan/system-packages.ts';
import { baseTarget, writeBasePackages, type BaseTarget } from '../config/edit.ts';
import { ConfigError, type Config } from '../config/config.ts';
import type { UnitPlan } from '../plan/plans.ts';
import { localToolchain, resolveBaseImage, type BaseChoice } from '../base-image.ts';
import { detectEngine, type Engine } from '../engine/engine.ts';
import { imageLibraries, linkerFile } from '../wrapper/image-libs.ts';
import { writeStdout } from '../io.ts';

/** `dpkg -S` output (`zlib1g-dev:amd64: /usr/lib/x86_64-linux-gnu/libz.so`) → the package names. */
export function packagesOfDpkgSearch(text: string): string[] {
  return [...new Set(text.split('\n').flatMap((l) => {
    const m = /^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9]+)?(?:, [^:]+)*: \//.exec(l);
    return m ? [m[1]!] : [];
  }))];
}

/** The libraries the plans in this target dir asked for. */
export function projectLibraries(targetDir: string): string[] {
  const units = join(targetDir, STATE_DIR_NAME, 'units');
  if (!existsSync(units)) return [];
  const libs = new Set<string>();
  for (const name of readdirSync(units).filter((f) => f.endsWith('.json'))) {
    try {
      for (const lib of (JSON.parse(readFileSync(join(units, name), 'utf8')) as UnitPlan).nativeLibs ?? []) libs.add(lib);
    } catch {
      // a plan being written: the next run has it
    }
  }
  return [...libs].sort();
}

/**
 * What the newest record of each unit that went local advises adding (a build script that probed
 * pkg-config, a sandbox step that lacked a header or a tool): `crate (build script)` → packages.
 */
export function advisedByRuns(targetDir: string): Map<string, string[]> {
  const runs = join(targetDir, STATE_DIR_NAME, 'runs');
  const newest = new Map<string, UnitRecord>();
  if (existsSync(runs)) {
    const files = readdirSync(runs).filter((f) => f.endsWith('.jsonl')).map((f) => join(runs, f));
    for (const file of files.sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs)) for (const r of readRecords(file)) newest.set(`${r.kind ?? ''} ${r.unit}`, r);
  }
  const advised = new Map<string, string[]>();
  for (const r of newest.values()) {
    const packages = r.outcome === 'fallback' || r.outcome === 'local' ? packagesAdvised(r.reason ?? '') : [];
    if (packages.length) advised.set(`${r.crate}${r.kind === 'build-script' ? ' (build script)' : ''}`, packages);
  }
  return advised;
}

/** Where this machine's linker finds `-l<lib>` (the path dpkg knows), shared or static, if it does. */
async function hostLibraryFile(lib: string): Promise<string | undefined> {
  return (await linkerFile(lib, 'so')) ?? (await linkerFile(lib, 'a'));
}

async function ownersOf(file: string): Promise<string[]> {
  const owner = packagesOfDpkgSearch((await run(['dpkg', '-S', file], { timeoutMs: 10_000 })).stdout);
  if (owner.length > 0) return owner;
  // merged /usr: dpkg may know the file under /lib rather than /usr/lib, or the other way round
  return packagesOfDpkgSearch((await run(['dpkg', '-S', file.startsWith('/usr/') ? file.slice(4) : `/usr${file}`], { timeoutMs: 10_000 })).stdout);
}

export interface Suggestion {
  /** one line per library: where this machine has it, and its package */
  lines: string[];
  /** packages to add to base.packages */
  add: string[];
  /** base.packages with them added, sorted */
  all: string[];
}

/**
 * The packages the libraries of this target dir's plans need, beyond base.packages and what the image's
 * linker already finds (`imageLibs`, asked only when there is something to look up; undefined when it
 * cannot be listed). Undefined when the plans and records ask for nothing.
 */
export async function suggestPackages(cfg: Config, targetDir: string, imageLibs: () => Promise<ReadonlyMap<string, string> | undefined>): Promise<Suggestion | undefined> {
  const libs = projectLibraries(targetDir);
  const advised = advisedByRuns(targetDir);
  if (libs.length === 0 && advised.size === 0) return undefined;
  const present = libs.length > 0 ? await imageLibs() : undefined;
  const hasDpkg = (await run(['dpkg', '--version'], { timeoutMs: 10_000 })).code === 0;
  const lines: string[] = [];
  const packages = new Set<string>();
  for (const [who, names] of advised) {
    lines.push(`  ${who}: went local, asking for ${names.join(', ')}`);
    for (const p of names) packages.add(p);
  }
  for (const lib of libs) {
    if (present?.has(lib)) {
      lines.push(`  -l${lib}: in the base image already`);
      continue;
    }
    const file = await hostLibraryFile(lib);
    if (!file) {
      lines.push(`  -l${lib}: not found by this machine's linker (built by a build script, or missing here too)`);
      continue;
    }
    if (!hasDpkg) {
      lines.push(`  -l${lib}: ${file} (no dpkg here: find the Debian package that holds it)`);
      continue;
    }
    const owner = await ownersOf(file);
    lines.push(`  -l${lib}: ${file} from ${owner.length ? owner.join(', ') : 'no package (installed by hand?)'}`);
    for (const p of owner) packages.add(p);
  }
  const have = new Set(cfg.base.packages);
  const add = [...packages].filter((p) => !have.has(p)).sort();
  return { lines, add, all: [...new Set([...cfg.base.packages, ...add])].sort() };
}

/** What `base suggest` prints. */
export function describeSuggestion(s: Suggestion, cfg: Config): string {
  const head = `what this project needs from the system, and where this machine has it:\n${s.lines.join('\n')}\n`;
  if (s.add.length === 0) return `${head}${cfg.base.packages.length ? `base.packages (${cfg.sources['base.packages']}) has them all` : 'nothing to add'}\n`;
  let where: string;
  try {
    const t = baseTarget(cfg, process.env);
    where = `in ${t.file}:\n\n[${t.table.join('.')}]`;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    where = `(${err.message}):\n\n[base]`;
  }
  return `${head}add ${s.add.join(', ')} ${where}\npackages = [${s.all.map((p) => `"${p}"`).join(', ')}]\n\nthen run: rustcbuildx base build (or \`rustcbuildx base build --add-suggested\` does both)\n`;
}

/** The libraries the image's linker finds (listed once per image ID), or undefined when it cannot be asked. */
async function imageLibs(engine: Engine, choice: BaseChoice): Promise<Map<string, string> | undefined> {
  try {
    return await imageLibraries({ engine, baseImage: choice.image, baseImageId: choice.id, baseImageConfig: choice.config });
  } catch {
    return undefined; // every library is then looked up on this machine
  }
}

/** `base suggest`: the packages, against the image the wrapper would use when the engine answers. */
export async function baseSuggest(cfg: Config, targetDir: string): Promise<number> {
  const present = async () => {
    try {
      const engine = await detectEngine(cfg);
      return await imageLibs(engine, await resolveBaseImage(engine, cfg, (await localToolchain()).toolchain));
    } catch {
      return undefined; // no engine or no image: as above
    }
  };
  const s = await suggestPackages(cfg, targetDir, present);
  await writeStdout(s ? describeSuggestion(s, cfg) : `no system library asked for by the units built in ${targetDir} (build the project with cargo buildx first)\n`);
  return 0;
}

async function confirm(question: string): Promise<boolean> {
  const { createInterface } = await import('node:readline/promises');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^(y|yes|)$/i.test((await rl.question(`${question} [Y/n] `)).trim());
  } finally {
    rl.close();
  }
}

/**
 * After `base build`: the packages the project's libraries need and the image lacks. Added to the file
 * that sets base.packages (with --add-suggested, or when the user says yes at a terminal): true, and the
 * image is to be built again with them. Otherwise the command to do it is printed.
 */
export async function offerPackages(cfg: Config, engine: Engine, choice: BaseChoice, targetDir: string, opts: { add: boolean; say: (line: string) => void }): Promise<boolean> {
  // Not in a project that built with us (`npm run setup`, a new checkout): nothing to offer, no engine call.
  const s = await suggestPackages(cfg, targetDir, () => imageLibs(engine, choice));
  if (!s || s.add.length === 0) return false;
  const missing = s.lines.filter((l) => !l.endsWith('in the base image already')).map((l) => l.trim());
  opts.say(`this project needs what ${choice.image} lacks:\n${missing.map((l) => `  ${l}`).join('\n')}`);
  let target: BaseTarget;
  try {
    target = baseTarget(cfg, process.env);
  } catch (err) {
    // set by a variable: no file of ours to write
    if (!(err instanceof ConfigError) || opts.add) throw err;
    opts.say(`${err.message}: ${s.add.join(', ')}`);
    return false;
  }
  const what = `add ${s.add.join(', ')} to base.packages in ${target.file}`;
  const interactive = process.stdin.isTTY && process.stderr.isTTY && process.env.CI !== 'true';
  if (!opts.add && !(interactive && (await confirm(`${what} and build the image with them?`)))) {
    opts.say(`to ${what} and build that image: rustcbuildx base build --add-suggested`);
    return false;
  }
  await writeBasePackages(target, s.all);
  opts.say(`added ${s.add.join(', ')} to base.packages in ${target.file}`);
  return true;
}
