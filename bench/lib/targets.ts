/**
 * The issues' targets, checked against the measured medians. They are reported, never enforced: a
 * missed target is a finding, and the benchmark must not hide it by failing.
 */
import type { ProjectResult, ScenarioName, TargetCheck, Tool } from './types.ts';
import { ratio, round } from './stats.ts';

/** The broker's round trip for one fully cached unit (issue 10), local engine. */
export const BROKER_FLOOR_MS = 40;
/** Round trips a unit may cost over ssh beyond the local engine's (issue 10). */
export const REMOTE_ROUND_TRIPS = 3;

function medianOf(p: ProjectResult, scenario: ScenarioName, tool: Tool): number | undefined {
  return p.scenarios.find((s) => s.name === scenario && s.tool === tool)?.median_s;
}

function ratioOf(p: ProjectResult, scenario: ScenarioName): number | null {
  return p.scenarios.find((s) => s.name === scenario && s.tool === 'rustcbuildx')?.ratio_vs_plain ?? null;
}

function check(project: string, target: string, value: number | null, limit: string, ok: (v: number) => boolean): TargetCheck {
  return { project, target, value, limit, met: value === null ? null : ok(value) };
}

function checkMs(project: string, target: string, value: number | null | undefined, limitMs: number | null, limit: string): TargetCheck {
  const v = value ?? null;
  return { project, target, value: v, unit: 'ms', limit, met: v === null || limitMs === null ? null : v <= limitMs };
}

/**
 * One cached unit's engine call through the broker, as the units of a profiled run had it (the median
 * `engine_call`: from the wrapper's request to its result written, in the build held open), else the
 * engine floor's `rustcbuildx engine build` arm, which is a build of its own (the Dockerfile route).
 */
function unitMs(p: ProjectResult, where: 'local' | 'remote'): number | null {
  const profiled = p.breakdown.find((b) => b.scenario === (where === 'local' ? 'warm-engine' : 'remote-warm'))?.buckets.engine_call?.median_ms;
  const floor = p.engine_floor?.rustcbuildx;
  return profiled ?? (where === 'local' ? floor?.local_broker_ms : floor?.remote_broker_ms) ?? null;
}

/** (remote − local) cached unit through the broker: what one unit pays for the network. */
function remoteOverheadMs(p: ProjectResult): number | null {
  const local = unitMs(p, 'local');
  const remote = unitMs(p, 'remote');
  return remote !== null && local !== null ? round(remote - local, 1) : null;
}

export function checkTargets(projects: readonly ProjectResult[]): TargetCheck[] {
  return projects.flatMap((p) => {
    const latency = p.engine_floor?.remote_latency_ms ?? null;
    const roundTripMs = latency === null ? null : 2 * latency;
    return [
      check(p.name, 'cold / plain cold', ratioOf(p, 'cold'), '≤ 1.25', (v) => v <= 1.25),
      check(p.name, 'warm / plain cold', ratioOf(p, 'warm'), '≤ 0.2', (v) => v <= 0.2),
      // C compiled by build scripts, cached since they run in the sandbox
      ...(p.name === 'workspace-c' ? [check(p.name, 'warm / plain cold, C build scripts', ratioOf(p, 'warm'), '≤ 0.15 (issue 12)', (v) => v <= 0.15)] : []),
      check(p.name, 'warm-engine (memo off) / plain cold', ratioOf(p, 'warm-engine'), '≤ 0.15', (v) => v <= 0.15),
      check(p.name, 'warm / sccache warm', ratio(medianOf(p, 'warm', 'rustcbuildx'), medianOf(p, 'warm', 'sccache')), '≤ 0.5', (v) => v <= 0.5),
      check(p.name, 'noop (cargo buildx) / plain noop', ratioOf(p, 'noop'), '≤ 1.1 (issue 11)', (v) => v <= 1.1),
      check(p.name, 'noop-enabled (cargo build, rustcbuildx enable) / plain noop', ratioOf(p, 'noop-enabled'), '≤ 1.1 (issue 11)', (v) => v <= 1.1),
      ...(['edit', 'edit-enabled', 'edit-sandbox', 'edit-remote'] as const).map((e) => check(p.name, `${e} / plain edit`, ratioOf(p, e), '≤ 1.3 (issue 11)', (v) => v <= 1.3)),
      check(p.name, 'second-checkout / warm', ratio(medianOf(p, 'second-checkout', 'rustcbuildx'), medianOf(p, 'warm', 'rustcbuildx')), '≤ 1', (v) => v <= 1),
      check(p.name, 'remote-warm (ssh, added latency) / plain local cold', ratioOf(p, 'remote-warm'), '≤ 0.3', (v) => v <= 0.3),
      check(p.name, 'team-warm (a second machine: remote engine, empty memo, the registry store) / plain local cold', ratioOf(p, 'team-warm'), '≤ 0.2 (issue 13)', (v) => v <= 0.2),
      checkMs(p.name, 'one cached unit through the broker, local engine (median engine call, profiled warm-engine)', unitMs(p, 'local'), BROKER_FLOOR_MS, `≤ ${BROKER_FLOOR_MS} ms`),
      checkMs(
        p.name,
        'per-unit overhead over ssh: remote − local cached unit through the broker (profiled remote-warm − warm-engine)',
        remoteOverheadMs(p),
        roundTripMs === null ? null : REMOTE_ROUND_TRIPS * roundTripMs,
        roundTripMs === null ? `≤ ${REMOTE_ROUND_TRIPS} round trips` : `≤ ${REMOTE_ROUND_TRIPS * roundTripMs} ms (${REMOTE_ROUND_TRIPS} round trips of ${roundTripMs} ms)`,
      ),
      check(p.name, 'probe / rustc -vV', ratioOf(p, 'probe'), '≤ 1.5', (v) => v <= 1.5),
    ];
  });
}
