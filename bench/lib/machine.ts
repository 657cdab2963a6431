/** What the figures were measured on and with: without it two result files cannot be compared. */
import { existsSync, readFileSync } from 'node:fs';
import { arch, cpus, loadavg, release, totalmem } from 'node:os';
import { capture, RUSTCBUILDX } from './proc.ts';
import type { MachineInfo } from './types.ts';
import { round } from './stats.ts';

function osName(): string {
  const file = '/etc/os-release';
  if (!existsSync(file)) return process.platform;
  const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync(file, 'utf8'));
  return m?.[1] ?? process.platform;
}

export function load1(): number {
  return round(loadavg()[0] ?? 0, 2);
}

export function machineInfo(loadStart: number): MachineInfo {
  const cpu = cpus();
  return {
    os: osName(),
    kernel: release(),
    arch: arch(),
    cpus: cpu.length,
    cpu_model: cpu[0]?.model.trim() ?? 'unknown',
    memory_gib: round(totalmem() / 2 ** 30, 1),
    load_start: loadStart,
    load_end: load1(),
  };
}

async function firstLine(argv: string[]): Promise<string | null> {
  const res = await capture(argv);
  return res.code === 0 ? (res.stdout.trim().split('\n')[0] ?? null) : null;
}

/** Versions of everything that takes part in a measured build. */
export async function toolVersions(): Promise<Record<string, string | null>> {
  const [rustc, cargo, rustcbuildx, docker, buildx, base] = await Promise.all([
    firstLine(['rustc', '-V']),
    firstLine(['cargo', '-V']),
    firstLine([RUSTCBUILDX, '--version']),
    firstLine(['docker', 'version', '--format', '{{.Server.Version}}']),
    firstLine(['docker', 'buildx', 'version']),
    capture([RUSTCBUILDX, 'base', 'show', '--json']),
  ]);
  let baseImage: string | null = null;
  if (base.code === 0) {
    const parsed = JSON.parse(base.stdout) as { image?: string; id?: string };
    baseImage = `${parsed.image ?? '?'} ${parsed.id ?? ''}`.trim();
  }
  return { rustc, cargo, rustcbuildx, docker_engine: docker, buildx, bun: Bun.version, base_image: baseImage };
}
