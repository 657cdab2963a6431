/**
 * `-C target-cpu=native` means "the CPU this rustc runs on": in a sandbox on a remote builder that is
 * the builder's CPU, and the cache key would not say which. So the wrapper compiles for a named CPU
 * instead, with exactly the target-feature toggles that make it equal to native here, or not at all.
 *
 * Equality is judged by rustc itself: `--print cfg` lists the target features LLVM enables, under
 * RUSTC_BOOTSTRAP=1 the unstable ones too (a stable rustc hides them, yet LLVM uses some of them, e.g.
 * APX registers). LLVM features rustc has no name for are invisible to this check; code reaches them
 * only through intrinsics that rustc gates behind named features.
 */
import { run } from '../exec.ts';

export type NativeCpu =
  /** `-C target-cpu=<cpu> -C target-feature=<features>` gives what native gives, without a new warning */
  | { kind: 'named'; cpu: string; features: string[] }
  /** no such spelling: the unit must be compiled by the local rustc; `features` is the delta when known */
  | { kind: 'local'; reason: string; features: string[] };

/** The CPU rustc picks for native: `native - Select the CPU of the current host (currently X).` */
export function parseNativeCpuName(targetCpus: string): string | undefined {
  return /^\s*native\s+-.*\(currently ([^)\s]+)\)/m.exec(targetCpus)?.[1];
}

/** The `target_feature="…"` values of `rustc --print cfg`. */
export function cfgTargetFeatures(cfg: string): Set<string> {
  const features = new Set<string>();
  for (const m of cfg.matchAll(/^target_feature="([^"]+)"$/gm)) features.add(m[1] as string);
  return features;
}

/** `+f` for what `want` has and `have` lacks, `-f` for the reverse: disabling first, each group sorted. */
export function featureDelta(want: ReadonlySet<string>, have: ReadonlySet<string>): string[] {
  const minus = [...have].filter((f) => !want.has(f)).sort();
  const plus = [...want].filter((f) => !have.has(f)).sort();
  return [...minus.map((f) => `-${f}`), ...plus.map((f) => `+${f}`)];
}

/** rustc could not answer a probe: nothing is known, so nothing is remembered. */
export class NativeCpuProbeError extends Error {
  override name = 'NativeCpuProbeError';
}

export interface NativeQuery {
  /** the rustc cargo calls */
  rustc: string;
  target: string | undefined;
  /** the call's own `-C target-feature` values, in order: they apply after ours */
  features: readonly string[];
}

/** Asks the local rustc which named CPU and feature toggles equal native for this target and these flags. Throws NativeCpuProbeError. */
export async function probeNativeCpu(q: NativeQuery): Promise<NativeCpu> {
  const targetArgs = q.target === undefined ? [] : ['--target', q.target];
  const cpus = await run([q.rustc, ...targetArgs, '--print', 'target-cpus']);
  if (cpus.code !== 0) throw new NativeCpuProbeError(`\`${q.rustc} --print target-cpus\` failed${firstLine(cpus.stderr)}`);
  const cpu = parseNativeCpuName(cpus.stdout);
  if (cpu === undefined) return { kind: 'local', reason: `\`rustc --print target-cpus\` names no CPU for native`, features: [] };
  const cfg = (targetCpu: string, ours: readonly string[]) => {
    const features = [...(ours.length > 0 ? [ours.join(',')] : []), ...q.features].flatMap((f) => ['-C', `target-feature=${f}`]);
    return run([q.rustc, ...targetArgs, '--print', 'cfg', '-C', `target-cpu=${targetCpu}`, ...features], { env: { ...process.env, RUSTC_BOOTSTRAP: '1' } });
  };
  const [native, named] = await Promise.all([cfg('native', []), cfg(cpu, [])]);
  if (native.code !== 0 || named.code !== 0) throw new NativeCpuProbeError(`\`rustc --print cfg\` failed${firstLine(native.stderr || named.stderr)}`);
  const features = featureDelta(cfgTargetFeatures(native.stdout), cfgTargetFeatures(named.stdout));
  const check = features.length === 0 ? named : await cfg(cpu, features);
  const spelled = `-C target-cpu=${cpu}${features.length ? ` -C target-feature=${features.join(',')}` : ''}`;
  if (check.code !== 0 || check.stdout !== native.stdout) {
    return { kind: 'local', reason: `\`${spelled}\` does not give the target features native gives`, features };
  }
  // rustc's warnings reach the user: one that plain cargo would not print is a visible difference.
  if (check.stderr !== native.stderr) {
    const extra = check.stderr.split('\n').find((l) => l.startsWith('warning:') && !native.stderr.includes(l));
    return { kind: 'local', reason: `native is \`${spelled}\` here, but rustc warns about that${extra ? ` (${extra})` : ''}`, features };
  }
  return { kind: 'named', cpu, features };
}

function firstLine(stderr: string): string {
  const line = stderr.trim().split('\n')[0];
  return line ? `: ${line}` : '';
}
