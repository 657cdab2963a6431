import { afterAll, describe, expect, test } from 'bun:test';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { GatewayRefused, HeldBuild, ImageMoved, readResult, type BridgeClient, type HeldControl } from '../../src/engine/buildkit/gateway';
import { Gate } from '../../src/engine/buildkit/gate';
import { GO_MODE } from '../../src/engine/buildkit/context-sync';
import type { BridgeSolveRequest, ReadDirRequest, ReadFileRequest, Stat, StatusResponse, Vertex } from '../../src/engine/buildkit/proto';
import type { BuildSession } from '../../src/engine/buildkit/session';
import { renderUnitLlb } from '../../src/render/llb';
import { servedFromCache } from '../../src/wrapper/replay';
import { stageName } from '../../src/render/dockerfile';
import { registrySpec } from './unit-specs';

/** A result as the engine's ReadDir/ReadFile would serve it, from an in-memory tree. */
type Node = { dir: Record<string, Node> } | { data: Uint8Array; mode?: number; linkOf?: string } | { symlink: string };

function engine(root: Record<string, Node>, opts: { shortRead?: string } = {}) {
  const reads: ReadFileRequest[] = [];
  const at = (path: string): Node => {
    let node: Node = { dir: root };
    for (const part of path.split('/').filter(Boolean)) {
      if (!('dir' in node) || !node.dir[part]) throw new Error(`no such path ${path}`);
      node = node.dir[part];
    }
    return node;
  };
  const stat = (name: string, node: Node): Stat => {
    const base = { path: name, uid: 0, gid: 0, modTime: 0, devmajor: 0, devminor: 0, linkname: '', size: 0 };
    if ('dir' in node) return { ...base, mode: GO_MODE.dir + 0o755 };
    if ('symlink' in node) return { ...base, mode: GO_MODE.symlink + 0o777, linkname: node.symlink };
    // fsutil: the second name of a hard-linked file carries the first's name and no size
    if (node.linkOf) return { ...base, mode: node.mode ?? 0o644, linkname: node.linkOf };
    return { ...base, mode: node.mode ?? 0o644, size: node.data.length };
  };
  return {
    reads,
    readDir: async (req: ReadDirRequest) => {
      const node = at(req.DirPath);
      if (!('dir' in node)) throw new Error('not a dir');
      return { entries: Object.entries(node.dir).map(([name, n]) => stat(name, n)) };
    },
    readFile: async (req: ReadFileRequest) => {
      reads.push(req);
      const node = at(req.FilePath);
      if (!('data' in node)) throw new Error('not a file');
      const { Offset = 0, Length = node.data.length } = req.Range ?? {};
      const data = node.data.subarray(Offset, Offset + Length);
      return { Data: req.FilePath === opts.shortRead ? data.subarray(1) : data };
    },
  };
}

const scratch = mkdtempSync(join(tmpdir(), 'rcbx-gateway-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
let n = 0;
const dest = () => join(scratch, `r${n++}`);
const text = (s: string) => new TextEncoder().encode(s);

describe('readResult', () => {
  test('directories (the dir bit is bit 31), files with their modes, symlinks and hard links, as the export wrote them', async () => {
    const big = new Uint8Array(9 * 1024 * 1024).map((_, i) => i % 251);
    const e = engine({
      out: { dir: { 'libx.rlib': { data: text('rlib') }, app: { data: big, mode: 0o755 }, 'app-copy': { data: new Uint8Array(), linkOf: 'app' }, sub: { dir: { 'x.o': { data: text('obj') } } }, latest: { symlink: 'app' } } },
      meta: { dir: { stdout: { data: text('') }, stderr: { data: text('warning\n') }, status: { data: text('0\n') } } },
    });
    const d = dest();
    await readResult(e.readDir, e.readFile, 'ref', d, { dirs: ['out', 'meta'] });
    expect(readdirSync(join(d, 'out')).sort()).toEqual(['app', 'app-copy', 'latest', 'libx.rlib', 'sub']);
    expect(readFileSync(join(d, 'out', 'sub', 'x.o'), 'utf8')).toBe('obj');
    expect(Buffer.compare(readFileSync(join(d, 'out', 'app')), Buffer.from(big))).toBe(0);
    expect(lstatSync(join(d, 'out', 'app')).mode & 0o777).toBe(0o755);
    expect(lstatSync(join(d, 'out', 'app-copy')).ino).toBe(lstatSync(join(d, 'out', 'app')).ino);
    expect(readlinkSync(join(d, 'out', 'latest'))).toBe('app');
    expect(readFileSync(join(d, 'meta', 'stderr'), 'utf8')).toBe('warning\n');
    // large files in ranges; an empty file costs no read
    expect(e.reads.filter((r) => r.FilePath === 'out/app').map((r) => r.Range?.Offset)).toEqual([0, 4 * 1024 * 1024, 8 * 1024 * 1024]);
    expect(e.reads.some((r) => r.FilePath === 'meta/stdout')).toBe(false);
  });

  describe('a packed result (what the step leaves in meta/ with zstd in the image: tar and zstd run here as it runs them)', () => {
    // Random bytes: the pack stays larger than one read range, so its ranges must reach zstd in order.
    const big = new Uint8Array(randomBytes(9 * 1024 * 1024));
    const tree = (): Record<string, Node> => ({
      out: { dir: { 'libx.rlib': { data: text('rlib') }, app: { data: big, mode: 0o755 }, 'app-copy': { data: new Uint8Array(), linkOf: 'app' }, latest: { symlink: 'app' } } },
      meta: { dir: { stdout: { data: text('') }, stderr: { data: text('warning\n') }, status: { data: text('0\n') } } },
    });
    /** The pack made from `tree` on disk, as unitScript's pack step makes it, with `members` in it. */
    const packOf = (members = 'out meta/stdout meta/stderr meta/status'): Uint8Array => {
      const root = mkdtempSync(join(scratch, 'pack-'));
      mkdirSync(join(root, 'out'));
      mkdirSync(join(root, 'meta'));
      writeFileSync(join(root, 'out', 'libx.rlib'), 'rlib');
      writeFileSync(join(root, 'out', 'app'), big, { mode: 0o755 });
      linkSync(join(root, 'out', 'app'), join(root, 'out', 'app-copy'));
      symlinkSync('app', join(root, 'out', 'latest'));
      writeFileSync(join(root, 'meta', 'stdout'), '');
      writeFileSync(join(root, 'meta', 'stderr'), 'warning\n');
      writeFileSync(join(root, 'meta', 'status'), '0\n');
      const made = Bun.spawnSync(['sh', '-c', `tar -C ${root} -cf - ${members} | zstd -q -1 -c`]);
      expect(made.exitCode).toBe(0);
      return new Uint8Array(made.stdout);
    };
    const withPack = (pack: Uint8Array) => {
      const t = tree();
      (t.meta as { dir: Record<string, Node> }).dir['result.tar.zst'] = { data: pack };
      return engine(t);
    };
    const layout = { dirs: ['out', 'meta'], pack: 'meta/result.tar.zst' };
    const expectTree = (d: string) => {
      expect(readdirSync(join(d, 'out')).sort()).toEqual(['app', 'app-copy', 'latest', 'libx.rlib']);
      expect(readdirSync(join(d, 'meta')).sort()).toEqual(['status', 'stderr', 'stdout']);
      expect(Buffer.compare(readFileSync(join(d, 'out', 'app')), Buffer.from(big))).toBe(0);
      expect(lstatSync(join(d, 'out', 'app')).mode & 0o777).toBe(0o755);
      expect(lstatSync(join(d, 'out', 'app-copy')).ino).toBe(lstatSync(join(d, 'out', 'app')).ino);
      expect(readlinkSync(join(d, 'out', 'latest'))).toBe('app');
      expect(readFileSync(join(d, 'meta', 'stderr'), 'utf8')).toBe('warning\n');
    };

    test('is read instead of the files, in ranges, and unpacked to the same tree', async () => {
      const pack = packOf();
      expect(pack.length).toBeGreaterThan(4 * 1024 * 1024);
      const e = withPack(pack);
      const d = dest();
      const notes: string[] = [];
      await readResult(e.readDir, e.readFile, 'ref', d, { ...layout, note: (line) => notes.push(line) });
      expectTree(d);
      expect(notes).toEqual([`result read packed: ${pack.length} B for ${big.length + 4 + 8 + 2} B`]);
      expect(new Set(e.reads.map((r) => r.FilePath))).toEqual(new Set(['meta/result.tar.zst']));
      expect(e.reads.length).toBe(3);
    });

    test('a damaged pack, or one that does not hold what the engine lists, is not used: the files are read one by one', async () => {
      const damaged = packOf();
      damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
      for (const pack of [damaged, packOf('out/app out/libx.rlib meta/stdout meta/stderr meta/status'), packOf().subarray(0, 5 * 1024 * 1024)]) {
        const e = withPack(pack);
        const d = dest();
        const notes: string[] = [];
        await readResult(e.readDir, e.readFile, 'ref', d, { ...layout, note: (line) => notes.push(line) });
        expectTree(d);
        expect(notes).toEqual([expect.stringMatching(/^WARNING: the packed result was not used \(.+\): reading its files one by one$/)]);
        expect(e.reads.some((r) => r.FilePath === 'out/app')).toBe(true);
      }
    });

    test('without a pack (an image without zstd), the files are read as before', async () => {
      const e = engine(tree());
      const d = dest();
      await readResult(e.readDir, e.readFile, 'ref', d, layout);
      expectTree(d);
    });
  });

  test('without known dirs, the root is listed', async () => {
    const e = engine({ a: { data: text('a') } });
    const d = dest();
    await readResult(e.readDir, e.readFile, 'ref', d);
    expect(readFileSync(join(d, 'a'), 'utf8')).toBe('a');
  });

  test('a read of another length than the listing said is an error, not a file', async () => {
    const e = engine({ out: { dir: { f: { data: text('abcdef') } } } }, { shortRead: 'out/f' });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), { dirs: ['out'] })).rejects.toThrow(/gave 5 bytes, not 6/);
  });

  test.each(['..', '.', 'a/b', ''])('an entry named %p is refused: nothing is written outside the result', async (name) => {
    const e = engine({ out: { dir: { [name]: { data: text('x') } } } });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), { dirs: ['out'] })).rejects.toThrow(/entry named/);
  });

  test('a hard link to a name its directory does not hold is refused', async () => {
    const e = engine({ out: { dir: { f: { data: new Uint8Array(), linkOf: '../../etc/passwd' } } } });
    await expect(readResult(e.readDir, e.readFile, 'ref', dest(), { dirs: ['out'] })).rejects.toThrow(/does not hold/);
  });
});

/**
 * A held build against a scripted engine: the bridge's Solve answers as `answer` says, after reporting on
 * the build's status stream what `report` gives for the request's ops (their digests are the sha256 of
 * the definition's bytes, as BuildKit computes them).
 */
function heldBuild(script: { report?: (digests: string[], n: number) => StatusResponse; fail?: (n: number) => grpc.status | undefined; gate?: Gate; solving?: { now: number; most: number; syncs: number; log: string[] } }) {
  const status = Object.assign(new EventEmitter(), { cancel: () => undefined });
  // The held Solve answers once the build is returned.
  let heldDone: (err: grpc.ServiceError | null, res?: unknown) => void = () => undefined;
  const control = {
    Status: () => status,
    Solve: (_req: unknown, cb: typeof heldDone) => ((heldDone = cb), { cancel: () => undefined }),
  } as unknown as HeldControl;
  let n = 0;
  type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
  const reply = <T>(cb: Callback<T>, res: T) => queueMicrotask(() => cb(null, res));
  const bridge = {
    Solve: (req: BridgeSolveRequest, _md: grpc.Metadata, cb: Callback<unknown>) => {
      const i = n++;
      // A definition of one op (and the terminal that names the result) is a source synced ahead of its
      // unit's solve (HeldBuild.syncAhead).
      const syncAhead = req.Definition.def.length === 2;
      const solving = syncAhead ? undefined : script.solving;
      if (syncAhead && script.solving) script.solving.syncs++;
      script.solving?.log.push(syncAhead ? 'sync' : 'solve');
      if (solving) solving.most = Math.max(solving.most, ++solving.now);
      const answered = solving ? () => solving.now-- : () => undefined;
      const digests = req.Definition.def.map((b) => `sha256:${new Bun.CryptoHasher('sha256').update(b).digest('hex')}`);
      if (script.report) status.emit('data', script.report(digests, i));
      const code = script.fail?.(i);
      if (code !== undefined) queueMicrotask(() => (answered(), cb(Object.assign(new Error('failed'), { code, details: `step failed (${grpc.status[code]})`, metadata: new grpc.Metadata() }))));
      else setTimeout(() => (answered(), cb(null, { ref: '', result: { ref: { id: `r${i}` } } })), 5);
      return { cancel: () => undefined };
    },
    ReadDir: (_r: ReadDirRequest, _md: grpc.Metadata, cb: Callback<{ entries: Stat[] }>) => reply(cb, { entries: [] }),
    ReadFile: (_r: ReadFileRequest, _md: grpc.Metadata, cb: Callback<{ Data: Uint8Array }>) => reply(cb, { Data: new Uint8Array() }),
    Return: (_r: unknown, _md: grpc.Metadata, cb: Callback<Record<string, never>>) => {
      reply(cb, {});
      queueMicrotask(() => heldDone(null, { ExporterResponse: {} }));
    },
  } as unknown as BridgeClient;
  const session = { id: 's', usable: true, serve: (_job: unknown, build: () => Promise<unknown>) => build(), close: () => undefined } as unknown as BuildSession;
  return new HeldBuild(control, bridge, session, () => undefined, script.gate);
}

const graph = () => renderUnitLlb([], registrySpec(), { noNetwork: true });
const unitOf = (llb = graph(), imageIds?: Record<string, string>) => ({ dockerfile: '', context: scratch, outputDir: dest(), llb, ...(imageIds ? { imageIds } : {}) });
const at = { seconds: 1, nanos: 0 };
const ownStep = (digests: string[], extra: Partial<Vertex>): Vertex => ({ digest: digests[graph().own as number] as string, name: `[${stageName.unit(registrySpec().key)}] RUN rustc ${registrySpec().key}`, cached: false, error: '', ...extra });

describe('a build held open', () => {
  test("a unit's own step, built: its log says so; the same step in a later unit of the build: from the cache (it did not build it)", async () => {
    const build = heldBuild({ report: (d, i) => ({ vertexes: i === 0 ? [ownStep(d, { started: at, completed: at })] : [], statuses: [], logs: [] }) });
    const first = await build.solve(unitOf());
    expect(first.code).toBe(0);
    expect(servedFromCache(first.log, stageName.unit(registrySpec().key))).toBe(false);
    const second = await build.solve(unitOf());
    expect(servedFromCache(second.log, stageName.unit(registrySpec().key))).toBe(true);
    expect(second.log).toMatch(/^timeline: solve \d+, answer \d+, export \d+-\d+ ms$/m);
  });

  test("units' solves pass the engine's gate one per engine core, those that wait having their sources synced meanwhile; without a gate they all go at once", async () => {
    for (const [gate, most, syncs] of [[new Gate(1), 1, 2], [undefined, 3, 0]] as const) {
      const solving = { now: 0, most: 0, syncs: 0, log: [] as string[] };
      const build = heldBuild({ gate, solving });
      const results = await Promise.all([build.solve(unitOf()), build.solve(unitOf()), build.solve(unitOf())]);
      expect(results.map((r) => r.code)).toEqual([0, 0, 0]);
      expect(solving.most).toBe(most);
      expect(solving.syncs).toBe(syncs);
      // The waiting units' syncs go out at once, before the first unit's solve has even been answered.
      if (gate) expect(solving.log).toEqual(['solve', 'sync', 'sync', 'solve', 'solve']);
    }
  });

  test('a source this build has synced is not synced ahead again', async () => {
    const solving = { now: 0, most: 0, syncs: 0, log: [] as string[] };
    // The engine reports the unit's local source done (as BuildKit does once it has synced it).
    const local = (digests: string[]) => digests.filter((_, i) => { const op = graph().ops[i]; return op !== undefined && 'source' in op && op.source.identifier.startsWith('local://'); });
    const build = heldBuild({ gate: new Gate(1), solving, report: (d) => ({ vertexes: local(d).map((digest) => ({ digest, name: 'load', cached: false, error: '', started: at, completed: at })), statuses: [], logs: [] }) });
    await build.solve(unitOf());
    await Promise.all([build.solve(unitOf()), build.solve(unitOf())]);
    expect(solving.syncs).toBe(0);
  });

  test('a step that failed fails a later unit again with its log: the sandbox marker reaches the wrapper both times', async () => {
    const marker = 'rustcbuildx-sandbox: rustc exited with status 1';
    const build = heldBuild({
      report: (d, i) => (i === 0 ? { vertexes: [ownStep(d, { started: at, completed: at, error: 'exit code: 1' })], statuses: [], logs: [{ vertex: ownStep(d, {}).digest, stream: 2, msg: new TextEncoder().encode(`${marker}\nerror[E0425]\n`) }] } : { vertexes: [], statuses: [], logs: [] }),
      fail: () => grpc.status.UNKNOWN,
    });
    for (const _ of [1, 2]) {
      const r = await build.solve(unitOf());
      expect(r.code).toBe(1);
      expect(r.interrupted).toBeUndefined();
      expect(r.log).toContain(marker);
    }
  });

  test('a unit naming an image tag the build resolved to another image is refused (it needs a build of its own)', async () => {
    const build = heldBuild({ report: (d) => ({ vertexes: [ownStep(d, { cached: true, started: at, completed: at })], statuses: [], logs: [] }) });
    expect((await build.solve(unitOf(graph(), { img: 'sha256:a' }))).code).toBe(0);
    expect(build.fits({ img: 'sha256:a' })).toBe(true);
    expect(build.fits({ img: 'sha256:b' })).toBe(false);
    await expect(build.solve(unitOf(graph(), { img: 'sha256:b' }))).rejects.toBeInstanceOf(ImageMoved);
  });

  test('an engine without the gateway (UNIMPLEMENTED on the first solve) refuses; a dropped connection is an interruption', async () => {
    await expect(heldBuild({ fail: () => grpc.status.UNIMPLEMENTED }).solve(unitOf())).rejects.toBeInstanceOf(GatewayRefused);
    const dropped = await heldBuild({ fail: () => grpc.status.UNAVAILABLE }).solve(unitOf());
    expect(dropped.code).toBe(1);
    expect(dropped.interrupted).toContain('connection to the engine broke');
  });

  test('a step cancelled (its units went away) is not replayed to the next unit as a failure', async () => {
    const build = heldBuild({
      report: (d, i) => ({ vertexes: [i === 0 ? ownStep(d, { started: at, completed: at, error: 'context canceled' }) : ownStep(d, { started: at, completed: at })], statuses: [], logs: [] }),
      fail: (i) => (i === 0 ? grpc.status.UNKNOWN : undefined),
    });
    expect((await build.solve(unitOf())).code).toBe(1);
    const again = await build.solve(unitOf());
    expect(again.code).toBe(0);
    expect(again.log).not.toContain('canceled');
  });

  test('retired: no new units; it ends with its Return', async () => {
    const build = heldBuild({});
    expect(build.accepting).toBe(true);
    await build.retire();
    expect(build.accepting).toBe(false);
  });
});
