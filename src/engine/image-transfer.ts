/**
 * Moving an image between an engine's store and a registry, through this machine: the engine may be
 * elsewhere (DOCKER_HOST=ssh://…) and not reach the registry. The image's ID (its config's digest, part
 * of every memo key) survives the trip, so machines that pull one pushed image share cached results.
 * Layers pass through temp files, never whole in memory: a toolchain image is 1–2 GB.
 */
import { createReadStream, createWriteStream, mkdtempSync, openSync, readSync, closeSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, createZstdDecompress } from 'node:zlib';
import { extract, pack, type Extract, type Pack } from 'tar-stream';
import { LABEL_EXTRAS, LABEL_VERBOSE, MissingBaseImage, tail } from '../base-image.ts';
import { RegistryError, type Descriptor, type RegistryClient } from '../store/registry.ts';
import { removeScratch, scratch } from '../scratch.ts';
import { sha256, toolchainTag, type Toolchain } from '../toolchain.ts';
import { describeEndpoint } from './endpoint.ts';
import type { Engine } from './engine.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** an entry of a tar being read: its header, and a stream of its bytes */
type Entry = Extract extends AsyncIterable<infer E> ? E : never;

interface ImageConfigJson {
  rootfs?: { diff_ids?: string[] };
  config?: { Labels?: Record<string, string> | null } | null;
}

interface ImageManifest {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Array<Descriptor & { platform?: { os?: string; architecture?: string } }>;
}

export interface Pushed {
  /** the manifest's digest in the registry */
  digest: string;
  imageId: string;
  /** what the layers weigh compressed, and as tars */
  compressedBytes: number;
  tarBytes: number;
}

/** `docker save`, then each layer gzip-compressed and the config unchanged (its digest is the image ID), then the manifest under `tag`. */
export async function pushImage(engine: Engine, image: string, client: RegistryClient, tag: string, say: (line: string) => void): Promise<Pushed> {
  const where = describeEndpoint(engine.endpoint);
  const info = await engine.inspectImage(image);
  if (!info) throw new MissingBaseImage(`${image}: no such image in the store of ${where}`);
  // Before the long save: a registry that is down or refuses us says so now.
  await client.ping();
  // Removed on Ctrl-C too: it holds the image twice over.
  const work = scratch(mkdtempSync(join(tmpdir(), 'rustcbuildx-push-')));
  try {
    const archive = join(work, 'image.tar');
    say(`saving ${image} (${info.id}) from ${where}`);
    const saved = await engine.saveImage(image, archive);
    if (saved.code !== 0) throw new MissingBaseImage(`saving ${image} from ${where} failed (exit ${saved.code}):\n${tail(saved.stderr || saved.stdout, 5)}`);
    say(`compressing its layers (${formatSize(statSync(archive).size)})`);
    const { config, layers } = await compressLayers(archive, work);
    rmSync(archive);
    const configDigest = `sha256:${sha256(config)}`;
    if (configDigest !== info.id) throw new MissingBaseImage(`the archive ${engine.runner} saved of ${image} holds another configuration (${configDigest}) than the image ${info.id}; was the tag moved meanwhile? Try again`);
    const diffIds = (JSON.parse(new TextDecoder().decode(config)) as ImageConfigJson).rootfs?.diff_ids ?? [];
    if (diffIds.join() !== layers.map((l) => l.diffId).join()) throw new MissingBaseImage(`the archive ${engine.runner} saved of ${image} does not hold the layers its configuration names`);

    for (const [i, layer] of layers.entries()) {
      say(`layer ${i + 1}/${layers.length}: ${formatSize(layer.size)} gzip (${formatSize(layer.rawSize)} as tar) to ${client.display}`);
      await client.putBlob(layer.digest, { file: layer.file, size: layer.size });
    }
    await client.putBlob(configDigest, config);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: OCI_LAYER_GZIP, digest: l.digest, size: l.size })),
    };
    const digest = await client.putManifest(tag, new TextEncoder().encode(JSON.stringify(manifest)), OCI_MANIFEST);
    return { digest, imageId: configDigest, compressedBytes: sum(layers.map((l) => l.size)), tarBytes: sum(layers.map((l) => l.rawSize)) };
  } finally {
    removeScratch(work);
  }
}

interface CompressedLayer {
  file: string;
  /** of the compressed bytes */
  digest: string;
  size: number;
  /** of the tar */
  diffId: string;
  rawSize: number;
}

/** The saved archive's config and its layers, each gzip-compressed into a file, in the manifest's order. */
async function compressLayers(archive: string, work: string): Promise<{ config: Uint8Array; layers: CompressedLayer[] }> {
  let manifest: Array<{ Config?: string; Layers?: string[] }> = [];
  // manifest.json comes last (docker and podman write it on closing): a first pass finds it.
  await eachEntry(archive, async (name, entry) => {
    if (name === 'manifest.json') manifest = JSON.parse((await readAll(entry)).toString('utf8')) as typeof manifest;
    else entry.resume();
  });
  const wanted = manifest[0];
  if (manifest.length !== 1 || !wanted?.Config || !wanted.Layers) throw new MissingBaseImage(`${archive} is not the docker-archive of one image (no usable manifest.json)`);
  let config: Uint8Array | undefined;
  const byPath = new Map<string, CompressedLayer>();
  await eachEntry(archive, async (name, entry) => {
    if (name === wanted.Config) config = await readAll(entry);
    else if (wanted.Layers?.includes(name) && !byPath.has(name)) byPath.set(name, await gzipTo(entry, join(work, `layer-${byPath.size}.tar.gz`)));
    else entry.resume();
  });
  const layers = wanted.Layers.map((path) => byPath.get(path));
  if (!config || layers.some((l) => !l)) throw new MissingBaseImage(`${archive} lacks files its manifest.json names`);
  return { config, layers: layers as CompressedLayer[] };
}

async function gzipTo(entry: Entry, file: string): Promise<CompressedLayer> {
  const raw = new Bun.CryptoHasher('sha256');
  const packed = new Bun.CryptoHasher('sha256');
  let rawSize = 0;
  let size = 0;
  await pipeline(
    async function* () {
      for await (const chunk of entry as AsyncIterable<Buffer>) {
        raw.update(chunk);
        rawSize += chunk.length;
        yield chunk;
      }
    },
    // Level 1: a few percent larger than the default, several times faster on a GB of toolchain.
    createGzip({ level: 1 }),
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        packed.update(chunk);
        size += chunk.length;
        yield chunk;
      }
    },
    createWriteStream(file),
  );
  return { file, digest: `sha256:${packed.digest('hex')}`, size, diffId: `sha256:${raw.digest('hex')}`, rawSize };
}

export interface Pulled {
  imageId: string;
  /** the tags it has in the engine's store */
  tags: string[];
  /** compressed, as fetched */
  bytes: number;
  /** the image's labels */
  labels: Record<string, string>;
}

/**
 * Fetches `reference` (an index: its linux/amd64 image), checks every byte against its digest and every
 * layer against the configuration's diff_ids, and only then loads it into the engine's store as
 * `repoTag` and, when its label says it holds `toolchain`, as that toolchain's tag too (the image the
 * wrapper then chooses with no setting). Nothing is loaded when anything fails to verify.
 */
export async function pullImage(
  engine: Engine,
  client: RegistryClient,
  reference: string,
  opts: { repoTag?: string; toolchain?: Toolchain; say: (line: string) => void },
): Promise<Pulled> {
  const manifest = await imageManifest(client, reference);
  const configBytes = await client.getBlob(manifest.config.digest);
  const config = JSON.parse(new TextDecoder().decode(configBytes)) as ImageConfigJson;
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new RegistryError(`${client.display}:${reference} is inconsistent: ${manifest.layers.length} layers, but its configuration names ${diffIds.length}`);
  }
  const tags = opts.repoTag ? [opts.repoTag] : [];
  const labels = config.config?.Labels ?? {};
  // The extras' id becomes part of a tag: only what extrasId gives is taken.
  // An extras label that is not one is no image of ours: it gets no toolchain tag at all.
  const extras = labels[LABEL_EXTRAS] ?? '';
  if (opts.toolchain && labels[LABEL_VERBOSE] === sha256(opts.toolchain.verbose) && /^([0-9a-f]{12})?$/.test(extras)) tags.push(toolchainTag(opts.toolchain, extras));

  const work = scratch(mkdtempSync(join(tmpdir(), 'rustcbuildx-pull-')));
  try {
    const layers: Array<{ diffId: string; file: string; size: number }> = [];
    for (const [i, layer] of manifest.layers.entries()) {
      opts.say(`layer ${i + 1}/${manifest.layers.length}: ${formatSize(layer.size)} from ${client.display}`);
      const blob = join(work, `blob-${i}`);
      await client.getBlobToFile(layer.digest, blob);
      const file = join(work, `layer-${i}.tar`);
      const diffId = await decompress(blob, file);
      rmSync(blob);
      if (diffId !== diffIds[i]) {
        throw new RegistryError(`${client.display}: layer ${i + 1} (${layer.digest}) unpacks to ${diffId}, not to the ${diffIds[i]} its image's configuration names; refused. Push the image again`);
      }
      layers.push({ diffId, file, size: statSync(file).size });
    }
    opts.say(`loading ${manifest.config.digest} into ${describeEndpoint(engine.endpoint)}${tags.length ? ` as ${tags.join(', ')}` : ''}`);
    const archive = dockerArchive(manifest.config.digest, configBytes, layers, tags);
    const loaded = await engine.loadImage(archive.stream).finally(archive.abandon);
    if (loaded.code !== 0) throw new MissingBaseImage(`loading the image into ${describeEndpoint(engine.endpoint)} failed (exit ${loaded.code}):\n${tail(loaded.stderr || loaded.stdout, 5)}`);
    const info = await engine.inspectImage(tags[0] ?? manifest.config.digest);
    if (info?.id !== manifest.config.digest) {
      throw new MissingBaseImage(`${describeEndpoint(engine.endpoint)} loaded the image, but ${info ? `gives it the ID ${info.id}` : 'does not show it'} instead of ${manifest.config.digest}: its cached results will not be shared`);
    }
    return { imageId: info.id, tags, bytes: sum(manifest.layers.map((l) => l.size)), labels };
  } finally {
    removeScratch(work);
  }
}

/** The image manifest `reference` names: itself, or the linux/amd64 entry of an index. */
async function imageManifest(client: RegistryClient, reference: string): Promise<{ config: Descriptor; layers: Descriptor[] }> {
  const fetched = await client.getManifest(reference);
  if (!fetched) throw new RegistryError(`${client.display} has no image ${reference}: push one with \`rustcbuildx base push ${client.display}:TAG\``);
  let manifest = JSON.parse(new TextDecoder().decode(fetched.bytes)) as ImageManifest;
  if (manifest.manifests) {
    const entry = manifest.manifests.find((m) => m.platform?.os === 'linux' && m.platform.architecture === 'amd64');
    if (!entry) throw new RegistryError(`${client.display}:${reference} is an index without a linux/amd64 image`);
    const inner = await client.getManifest(entry.digest);
    if (!inner) throw new RegistryError(`${client.display}:${reference} names ${entry.digest} for linux/amd64, which the registry does not have`);
    manifest = JSON.parse(new TextDecoder().decode(inner.bytes)) as ImageManifest;
  }
  const kind = manifest.mediaType ?? fetched.mediaType;
  if (!manifest.config || !manifest.layers || (kind !== OCI_MANIFEST && kind !== DOCKER_MANIFEST)) {
    throw new RegistryError(`${client.display}:${reference} is not an image (${kind || 'no media type'})`);
  }
  return { config: manifest.config, layers: manifest.layers };
}

/** A fetched layer as a tar, by its first bytes (gzip, zstd, or a plain tar); the tar's digest. */
async function decompress(blob: string, file: string): Promise<string> {
  const head = Buffer.alloc(4);
  const fd = openSync(blob, 'r');
  readSync(fd, head, 0, 4, 0);
  closeSync(fd);
  const hasher = new Bun.CryptoHasher('sha256');
  const stages = head[0] === 0x1f && head[1] === 0x8b ? [createGunzip()] : head.readUInt32LE(0) === 0xfd2fb528 ? [createZstdDecompress()] : [];
  await pipeline(
    createReadStream(blob),
    ...stages,
    async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) {
        hasher.update(chunk);
        yield chunk;
      }
    },
    createWriteStream(file),
  );
  return `sha256:${hasher.digest('hex')}`;
}

/** A docker-archive of one image, made as it is read; `abandon` ends it once the reader has gone. */
function dockerArchive(configDigest: string, config: Uint8Array, layers: Array<{ diffId: string; file: string; size: number }>, tags: string[]) {
  const tar = pack();
  const configName = `${configDigest.slice('sha256:'.length)}.json`;
  const layerName = (diffId: string) => `${diffId.slice('sha256:'.length)}.tar`;
  const fill = async () => {
    tar.entry({ name: configName }, Buffer.from(config));
    const added = new Set<string>();
    for (const layer of layers) {
      if (added.has(layer.diffId)) continue;
      added.add(layer.diffId);
      await addFile(tar, layerName(layer.diffId), layer.file, layer.size);
    }
    tar.entry({ name: 'manifest.json' }, JSON.stringify([{ Config: configName, RepoTags: tags, Layers: layers.map((l) => layerName(l.diffId)) }]));
    tar.finalize();
  };
  fill().catch((err: Error) => tar.destroy(err));
  const chunks = (tar as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await chunks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel: () => void tar.destroy(),
  });
  return { stream, abandon: () => void tar.destroy() };
}

function addFile(tar: Pack, name: string, file: string, size: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const entry = tar.entry({ name, size }, (err) => (err ? reject(err) : resolve()));
    createReadStream(file).on('error', reject).pipe(entry);
  });
}

/** Each entry of a tar file in order; `each` reads the entry's stream or resumes it (to skip it). */
async function eachEntry(file: string, each: (name: string, entry: Entry) => Promise<void>): Promise<void> {
  const unpack = extract();
  createReadStream(file)
    .on('error', (err) => unpack.destroy(err))
    .pipe(unpack);
  for await (const entry of unpack) await each(entry.header.name.replace(/^\.\//, ''), entry);
}

async function readAll(entry: Entry): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** A size as people read it: `457.5 MB`, `2.1 kB`. */
export function formatSize(bytes: number): string {
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}
