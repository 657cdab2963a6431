/**
 * Base images: the toolchain every sandboxed rustc runs with. Without a registry the image is made
 * locally: a Debian rootfs from the machine's own apt sources (mmdebstrap), plus the local toolchain's
 * bin/ and lib/ copied (never downloaded), so `rustc -vV` inside equals outside.
 */
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './exec.ts';
import type { BaseExtras, Config } from './config/config.ts';
import type { Engine, ImageInfo } from './engine/engine.ts';
import type { ImageConfig } from './render/dockerfile.ts';
import { commandFor, describeEndpoint } from './engine/endpoint.ts';
import { officialImage, parseRustcVersion, sha256, toolchainTag, type Toolchain } from './toolchain.ts';
import { cacheBaseDir } from './config/config.ts';
import { writeAtomic } from './run-state.ts';
import { readVersionMemo, rememberVersion, versionMemoFile } from './rustc/version-memo.ts';

/** Where the toolchain lives inside every base image we make: fixed, so cache keys do not depend on the host. */
export const SANDBOX_TOOLCHAIN_DIR = '/opt/rust';
/** sha256 of the `rustc -vV` text of the toolchain an image holds */
export const LABEL_VERBOSE = 'org.rustcbuildx.rustc-vv-sha256';
const LABEL_FROM = 'org.rustcbuildx.from';
/** extrasId of what the image holds beyond the toolchain (base.packages, base.dockerfile); absent: nothing */
export const LABEL_EXTRAS = 'org.rustcbuildx.extras';
/** the Debian release of the rootfs we made (base.packages' libraries are that release's) */
export const LABEL_CODENAME = 'org.rustcbuildx.codename';

/** A short id of the configured extras, '' when there are none: part of the image's tag. */
export function extrasId(base: BaseExtras): string {
  if (base.packages.length === 0 && base.dockerfile === undefined) return '';
  return sha256(JSON.stringify({ packages: [...base.packages].sort(), dockerfile: base.dockerfile ?? null })).slice(0, 12);
}

/** The extras as the user wrote them, for messages. */
function describeExtras(base: BaseExtras): string {
  return [base.packages.length ? `base.packages ${JSON.stringify(base.packages)}` : '', base.dockerfile ? 'base.dockerfile' : ''].filter(Boolean).join(' and ');
}

export type BaseReason = 'configured' | 'local-toolchain' | 'official';

export interface BaseChoice {
  image: string;
  /** content ID in the engine's store */
  id: string;
  config: ImageConfig;
  reason: BaseReason;
  explanation: string;
}

export class MissingBaseImage extends Error {
  override name = 'MissingBaseImage';
}

export interface LocalToolchain {
  toolchain: Toolchain;
  sysroot: string;
  rustc: string;
}

/** The local toolchain as `rustc -vV` names it, from the answer remembered per binary when there is one. */
export async function localToolchainVersion(rustc: string): Promise<Toolchain> {
  const file = versionMemoFile(rustc);
  const known = readVersionMemo(file);
  if (known) {
    try {
      return parseRustcVersion(new TextDecoder().decode(known));
    } catch {
      // a damaged answer: asked again below, and replaced
    }
  }
  const vv = await run([rustc, '-vV']);
  if (vv.code !== 0) throw new MissingBaseImage(`cannot run \`${rustc} -vV\`: ${vv.stderr.trim()}`);
  const toolchain = parseRustcVersion(vv.stdout);
  rememberVersion(file, new TextEncoder().encode(vv.stdout));
  return toolchain;
}

export async function localToolchain(rustc = process.env.RUSTC || 'rustc'): Promise<LocalToolchain> {
  const [toolchain, sysroot] = await Promise.all([localToolchainVersion(rustc), run([rustc, '--print', 'sysroot'])]);
  if (sysroot.code !== 0) throw new MissingBaseImage(`cannot run \`${rustc} --print sysroot\`: ${sysroot.stderr.trim()}`);
  return { toolchain, sysroot: sysroot.stdout.trim(), rustc };
}

/** Which image the wrapper uses for this toolchain, and why. Throws MissingBaseImage when none fits. */
export async function resolveBaseImage(engine: Engine, cfg: Config, tc: Toolchain, known: KnownImages = {}): Promise<BaseChoice> {
  const extras = extrasId(cfg.base);
  if (cfg.baseImage) {
    if (extras) throw new MissingBaseImage(`${describeExtras(cfg.base)} (${cfg.sources['base.packages'] !== 'default' ? cfg.sources['base.packages'] : cfg.sources['base.dockerfile']}) apply to the image \`base build\` makes, not to base-image ${cfg.baseImage}: put them into that image, or unset one of the two`);
    const where = cfg.sources['base-image'];
    const fix = `Set base-image (${where}) to an image holding this exact toolchain, or unset it and run: ${commandFor(engine.endpoint, ['base', 'build'])}`;
    const { id, config } = await checkedImage(engine, cfg.baseImage, tc, `base-image = ${cfg.baseImage} (${where})`, fix, known);
    return { image: cfg.baseImage, id, config, reason: 'configured', explanation: `base-image is set (${where}); its \`rustc -vV\` equals the local one` };
  }
  const tag = toolchainTag(tc, extras);
  const local = await inspectKnown(engine, tag, known);
  if (local && local.labels[LABEL_VERBOSE] === sha256(tc.verbose)) {
    const team = pulledFrom(local.id);
    const how = team ? `pulled from ${team} (\`rustcbuildx base pull\`): the image, and so the cache keys, of every machine that uses it` : `made by \`rustcbuildx base build\` from the local toolchain`;
    return { image: tag, id: local.id, config: local.config, reason: 'local-toolchain', explanation: `${how} (rustc ${tc.release})` };
  }
  const official = extras ? undefined : officialImage(tc);
  if (official && ((await engine.inspectImage(official)) || (await engine.registryHas(official)))) {
    const fix = `Make an image of the local toolchain with: ${commandFor(engine.endpoint, ['base', 'build'])}`;
    const { id, config } = await checkedImage(engine, official, tc, `the official image ${official}`, fix, known);
    return { image: official, id, config, reason: 'official', explanation: `no local toolchain image; the official image for rustc ${tc.release}, its \`rustc -vV\` equals the local one` };
  }
  throw new MissingBaseImage(
    `no base image for rustc ${tc.release} (${tc.commitHash?.slice(0, 9) ?? 'custom build'}, ${tc.host})${extras ? ` with ${describeExtras(cfg.base)}` : ''} in the store of ${describeEndpoint(engine.endpoint)}${local ? ' (a stale one has its tag)' : ''}.\n` +
      `Make it with: ${commandFor(engine.endpoint, ['base', 'build'])}\n` +
      `(or set RUSTCBUILDX_BASE_IMAGE to an image holding this exact toolchain)`,
  );
}

/** Images as the engine's store had them a moment ago (asked of the broker), by reference; null: absent. */
export type KnownImages = Readonly<Record<string, ImageInfo | null>>;

function inspectKnown(engine: Engine, ref: string, known: KnownImages): Promise<ImageInfo | undefined> {
  return Object.hasOwn(known, ref) ? Promise.resolve(known[ref] ?? undefined) : engine.inspectImage(ref);
}

/**
 * An image we did not make (its content ID and configuration), once its `rustc -vV` is known to equal the local one: a
 * sandbox with another rustc gives other results (and rlibs the local rustc rejects). The image is
 * pulled when the store lacks it; the check is one build, remembered per content ID in the user's
 * cache dir. `what` names the image in the error, `fix` says what to do.
 */
async function checkedImage(engine: Engine, ref: string, tc: Toolchain, what: string, fix: string, known: KnownImages): Promise<ImageInfo> {
  let info = await inspectKnown(engine, ref, known);
  if (!info) {
    const pulled = await engine.pull(ref);
    info = pulled.code === 0 ? await engine.inspectImage(ref) : undefined;
    if (!info) throw new MissingBaseImage(`${what}: not in the store of ${describeEndpoint(engine.endpoint)}, and pulling it failed:\n${tail(pulled.stderr || pulled.stdout, 5)}\n${fix}`);
  }
  const memo = join(cacheBaseDir(), 'base-checks', sha256(`${info.id}\0${tc.verbose}`));
  if (existsSync(memo)) return info;
  const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-check-'));
  let inside: string;
  try {
    inside = await rustcVersionInside(engine, ref, work);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  if (inside !== tc.verbose) {
    throw new MissingBaseImage(`${what} (${info.id.slice(0, 19)}) runs another rustc than the one cargo calls:\n${versionDiff(inside, tc.verbose)}\n${fix}`);
  }
  writeAtomic(memo, inside);
  return info;
}

/** The two `rustc -vV` texts side by side: their first lines (the version), then every other line that differs. */
export function versionDiff(image: string, local: string): string {
  const a = image.split('\n');
  const b = local.split('\n');
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i === 0 || a[i] !== b[i]) out.push(`  image: ${a[i] ?? ''}`, `  local: ${b[i] ?? ''}`);
  }
  return out.join('\n');
}

export interface BaseBuildOptions {
  from?: string;
  /** packages and Dockerfile lines beyond the toolchain (the config's `base`) */
  extras: BaseExtras;
  say: (line: string) => void;
}

/** Puts the local toolchain's image into the engine's store; a no-op when an identical one is there. */
export async function buildBaseImage(engine: Engine, local: LocalToolchain, opts: BaseBuildOptions): Promise<BaseChoice> {
  const tc = local.toolchain;
  const extras = extrasId(opts.extras);
  const tag = toolchainTag(tc, extras);
  if (opts.from && opts.extras.packages.length > 0) {
    throw new MissingBaseImage(`--from ${opts.from} with base.packages: the packages go into the rootfs ${'rustcbuildx'} makes with mmdebstrap; install them into ${opts.from} instead, or drop --from`);
  }
  // A team's image pulled under this tag stays: another made here would have another ID, and share nothing.
  const current = opts.from ? undefined : await engine.inspectImage(tag);
  const team = current && current.labels[LABEL_VERBOSE] === sha256(tc.verbose) ? pulledFrom(current.id) : undefined;
  if (current && team) {
    return { image: tag, id: current.id, config: current.config, reason: 'local-toolchain', explanation: `kept: pulled from ${team} (\`base pull\`), so results are shared with every machine that uses it; \`base build --from IMAGE\` makes one of your own` };
  }
  const from = opts.from ?? (await ensureRootfs(engine, opts.extras.packages, opts.say));
  const fromInfo = await engine.inspectImage(from);
  if (!fromInfo) throw new MissingBaseImage(`--from ${from}: no such image in the store of ${describeEndpoint(engine.endpoint)}`);
  const fromLabel = `${from}@${fromInfo.id}`;

  const existing = await engine.inspectImage(tag);
  if (existing && existing.labels[LABEL_VERBOSE] === sha256(tc.verbose) && existing.labels[LABEL_FROM] === fromLabel && (existing.labels[LABEL_EXTRAS] ?? '') === extras) {
    return { image: tag, id: existing.id, config: existing.config, reason: 'local-toolchain', explanation: 'already present: nothing to do' };
  }

  const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-base-'));
  try {
    const dockerfile = join(work, 'Dockerfile');
    // Our rootfs's release: the libraries base.packages put in have that release's sonames.
    const codename = opts.from ? undefined : osCodename();
    writeFileSync(dockerfile, renderBaseDockerfile(from, tc, fromLabel, { id: extras, dockerfile: opts.extras.dockerfile, ...(codename ? { codename } : {}) }));
    opts.say(`building ${tag} on ${from} from ${local.sysroot} (bin/ and lib/ only)${opts.extras.dockerfile ? ', then the lines of base.dockerfile' : ''}`);
    // The sysroot is the context; only the paths COPY names are sent, so share/ (docs) stays home.
    // The user's Dockerfile lines may fetch what they install; nothing else needs the network.
    const res = await engine.build({ dockerfile, context: local.sysroot, tag, noNetwork: opts.extras.dockerfile === undefined });
    if (res.code !== 0) {
      throw new MissingBaseImage(`building the base image on ${describeEndpoint(engine.endpoint)} failed (exit ${res.code}):\n${tail(res.log, 25)}`);
    }
    const inside = await rustcVersionInside(engine, tag, work);
    if (inside !== tc.verbose) {
      throw new MissingBaseImage(`the new image's rustc differs from the local one:\ninside:\n${inside}\noutside:\n${tc.verbose}`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const info = await engine.inspectImage(tag);
  if (!info) throw new MissingBaseImage(`built ${tag}, yet the store of ${describeEndpoint(engine.endpoint)} does not have it`);
  return { image: tag, id: info.id, config: info.config, reason: 'local-toolchain', explanation: `built; \`rustc -vV\` inside equals outside` };
}

/** Remembers that this image (by content ID) was pulled from a team's registry, so `base build` keeps it. */
export function rememberPull(id: string, ref: string): void {
  writeAtomic(join(cacheBaseDir(), 'base-pulls', id.replace(/^sha256:/, '')), ref);
}

function pulledFrom(id: string): string | undefined {
  try {
    return readFileSync(join(cacheBaseDir(), 'base-pulls', id.replace(/^sha256:/, '')), 'utf8');
  } catch {
    return undefined;
  }
}

/** `rustc -vV` as the image runs it, through a build (what the wrapper does), not `run` (podman's may be refused). */
async function rustcVersionInside(engine: Engine, image: string, work: string): Promise<string> {
  const dockerfile = join(work, 'Dockerfile.check');
  writeFileSync(dockerfile, `FROM ${image} AS check\nRUN rustc -vV > /rustc-vV 2>&1 || true\nFROM scratch\nCOPY --from=check /rustc-vV /\n`);
  const out = join(work, 'check');
  const res = await engine.build({ dockerfile, context: work, outputDir: out, noNetwork: true });
  if (res.code !== 0) return `(the check build failed: ${tail(res.log, 5)})`;
  return readFileSync(join(out, 'rustc-vV'), 'utf8').trim();
}

export function renderBaseDockerfile(from: string, tc: Toolchain, fromLabel: string, extras: { id: string; dockerfile: string | undefined; codename?: string } = { id: '', dockerfile: undefined }): string {
  const dir = SANDBOX_TOOLCHAIN_DIR;
  return [
    `FROM ${from}`,
    `COPY bin ${dir}/bin`,
    `COPY lib ${dir}/lib`,
    `ENV PATH=${dir}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    ...(extras.dockerfile ? [extras.dockerfile.trimEnd()] : []),
    `LABEL ${LABEL_VERBOSE}="${sha256(tc.verbose)}" ${LABEL_FROM}="${fromLabel}" org.rustcbuildx.release="${tc.release}"${extras.id ? ` ${LABEL_EXTRAS}="${extras.id}"` : ''}${extras.codename ? ` ${LABEL_CODENAME}="${extras.codename}"` : ''}`,
    // Fails the build here, with a clear log, if the rootfs lacks a linker or libc the toolchain needs.
    'RUN rustc -vV && cc --version >/dev/null',
    '',
  ].join('\n');
}

/**
 * What our rootfs holds beyond minbase: a C toolchain for build scripts' C and rustc's linker,
 * certificates, and zstd, with which a unit's step packs its result (src/render/dockerfile.ts). The tag
 * names this list's version, so a machine with an older rootfs makes the new one.
 */
const ROOTFS_PACKAGES = ['gcc', 'libc6-dev', 'ca-certificates', 'zstd'];
const ROOTFS_RECIPE = 2;

/** The Debian rootfs image from this machine's own apt sources, made once. */
async function ensureRootfs(engine: Engine, extra: readonly string[], say: (line: string) => void): Promise<string> {
  const codename = osCodename();
  if (!codename) {
    throw new MissingBaseImage('not a Debian/Ubuntu machine: give an image with a C toolchain, e.g. `rustcbuildx base build --from debian:bookworm`');
  }
  // The same release as this machine: the libraries the sandbox links have the sonames the host's have.
  const packages = [...ROOTFS_PACKAGES, ...extra.filter((p) => !ROOTFS_PACKAGES.includes(p))];
  const ref = `rustcbuildx/rootfs:${codename}-r${ROOTFS_RECIPE}${extra.length ? `-p${sha256(extra.join(',')).slice(0, 12)}` : ''}`;
  if (await engine.inspectImage(ref)) return ref;
  const work = mkdtempSync(join(tmpdir(), 'rustcbuildx-rootfs-'));
  try {
    const tarball = join(work, 'rootfs.tar');
    say(`making a ${codename} rootfs with mmdebstrap (${packages.join(', ')}) from this machine's apt sources`);
    const made = await run(['mmdebstrap', '--quiet', '--variant=minbase', `--include=${packages.join(',')}`, codename, tarball], { timeoutMs: 900_000 });
    if (made.code !== 0) {
      // apt says which package it does not know only in mmdebstrap's verbose output: ask apt-cache.
      const unknown = await unknownPackages(extra);
      throw new MissingBaseImage(
        unknown.length
          ? `mmdebstrap: ${codename}'s apt sources have no package ${unknown.join(', ')}: check base.packages (\`rustcbuildx env\` says where it is set)`
          : `mmdebstrap failed (exit ${made.code}): ${tail(made.stderr, 10)}\nInstall it with \`apt-get install mmdebstrap\` (npm run setup does), or pass --from IMAGE.`,
      );
    }
    const imported = await engine.importRootfs(tarball, ref);
    if (imported.code !== 0) throw new MissingBaseImage(`importing the rootfs into ${describeEndpoint(engine.endpoint)} failed: ${tail(imported.stderr, 10)}`);
    say(`imported ${ref}`);
    return ref;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The packages this machine's apt sources have no candidate for (what makes mmdebstrap fail). */
async function unknownPackages(packages: readonly string[]): Promise<string[]> {
  if (packages.length === 0) return [];
  const policy = await run(['apt-cache', 'policy', ...packages], { timeoutMs: 60_000, env: { ...process.env, LC_ALL: 'C' } });
  if (policy.code !== 0) return [];
  return packages.filter((p) => !new RegExp(`^${p.replace(/[.+]/g, '\\$&')}:\\n\\s+Installed: .*\\n\\s+Candidate: (?!\\(none\\))`, 'm').test(policy.stdout));
}

export function osCodename(): string | undefined {
  if (!existsSync('/etc/os-release')) return undefined;
  const text = readFileSync('/etc/os-release', 'utf8');
  if (!/^ID(_LIKE)?=.*(debian|ubuntu)/m.test(text)) return undefined;
  return /^VERSION_CODENAME=(\w+)/m.exec(text)?.[1];
}

export function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
