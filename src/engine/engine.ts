/**
 * Container engines behind one interface. docker+buildx, `docker build` with DOCKER_BUILDKIT=1 (older
 * clients) and podman differ only in how a build is spelled and in what the Dockerfile may use, so one
 * CLI adapter serves all three, parameterised by a `BuildSyntax`.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { run, type Captured, type RunOptions } from '../exec.ts';
import { cacheBaseDir, type Config, type RunnerName } from '../config/config.ts';
import { writeAtomic } from '../run-state.ts';
import { sshMuxEnv } from './ssh-mux.ts';
import type { LlbGraph } from '../render/llb.ts';
import type { ImageConfig } from '../render/dockerfile.ts';
import { describeEndpoint, dockerConfigDir, endpointOf, type Endpoint, type EngineRunner } from './endpoint.ts';

export type { EngineRunner };

export interface BuildRequest {
  dockerfile: string;
  context: string;
  target?: string;
  /** export the target's filesystem into this directory */
  outputDir?: string;
  /** or store the image in the engine under this tag */
  tag?: string;
  /** run RUN steps without network */
  noNetwork?: boolean;
  /**
   * context subdirectories whose entries are named by their content: the API route lists them whole on
   * every build, so the engine's copy of the context keeps them across builds that use different ones
   * (it drops what a sync does not list) and a file crosses the link once, not once per dependent
   */
  keepSynced?: KeepSynced;
  /**
   * the same build as LLB, for the API route: no frontend to convert the Dockerfile on every unit. The
   * CLI adapters build the Dockerfile; either way the export holds the same files.
   */
  llb?: LlbGraph;
  /**
   * the content ID of images the build names by tag, as the run found them: a build held open resolves
   * a tag once, so one whose tag now names another image (rebuilt) must not be used for this build
   */
  imageIds?: Record<string, string>;
}

export interface KeepSynced {
  dirs: string[];
  /** globs of names in those dirs never to list: entries being staged, renamed into place any moment */
  except: string[];
}

export interface BuildResult {
  code: number;
  /** BuildKit's plain progress log (stderr) */
  log: string;
  seconds: number;
  /** the connection to the engine broke during the build: why (the build says nothing about the unit) */
  interrupted?: string;
}

export interface Engine {
  readonly runner: EngineRunner;
  /** where it is: what messages name, and what suggested commands carry */
  readonly endpoint: Endpoint;
  /** e.g. "docker 26.1.5 + buildx 0.13.1" */
  readonly description: string;
  build(req: BuildRequest): Promise<BuildResult>;
  /** the image's content ID (sha256:…) and labels, or undefined when the engine's store does not have it */
  inspectImage(ref: string): Promise<ImageInfo | undefined>;
  /** whether a registry serves this reference (false when none is reachable) */
  registryHas(ref: string): Promise<boolean>;
  /** whether the engine still answers (after a build failed: is it the unit, or is the engine gone?) */
  answers(): Promise<boolean>;
  /** fetches an image from its registry into the engine's store */
  pull(ref: string): Promise<Captured>;
  importRootfs(tarball: string, ref: string): Promise<Captured>;
  /** writes the image as a docker-archive tar (docker 25+: an OCI layout that has its manifest.json too) to a file on this machine */
  saveImage(ref: string, toFile: string): Promise<Captured>;
  /** loads a docker-archive tar into the engine's store, streamed to the client as it is made */
  loadImage(archive: ReadableStream<Uint8Array>): Promise<Captured>;
}

export interface ImageInfo {
  id: string;
  labels: Record<string, string>;
  /** what a build step takes from it (LLB must say it; the Dockerfile frontend reads it itself) */
  config: ImageConfig;
}

/** An image's `Config`, as `docker image inspect` and the daemon's `/images/{name}/json` give it. */
export interface DockerImageConfig {
  Labels?: Record<string, string> | null;
  Env?: string[] | null;
  User?: string;
}

export function imageInfoOf(id: string, config: DockerImageConfig | null | undefined): ImageInfo {
  return { id: id.startsWith('sha256:') ? id : `sha256:${id}`, labels: config?.Labels ?? {}, config: { env: config?.Env ?? [], user: config?.User ?? '' } };
}

export class EngineUnavailable extends Error {
  override name = 'EngineUnavailable';
  constructor(
    readonly runner: RunnerName | 'auto',
    message: string,
  ) {
    super(message);
  }
}

interface BuildSyntax {
  argv(req: BuildRequest): string[];
  env?: Record<string, string>;
}

const buildxSyntax = (client: string): BuildSyntax => ({
  argv: (req) => [client, 'buildx', 'build', '--progress=plain', ...commonBuildArgs(req), ...(req.tag ? ['--load'] : []), req.context],
});

// Clients before 23 have BuildKit built in and switch to it with DOCKER_BUILDKIT=1.
const legacySyntax = (client: string): BuildSyntax => ({
  argv: (req) => [client, 'build', '--progress=plain', ...commonBuildArgs(req), req.context],
  env: { DOCKER_BUILDKIT: '1' },
});

const podmanSyntax = (client: string): BuildSyntax => ({
  argv: (req) => [client, 'build', '--layers', ...commonBuildArgs(req), req.context],
});

function commonBuildArgs(req: BuildRequest): string[] {
  const args = ['-f', req.dockerfile];
  if (req.target) args.push('--target', req.target);
  if (req.noNetwork) args.push('--network', 'none');
  if (req.outputDir) args.push('--output', `type=local,dest=${req.outputDir}`);
  if (req.tag) args.push('-t', req.tag);
  return args;
}

interface Adapter {
  client(cfg: Config): string;
  syntax(client: string): BuildSyntax;
}

const ADAPTERS: Record<EngineRunner, Adapter> = {
  docker: { client: (c) => c.dockerClient, syntax: buildxSyntax },
  'docker-build': { client: (c) => c.dockerClient, syntax: legacySyntax },
  podman: { client: (c) => c.podmanClient, syntax: podmanSyntax },
};

/** The engine object for a runner known to work (just detected, or from the per-run cache): no probing. */
export function makeEngine(cfg: Config, runner: EngineRunner, description: string): Engine {
  const adapter = ADAPTERS[runner];
  const client = adapter.client(cfg);
  return new CliEngine(runner, endpointOf(runner), client, adapter.syntax(client), description);
}

class CliEngine implements Engine {
  constructor(
    readonly runner: EngineRunner,
    readonly endpoint: Endpoint,
    private readonly client: string,
    private readonly syntax: BuildSyntax,
    readonly description: string,
  ) {}

  async build(req: BuildRequest): Promise<BuildResult> {
    const started = performance.now();
    let res = await runClient(this.syntax.argv(req), { env: this.syntax.env });
    // BuildKit shares one cached copy of a local context between concurrent builds of the same directory;
    // when their file sets differ, one may find a file missing while the other syncs. It passes on retry.
    for (let retry = 0; retry < 3 && res.code !== 0 && CONTEXT_RACE.test(res.stderr); retry++) {
      res = await runClient(this.syntax.argv(req), { env: this.syntax.env });
    }
    return { code: res.code, log: res.stderr + res.stdout, seconds: (performance.now() - started) / 1000 };
  }

  async inspectImage(ref: string): Promise<ImageInfo | undefined> {
    const res = await runClient([this.client, 'image', 'inspect', '--format', '{{.Id}} {{json .Config}}', ref], { timeoutMs: 30_000 });
    const line = res.stdout.trim();
    const space = line.indexOf(' ');
    if (res.code !== 0 || space < 1) return undefined;
    return imageInfoOf(line.slice(0, space), JSON.parse(line.slice(space + 1)) as DockerImageConfig | null);
  }

  async answers(): Promise<boolean> {
    const res = await runClient([this.client, 'version'], { timeoutMs: 15_000 });
    return res.code === 0;
  }

  async registryHas(ref: string): Promise<boolean> {
    const res = await runClient([this.client, 'manifest', 'inspect', ref], { timeoutMs: 10_000 });
    return res.code === 0;
  }

  pull(ref: string): Promise<Captured> {
    return runClient([this.client, 'pull', ref], { timeoutMs: 900_000 });
  }

  importRootfs(tarball: string, ref: string): Promise<Captured> {
    return runClient([this.client, 'import', tarball, ref], { timeoutMs: 600_000 });
  }

  saveImage(ref: string, toFile: string): Promise<Captured> {
    // podman's default is its own format; docker-archive is what docker writes and what we read.
    const format = this.runner === 'podman' ? ['--format', 'docker-archive'] : [];
    return runClient([this.client, 'save', ...format, '-o', toFile, ref], { timeoutMs: 1_800_000 });
  }

  loadImage(archive: ReadableStream<Uint8Array>): Promise<Captured> {
    return runClient([this.client, 'load'], { stdin: archive, timeoutMs: 1_800_000 });
  }
}

const DETECT_TIMEOUT_MS = 20_000;

let clientEnv: Record<string, string | undefined> | undefined;

/**
 * Runs an engine client (docker, podman). Their environment is ours plus what makes an ssh:// engine
 * share one connection (src/engine/ssh-mux.ts), worked out once per process.
 */
function runClient(argv: readonly string[], opts: RunOptions = {}): Promise<Captured> {
  clientEnv ??= { ...process.env, ...sshMuxEnv(process.env, cacheBaseDir()) };
  return run(argv, { ...opts, env: { ...clientEnv, ...opts.env } });
}

/** BuildKit's message when a context file vanished under a concurrent build of the same context dir. */
const CONTEXT_RACE = /failed to calculate checksum of ref [^\n]*: not found/;

async function detectDockerBuildx(cfg: Config): Promise<Engine> {
  const client = cfg.dockerClient;
  const [buildx, server] = await Promise.all([
    buildxVersion(cfg),
    runClient([client, 'version', '--format', '{{.Server.Version}}'], { timeoutMs: DETECT_TIMEOUT_MS }),
  ]);
  if (server.code !== 0 || !server.stdout.trim()) {
    throw new EngineUnavailable('docker', `${describeEndpoint(endpointOf('docker'))} does not answer (${firstLine(server.stderr) || `exit ${server.code}`}); start its daemon (\`dockerd &\`) or check DOCKER_HOST / DOCKER_CONTEXT`);
  }
  return dockerBuildxEngine(cfg, server.stdout.trim(), buildx);
}

/** Where the docker CLI finds its plugins besides the config dir's `cli-plugins` (docker's own list). */
const SYSTEM_PLUGIN_DIRS = ['/usr/local/lib/docker/cli-plugins', '/usr/local/libexec/docker/cli-plugins', '/usr/lib/docker/cli-plugins', '/usr/libexec/docker/cli-plugins'];

/**
 * The docker CLI's buildx plugin version (a local call: the daemon is not asked), or why there is none.
 * Remembered per client and plugin files (path, size, mtime, inode), since every cargo run asks it: two
 * Go processes, ~50 ms of a warm run's start.
 */
export async function buildxVersion(cfg: Config): Promise<string | EngineUnavailable> {
  const client = cfg.dockerClient;
  const files = [Bun.which(client) ?? client, ...[join(dockerConfigDir(process.env), 'cli-plugins'), ...SYSTEM_PLUGIN_DIRS].map((d) => join(d, 'docker-buildx'))];
  const key = files.map((f) => {
    const st = statSync(f, { throwIfNoEntry: false });
    return st ? `${f}\0${st.size}\0${st.mtimeMs}\0${st.ino}` : f;
  });
  const memo = join(cacheBaseDir(), 'buildx-versions', Bun.hash(key.join('\n')).toString(16));
  try {
    return readFileSync(memo, 'utf8');
  } catch {
    // not asked yet for these files
  }
  const buildx = await runClient([client, 'buildx', 'version'], { timeoutMs: DETECT_TIMEOUT_MS });
  if (buildx.code === 0) {
    const version = buildx.stdout.trim().split(/\s+/)[1] ?? '?';
    try {
      writeAtomic(memo, version);
    } catch {
      // a read-only cache dir: asked again next run
    }
    return version;
  }
  return new EngineUnavailable('docker', `\`${client} buildx\` is not available (${firstLine(buildx.stderr) || `exit ${buildx.code}`}); install the buildx plugin (Debian: docker-buildx) or run \`npm run setup\``);
}

/** The docker engine with buildx, once the daemon answered (its version) and the plugin was found. */
export function dockerBuildxEngine(cfg: Config, serverVersion: string, buildx: string | EngineUnavailable): Engine {
  if (buildx instanceof EngineUnavailable) throw buildx;
  return makeEngine(cfg, 'docker', `docker ${serverVersion} + buildx ${buildx}`);
}

async function detectDockerLegacy(cfg: Config): Promise<Engine> {
  const client = cfg.dockerClient;
  const res = await runClient([client, 'version', '--format', '{{.Client.Version}} {{.Server.Version}}'], { timeoutMs: DETECT_TIMEOUT_MS });
  const [clientVersion, serverVersion] = res.stdout.trim().split(' ');
  if (!clientVersion) throw new EngineUnavailable('docker-build', `\`${client} version\` failed: ${firstLine(res.stderr)}`);
  if (res.code !== 0 || !serverVersion) {
    throw new EngineUnavailable('docker-build', `${describeEndpoint(endpointOf('docker-build'))} does not answer (${firstLine(res.stderr)}); start its daemon or check DOCKER_HOST / DOCKER_CONTEXT`);
  }
  const major = Number.parseInt(clientVersion, 10);
  if (!(major < 23)) {
    const probe = await runClient([client, 'buildx', 'version'], { timeoutMs: DETECT_TIMEOUT_MS });
    if (probe.code !== 0) {
      throw new EngineUnavailable('docker-build', `docker client ${clientVersion} needs the buildx plugin for BuildKit builds; install docker-buildx or use RUSTCBUILDX_RUNNER=podman`);
    }
  }
  return makeEngine(cfg, 'docker-build', `docker ${serverVersion} (client ${clientVersion}, DOCKER_BUILDKIT=1 docker build)`);
}

async function detectPodman(cfg: Config): Promise<Engine> {
  const client = cfg.podmanClient;
  const res = await runClient([client, 'version', '--format', '{{.Client.Version}}'], { timeoutMs: DETECT_TIMEOUT_MS });
  if (res.code !== 0 || !res.stdout.trim()) {
    throw new EngineUnavailable('podman', `${describeEndpoint(endpointOf('podman'))} is not usable (${firstLine(res.stderr) || `exit ${res.code}`}); install it (Debian: apt-get install podman) or check CONTAINER_HOST`);
  }
  return makeEngine(cfg, 'podman', `podman ${res.stdout.trim()}`);
}

const DETECTORS: Record<EngineRunner, (cfg: Config) => Promise<Engine>> = {
  docker: detectDockerBuildx,
  'docker-build': detectDockerLegacy,
  podman: detectPodman,
};

/** The configured engine, or the first that works: buildx, then `docker build`, then podman. */
export async function detectEngine(cfg: Config): Promise<Engine> {
  if (cfg.runner === 'none') throw new EngineUnavailable('none', 'RUSTCBUILDX_RUNNER=none: compiling with the local rustc');
  if (cfg.runner) return DETECTORS[cfg.runner](cfg);
  // A docker endpoint chosen by the user (DOCKER_HOST=ssh://big-box, say) is where they want to build:
  // when it does not answer, say so, rather than quietly building on the local podman.
  const dockerChosen = endpointOf('docker').settings.some(([name]) => name !== 'RUSTCBUILDX_DOCKER');
  const candidates = dockerChosen ? (['docker', 'docker-build'] as const) : (['docker', 'docker-build', 'podman'] as const);
  const reasons: string[] = [];
  for (const runner of candidates) {
    try {
      return await DETECTORS[runner](cfg);
    } catch (err) {
      reasons.push(`${runner}: ${(err as Error).message}`);
    }
  }
  const where = dockerChosen ? `the docker engine chosen by ${describeEndpoint(endpointOf('docker'))} does not work` : 'no container engine works here';
  throw new EngineUnavailable('auto', `${where}:\n  ${reasons.join('\n  ')}\nRun \`npm run setup\` (Debian/Ubuntu) or set RUSTCBUILDX_RUNNER.`);
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0]?.trim() ?? '';
}
