import { afterAll, describe, expect, test } from 'bun:test';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cfgTargetFeatures, featureDelta, NativeCpuProbeError, parseNativeCpuName, probeNativeCpu } from '../../src/rustc/native-cpu';
import { cpuIdentity } from '../../src/wrapper/native-cpu';

// `rustc 1.95.0 --print target-cpus` on this machine (abridged).
const TARGET_CPUS = `Available CPUs for this target:
    native                  - Select the CPU of the current host (currently emeraldrapids).
    alderlake
    amdfam10
    x86-64-v4
`;

describe('parsing rustc output', () => {
  test('the CPU native stands for', () => {
    expect(parseNativeCpuName(TARGET_CPUS)).toBe('emeraldrapids');
    expect(parseNativeCpuName('    native - Select the CPU of the current host (currently generic).\n')).toBe('generic');
    expect(parseNativeCpuName('Available CPUs for this target:\n    alderlake\n')).toBeUndefined();
  });

  test('target features of --print cfg, and nothing else', () => {
    const cfg = 'debug_assertions\ntarget_arch="x86_64"\ntarget_feature="sse4.1"\ntarget_feature="avx512f"\ntarget_has_atomic="64"\n';
    expect([...cfgTargetFeatures(cfg)]).toEqual(['sse4.1', 'avx512f']);
  });
});

describe('featureDelta', () => {
  test('disables what the named CPU has extra, enables what it lacks, sorted', () => {
    expect(featureDelta(new Set(['sse2', 'rtm', 'avx2']), new Set(['sse2', 'amx-tile', 'amx-bf16']))).toEqual(['-amx-bf16', '-amx-tile', '+avx2', '+rtm']);
  });
  test('equal sets need nothing', () => {
    expect(featureDelta(new Set(['a', 'b']), new Set(['b', 'a']))).toEqual([]);
  });
});

describe('cpuIdentity', () => {
  const block = (core: number, mhz: string) =>
    `processor\t: ${core}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\nstepping\t: 2\ncpu MHz\t\t: ${mhz}\ncore id\t\t: ${core}\nflags\t\t: fpu sse sse2 avx2 rtm\nbogomips\t: 4599.99\n`;

  test('names the first processor by vendor, model and flags, not by its clock or core', () => {
    const id = cpuIdentity(`${block(0, '2299.998')}\n${block(1, '2300.001')}\n`);
    expect(id).toBe('vendor_id : GenuineIntel\ncpu family : 6\nmodel : 207\nmodel name : Intel(R) Xeon(R) Processor\nstepping : 2\nflags : fpu sse sse2 avx2 rtm');
    expect(cpuIdentity(block(0, '800.000'))).toBe(id);
    expect(cpuIdentity(block(0, '800.000').replace(' rtm', ''))).not.toBe(id);
  });

  test('aarch64 lines count; a text without any is no identity', () => {
    expect(cpuIdentity('processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n')).toBe(
      'Features : fp asimd\nCPU implementer : 0x41\nCPU part : 0xd0c',
    );
    expect(cpuIdentity('')).toBeUndefined();
  });
});

/**
 * A stand-in rustc: `fakecpu` has features a and b, the host (native) a, c and u; u is unstable, so
 * naming it in -C target-feature warns. Toggles apply left to right like rustc's.
 */
describe('probeNativeCpu against a stand-in rustc', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rcbx-native-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const fake = (host: string[], failCfg = false): string => {
    const file = join(dir, `rustc-${host.join('')}${failCfg ? '-fail' : ''}`);
    writeFileSync(
      file,
      `#!${process.execPath}
const args = process.argv.slice(2);
if (args.includes('target-cpus')) {
  console.log(args.includes('--target') ? '    generic' : '    native - Select the CPU of the current host (currently fakecpu).');
  process.exit(0);
}
if (${failCfg}) { console.error('error: boom'); process.exit(1); }
const values = (key) => args.filter((a) => a.startsWith(key + '=')).map((a) => a.slice(key.length + 1));
const cpu = values('target-cpu').at(-1);
const on = new Set(cpu === 'native' ? ${JSON.stringify(host)} : ['a', 'b']);
for (const toggle of values('target-feature').flatMap((v) => v.split(',')).filter(Boolean)) {
  const name = toggle.slice(1);
  if (name === 'u') console.error('warning: unstable feature specified for \`-Ctarget-feature\`: \`u\`');
  if (toggle[0] === '+') on.add(name); else on.delete(name);
}
console.log([...on].sort().map((f) => 'target_feature="' + f + '"').join('\\n'));
`,
    );
    chmodSync(file, 0o755);
    return file;
  };

  test('a named CPU plus the toggles that make it native', async () => {
    expect(await probeNativeCpu({ rustc: fake(['a', 'c']), target: undefined, features: [] })).toEqual({ kind: 'named', cpu: 'fakecpu', features: ['-b', '+c'] });
  });

  test('the user\'s own toggles are applied after ours when comparing', async () => {
    expect(await probeNativeCpu({ rustc: fake(['a', 'c']), target: undefined, features: ['-c'] })).toEqual({ kind: 'named', cpu: 'fakecpu', features: ['-b'] });
  });

  test('a toggle rustc warns about means the local rustc, naming the warning', async () => {
    const res = await probeNativeCpu({ rustc: fake(['a', 'c', 'u']), target: undefined, features: [] });
    expect(res.kind).toBe('local');
    expect(res.features).toEqual(['-b', '+c', '+u']);
    if (res.kind === 'local') expect(res.reason).toContain('unstable feature specified for `-Ctarget-feature`: `u`');
  });

  test('the same warning from the user\'s own toggle is no difference', async () => {
    expect(await probeNativeCpu({ rustc: fake(['a', 'c', 'u']), target: undefined, features: ['+u'] })).toEqual({ kind: 'named', cpu: 'fakecpu', features: ['-b', '+c'] });
  });

  test('a target whose CPU list has no native entry, and a rustc that fails', async () => {
    const res = await probeNativeCpu({ rustc: fake(['a']), target: 'other-target', features: [] });
    expect(res).toMatchObject({ kind: 'local', features: [] });
    await expect(probeNativeCpu({ rustc: fake(['a'], true), target: undefined, features: [] })).rejects.toBeInstanceOf(NativeCpuProbeError);
  });
});
