/** The admin CLI: `rustcbuildx env | base build | base show | stats | --version | help`. */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { SANDBOX } from './plan/sandbox-paths.ts';
import { ConfigError, RUNNERS, type Config, type RunnerName } from './config/config.ts';
import { cliConfig } from './config/files.ts';
import { detectEngine, EngineUnavailable, type Engine } from './engine/engine.ts';
import { describeEndpoint } from './engine/endpoint.ts';
import { buildBaseImage, localToolchain, MissingBaseImage, resolveBaseImage } from './base-image.ts';
import { formatSummary, readRecords, readWallTime, STATE_DIR_NAME, summarize } from './run-state.ts';
import { run } from './exec.ts';
import { NAME, VERSION } from './version.ts';
import { writeStderr, writeStdout } from './io.ts';
import { UsageError } from './cli/usage.ts';

const HELP = `${NAME} ${VERSION} — every rustc call cargo makes, built and cached by BuildKit

As a wrapper:   cargo buildx <cargo command> [args]      (or RUSTC_WRAPPER=${NAME} cargo …)

Commands:
  ${NAME} enable [--project] | disable [--project]
                                      make plain \`cargo\` build through ${NAME} (build.rustc-wrapper in
                                      $CARGO_HOME/config.toml, or the project's .cargo/config.toml)
  ${NAME} env                        engine, base image, and every setting with where it came from
  ${NAME} doc                        every setting: file key, variable, accepted values, levels
  ${NAME} base build [--from IMAGE] [--runner docker|docker-build|podman] [--add-suggested]
                                      put an image holding the local toolchain into the engine's store;
                                      in a project, offer the packages of the system libraries it links
                                      that the image lacks (--add-suggested: add them without asking)
  ${NAME} base show [--runner …]     which base image the wrapper uses, its digest, and why
  ${NAME} base suggest               the Debian packages holding the system libraries this project links
                                      (for base.packages)
  ${NAME} stats [--json]             summary of the latest cargo run in this project
  ${NAME} cache ls [--json] | du | prune [--days N] [--max-size SIZE] | rm CRATE… | push | pull [--all]
                                      results in the local memo and the shared stores: list them, their
                                      size, remove old or named ones, push what may be shared to the
                                      writable stores, pull the project's (or --all) for offline work
  ${NAME} verify [--crate NAME]… [--against DOCKER_HOST] [--json] [-- CARGO BUILD ARGS]
                                      build each unit again whatever the cache holds (locally, or on
                                      the engine named) and compare every output's sha256 with what the
                                      cache serves; lists those that differ, exits 1 if any do
  ${NAME} base push REF | base pull REF
                                      share the base image through a registry, so two machines share keys
  ${NAME} broker status | broker stop [--all]
                                      the long-lived process that holds the engine connection
  ${NAME} engine build -f DOCKERFILE --output DIR [--target STAGE] CONTEXT
                                      one build through the wrapper's engine path (for measuring it)
  ${NAME} --version

Settings: a user file (~/.config/rustcbuildx/config.toml), [workspace.metadata.rustcbuildx] and
  [package.metadata.rustcbuildx] in Cargo.toml, profiles, and RUSTCBUILDX_* variables over all of them;
  \`${NAME} doc\` lists them (docs/configuration.md), \`${NAME} env\` shows what applies here.
`;


export async function cli(args: string[]): Promise<number> {
  try {
    return await dispatch(args);
  } catch (err) {
    // A registry's errors by name: the registry client loads only with the commands that use it.
    const registry = err instanceof Error && (err.name === 'RegistryError' || err.name === 'DamagedContent');
    if (err instanceof UsageError || err instanceof ConfigError || err instanceof EngineUnavailable || err instanceof MissingBaseImage || registry) {
      await writeStderr(`${NAME}: error: ${err.message}\n`);
      return err instanceof UsageError ? 2 : 1;
    }
    throw err;
  }
}

async function dispatch(args: string[]): Promise<number> {
  const [cmd, ...rest] = args;
  switch (cmd) {
    case '--version':
    case '-V':
    case 'version':
      await writeStdout(`${NAME} ${VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      await writeStdout(HELP);
      return 0;
    case 'base':
      return base(rest);
    case 'env':
      return envCommand();
    case 'doc': {
      const { configDoc } = await import('./cli/config-doc.ts');
      await writeStdout(configDoc());
      return 0;
    }
    case 'stats':
      return stats(rest);
    case 'cache': {
      const { cacheCommand } = await import('./cli/cache.ts');
      return cacheCommand(rest);
    }
    case 'verify': {
      const { verifyCommand } = await import('./cli/verify.ts');
      return verifyCommand(rest, projectTargetDir);
    }
    case 'broker': {
      const { brokerCommand } = await import('./cli/broker.ts');
      return brokerCommand(rest);
    }
    case 'engine': {
      const { engineCommand } = await import('./cli/broker.ts');
      return engineCommand(rest);
    }
    case 'enable':
    case 'disable': {
      const { applyCargoConfig, CargoConfigError, cargoConfigFile } = await import('./cli/enable.ts');
      try {
        await writeStdout(applyCargoConfig(cargoConfigFile(rest, process.env, process.cwd()), process.execPath, cmd === 'enable') + '\n');
        return 0;
      } catch (err) {
        if (!(err instanceof CargoConfigError)) throw err;
        await writeStderr(`${NAME}: error: ${err.message}\n`);
        return 1;
      }
    }
    case 'cargo': {
      const { cargoBuildx } = await import('./cargo-buildx.ts');
      return cargoBuildx(rest);
    }
    default:
      throw new UsageError(`unknown command "${cmd}"; see \`${NAME} help\``);
  }
}

interface Flags {
  from?: string;
  runner?: RunnerName;
  json: boolean;
  addSuggested: boolean;
}

function parseFlags(args: string[], allowed: ReadonlyArray<keyof Flags>): Flags {
  const flags: Flags = { json: false, addSuggested: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    const [name, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const key = (name === '--add-suggested' ? 'addSuggested' : name.replace(/^--/, '')) as keyof Flags;
    if (!name.startsWith('--') || name === '--addSuggested' || !allowed.includes(key)) throw new UsageError(`unexpected argument "${arg}"`);
    if (key === 'json' || key === 'addSuggested') {
      if (inline !== undefined) throw new UsageError(`${name} takes no value`);
      flags[key] = true;
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    if (key === 'runner') {
      if (!(RUNNERS as readonly string[]).includes(value) || value === 'none') throw new UsageError(`--runner ${value}: use docker, docker-build or podman`);
      flags.runner = value as RunnerName;
    } else flags.from = value;
  }
  return flags;
}


async function base(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'build') {
    const flags = parseFlags(rest, ['from', 'runner', 'addSuggested']);
    const cfg = await cliConfig(flags.runner);
    const engine = await detectEngine(cfg);
    const local = await localToolchain();
    const say = (line: string) => console.log(`${NAME}: ${line}`);
    const build = async (c: Config) => {
      const choice = await buildBaseImage(engine, local, { ...(flags.from ? { from: flags.from } : {}), extras: c.base, say });
      say(`${choice.image} ${choice.id} on ${describeEndpoint(engine.endpoint)}: ${choice.explanation}`);
      return choice;
    };
    if (flags.from && flags.addSuggested) throw new UsageError('--add-suggested with --from: packages go into the rootfs rustcbuildx makes; install them into your image instead');
    const choice = await build(cfg);
    // An image of the user's own (--from) takes no packages from us.
    if (flags.from) return 0;
    const { offerPackages } = await import('./cli/base-suggest.ts');
    if (await offerPackages(cfg, engine, choice, await projectTargetDir(), { add: flags.addSuggested, say })) await build(await cliConfig(flags.runner));
    return 0;
  }
  if (sub === 'suggest') {
    const { baseSuggest } = await import('./cli/base-suggest.ts');
    return baseSuggest(await cliConfig(), await projectTargetDir());
  }
  if (sub === 'push' || sub === 'pull') {
    const { basePull, basePush } = await import('./cli/base-transfer.ts');
    return sub === 'push' ? basePush(rest) : basePull(rest);
  }
  if (sub === 'show') {
    const flags = parseFlags(rest, ['runner', 'json']);
    const cfg = await cliConfig(flags.runner);
    const engine = await detectEngine(cfg);
    const { toolchain } = await localToolchain();
    const choice = await resolveBaseImage(engine, cfg, toolchain);
    if (flags.json) await writeStdout(JSON.stringify({ ...choice, runner: engine.runner, endpoint: Object.fromEntries(engine.endpoint.settings) }) + '\n');
    else await writeStdout(`image:  ${choice.image}\ndigest: ${choice.id}\nreason: ${choice.reason}: ${choice.explanation}\nengine: ${engine.description} on ${describeEndpoint(engine.endpoint)}\n`);
    return 0;
  }
  throw new UsageError('usage: base build [--from IMAGE] [--runner R] [--add-suggested] | base show [--runner R] [--json] | base suggest | base push REF [--image IMAGE] | base pull REF');
}

async function envCommand(): Promise<number> {
  const cfg = await cliConfig();
  const lines = [`${NAME} ${VERSION}`, `runner:     ${cfg.runner ?? 'auto'}`];
  let engine: Engine | undefined;
  try {
    engine = cfg.runner === 'none' ? undefined : await detectEngine(cfg);
    lines.push(`engine:     ${engine ? `${engine.description} on ${describeEndpoint(engine.endpoint)}` : 'none (local rustc)'}`);
  } catch (err) {
    lines.push(`engine:     unavailable: ${(err as Error).message}`);
  }
  try {
    const { toolchain, sysroot } = await localToolchain();
    lines.push(`toolchain:  rustc ${toolchain.release} (${toolchain.commitHash?.slice(0, 9) ?? 'custom'}) ${toolchain.host} at ${sysroot}`);
    if (engine) {
      const choice = await resolveBaseImage(engine, cfg, toolchain).catch((err: Error) => err);
      lines.push(choice instanceof Error ? `base image: missing: ${choice.message.split('\n')[0]}` : `base image: ${choice.image} (${choice.reason})`);
    }
  } catch (err) {
    lines.push(`toolchain:  ${(err as Error).message}`);
  }
  // Outputs name sandbox paths; a debugger finds the local sources with these substitutions.
  const cargoHome = process.env.CARGO_HOME || join(homedir(), '.cargo');
  const located = await run(['cargo', 'locate-project', '--workspace', '--message-format', 'plain'], { timeoutMs: 30_000 });
  const workspace = located.code === 0 ? dirname(located.stdout.trim()) : process.cwd();
  lines.push(`debugger:   gdb: set substitute-path ${SANDBOX.workspace} ${workspace} / set substitute-path ${SANDBOX.cargoHome} ${cargoHome}`);
  lines.push(`            lldb: settings set target.source-map ${SANDBOX.workspace} ${workspace} ${SANDBOX.cargoHome} ${cargoHome}`);
  const { editsCompileHere } = await import('./wrapper/edits.ts');
  lines.push(`edits:      ${editsCompileHere(cfg) ? 'compiled here, with cargo\'s incremental state' : 'compiled incrementally in the engine'} (incremental = ${cfg.incremental})`);
  lines.push(`scripts:    ${cfg.buildScripts === 'sandbox' ? 'run in the engine, cached like compiles' : 'run here, as cargo runs them'} (build-scripts = ${cfg.buildScripts})`);
  const { settingLines } = await import('./cli/config-doc.ts');
  lines.push(`settings (\`${NAME} doc\` explains each):`, ...settingLines(cfg).map((l) => `  ${l}`));
  for (const name of ['DOCKER_HOST', 'DOCKER_CONTEXT', 'BUILDX_BUILDER']) {
    if (process.env[name]) lines.push(`${name}=${process.env[name]}`);
  }
  await writeStdout(lines.join('\n') + '\n');
  return 0;
}

/** The current project's target dir: CARGO_TARGET_DIR, else what cargo metadata says. */
async function projectTargetDir(): Promise<string> {
  if (process.env.CARGO_TARGET_DIR) return process.env.CARGO_TARGET_DIR;
  const meta = await run(['cargo', 'metadata', '--format-version', '1', '--no-deps', '--offline'], { timeoutMs: 60_000 });
  if (meta.code === 0) return (JSON.parse(meta.stdout) as { target_directory: string }).target_directory;
  return join(process.cwd(), 'target');
}

async function stats(args: string[]): Promise<number> {
  const flags = parseFlags(args, ['json']);
  const runsDir = join(await projectTargetDir(), STATE_DIR_NAME, 'runs');
  const latest = existsSync(runsDir)
    ? readdirSync(runsDir)
        .filter((f) => f.endsWith('.jsonl'))
        .map((f) => ({ f, t: statSync(join(runsDir, f)).mtimeMs }))
        .sort((a, b) => b.t - a.t)[0]
    : undefined;
  if (!latest) {
    await writeStderr(`${NAME}: no cargo run through ${NAME} recorded in ${runsDir}\n`);
    return 1;
  }
  const file = join(runsDir, latest.f);
  const records = readRecords(file);
  const summary = summarize(records, readWallTime(file));
  // Why each build script ran here (the network, a tool the image lacks…): what to act on.
  const here = records.filter((r) => r.kind === 'build-script' && (r.outcome === 'fallback' || r.outcome === 'local')).map((r) => ({ crate: r.crate, reason: r.reason ?? '' }));
  await writeStdout(
    flags.json
      ? JSON.stringify({ run: latest.f.replace(/\.jsonl$/, ''), ...summary, scriptsOnHost: here }) + '\n'
      : `${formatSummary(summary)} (units' own times summed: ${summary.unitSeconds.toFixed(1)} s)\n` +
          `  where from: ${summary.from.memo} the local memo, ${summary.from.store} a shared store, ${summary.from.engine} BuildKit's cache, ${summary.built} built, ` +
          `${summary.local} compiled here, ${summary.fallback} fell back; hit rate ${Math.round(summary.hitRate * 100)}% (compiles and build scripts' runs)\n` +
          here.map((h) => `  build script of ${h.crate} on the host: ${h.reason}\n`).join(''),
  );
  return 0;
}
