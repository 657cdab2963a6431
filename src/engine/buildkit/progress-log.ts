/**
 * BuildKit's status stream written out as `--progress=plain` writes it (`#3 [u-x 2/2] RUN …`,
 * `#3 CACHED`, `#3 0.412 <log line>`), so what reads the CLI's log (cache hits, the sandbox's failure
 * marker) reads the broker's the same way.
 */
import type { StatusResponse } from './proto.ts';

/** Moments of a build as the client sees them, for the timeline line (what BuildKit's steps do not show). */
export type BuildMoment = 'solve' | 'context' | 'context sent' | 'export' | 'export written' | 'answer';

export class ProgressLog {
  private numbers = new Map<string, number>();
  private named = new Set<string>();
  private cached = new Set<string>();
  private done = new Set<string>();
  private failed = new Set<string>();
  private started = new Map<string, number>();
  private completed = new Map<string, number>();
  private lines: string[] = [];
  private partial = new Map<string, string>();
  private decoders = new Map<string, TextDecoder>();
  private readonly born = performance.now();
  private moments = new Map<BuildMoment, number>();

  /** The first time a moment happens, in ms since this log began (the build's start). */
  mark(moment: BuildMoment): void {
    if (!this.moments.has(moment)) this.moments.set(moment, performance.now() - this.born);
  }

  private number(digest: string): number {
    let n = this.numbers.get(digest);
    if (n === undefined) this.numbers.set(digest, (n = this.numbers.size + 1));
    return n;
  }

  add(s: StatusResponse): void {
    for (const v of s.vertexes) {
      const n = this.number(v.digest);
      if (v.name && !this.named.has(v.digest)) {
        this.named.add(v.digest);
        this.lines.push(`#${n} ${v.name}`);
      }
      if (v.started && !this.started.has(v.digest)) this.started.set(v.digest, v.started.seconds + v.started.nanos / 1e9);
      if (v.cached && !this.cached.has(v.digest)) {
        this.cached.add(v.digest);
        this.lines.push(`#${n} CACHED`);
      }
      if (v.error && !this.failed.has(v.digest)) {
        this.failed.add(v.digest);
        this.lines.push(`#${n} ERROR: ${v.error}`);
      }
      // As the CLI times a step (`#5 DONE 0.3s`): what the benchmark's breakdown reads.
      else if (v.completed && !v.cached && this.started.has(v.digest) && !this.done.has(v.digest)) {
        this.done.add(v.digest);
        const completed = v.completed.seconds + v.completed.nanos / 1e9;
        this.completed.set(v.digest, completed);
        const seconds = completed - this.started.get(v.digest)!;
        this.lines.push(`#${n} DONE ${Math.max(0, seconds).toFixed(1)}s`);
      }
    }
    // The CLI prints `transferring context: 1.2kB done`; the exact count says what a build uploaded.
    for (const st of s.statuses) {
      if (!st.completed || this.done.has(`${st.vertex} ${st.ID}`)) continue;
      this.done.add(`${st.vertex} ${st.ID}`);
      this.lines.push(`#${this.number(st.vertex)} ${st.ID} ${st.current} B done`);
    }
    for (const l of s.logs) {
      const n = this.number(l.vertex);
      const at = l.timestamp ? l.timestamp.seconds + l.timestamp.nanos / 1e9 : 0;
      const since = Math.max(0, at - (this.started.get(l.vertex) ?? at)).toFixed(3);
      // A character split across two messages is decoded whole (one streaming decoder per vertex).
      let decoder = this.decoders.get(l.vertex);
      if (!decoder) this.decoders.set(l.vertex, (decoder = new TextDecoder()));
      const text = (this.partial.get(l.vertex) ?? '') + decoder.decode(l.msg, { stream: true });
      const parts = text.split('\n');
      this.partial.set(l.vertex, parts.pop() ?? '');
      for (const line of parts) this.lines.push(`#${n} ${since} ${line}`);
    }
  }

  /** Whether the step `digest` has been reported cached, done or failed. */
  settled(digest: string): boolean {
    return this.cached.has(digest) || this.done.has(digest) || this.failed.has(digest);
  }

  /** Whether some step has been reported failed. */
  get failedStep(): boolean {
    return this.failed.size > 0;
  }

  /** A line of ours about the build (not BuildKit's), kept in the log for whoever reads it later. */
  note(message: string): void {
    this.lines.push(message);
  }

  error(message: string): void {
    this.lines.push(`ERROR: ${message}`);
  }

  text(): string {
    for (const [digest, rest] of this.partial) if (rest) this.lines.push(`#${this.number(digest)} ${rest}`);
    this.partial.clear();
    // Where a unit's time went, round trips included, in the order it happened:
    // `timeline: solve 1, context 45-139, export 186-276, answer 319 ms` (a unit of its own), or
    // `timeline: solve 0, answer 24, export 24-190 ms` (a unit in a held build, its result read after).
    const at = (m: BuildMoment) => this.moments.get(m);
    const part = (from: BuildMoment, to?: BuildMoment): Array<[number, string]> => {
      const start = at(from);
      if (start === undefined) return [];
      const end = to ? `-${at(to)?.toFixed(0) ?? '?'}` : '';
      return [[start, `${from} ${start.toFixed(0)}${end}`]];
    };
    const parts = [...part('solve'), ...part('context', 'context sent'), ...part('answer'), ...part('export', 'export written')].sort((a, b) => a[0] - b[0]);
    const timeline = parts.length > 0 ? [`timeline: ${parts.map(([, text]) => text).join(', ')} ms`] : [];
    return [...this.lines, ...timeline, ...this.stepTimes()].join('\n') + '\n';
  }

  /**
   * `steps: #45 0-6, #47 9-212 ms`: when each step that ran started and ended, by the engine's clock from
   * the first of them (BuildKit's `DONE 0.2s` rounds to 0.1 s and says nothing of the gaps between).
   */
  private stepTimes(): string[] {
    const ran = [...this.completed.keys()].map((d) => ({ n: this.number(d), from: this.started.get(d) as number, to: this.completed.get(d) as number }));
    if (ran.length === 0) return [];
    const first = Math.min(...ran.map((r) => r.from));
    const ms = (t: number) => ((t - first) * 1000).toFixed(0);
    return [`steps: ${ran.sort((a, b) => a.from - b.from).map((r) => `#${r.n} ${ms(r.from)}-${ms(r.to)}`).join(', ')} ms`];
  }
}
