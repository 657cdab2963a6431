/**
 * Shared result stores (RUSTCBUILDX_CACHE): where a team or a CI job finds what another machine built.
 * A store holds packed results (src/store/packed.ts) under the same key as the local memo, plus what
 * each is of (crate, version, kind) for listing. A store is trusted for nothing: every result is unpacked
 * against its own manifest, and a result a store cannot give whole is simply not there.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import type { StoreSpec } from '../config/config.ts';
import { writeAtomic } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import type { EntryMeta } from './local-cache.ts';
import { DamagedResult, PACKED_MEDIA_TYPE } from './packed.ts';
import { DamagedContent, RegistryClient, repositoryOf } from './registry.ts';

export interface StoredResult {
  key: string;
  meta?: EntryMeta;
  /** packed bytes */
  size: number;
  /** when it was last stored or read, where the store can say (ms since the epoch) */
  lastUsed?: number;
}

export interface ResultStore {
  readonly spec: StoreSpec;
  /** the store as messages name it */
  readonly name: string;
  /** the packed result, or undefined when the store does not hold it; DamagedResult when it holds it damaged */
  get(key: string): Promise<Uint8Array | undefined>;
  has(key: string): Promise<boolean>;
  /** `replace`: the store holds a damaged copy, which this one replaces */
  put(key: string, packed: Uint8Array, meta: EntryMeta, replace?: boolean): Promise<void>;
  list(): Promise<StoredResult[]>;
  remove(key: string): Promise<void>;
}

export function openStore(spec: StoreSpec): ResultStore {
  return spec.kind === 'dir' ? new DirStore(spec) : new OciStore(spec);
}

const KEY = /^[0-9a-f]{64}$/;

/**
 * A directory: `<dir>/rcbx-results/<key>.tar.zst` and `<key>.json` (its meta), each written whole and
 * renamed into place, so a CI cache step that saves the directory mid-build saves whole results only.
 */
class DirStore implements ResultStore {
  readonly name: string;
  private readonly dir: string;

  constructor(readonly spec: StoreSpec) {
    this.name = `dir:${spec.location}`;
    this.dir = join(spec.location, 'rcbx-results');
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const file = join(this.dir, `${key}.tar.zst`);
    if (!existsSync(file)) return undefined;
    const data = readFileSync(file);
    // Marks it used, for `cache prune` by age (a read-only store is not ours to touch).
    if (this.spec.writable) {
      const now = new Date();
      try {
        utimesSync(file, now, now);
      } catch {
        // another user's file, a read-only mount: the read stands
      }
    }
    return data;
  }

  async has(key: string): Promise<boolean> {
    return existsSync(join(this.dir, `${key}.json`)) && existsSync(join(this.dir, `${key}.tar.zst`));
  }

  async put(key: string, packed: Uint8Array, meta: EntryMeta): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    writeAtomic(join(this.dir, `${key}.tar.zst`), packed);
    writeAtomic(join(this.dir, `${key}.json`), JSON.stringify(meta));
  }

  async list(): Promise<StoredResult[]> {
    if (!existsSync(this.dir)) return [];
    const out: StoredResult[] = [];
    for (const name of readdirSync(this.dir)) {
      const key = name.slice(0, -'.tar.zst'.length);
      if (!name.endsWith('.tar.zst') || !KEY.test(key)) continue;
      const st = statSync(join(this.dir, name), { throwIfNoEntry: false });
      if (!st) continue;
      let meta: EntryMeta | undefined;
      try {
        meta = JSON.parse(readFileSync(join(this.dir, `${key}.json`), 'utf8')) as EntryMeta;
      } catch {
        meta = undefined;
      }
      out.push({ key, size: st.size, lastUsed: st.mtimeMs, ...(meta ? { meta } : {}) });
    }
    return out;
  }

  async remove(key: string): Promise<void> {
    rmSync(join(this.dir, `${key}.tar.zst`), { force: true });
    rmSync(join(this.dir, `${key}.json`), { force: true });
  }
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const ARTIFACT_TYPE = 'application/vnd.rustcbuildx.result.v1';
/** OCI's empty config for artifacts: `{}` */
const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: `sha256:${sha256('{}')}`, size: 2 };
const ANNOTATION = 'org.rustcbuildx.';

interface OciManifest {
  layers?: Array<{ mediaType?: string; digest?: string; size?: number }>;
  annotations?: Record<string, string>;
}

/**
 * An OCI registry repository: each result an artifact (an OCI image manifest of artifactType
 * ARTIFACT_TYPE) tagged with its key, its one layer the packed result, and what it is of in the
 * manifest's annotations. Any registry that speaks the distribution API holds it; `cache ls` reads
 * manifests only.
 */
class OciStore implements ResultStore {
  readonly name: string;
  private readonly client: RegistryClient;

  constructor(readonly spec: StoreSpec) {
    this.client = new RegistryClient(repositoryOf(spec.location, { forceHttp: spec.http }), { timeoutMs: STORE_TIMEOUT_MS });
    this.name = `oci://${spec.location}`;
  }

  private async layerOf(key: string): Promise<{ digest: string; size: number; annotations: Record<string, string> } | undefined> {
    const fetched = await this.client.getManifest(key);
    if (!fetched) return undefined;
    let doc: OciManifest;
    try {
      doc = JSON.parse(new TextDecoder().decode(fetched.bytes)) as OciManifest;
    } catch {
      return undefined;
    }
    const layer = doc.layers?.find((l) => l.mediaType === PACKED_MEDIA_TYPE);
    if (!layer?.digest || typeof layer.size !== 'number') return undefined;
    return { digest: layer.digest, size: layer.size, annotations: doc.annotations ?? {} };
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const layer = await this.layerOf(key);
    if (!layer) return undefined;
    try {
      return await this.client.getBlob(layer.digest);
    } catch (err) {
      throw err instanceof DamagedContent ? new DamagedResult(err.message) : err;
    }
  }

  async has(key: string): Promise<boolean> {
    return (await this.layerOf(key)) !== undefined;
  }

  async put(key: string, packed: Uint8Array, meta: EntryMeta, replace = false): Promise<void> {
    const digest = `sha256:${sha256(packed)}`;
    // A registry keeps a blob by its digest: a damaged copy under this one would make the upload a no-op.
    if (replace) await this.client.deleteBlob(digest).catch(() => undefined);
    await this.client.putBlob(EMPTY_CONFIG.digest, new TextEncoder().encode('{}'));
    await this.client.putBlob(digest, packed);
    const annotations: Record<string, string> = { [`${ANNOTATION}crate`]: meta.crate, [`${ANNOTATION}version`]: meta.version, [`${ANNOTATION}kind`]: meta.kind };
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: ARTIFACT_TYPE,
      config: EMPTY_CONFIG,
      layers: [{ mediaType: PACKED_MEDIA_TYPE, digest, size: packed.length }],
      annotations,
    };
    await this.client.putManifest(key, new TextEncoder().encode(JSON.stringify(manifest)), OCI_MANIFEST);
  }

  async list(): Promise<StoredResult[]> {
    const keys = (await this.client.listTags()).filter((t) => KEY.test(t));
    const out: StoredResult[] = [];
    // Manifests only, a few at a time: a listing of a big store is many small requests.
    for (let i = 0; i < keys.length; i += LIST_CONCURRENCY) {
      const batch = await Promise.all(keys.slice(i, i + LIST_CONCURRENCY).map(async (key) => ({ key, layer: await this.layerOf(key) })));
      for (const { key, layer } of batch) {
        if (!layer) continue;
        const a = layer.annotations;
        const crate = a[`${ANNOTATION}crate`];
        const meta: EntryMeta | undefined = crate ? { crate, version: a[`${ANNOTATION}version`] ?? '', kind: a[`${ANNOTATION}kind`] ?? '' } : undefined;
        out.push({ key, size: layer.size, ...(meta ? { meta } : {}) });
      }
    }
    return out;
  }

  async remove(key: string): Promise<void> {
    const fetched = await this.client.getManifest(key);
    if (fetched) await this.client.deleteManifest(fetched.digest);
  }
}

/** Per request: a store slower than this costs one warning and the run goes on without it. */
const STORE_TIMEOUT_MS = 20_000;
const LIST_CONCURRENCY = 8;
