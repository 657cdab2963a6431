/**
 * The targets, checked against the measured medians. They are reported, never enforced: a
 * missed target is a finding, and the benchmark must not hide it by failing.
 */
import type { ProjectResult, ScenarioName, TargetCheck, Tool } from './types.ts';
import { ratio } from './stats.ts';

function medianOf(p: ProjectResult, scenario: ScenarioName, tool: Tool): number | undefined {
  return p.scenarios.find((s) => s.name === scenario && s.tool === tool)?.median_s;
}

function ratioOf(p: ProjectResult, scenario: ScenarioName): number | null {
  return p.scenarios.find((s) => s.name === scenario && s.tool === 'rustcbuildx')?.ratio_vs_plain ?? null;
}

function check(project: string, target: string, value: number | null, limit: string, ok: (v: number) => boolean): TargetCheck {
  return { project, target, value, limit, met: value === null ? null : ok(value) };
}

export function checkTargets(projects: readonly ProjectResult[]): TargetCheck[] {
  return projects.flatMap((p) => [
    check(p.name, 'cold / plain cold', ratioOf(p, 'cold'), '≤ 1.15', (v) => v <= 1.15),
    check(p.name, 'warm / plain cold', ratioOf(p, 'warm'), '≤ 0.2', (v) => v <= 0.2),
    check(p.name, 'warm-engine (memo off) / plain cold', ratioOf(p, 'warm-engine'), '≤ 0.2', (v) => v <= 0.2),
    check(p.name, 'warm / sccache warm', ratio(medianOf(p, 'warm', 'rustcbuildx'), medianOf(p, 'warm', 'sccache')), '≤ 0.5', (v) => v <= 0.5),
    check(p.name, 'noop / plain noop', ratioOf(p, 'noop'), '≤ 1.05', (v) => v <= 1.05),
    check(p.name, 'second-checkout / warm', ratio(medianOf(p, 'second-checkout', 'rustcbuildx'), medianOf(p, 'warm', 'rustcbuildx')), '≤ 1', (v) => v <= 1),
    check(p.name, 'probe / rustc -vV', ratioOf(p, 'probe'), '≤ 1.5', (v) => v <= 1.5),
  ]);
}
