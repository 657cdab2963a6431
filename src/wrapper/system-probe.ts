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

/** The pkg-config modules a script asked about: the pkg-config crate declares `<NAME>_NO_PKG_CONFIG` for each. */
export function probedModules(declared: readonly string[]): string[] {
  return declared.flatMap((n) => {
    const m = /^(.+)_NO_PKG_CONFIG$/.exec(n);
    return m?.[1] && m[1] !== 'PKG_CONFIG' ? [m[1].toLowerCase()] : [];
  });
}

/** `cargo:rustc-link-lib=[KIND=]NAME` directives, with their kind (`dylib` when unsaid). */
export function linkLibs(stdout: string): Array<{ kind: string; name: string }> {
  const out: Array<{ kind: string; name: string }> = [];
  for (const m of stdout.matchAll(/^cargo::?rustc-link-lib=(?:([\w+,-]+)=)?([^\s:]+)(?::\S+)?\s*$/gm)) {
    out.push({ kind: (m[1] ?? 'dylib').split(':')[0]!, name: m[2]! });
  }
  return out;
}

export function imageHasPkgConfig(base: BaseExtras): boolean {
  return base.packages.some((p) => p === 'pkg-config' || p === 'pkgconf');
}

/** Why the sandbox's answer to a pkg-config probe is not this machine's, or undefined when they agree. */
export async function pkgConfigDisagrees(declared: readonly string[], sandboxStdout: string, base: BaseExtras): Promise<string | undefined> {
  const asks = declared.some((n) => n.startsWith('PKG_CONFIG') || n.endsWith('_NO_PKG_CONFIG'));
  if (!asks) return undefined;
  if (!imageHasPkgConfig(base)) {
    return 'the build script probes the system with pkg-config, which the image lacks: add "pkg-config" and the libraries\' -dev packages to base.packages to run it in the sandbox; it runs here';
  }
  const linked = new Set(linkLibs(sandboxStdout).map((l) => l.name));
  for (const module of probedModules(declared)) {
    const spellings = [...new Set([module, module.replaceAll('_', '-')])];
    for (const name of spellings) {
      const here = await run(['pkg-config', '--libs-only-l', name], { timeoutMs: 10_000 });
      if (here.code !== 0) continue;
      const missing = here.stdout.split(/\s+/).filter((f) => f.startsWith('-l')).map((f) => f.slice(2)).filter((l) => !linked.has(l));
      if (missing.length > 0) {
        return `the build script found ${name} with pkg-config here but did not link it in the sandbox (-l${missing.join(' -l')}): add its -dev package to base.packages; it runs here`;
      }
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
