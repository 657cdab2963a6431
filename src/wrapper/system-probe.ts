/**
 * A build script that asks pkg-config answers from the system it runs on. In the sandbox that is the
 * image (its base.packages); here it is this machine. The sandbox's answer is taken only when both
 * systems answer alike: every library this machine's pkg-config gives for a module the script asked
 * about is one the sandboxed run links, and every library the sandboxed run links dynamically is one
 * this machine's linker finds. Otherwise the script runs here, with the packages that would make the
 * image agree.
 */
import { run } from '../exec.ts';
import type { BaseExtras } from '../config/config.ts';
import { parseNativeLib } from '../rustc/args.ts';
import { adviseBasePackages } from '../plan/system-packages.ts';

/**
 * The pkg-config modules a script asked about, as this machine's pkg-config names them: the pkg-config
 * crate declares `<NAME>_NO_PKG_CONFIG` for each, NAME upper-cased with `-` as `_`, so the module is found
 * again among `pkg-config --list-all`'s by that spelling.
 */
export function probedModules(declared: readonly string[], known: readonly string[]): string[] {
  const envName = (module: string) => module.toUpperCase().replaceAll('-', '_');
  return declared.flatMap((n) => {
    const m = /^(.+)_NO_PKG_CONFIG$/.exec(n);
    if (!m?.[1] || m[1] === 'PKG_CONFIG') return [];
    return known.filter((module) => envName(module) === m[1]);
  });
}

/** `cargo:rustc-link-lib=[KIND[:MODIFIERS]=]NAME[:RENAME]` directives, with their kind (`dylib` when unsaid). */
export function linkLibs(stdout: string): Array<{ kind: string; name: string }> {
  return [...stdout.matchAll(/^cargo::?rustc-link-lib=(\S+)\s*$/gm)].flatMap((m) => parseNativeLib(m[1]!) ?? []);
}

export function imageHasPkgConfig(base: BaseExtras): boolean {
  return base.packages.some((p) => p === 'pkg-config' || p === 'pkgconf');
}

/** Why the sandbox's answer to a pkg-config probe is not this machine's, or undefined when they agree. */
export async function pkgConfigDisagrees(declared: readonly string[], sandboxStdout: string, base: BaseExtras): Promise<string | undefined> {
  const asks = declared.some((n) => n.startsWith('PKG_CONFIG') || n.endsWith('_NO_PKG_CONFIG'));
  if (!asks) return undefined;
  if (!imageHasPkgConfig(base)) {
    return `the build script probes the system with pkg-config, which the image lacks: ${adviseBasePackages(['pkg-config'], "the libraries' -dev packages")} to run it in the sandbox; it runs here`;
  }
  // What this machine's pkg-config knows; without one here, a run here finds nothing where the sandbox
  // may have found something: the answers cannot be compared.
  const all = await run(['pkg-config', '--list-all'], { timeoutMs: 10_000 });
  if (all.code !== 0) return 'the build script probes the system with pkg-config, which this machine lacks while the image has it: it runs here, as it would without it';
  const known = all.stdout.split('\n').map((l) => l.split(/\s/)[0] ?? '').filter(Boolean);
  // pkg-config's -l are dynamic links (unless --static): a bundled static copy in the sandbox is another answer.
  const dynamic = new Set(linkLibs(sandboxStdout).filter((l) => l.kind === 'dylib').map((l) => l.name));
  for (const module of probedModules(declared, known)) {
    const here = await run(['pkg-config', '--libs-only-l', module], { timeoutMs: 10_000 });
    if (here.code !== 0) continue;
    const missing = here.stdout.split(/\s+/).filter((f) => f.startsWith('-l')).map((f) => f.slice(2)).filter((l) => !dynamic.has(l));
    if (missing.length > 0) {
      return `the build script found ${module} with pkg-config here but did not link it dynamically in the sandbox (-l${missing.join(' -l')}): add its -dev package to base.packages; it runs here`;
    }
  }
  for (const lib of linkLibs(sandboxStdout).filter((l) => l.kind === 'dylib')) {
    const found = await run(['cc', `-print-file-name=lib${lib.name}.so`], { timeoutMs: 10_000 });
    if (found.code === 0 && !found.stdout.trim().startsWith('/')) {
      return `the build script links ${lib.name} in the sandbox, which this machine's linker does not find (lib${lib.name}.so): it runs here, as it would without it`;
    }
  }
  return undefined;
}
