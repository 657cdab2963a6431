/**
 * Knowing before building whether a unit can link in the sandbox: the native libraries it and its
 * closure ask for (`-l`, which cargo passes from build scripts' `rustc-link-lib`), against the libraries
 * the base image's linker finds (listed once per image ID) and those the unit's `-L` dirs hold. A unit
 * that cannot link there is compiled here at once, instead of compiling in the sandbox only to fail at
 * the link.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheBaseDir } from '../config/config.ts';
import { parseNativeLib, type RustcCall } from '../rustc/args.ts';
import { writeAtomic } from '../run-state.ts';
import { packageForLibrary } from '../plan/system-packages.ts';
import type { RunEngine } from './engine-run.ts';

/** `-l [KIND[:MODIFIERS]=]NAME[:RENAME]` → NAME, for the kinds the linker looks up as files (not frameworks, not link-arg). */
export function nativeLibs(libs: readonly string[]): string[] {
  const found = libs.map(parseNativeLib).filter((l) => l !== undefined && (l.kind === 'dylib' || l.kind === 'static'));
  return [...new Set(found.map((l) => l!.name))];
}

/** Whether rustc links this unit (a binary, a test harness, a dynamic library, a proc-macro): only then do native libraries matter. */
export function links(call: RustcCall): boolean {
  return call.test || call.crateTypes.some((t) => t === 'bin' || t === 'dylib' || t === 'cdylib' || t === 'proc-macro');
}

/** The libraries one of the unit's `-L` dirs (host paths: a build script's OUT_DIR) holds. */
function inSearchDirs(call: RustcCall, name: string): boolean {
  return call.libSearchPaths.some((p) => existsSync(join(p.path, `lib${name}.so`)) || existsSync(join(p.path, `lib${name}.a`)));
}

/** Shell that lists every `libNAME.so`/`.a` stem the image's linker searches (gcc's search dirs). */
const LIST_SCRIPT = `for d in $(cc -print-search-dirs | sed -n 's/^libraries: =//p' | tr ':' ' '); do ls "$d" 2>/dev/null; done | sed -n 's/^lib\\(.*\\)\\.\\(so\\|a\\)$/\\1/p' | sort -u > /libs.txt`;

/** The libraries the base image's linker finds, listed once per image ID (in the user's cache dir). */
export async function imageLibraries(setup: RunEngine): Promise<Set<string> | undefined> {
  const file = join(cacheBaseDir(), 'base-libs', setup.baseImageId.replace(/^sha256:/, ''));
  if (existsSync(file)) return new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean));
  const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-libs-'));
  try {
    const dockerfile = join(work, 'Dockerfile');
    writeFileSync(dockerfile, `FROM ${setup.baseImage} AS list\nRUN ${LIST_SCRIPT}\nFROM scratch\nCOPY --from=list /libs.txt /\n`);
    const out = join(work, 'out');
    const res = await setup.engine.build({ dockerfile, context: work, outputDir: out, noNetwork: true, imageIds: { [setup.baseImage]: setup.baseImageId } });
    if (res.code !== 0 || !existsSync(join(out, 'libs.txt'))) return undefined; // unknown: the sandbox decides, as before
    const text = readFileSync(join(out, 'libs.txt'), 'utf8');
    writeAtomic(file, text);
    return new Set(text.split('\n').filter(Boolean));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Why the unit cannot link in the sandbox (the libraries the image lacks and their packages), or
 * undefined when it can or nothing can tell. `closureLibs`: what the units it depends on asked for.
 */
export async function cannotLinkInSandbox(call: RustcCall, closureLibs: readonly string[], setup: RunEngine): Promise<string | undefined> {
  if (!links(call)) return undefined;
  const wanted = [...new Set([...nativeLibs(call.libs), ...closureLibs])].filter((name) => !inSearchDirs(call, name));
  if (wanted.length === 0) return undefined;
  const present = await imageLibraries(setup);
  if (!present) return undefined;
  const missing = wanted.filter((name) => !present.has(name));
  if (missing.length === 0) return undefined;
  const packages = [...new Set(missing.flatMap((name) => packageForLibrary(name) ?? []))];
  const unknown = missing.filter((name) => !packageForLibrary(name));
  const add = [packages.length ? packages.map((p) => `"${p}"`).join(', ') : '', unknown.length ? `the package${unknown.length > 1 ? 's' : ''} providing ${unknown.map((n) => `lib${n}.so`).join(', ')}` : ''].filter(Boolean).join(' and ');
  return `it links ${missing.map((n) => `-l${n}`).join(' ')}, which the base image lacks: add ${add} to base.packages, then run \`rustcbuildx base build\`; compiled with the local rustc, without trying the sandbox`;
}
