/**
 * Dockerfile rendering: data in, text out, no I/O. A unit renders to a self-contained snippet of stages
 * (its source, its inputs, its rustc step); a build's Dockerfile is the snippets of the unit's whole
 * dependency closure plus its own, so any one Dockerfile rebuilds everything on a fresh builder.
 */
import { basename, dirname } from 'node:path';
import type { StagedSource } from '../plan/sources.ts';
import { SANDBOX } from '../plan/sandbox-paths.ts';
import { shQuote } from '../argv.ts';

/** Something placed under the sandbox's target dir before rustc runs. */
export type UnitInput =
  /** another unit's output directory, mounted at its own short path (which rustc gets as `-L dependency=`) */
  | { kind: 'unit'; key: string; target: string }
  /** a directory from the context (a build script's OUT_DIR, a native library dir) */
  | { kind: 'tree'; ctxPath: string; target: string };

/** What a RUN step takes from its image's configuration. */
export interface ImageConfig {
  env: string[];
  user: string;
}

export interface UnitSpec {
  key: string;
  baseImage: string;
  /** the base image's environment and user, for LLB (the Dockerfile frontend reads them itself) */
  baseImageConfig?: ImageConfig;
  source: { staged: StagedSource; mountTarget: string } | undefined;
  inputs: UnitInput[];
  cwd: string;
  env: Array<[string, string]>;
  /** `rustc`, or a driver and rustc (`clippy-driver rustc`) */
  program: string[];
  args: string[];
  /** directories rustc expects to exist (search paths) even when nothing is in them */
  mkdirs: string[];
  /**
   * where the step leaves its outputs, which dependents mount and the export takes: `SANDBOX.out` (rustc's
   * `--out-dir`) unless said; a build script's run writes into its OUT_DIR, at the path cargo's names
   */
  outputsAt?: string;
  /**
   * a directory the step must not write into outside `outputsAt`: what a build script writes there
   * (beside its OUT_DIR) would not come back, so such a run fails the step and runs here
   */
  guardWrites?: string;
  /** a variable the step sets to the builder's cores as it runs (a build script's NUM_JOBS): not part of the key */
  jobsVar?: string;
  /**
   * host paths made to exist inside, as links to their sandbox copies: for a unit that reads a path
   * variable (`env!("CARGO_MANIFEST_DIR")`), which then gets its host value, as with plain cargo
   */
  hostLinks?: Array<[host: string, sandbox: string]>;
  /**
   * rustc keeps incremental state (cargo asked for it: dev-profile workspace members) at
   * `SANDBOX.incremental`, a cache mount of the engine's named `id`. A result built so is correct but not
   * byte-reproducible, so it is offered to no shared store unless its crate is named (RUSTCBUILDX_SHARE).
   */
  incremental?: { id: string };
  /**
   * sha256 of everything the step mounts, by content: the source's and trees' content-named paths and each
   * dependency's snippet (which holds its own). Said in the RUN line because podman's buildah reuses a RUN
   * layer whose text is unchanged although what it mounts changed (buildah #4522): BuildKit needs it not.
   */
  inputsDigest?: string;
  /**
   * A nonce the step's script names (a no-op): `rustcbuildx verify` runs the step again whatever the
   * cache holds. Not BuildKit's ignore-cache: in a build held open, BuildKit 0.13 panicked on it.
   */
  fresh?: string;
}

/** Where a unit's step leaves its outputs. */
export const outputsOf = (spec: UnitSpec): string => spec.outputsAt ?? SANDBOX.out;

/** What the step prints (to its own log, not an export) when rustc fails, so the failure is never cached. */
export const RUSTC_FAILED_MARKER = 'rustcbuildx-sandbox: rustc exited with status';

export class RenderError extends Error {
  override name = 'RenderError';
}

export const stageName = {
  unit: (key: string) => `u-${key}`.toLowerCase(),
  source: (key: string) => `s-${key}`.toLowerCase(),
  outputs: (key: string) => `o-${key}`.toLowerCase(),
  input: (key: string, n: number) => `i${n}-${key}`.toLowerCase(),
  export: (key: string) => `x-${key}`.toLowerCase(),
};

/**
 * The stages that build one unit (`u-<key>`), without the export stage. Inputs are bind mounts, never
 * copied layers: a unit with hundreds of dependencies would otherwise exceed the layer-depth limit of
 * the engine's store ("max depth exceeded" at ~125). One short mount per dependency (its whole output
 * dir) keeps the text small: a build's Dockerfile repeats every dependency's stages, so its size grows
 * with the sum of the closures, and BuildKit refuses a definition over 4 MiB.
 */
export function renderUnitStages(spec: UnitSpec): string {
  for (const word of [...spec.args, spec.cwd, ...(spec.hostLinks ?? []).flat()]) {
    if (/[\n\r\0]/.test(word)) throw new RenderError(`an argument holds a line break, which a Dockerfile line cannot carry: ${JSON.stringify(word).slice(0, 80)}`);
  }
  // Mount flags and COPY operands are not shell words: a space, comma or quote would split them.
  const operands = [
    spec.source?.mountTarget,
    spec.source?.staged.ctxPath,
    spec.incremental?.id,
    ...spec.inputs.flatMap((i) => (i.kind === 'unit' ? [i.target] : [i.ctxPath, i.target])),
  ];
  for (const operand of operands) {
    if (operand !== undefined && /[\s,"'=\\]/.test(operand)) throw new RenderError(`a path with a space, comma, quote or '=' cannot be mounted: ${JSON.stringify(operand)}`);
  }
  const lines: string[] = [];
  const mounts: string[] = [];

  if (spec.source) {
    const { staged, mountTarget } = spec.source;
    lines.push(`FROM scratch AS ${stageName.source(spec.key)}`);
    if (staged.kind === 'archive') {
      // ADD unpacks a local tarball; the crate's top directory is mounted where cargo unpacked it.
      lines.push(`ADD ${staged.ctxPath} /`);
      mounts.push(`--mount=type=bind,from=${stageName.source(spec.key)},source=/${staged.topDir},target=${mountTarget}`);
    } else {
      lines.push(`COPY ${staged.ctxPath} /`);
      mounts.push(`--mount=type=bind,from=${stageName.source(spec.key)},target=${mountTarget}`);
    }
  }

  spec.inputs.forEach((input, n) => {
    if (input.kind === 'unit') {
      mounts.push(`--mount=type=bind,from=${stageName.outputs(input.key)},target=${input.target}`);
    } else {
      lines.push(`FROM scratch AS ${stageName.input(spec.key, n)}`, `COPY ${input.ctxPath} /`);
      mounts.push(`--mount=type=bind,from=${stageName.input(spec.key, n)},target=${input.target}`);
    }
  });

  if (spec.incremental) {
    // Locked: two builds of one unit (two checkouts, two runs) take turns with the state, as cargo's lock would.
    mounts.push(`--mount=type=cache,id=${spec.incremental.id},target=${SANDBOX.incremental},sharing=locked`);
  }
  lines.push(`FROM ${spec.baseImage} AS ${stageName.unit(spec.key)}`);
  const cont = ' \\\n    ';
  const inputs = spec.inputsDigest ? `: inputs=${spec.inputsDigest};${cont}` : '';
  lines.push(`RUN ${mounts.join(cont)}${mounts.length ? cont : ''}${inputs}${unitScript(spec, cont)}`);
  // Dependents mount the outputs from a scratch stage: podman 4 silently skips a mount from a cached
  // stage that has a base image, and BuildKit pays one small copy per unit for it.
  lines.push(`FROM scratch AS ${stageName.outputs(spec.key)}`, `COPY --from=${stageName.unit(spec.key)} ${outputsOf(spec)} /`);
  return lines.join('\n') + '\n';
}

/**
 * The shell script of a unit's rustc step, its words joined by `sep` (a Dockerfile line continuation, or
 * a space in LLB). A successful rustc's streams are data, exported and replayed. A failed one fails the
 * step, so that neither BuildKit's cache nor the memo ever keeps it (the failure may be the sandbox's,
 * not the crate's: a file it was not sent, memory, disk); the wrapper then lets the local rustc decide.
 * The marker and the tail of rustc's stderr go to the step's log, for the fallback reason. A sandbox that
 * cannot even enter the source dir fails with 97: that is our bug.
 */
/**
 * The packed result a unit's step leaves beside its streams when it may (`unitScript`'s `pack`): its
 * outputs and streams as one zstd-compressed tar, which a reader fetches instead of every file (a third
 * of the bytes for debug outputs).
 */
export const RESULT_PACK = 'result.tar.zst';

/**
 * The step's shell script: rustc under `env -i`, its streams and status into the meta dir, and on
 * success, with `pack` and a `zstd` in the image, the packed result. Packing is best effort: a tar or
 * zstd that fails leaves no pack (nor the step failed: the script's status is `rm`'s or the `if`'s), and
 * the reader takes the files one by one. A pipeline's status is its last command's, so the tar's own
 * success is marked in a file of its own.
 */
export function unitScript(spec: UnitSpec, sep: string, opts: { pack?: boolean } = {}): string {
  // A Dockerfile line cannot hold a line break, but package descriptions do: such values are rebuilt
  // by printf into a shell variable first (the trailing `x` keeps trailing newlines).
  const assignments: string[] = [];
  const env = spec.env.map(([k, v], i) => {
    if (!/[\n\r]/.test(v)) return shQuote(`${k}=${v}`);
    const escaped = v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r');
    assignments.push(`v${i}="$(printf '%bx' ${shQuote(escaped)})"; v${i}="\${v${i}%x}";`);
    return `"${k}=$v${i}"`;
  });
  if (spec.jobsVar) env.push(`"${spec.jobsVar}=$(nproc)"`);
  const command = [...spec.program, ...spec.args].map(shQuote);
  const mkdirs = [outputsOf(spec), SANDBOX.meta, ...spec.mkdirs].map(shQuote).join(' ');
  // Shortest first, so a link for a directory comes before links below it; a path the image already
  // has, or one below an earlier link (a read-only mount), is left alone: reading it fails, and a
  // failed compile is decided by the local rustc.
  const links = [...(spec.hostLinks ?? [])]
    .sort((a, b) => a[0].length - b[0].length)
    .map(([host, sandbox]) => `[ -e ${shQuote(host)} ] || { mkdir -p ${shQuote(dirname(host))} && ln -s ${shQuote(sandbox)} ${shQuote(host)}; } 2>/dev/null;${sep}`)
    .join('');
  const meta = SANDBOX.meta;
  // Under the guarded dir a fresh step has only its mounts (read-only) and its outputs: any other file
  // is the program's, written where nothing is given back. And its outputs come back as they are, so a
  // symlink there (into the sandbox's own paths, say) would not mean the same here.
  const mounted = [outputsOf(spec), ...spec.inputs.map((i) => i.target), ...(spec.source ? [spec.source.mountTarget] : [])];
  const prune = mounted.map((m) => `-path ${shQuote(m)}`).join(' -o ');
  const refuse = (what: string) => `{ echo "${RUSTC_FAILED_MARKER} 0" >&2; echo "${what}" >&2; exit 1; }`;
  const guard = spec.guardWrites
    ? `;${sep}w=$(find ${shQuote(spec.guardWrites)} \\( ${prune} \\) -prune -o ! -type d -print 2>/dev/null | head -n 1);${sep}` +
      `[ -z "$w" ] || ${refuse('it wrote $w, outside its OUT_DIR, which is all a run there gives back')};${sep}` +
      `l=$(find ${shQuote(outputsOf(spec))} -type l -print | head -n 1);${sep}` +
      `[ -z "$l" ] || ${refuse('its OUT_DIR holds a symlink, $l, which would not point at the same thing here')}`
    : '';
  return (
    (spec.fresh ? `: fresh=${spec.fresh};${sep}` : '') +
    `mkdir -p ${mkdirs} 2>/dev/null; ${links}cd ${shQuote(spec.cwd)} || exit 97; ${assignments.map((a) => a + sep).join('')}env -i PATH="$PATH"${sep}` +
    [...env, ...command].join(sep) +
    `${sep}>${meta}/stdout 2>${meta}/stderr; s=$?; echo $s >${meta}/status;${sep}` +
    // A build script's C compiler speaks through cc-rs's `cargo:warning=` lines (its stdout): a failure
    // shows them too, so the missing header or library they name can be read from it.
    `[ $s = 0 ] || { echo "${RUSTC_FAILED_MARKER} $s" >&2; ${spec.guardWrites ? `grep -a '^cargo::\\?warning=' ${meta}/stdout | tail -c 4000 >&2; ` : ''}tail -c 8000 ${meta}/stderr >&2; exit 1; }` +
    guard +
    (opts.pack && packs(spec) ? `;${sep}${packScript(spec)}` : '')
  );
}

/** Whether a step can pack its result: the pack names the outputs `out/`, which their dir must be called. */
export const packs = (spec: UnitSpec): boolean => basename(outputsOf(spec)) === 'out';

function packScript(spec: UnitSpec): string {
  const { root, meta } = SANDBOX;
  const outputs = outputsOf(spec);
  const part = `${meta}/.${RESULT_PACK}.part`;
  const ok = `${meta}/.tar-ok`;
  // The outputs as `out/` (rustc's /rcbx/out, a build script's OUT_DIR), then the streams by name (the
  // reader checks the unpacked tree against the engine's listing of `meta/`, which holds nothing else
  // once the pack is made), not the dir: the pack and its marker are in it.
  const members = `-C ${shQuote(dirname(outputs))} out -C ${root} ${['stdout', 'stderr', 'status'].map((f) => `${meta.slice(root.length + 1)}/${f}`).join(' ')}`;
  return (
    `if command -v zstd >/dev/null 2>&1; then { tar -cf - ${members} && : >${ok}; } | zstd -q -1 -c >${part} && [ -e ${ok} ] && mv ${part} ${meta}/${RESULT_PACK}; ` +
    `rm -f ${ok} ${part}; fi`
  );
}

/**
 * A dependency given by its outputs rather than rebuilt: the same `o-<key>` stage its full snippet would
 * define, filled from a content-addressed copy of the outputs in the context.
 */
function renderOutputsStage(key: string, ctxPath: string): string {
  return `FROM scratch AS ${stageName.outputs(key)}\nCOPY ${ctxPath} /\n`;
}

/**
 * A member of a unit's closure, as a build gets it: rebuilt from its own stages (its spec, and the
 * snippet rendered from it), or given by its outputs, staged in the context by content.
 */
export type ClosureEntry = { kind: 'recipe'; spec: UnitSpec; snippet: string } | { kind: 'outputs'; key: string; ctxPath: string };

/** The whole Dockerfile for one build: the dependency closure's stages, the unit's, and the export stage (of `outputsAt`: see UnitSpec). */
export function renderBuildDockerfile(key: string, closure: readonly ClosureEntry[], ownSnippet: string, outputsAt: string = SANDBOX.out): string {
  const closureSnippets = closure.map((e) => (e.kind === 'recipe' ? e.snippet : renderOutputsStage(e.key, e.ctxPath)));
  const exportStage = [
    `FROM scratch AS ${stageName.export(key)}`,
    `COPY --from=${stageName.unit(key)} ${outputsAt} /out`,
    `COPY --from=${stageName.unit(key)} ${SANDBOX.meta} /meta`,
  ].join('\n');
  return ['# generated by rustcbuildx: one stage group per unit, dependencies first', ...closureSnippets, ownSnippet, exportStage, ''].join('\n');
}
