/**
 * The shape of bench/results/*.json. Kept in one place because the report, the chart and
 * docs/performance.md all read it, and a successor comparing two dated results needs it stable.
 */

export type Tool = 'plain' | 'rustcbuildx' | 'sccache';

/**
 * `warm` is rustcbuildx as shipped (its local memo of engine results on); `warm-engine` is the same run with
 * the memo off (RUSTCBUILDX_LOCAL_CACHE=off), so every unit asks BuildKit: the issue's "BuildKit cache full".
 * `remote-cold` and `remote-warm` build on a second engine over ssh:// with added latency (bench/lib/remote.ts):
 * its build cache pruned first, then a fresh copy of the project against that builder, now full; both with
 * an empty memo and target dir, and compared with plain *local* cold.
 */
export type ScenarioName =
  | 'cold' | 'warm' | 'warm-engine' | 'warm-engine-cli' | 'noop' | 'noop-enabled' | 'edit-first' | 'edit' | 'edit-enabled' | 'edit-sandbox' | 'edit-before'
  | 'second-checkout' | 'remote-cold' | 'remote-warm' | 'edit-remote' | 'team-warm' | 'probe';

export type ProfiledScenario = 'cold' | 'warm' | 'warm-engine' | 'edit-sandbox' | 'remote-warm';

/** What rustcbuildx said about one of its runs (`rustcbuildx stats --json`): proves cold was cold, warm was warm. */
export interface RunCounts {
  units: number;
  cached: number;
  built: number;
  /** units of the edit loop compiled with the local rustc by choice (RUSTCBUILDX_INCREMENTAL) */
  local: number;
  fallback: number;
  /** build scripts' runs: in the sandbox, from its cache, on the host (absent in results before issue 12) */
  scripts?: { sandbox: number; cached: number; host: number };
  /** cached units (compiles and scripts' runs) that came from a shared store (absent before issue 13) */
  store?: number;
}

export interface ScenarioResult {
  name: ScenarioName;
  tool: Tool;
  /** median over `runs_s` */
  median_s: number;
  runs_s: number[];
  /** this tool's median / the plain median it is compared with (see `baseline`); 1 for plain itself */
  ratio_vs_plain: number | null;
  /** which plain median the ratio divides by, e.g. "plain cold" for warm and second-checkout */
  baseline: string;
  /** rustcbuildx runs only, one per run */
  counts?: RunCounts[];
}

/** Seconds spent in one part of a unit's compile, over the units of one profiled run. */
export interface BucketFigures {
  /** summed over units (units run two at a time on two cores, so this exceeds wall time) */
  sum_s: number;
  median_ms: number;
  p90_ms: number;
  /** share of the summed wrapper time */
  share: number;
}

export interface Breakdown {
  /** the scenario the profiled run repeats: a cold cache (every unit built) or warm (every unit cached) */
  scenario: ProfiledScenario;
  /** the cargo command's wall time */
  wall_s: number;
  units: number;
  outcomes: RunCounts;
  /** units answered by the local memo, without an engine call */
  memo_hits: number;
  buckets: Record<string, BucketFigures>;
  /** only for runs where units called the engine */
  overhead_fit: OverheadFit | null;
  /** things the parser noticed that make a figure approximate */
  caveats: string[];
}

/**
 * Medians of the cheapest possible engine calls on this machine (see floor.ts): one fully cached unit's
 * round trip. A field is null when its arm was not measured (no remote engine, no `rustcbuildx engine
 * build`); the project's notes say why.
 */
export interface EngineFloor {
  /** `docker buildx version`: starting the docker client and its buildx plugin */
  docker_client_ms: number;
  /** `docker buildx build` of a one-file Dockerfile, fully cached, exported to a directory */
  cached_build_ms: number;
  /** the same against the remote engine (DOCKER_HOST=ssh://…, through the latency relay; a new ssh login per call; median of at most 5) */
  remote_cached_build_ms?: number | null;
  /** the latency the relay added each way when the remote arms were measured */
  remote_latency_ms?: number | null;
  /** `rustcbuildx engine build` of the same Dockerfile: the wrapper's own engine path, CLI (RUSTCBUILDX_BROKER=off) and broker (default) */
  rustcbuildx?: {
    local_cli_ms: number | null;
    local_broker_ms: number | null;
    remote_cli_ms: number | null;
    remote_broker_ms: number | null;
  } | null;
}

/**
 * The engine's fixed cost against the size of the unit's Dockerfile: a least-squares line through
 * (stages in the Dockerfile, engine_client_and_solver ms). A steep slope means the solve grows with the
 * dependency closure that every Dockerfile repeats.
 */
export interface OverheadFit {
  per_stage_ms: number;
  intercept_ms: number;
  units: number;
  min_stages: number;
  max_stages: number;
}

export interface ProjectResult {
  name: string;
  description: string;
  /** rustc compile calls plain cargo makes for `cargo build` */
  units: number;
  scenarios: ScenarioResult[];
  breakdown: Breakdown[];
  engine_floor: EngineFloor | null;
  /** `rustcbuildx verify` after the runs: units compared with what the memo served, and those whose bytes differ (absent before issue 13) */
  reproducible?: Reproducible;
  notes: string[];
}

export interface Reproducible {
  compared: number;
  identical: number;
  /** `crate version (kind)` of each unit that differs */
  differ: string[];
  /** built in the sandbox but in no cache (nothing to compare), and not built in the sandbox */
  uncached: number;
  notVerified: number;
}

export interface TargetCheck {
  project: string;
  target: string;
  value: number | null;
  /** what `value` is: a ratio (the default, for older results) or milliseconds */
  unit?: 'ratio' | 'ms';
  limit: string;
  met: boolean | null;
}

export interface MachineInfo {
  os: string;
  kernel: string;
  arch: string;
  cpus: number;
  cpu_model: string;
  memory_gib: number;
  /** 1-minute load average when the run started and ended: a busy machine makes every figure slower */
  load_start: number;
  load_end: number;
}

export interface BenchResults {
  schema: 1;
  kind: 'full' | 'smoke';
  date: string;
  command: string;
  iterations: number;
  duration_s: number;
  machine: MachineInfo;
  tools: Record<string, string | null>;
  notes: string[];
  projects: ProjectResult[];
  targets: TargetCheck[];
}
