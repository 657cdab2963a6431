/**
 * The chart: one bar per project × scenario × tool of `ratio_vs_plain`, a line at 1.0 (as fast as plain
 * cargo) and a short red tick at each scenario's target. Hand-written SVG: no dependency to install,
 * and a text file diffs between runs.
 */
import type { BenchResults, ScenarioName } from './types.ts';

const COLORS = { rustcbuildx: '#2f6fb0', sccache: '#e08a1e' } as const;
/** the target ratio per scenario, as bars show it (second-checkout's target is relative to warm, not drawn) */
const TARGET: Partial<Record<ScenarioName, number>> = { cold: 1.25, warm: 0.2, 'warm-engine': 0.15, noop: 1.1, 'noop-enabled': 1.1, edit: 1.3, 'edit-enabled': 1.3, 'edit-sandbox': 1.3, 'remote-warm': 0.3, 'edit-remote': 1.3, 'team-warm': 0.2, probe: 1.5 };
/** bars taller than this are cut and labelled, so one slow scenario does not flatten the rest */
const CAP = 4;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

interface Bar {
  project: string;
  label: string;
  tool: keyof typeof COLORS;
  ratio: number;
  target: number | undefined;
}

export function ratioChart(r: BenchResults): string {
  const groups = r.projects.map((p) => ({
    name: p.name,
    bars: p.scenarios
      .filter((s): s is typeof s & { tool: Bar['tool']; ratio_vs_plain: number } => s.tool !== 'plain' && s.ratio_vs_plain !== null)
      .map((s): Bar => ({ project: p.name, label: s.tool === 'sccache' ? `${s.name} (sccache)` : s.name, tool: s.tool, ratio: s.ratio_vs_plain, target: s.tool === 'rustcbuildx' ? TARGET[s.name] : undefined })),
  }));
  const all = groups.flatMap((g) => g.bars);
  const top = Math.min(CAP, Math.max(1.5, ...all.map((b) => b.ratio))) * 1.1;
  const barW = 26;
  const gap = 8;
  const groupGap = 40;
  const left = 56;
  const plotTop = 76;
  const plotH = 300;
  const labelH = 120;
  // Room on the right for the 1.0 label, and enough width for the title when there is one project.
  const width = Math.max(720, left + groups.reduce((w, g) => w + g.bars.length * (barW + gap) + groupGap, 0) + 110);
  const height = plotTop + plotH + labelH + 30;
  const y = (v: number) => plotTop + plotH - (Math.min(v, top) / top) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(`rustcbuildx / plain cargo, median seconds (${r.kind}, ${r.date.slice(0, 10)})`)}</text>`,
    `<text x="${left}" y="36" fill="#555">${esc('below 1.0: faster than plain cargo; warm, warm-engine, second-checkout and remote-* are against plain (local) cold')}</text>`,
  ];
  for (let t = 0; t <= top; t += top > 2 ? 0.5 : 0.25) {
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(t)}" y2="${y(t)}" stroke="#eee"/>`, `<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${t.toFixed(2)}</text>`);
  }
  let x = left + 10;
  for (const g of groups) {
    const start = x;
    for (const b of g.bars) {
      const h = plotTop + plotH - y(b.ratio);
      parts.push(`<rect x="${x}" y="${y(b.ratio)}" width="${barW}" height="${Math.max(h, 1)}" fill="${COLORS[b.tool]}"><title>${esc(`${b.project} ${b.label}: ${b.ratio}×`)}</title></rect>`);
      const clipped = b.ratio > top;
      parts.push(`<text x="${x + barW / 2}" y="${y(b.ratio) - 4}" text-anchor="middle" font-size="10"${clipped ? ' font-weight="bold"' : ''}>${clipped ? '↑' : ''}${b.ratio.toFixed(2)}</text>`);
      if (b.target !== undefined) parts.push(`<line x1="${x - 3}" x2="${x + barW + 3}" y1="${y(b.target)}" y2="${y(b.target)}" stroke="#d22" stroke-width="2"/>`);
      const lx = x + barW / 2;
      const ly = plotTop + plotH + 10;
      parts.push(`<text x="${lx}" y="${ly}" transform="rotate(50 ${lx} ${ly})">${esc(b.label)}</text>`);
      x += barW + gap;
    }
    parts.push(`<text x="${(start + x - gap) / 2}" y="${plotTop + plotH + labelH + 10}" text-anchor="middle" font-weight="bold">${esc(g.name)}</text>`);
    x += groupGap;
  }
  parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(1)}" y2="${y(1)}" stroke="#000" stroke-dasharray="5 3"/>`, `<text x="${width - 12}" y="${y(1) - 4}" text-anchor="end">1.0 = plain cargo</text>`);
  parts.push(`<rect x="${left}" y="46" width="10" height="10" fill="${COLORS.rustcbuildx}"/><text x="${left + 14}" y="55">rustcbuildx</text>`, `<rect x="${left + 90}" y="46" width="10" height="10" fill="${COLORS.sccache}"/><text x="${left + 104}" y="55">sccache</text>`, `<line x1="${left + 170}" x2="${left + 190}" y1="51" y2="51" stroke="#d22" stroke-width="2"/><text x="${left + 194}" y="55">target</text>`);
  parts.push('</svg>', '');
  return parts.join('\n');
}
