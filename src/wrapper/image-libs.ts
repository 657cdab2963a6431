/**
 * Knowing before building whether a unit can link in the sandbox: the native libraries it and its
 * closure ask for (`-l`, which cargo passes from build scripts' `rustc-link-lib`), against the libraries
 * the base image's linker finds (listed once per image ID) and those the unit's `-L` dirs hold. A unit
 * that cannot link there is compiled here at once, instead of compiling in the sandbox only to fail at
 * the link.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cacheBaseDir } from '../config/config.ts';
import { parseNativeLib, type RustcCall } from '../rustc/args.ts';
import { writeAtomic } from '../run-state.ts';
import { run } from '../exec.ts';
import { adviseBasePackages, packageForLibrary } from '../plan/system-packages.ts';
import type { RunEngine } from './engine-run.ts';
import type { PathMap } from '../plan/sandbox-paths.ts';

/** `-l [KIND[:MODIFIERS]=]NAME[:RENAME]` → NAME, for the kinds the linker looks up as files (not frameworks, not link-arg). */
export function nativeLibs(libs: readonly string[]): string[] {
  const found = libs.map(parseNativeLib).filter((l) => l !== undefined && (l.kind === 'dylib' || l.kind === 'static'));
  return [...new Set(found.map((l) => l!.name))];
}

/** Whether rustc links this unit (a binary, a test harness, a dynamic library, a proc-macro): only then do native libraries matter. */
export function links(call: RustcCall): boolean {
  return call.test || call.crateTypes.some((t) => t === 'bin' || t === 'dylib' || t === 'cdylib' || t === 'proc-macro');
}

/**
 * Whether one of the unit's `-L` dirs that the sandbox has too (a build script's OUT_DIR, a dir of the
 * workspace) holds the library: then it is not the system's. A system dir a build script names
 * (`/usr/lib/…`) is not in the sandbox: its libraries are the image's to provide.
 */
function inSearchDirs(call: RustcCall, map: PathMap, name: string): boolean {
  return call.libSearchPaths.some((p) => {
    const dir = resolve(p.path);
    return map.toSandbox(dir) !== undefined && (existsSync(join(dir, `lib${name}.so`)) || existsSync(join(dir, `lib${name}.a`)));
  });
}

/** The libraries this unit's `-l` asks for that none of its sandboxed `-L` dirs holds: the system's to provide. */
export function systemLibs(call: RustcCall, map: PathMap): string[] {
  return nativeLibs(call.libs).filter((name) => !inSearchDirs(call, map, name));
}

/**
 * Shell that lists every `libNAME.so`/`.a` the image's linker searches (gcc's search dirs), a shared
 * one with its SONAME (objdump comes with gcc's binutils): `NAME SONAME` or `NAME`.
 */
const LIST_SCRIPT = `for d in $(cc -print-search-dirs | sed -n 's/^libraries: =//p' | tr ':' ' '); do for f in "$d"/lib*.so "$d"/lib*.a; do [ -e "$f" ] || continue; n=\${f##*/lib}; case "$n" in *.so) echo "\${n%.so} $(objdump -p "$f" 2>/dev/null | sed -n 's/^ *SONAME *//p')";; *) echo "\${n%.a}";; esac; done; done | sort -u > /libs.txt`;

/** `NAME SONAME` / `NAME` lines → name → SONAME ('' for a static library or a linker script). */
export function parseLibList(text: string): Map<string, string> {
  const libs = new Map<string, string>();
  for (const line of text.split('\n')) {
    const [name, soname = ''] = line.trim().split(/\s+/);
    if (name && (soname || !libs.get(name))) libs.set(name, soname);
  }
  return libs;
}

/** The libraries the base image's linker finds and their SONAMEs, listed once per image ID (in the user's cache dir). */
export async function imageLibraries(setup: RunEngine): Promise<Map<string, string> | undefined> {
  const file = join(cacheBaseDir(), 'base-libs', `${setup.baseImageId.replace(/^sha256:/, '')}.sonames`);
  if (existsSync(file)) return parseLibList(readFileSync(file, 'utf8'));
  const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-libs-'));
  try {
    const dockerfile = join(work, 'Dockerfile');
    writeFileSync(dockerfile, `FROM ${setup.baseImage} AS list\nRUN ${LIST_SCRIPT}\nFROM scratch\nCOPY --from=list /libs.txt /\n`);
    const out = join(work, 'out');
    const res = await setup.engine.build({ dockerfile, context: work, outputDir: out, noNetwork: true, imageIds: { [setup.baseImage]: setup.baseImageId } });
    if (res.code !== 0 || !existsSync(join(out, 'libs.txt'))) return undefined; // unknown: the sandbox decides, as before
    const text = readFileSync(join(out, 'libs.txt'), 'utf8');
    writeAtomic(file, text);
    return parseLibList(text);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The file this machine's linker picks for `lib<name>.<ext>`, normalised: gcc says
 * `…/12/../../../x86_64-linux-gnu/libz.so`, dpkg knows the -dev package's link by its plain path.
 */
export async function linkerFile(name: string, ext: 'so' | 'a'): Promise<string | undefined> {
  const found = (await run(['cc', `-print-file-name=lib${name}.${ext}`], { timeoutMs: 10_000 })).stdout.trim();
  return found.startsWith('/') ? resolve(found) : undefined;
}

/** The SONAME of the shared library this machine's linker picks for `-l<name>`, if it picks one that has one. */
export async function hostSoname(name: string): Promise<string | undefined> {
  const found = await linkerFile(name, 'so');
  if (!found) return undefined;
  const dump = await run(['objdump', '-p', found], { timeoutMs: 10_000 });
  return /^\s*SONAME\s+(\S+)/m.exec(dump.stdout)?.[1];
}

/**
 * The first wanted shared library whose SONAME differs here and in the image, as a reason: linked in the
 * sandbox, the binary would ask this machine for the image's soname, which it may not have.
 */
export async function sonameDiffers(wanted: readonly string[], present: ReadonlyMap<string, string>, here: (name: string) => Promise<string | undefined>): Promise<string | undefined> {
  for (const name of wanted) {
    const inImage = present.get(name);
    const ours = inImage ? await here(name) : undefined;
    if (inImage && ours && ours !== inImage) {
      return `it links -l${name}, which is ${ours} here but ${inImage} in the base image (another release): the binary would ask for the image's; compiled with the local rustc. An image made from this machine's release has the same: rustcbuildx base build`;
    }
  }
  return undefined;
}

/**
 * Why the unit cannot link in the sandbox (the libraries the image lacks and their packages), or
 * undefined when it can or nothing can tell. `closureLibs`: what the units it depends on asked for.
 */
export async function cannotLinkInSandbox(call: RustcCall, map: PathMap, closureLibs: readonly string[], setup: RunEngine): Promise<string | undefined> {
  if (!links(call)) return undefined;
  const wanted = [...new Set([...nativeLibs(call.libs), ...closureLibs])].filter((name) => !inSearchDirs(call, map, name));
  if (wanted.length === 0) return undefined;
  const present = await imageLibraries(setup);
  if (!present) return undefined;
  const missing = wanted.filter((name) => !present.has(name));
  if (missing.length === 0) return sonameDiffers(wanted, present, hostSoname);
  const packages = [...new Set(missing.flatMap((name) => packageForLibrary(name) ?? []))];
  const unknown = missing.filter((name) => !packageForLibrary(name));
  const rest = unknown.length ? `the package${unknown.length > 1 ? 's' : ''} providing ${unknown.map((n) => `lib${n}.so`).join(', ')}` : undefined;
  return `it links ${missing.map((n) => `-l${n}`).join(' ')}, which the base image lacks: ${adviseBasePackages(packages, rest)}, then run \`rustcbuildx base build\`; compiled with the local rustc, without trying the sandbox`;
}
