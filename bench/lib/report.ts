/** The markdown view of a results file: what a person reads first, and what docs/performance.md quotes. */
import type { BenchResults, Breakdown, EngineFloor, ProjectResult, RunCounts, ScenarioName, TargetCheck, Tool } from './types.ts';
import { BUCKETS } from './breakdown.ts';

const SCENARIOS: ScenarioName[] = ['cold', 'warm', 'warm-engine', 'warm-engine-cli', 'noop', 'noop-enabled', 'edit-first', 'edit', 'edit-enabled', 'edit-sandbox', 'edit-before', 'second-checkout', 'remote-cold', 'remote-warm', 'edit-remote', 'team-warm', 'probe'];

function cell(p: ProjectResult, scenario: ScenarioName, tool: Tool): { s: string; r: string } {
  const row = p.scenarios.find((x) => x.name === scenario && x.tool === tool);
  if (!row) return { s: '–', r: '–' };
  const s = scenario === 'probe' ? `${(row.median_s * 1000).toFixed(1)} ms` : `${row.median_s.toFixed(2)} s`;
  const r = tool === 'plain' ? '' : row.ratio_vs_plain === null ? '?' : `${row.ratio_vs_plain.toFixed(2)}×${row.baseline === `plain ${scenario}` ? '' : ` (vs ${row.baseline})`}`;
  return { s, r };
}

/**
 * rustcbuildx's own account of its runs, units built/cached/compiled here/fallback and build scripts run
 * in the sandbox/cached/on the host, once per distinct value: shows a warm run that was not.
 */
function countsCell(p: ProjectResult, scenario: ScenarioName): string {
  const counts = p.scenarios.find((x) => x.name === scenario && x.tool === 'rustcbuildx')?.counts;
  if (!counts) return '';
  const scripts = (c: RunCounts) => (c.scripts ? ` + ${c.scripts.sandbox}/${c.scripts.cached}/${c.scripts.host}` : '');
  const store = (c: RunCounts) => (c.store ? ` (${c.store} from the store)` : '');
  return [...new Set(counts.map((c) => `${c.built}/${c.cached}/${c.local}/${c.fallback}${scripts(c)}${store(c)}`))].join(', ');
}

export function scenarioTable(p: ProjectResult): string {
  const lines = [
    '| scenario | plain | rustcbuildx | rustcbuildx / plain | units built/cached/here/fallback + scripts sandbox/cached/host | sccache | sccache / plain |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const scenario of SCENARIOS) {
    const [plain, ours, sccache] = (['plain', 'rustcbuildx', 'sccache'] as const).map((t) => cell(p, scenario, t)) as [ReturnType<typeof cell>, ReturnType<typeof cell>, ReturnType<typeof cell>];
    if (plain.s === '–' && ours.s === '–' && sccache.s === '–') continue;
    lines.push(`| ${scenario} | ${plain.s} | ${ours.s} | ${ours.r} | ${countsCell(p, scenario)} | ${sccache.s} | ${sccache.r} |`);
  }
  return lines.join('\n');
}

export function breakdownTable(b: Breakdown): string {
  const lines = [
    `${b.scenario} run: ${b.units} units (${b.outcomes.built} built, ${b.outcomes.cached} cached of which ${b.memo_hits} by the local memo, ${b.outcomes.fallback} fallback), cargo wall time ${b.wall_s.toFixed(2)} s`,
    '',
    '| part of a unit | sum over units | median per unit | p90 per unit | share of wrapper time |',
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const name of BUCKETS) {
    const f = b.buckets[name];
    if (!f) continue;
    const indent = ['engine_client_and_solver', 'context_upload', 'definition_and_metadata', 'rustc_run', 'other_steps', 'export', 'held_solve', 'held_result_read'].includes(name) ? '&nbsp;&nbsp;↳ ' : '';
    lines.push(`| ${indent}${name} | ${f.sum_s.toFixed(2)} s | ${f.median_ms} ms | ${f.p90_ms} ms | ${(f.share * 100).toFixed(1)} % |`);
  }
  const fit = b.overhead_fit;
  if (fit) lines.push('', `engine_client_and_solver against the Dockerfile's size (${fit.units} units, ${fit.min_stages}–${fit.max_stages} stages): ${fit.intercept_ms} ms + ${fit.per_stage_ms} ms per stage.`);
  if (b.caveats.length > 0) lines.push('', ...b.caveats.map((c) => `- ${c}`));
  return lines.join('\n');
}

function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? 'not measured' : `${v} ms`;
}

/** One cached unit's round trip, every way it was measured: raw docker, and rustcbuildx's CLI and broker paths. */
export function floorTable(f: EngineFloor): string {
  const r = f.rustcbuildx;
  const remote = f.remote_latency_ms === null || f.remote_latency_ms === undefined ? null : `remote (ssh, +${f.remote_latency_ms} ms each way)`;
  const lines = [
    `Engine floor: one fully cached one-file build with a local export (\`docker buildx version\` alone: ${f.docker_client_ms} ms).`,
    '',
    `| path | local engine |${remote ? ` ${remote} |` : ''}`,
    `| --- | ---: |${remote ? ' ---: |' : ''}`,
    `| \`docker buildx build\` | ${ms(f.cached_build_ms)} |${remote ? ` ${ms(f.remote_cached_build_ms)} |` : ''}`,
    `| \`rustcbuildx engine build\`, RUSTCBUILDX_BROKER=off (CLI) | ${ms(r?.local_cli_ms)} |${remote ? ` ${ms(r?.remote_cli_ms)} |` : ''}`,
    `| \`rustcbuildx engine build\`, broker (a build of its own: the Dockerfile route) | ${ms(r?.local_broker_ms)} |${remote ? ` ${ms(r?.remote_broker_ms)} |` : ''}`,
  ];
  return lines.join('\n');
}

function targetValue(t: TargetCheck): string {
  if (t.value === null) return '–';
  return t.unit === 'ms' ? `${t.value} ms` : `${t.value.toFixed(2)}×`;
}

export function markdownReport(r: BenchResults, chartFile: string): string {
  const out: string[] = [
    `# rustcbuildx benchmark (${r.kind}), ${r.date}`,
    '',
    `\`${r.command}\`: ${r.iterations} iteration(s), medians, ${Math.round(r.duration_s)} s in all.`,
    `Machine: ${r.machine.os}, ${r.machine.cpus} × ${r.machine.cpu_model}, ${r.machine.memory_gib} GiB; 1-min load ${r.machine.load_start} at start, ${r.machine.load_end} at end.`,
    `Tools: ${Object.entries(r.tools).map(([k, v]) => `${k} ${v ?? '(none)'}`).join('; ')}.`,
    '',
  ];
  if (r.notes.length > 0) out.push('Notes:', '', ...r.notes.map((n) => `- ${n}`), '');
  out.push(`![ratios](${chartFile})`, '');
  for (const p of r.projects) {
    out.push(`## ${p.name}: ${p.units} units`, '', p.description, '', scenarioTable(p), '');
    const f = p.engine_floor;
    if (f) out.push(floorTable(f), '');
    const v = p.reproducible;
    if (v) {
      out.push(
        `Byte-reproducible (\`rustcbuildx verify\`: every unit built again, whatever the cache holds, compared with what the memo served): ` +
          `${v.identical} of ${v.compared} units identical${v.differ.length ? `; differ: ${v.differ.join(', ')}` : ''}` +
          `${v.uncached ? `; ${v.uncached} in no cache` : ''}${v.notVerified ? `; ${v.notVerified} not built in the sandbox` : ''}.`,
        '',
      );
    }
    if (p.notes.length > 0) out.push(...p.notes.map((n) => `- ${n}`), '');
  }
  out.push('## Targets', '', '| project | target | measured | limit | met |', '| --- | --- | ---: | --- | --- |');
  for (const t of r.targets) out.push(`| ${t.project} | ${t.target} | ${targetValue(t)} | ${t.limit} | ${t.met === null ? 'not measured' : t.met ? 'yes' : '**no**'} |`);
  out.push('');
  for (const p of r.projects) {
    for (const b of p.breakdown) out.push(`## Breakdown: ${p.name}, ${b.scenario}`, '', breakdownTable(b), '');
  }
  return out.join('\n');
}
