/**
 * The shared stores as one cargo run uses them: a unit the memo lacks is looked for in each store in
 * order; a shareable result this machine has is offered to each writable store once. A store that fails
 * (down, slow, refusing) costs one warning and is left alone for the rest of the run; a result it serves
 * damaged is rejected, said once, and replaced by the one built here.
 */
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/config.ts';
import type { Logger } from '../log.ts';
import type { RunState } from '../run-state.ts';
import { sha256 } from '../toolchain.ts';
import { writeStderr } from '../io.ts';
import type { EntryMeta, LocalCache, ManifestDoc } from '../store/local-cache.ts';
import { FORMAT, PROVENANCE_RULES } from '../store/local-cache.ts';
import { namedToShare } from '../plan/provenance.ts';

type Shared = typeof import('../store/shared.ts');
type Packed = typeof import('../store/packed.ts');

export class RunStores {
  private constructor(
    private readonly stores: ReadonlyArray<import('../store/shared.ts').ResultStore>,
    private readonly modules: { shared: Shared; packed: Packed },
    private readonly cfg: Config,
    private readonly state: RunState,
    private readonly log: Logger,
  ) {}

  /** The run's stores, or undefined when none is configured (the store code is then never loaded). */
  static async forRun(cfg: Config, state: RunState, log: Logger): Promise<RunStores | undefined> {
    if (cfg.stores.length === 0) return undefined;
    const [shared, packed] = await Promise.all([import('../store/shared.ts'), import('../store/packed.ts')]);
    try {
      return new RunStores(cfg.stores.map((s) => shared.openStore(s)), { shared, packed }, cfg, state, log);
    } catch (err) {
      // A setting the config check let through but the store refuses: said once, the run goes on without stores.
      if (state.firstTime('stores-refused')) await writeStderr(`rustcbuildx: warning: RUSTCBUILDX_CACHE: ${(err as Error).message}; building without shared stores\n`);
      return undefined;
    }
  }

  /**
   * Unpacks the first whole copy of this result a store holds into `into`; the store's name, or
   * undefined. A store that fails to answer is left alone for the run; one that serves a damaged copy
   * is said once, and the next store (or the engine) is asked. A failure here (a full disk) is thrown.
   */
  async fetch(key: string, into: string, unit: string, meta: EntryMeta, accept?: (paths: readonly string[]) => string | undefined): Promise<string | undefined> {
    // A private unit is in a store only if its crate was named to share: not worth a request otherwise.
    if (!mayShare(meta, this.cfg.share)) return undefined;
    for (const store of this.stores) {
      if (this.isDown(store.name, 'read')) continue;
      let packed: Uint8Array | undefined;
      try {
        packed = await store.get(key);
      } catch (err) {
        if (err instanceof this.modules.packed.DamagedResult) await this.damaged(store.name, key, unit, err);
        else await this.down(store.name, 'read', err);
        continue;
      }
      if (!packed) continue;
      // Unpacked beside and renamed into place: `into` is whole or absent.
      const staging = `${into}.unpack`;
      try {
        const doc = await this.modules.packed.unpackResult(packed, staging, key);
        const foreign = accept?.(doc.files.map((f) => f.path));
        if (foreign) throw new this.modules.packed.DamagedResult(foreign);
        renameSync(staging, into);
        this.log.debug(`${store.name}: hit ${key} for ${unit}`);
        return store.name;
      } catch (err) {
        rmSync(staging, { recursive: true, force: true });
        if (!(err instanceof this.modules.packed.DamagedResult)) throw err;
        await this.damaged(store.name, key, unit, err);
      }
    }
    return undefined;
  }

  private async damaged(name: string, key: string, unit: string, err: Error): Promise<void> {
    this.state.writeCached(`damaged-${key}`, { store: name });
    if (this.state.firstTime(`damaged-${sha256(name).slice(0, 12)}`)) {
      await writeStderr(`rustcbuildx: warning: ${name} served a damaged result for ${unit} (${err.message}); rejected it, building instead\n`);
    }
    this.log.debug(`${name}: damaged ${key}: ${err.message}`);
  }

  /**
   * Offers a result this machine has (in the memo entry `entry`, or the export `dir`) to every writable
   * store that may have it and does not yet: never a private or incremental one unless its crate is
   * named in RUSTCBUILDX_SHARE. A store known to hold it (a marker in the memo entry) is not asked again.
   */
  async offer(key: string, dir: string, doc: ManifestDoc, memo: LocalCache | undefined): Promise<void> {
    const meta = doc.meta;
    if (!meta || !mayShare(meta, this.cfg.share)) return;
    const replace = this.state.readCached<{ store: string }>(`damaged-${key}`)?.store;
    let packed: Uint8Array | undefined;
    for (const store of this.stores) {
      if (!store.spec.writable || this.isDown(store.name, 'write')) continue;
      const marker = memo ? join(memo.entry(key), `pushed-${sha256(store.name).slice(0, 16)}`) : undefined;
      if (marker && existsSync(marker) && replace !== store.name) continue;
      try {
        if (replace === store.name || !(await store.has(key))) {
          packed ??= await this.modules.packed.packResult(dir, doc, key);
          await store.put(key, packed, meta, replace === store.name);
          this.log.debug(`${store.name}: pushed ${key} (${meta.crate} ${meta.version} ${meta.kind}, ${packed.length} bytes)`);
        }
        if (marker && existsSync(join(marker, '..'))) writeFileSync(marker, '');
      } catch (err) {
        await this.down(store.name, 'write', err);
      }
    }
  }

  /** A store that failed to read is left alone; one that failed to take a result is still read. */
  private isDown(name: string, use: 'read' | 'write'): boolean {
    return this.state.readCached(storeFlag(name, 'read')) !== undefined || (use === 'write' && this.state.readCached(storeFlag(name, 'write')) !== undefined);
  }

  /** Leaves the store alone (for reading and writing, or for writing) for the rest of the run, said once. */
  private async down(name: string, use: 'read' | 'write', err: unknown): Promise<void> {
    const reason = (err as Error).message ?? String(err);
    this.log.debug(`${name} (${use}): ${reason}`);
    this.state.writeCached(storeFlag(name, use), { down: reason });
    if (this.state.firstTime(`${storeFlag(name, use)}-warned`)) {
      const what = use === 'read' ? 'failed' : 'did not take a result';
      const after = use === 'read' ? 'going on without it' : 'still reading it, but pushing nothing more to it';
      await writeStderr(`rustcbuildx: warning: cache store ${name} ${what}: ${reason}\nrustcbuildx: ${after} for this cargo run\n`);
    }
  }
}

function storeFlag(name: string, use: 'read' | 'write'): string {
  return `store-${use}-${sha256(name).slice(0, 12)}`;
}

/** Whether a result may leave this machine: shareable by provenance, or its crate named by the user. */
export function mayShare(meta: EntryMeta, shareGlobs: readonly string[]): boolean {
  return (meta.private === undefined && meta.incremental === undefined && meta.rules === PROVENANCE_RULES) || namedToShare([meta.crate], shareGlobs);
}

/** The manifest a result's files make, as the memo stores it. */
export function docOf(files: ManifestDoc['files'], meta: EntryMeta): ManifestDoc {
  return { format: FORMAT, files, meta };
}
