/**
 * `rustcbuildx base suggest`: the Debian packages that give the sandbox the system libraries this
 * project links. Each library its units asked for (`-l`, recorded in their plans) is looked up where this
 * machine's linker finds it (`cc -print-file-name`), and that file's package is asked of dpkg: so the
 * sandbox links what this machine links. Libraries a build script built (in an OUT_DIR) need nothing.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { run } from '../exec.ts';
import { STATE_DIR_NAME } from '../run-state.ts';
import type { Config } from '../config/config.ts';
import type { UnitPlan } from '../plan/plans.ts';
import { writeStdout } from '../io.ts';

/** `dpkg -S` output (`zlib1g-dev:amd64: /usr/lib/x86_64-linux-gnu/libz.so`) → the package names. */
export function packagesOfDpkgSearch(text: string): string[] {
  return [...new Set(text.split('\n').flatMap((l) => {
    const m = /^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9]+)?(?:, [^:]+)*: \//.exec(l);
    return m ? [m[1]!] : [];
  }))];
}

/** The libraries the plans in this target dir asked for. */
function libsOf(targetDir: string): string[] {
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

export async function baseSuggest(cfg: Config, targetDir: string): Promise<number> {
  const libs = libsOf(targetDir);
  if (libs.length === 0) {
    await writeStdout(`no system library asked for by the units built in ${targetDir} (build the project with cargo buildx first)\n`);
    return 0;
  }
  const hasDpkg = (await run(['dpkg', '--version'], { timeoutMs: 10_000 })).code === 0;
  const lines: string[] = [];
  const packages = new Set<string>();
  for (const lib of libs) {
    let file: string | undefined;
    for (const ext of ['so', 'a']) {
      const found = (await run(['cc', `-print-file-name=lib${lib}.${ext}`], { timeoutMs: 10_000 })).stdout.trim();
      // gcc says `…/12/../../../x86_64-linux-gnu/libz.so`: dpkg knows the normalised path (the -dev
      // package's link, not the file it points at, which is the runtime package's).
      if (found.startsWith('/')) {
        file = resolve(found);
        break;
      }
    }
    if (!file) {
      lines.push(`  -l${lib}: not found by this machine's linker (built by a build script, or missing here too)`);
      continue;
    }
    if (!hasDpkg) {
      lines.push(`  -l${lib}: ${file} (no dpkg here: find the Debian package that holds it)`);
      continue;
    }
    // merged /usr: dpkg may know the file under /lib rather than /usr/lib, or the other way round
    const other = file.startsWith('/usr/') ? file.slice(4) : `/usr${file}`;
    let owner = packagesOfDpkgSearch((await run(['dpkg', '-S', file], { timeoutMs: 10_000 })).stdout);
    if (owner.length === 0) owner = packagesOfDpkgSearch((await run(['dpkg', '-S', other], { timeoutMs: 10_000 })).stdout);
    lines.push(`  -l${lib}: ${file} from ${owner.length ? owner.join(', ') : 'no package (installed by hand?)'}`);
    for (const p of owner) packages.add(p);
  }
  const have = new Set(cfg.base.packages);
  const add = [...packages].filter((p) => !have.has(p));
  const all = [...new Set([...cfg.base.packages, ...packages])].sort();
  await writeStdout(
    `the libraries this project links, and where this machine has them:\n${lines.join('\n')}\n` +
      (add.length === 0
        ? `base.packages (${cfg.sources['base.packages']}) has them all\n`
        : `add ${add.join(', ')}: in ~/.config/rustcbuildx/config.toml or the workspace's [workspace.metadata.rustcbuildx]\n\n[base]\npackages = [${all.map((p) => `"${p}"`).join(', ')}]\n\nthen run: rustcbuildx base build\n`),
  );
  return 0;
}
