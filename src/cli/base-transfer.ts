/**
 * `rustcbuildx base push REF` and `base pull REF`: one machine's base image, through the team's registry,
 * into the others' engines. Cached results are shared only between sandboxes with the same image ID, and
 * each machine's own `base build` makes another: pulling the pushed one makes them equal.
 */
import { RUNNERS, type Config, type RunnerName } from '../config/config.ts';
import { cliConfig } from '../config/files.ts';
import { detectEngine } from '../engine/engine.ts';
import { describeEndpoint } from '../engine/endpoint.ts';
import { formatSize, pullImage, pushImage } from '../engine/image-transfer.ts';
import { extrasId, LABEL_CODENAME, localToolchain, osCodename, rememberPull, resolveBaseImage } from '../base-image.ts';
import { parseImageRef, RegistryClient, RegistryError, type Repository } from '../store/registry.ts';
import { toolchainTag } from '../toolchain.ts';
import { NAME } from '../version.ts';
import { UsageError } from './usage.ts';

const RUNNER_FLAG = '[--runner docker|docker-build|podman]';
const say = (line: string) => console.log(`${NAME}: ${line}`);

/** `base push REF [--image IMAGE]`: the wrapper's base image (or IMAGE) to REF, a tag in a registry. */
export async function basePush(args: string[]): Promise<number> {
  const flags = parseTransferFlags(args, `usage: base push REGISTRY/REPOSITORY:TAG [--image IMAGE] ${RUNNER_FLAG}`, true);
  const { repo, reference } = imageRef(flags.ref);
  if (reference.startsWith('sha256:')) throw new UsageError(`${flags.ref}: push to a tag (REGISTRY/REPOSITORY:TAG), not to a digest`);
  const cfg = await cliConfig(flags.runner);
  const engine = await detectEngine(cfg);
  const image = flags.image ?? (await resolveBaseImage(engine, cfg, (await localToolchain()).toolchain)).image;
  const pushed = await pushImage(engine, image, new RegistryClient(repo), reference, say);
  say(`pushed ${image} to ${repo.host}/${repo.name}:${reference}: manifest ${pushed.digest}, ${formatSize(pushed.compressedBytes)} compressed (${formatSize(pushed.tarBytes)} as tars)`);
  say(`image ID ${pushed.imageId}; on another machine: ${NAME} base pull ${repo.host}/${repo.name}:${reference}`);
  return 0;
}

/** `base pull REF`: REF into the engine's store, under its own name and, when it holds the local toolchain, the wrapper's tag for it. */
export async function basePull(args: string[]): Promise<number> {
  const flags = parseTransferFlags(args, `usage: base pull REGISTRY/REPOSITORY[:TAG|@DIGEST] ${RUNNER_FLAG}`, false);
  const { repo, reference } = imageRef(flags.ref);
  const cfg = await cliConfig(flags.runner);
  const engine = await detectEngine(cfg);
  // Without a local rustc the image is still loaded, under its own name only.
  const toolchain = await localToolchain().then((local) => local.toolchain, () => undefined);
  const repoTag = reference.startsWith('sha256:') ? undefined : `${repo.host}/${repo.name}:${reference}`;
  const pulled = await pullImage(engine, new RegistryClient(repo), reference, { repoTag, toolchain, say });
  const named = pulled.tags.length > 0 ? ` as ${pulled.tags.join(' and ')}` : ` (untagged: name it with \`${engine.runner === 'podman' ? 'podman' : 'docker'} tag\`)`;
  say(`loaded ${formatSize(pulled.bytes)} into ${describeEndpoint(engine.endpoint)}${named}; image ID ${pulled.imageId}, the registry's config digest`);
  const wanted = toolchain ? toolchainTag(toolchain, extrasId(cfg.base)) : undefined;
  const holdsToolchain = toolchain !== undefined && pulled.tags.some((t) => t.startsWith(toolchainTag(toolchain)));
  // Remembered whenever it holds this toolchain, so `base build` keeps it even if the extras here change later.
  if (holdsToolchain) rememberPull(pulled.imageId, `${repo.host}/${repo.name}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`);
  const codename = pulled.labels[LABEL_CODENAME];
  if (codename && osCodename() && codename !== osCodename()) {
    say(`warning: its rootfs is Debian ${codename}, this machine is ${osCodename()}: system libraries from base.packages may have other sonames than this machine's, and binaries linking them may not run here`);
  }
  if (wanted && pulled.tags.includes(wanted)) return 0;
  if (holdsToolchain) {
    say(`it holds other extras than base.packages and base.dockerfile here (${cfg.sources['base.packages']}): the wrapper uses it once they are the same as the team's`);
  } else if (toolchain) {
    say(`it does not hold the local toolchain (rustc ${toolchain.release}): the wrapper uses it only through RUSTCBUILDX_BASE_IMAGE, where its \`rustc -vV\` is checked`);
  }
  return 0;
}

interface TransferFlags {
  ref: string;
  runner?: RunnerName;
  image?: string;
}

function parseTransferFlags(args: string[], usage: string, takesImage: boolean): TransferFlags {
  let ref: string | undefined;
  const flags: Omit<TransferFlags, 'ref'> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!arg.startsWith('--')) {
      if (ref !== undefined) throw new UsageError(`unexpected argument "${arg}"; ${usage}`);
      ref = arg;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const value = eq > 0 ? arg.slice(eq + 1) : args[++i];
    if (name !== '--runner' && !(name === '--image' && takesImage)) throw new UsageError(`unexpected argument "${arg}"; ${usage}`);
    if (value === undefined || value === '') throw new UsageError(`${name} needs a value`);
    if (name === '--image') flags.image = value;
    else if ((RUNNERS as readonly string[]).includes(value) && value !== 'none') flags.runner = value as RunnerName;
    else throw new UsageError(`--runner ${value}: use docker, docker-build or podman`);
  }
  if (ref === undefined) throw new UsageError(usage);
  return { ref, ...flags };
}

/** A REF the command line gave: a malformed one is a usage error. */
function imageRef(ref: string): { repo: Repository; reference: string } {
  try {
    return parseImageRef(ref);
  } catch (err) {
    if (err instanceof RegistryError) throw new UsageError(err.message);
    throw err;
  }
}

