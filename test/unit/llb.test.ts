import { describe, expect, test } from 'bun:test';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { normalizeImageRef, renderUnitLlb, LlbError, type LlbGraph, type LlbMount } from '../../src/render/llb';
import { renderUnitStages, type ClosureEntry } from '../../src/render/dockerfile';
import { encodeGraph } from '../../src/engine/buildkit/proto';
import protoText from '../../src/engine/buildkit/buildkit.proto' with { type: 'text' };
import { SANDBOX } from '../../src/plan/sandbox-paths';
import { BASE, registrySpec, workspaceSpec } from './unit-specs';

const recipe = (spec = registrySpec()): ClosureEntry => ({ kind: 'recipe', spec, snippet: renderUnitStages(spec) });

/** The workspace crate built on its dependency's recipe. */
function workspaceGraph(): LlbGraph {
  return renderUnitLlb([recipe()], workspaceSpec(), { noNetwork: true });
}

function execOf(graph: LlbGraph, key: string) {
  const op = graph.ops.find((o) => o.name?.startsWith(`[u-${key.toLowerCase()}]`));
  if (!op || !('exec' in op)) throw new Error(`no exec for ${key}`);
  return op;
}

describe('renderUnitLlb', () => {
  test('shared ops appear once: one image for every unit', () => {
    const g = workspaceGraph();
    expect(g.ops.filter((o) => 'source' in o && o.source.identifier.startsWith('docker-image://')).length).toBe(1);
    // every input names an earlier op
    g.ops.forEach((op, i) => op.inputs.forEach((ref) => expect(ref.op).toBeLessThan(i)));
  });

  test('one local source per context path: it follows that path alone, and the engine keeps a copy of it by that path', () => {
    const g = workspaceGraph();
    const sources = g.ops.flatMap((o) => ('source' in o && o.source.identifier === 'local://context' ? [o.source.attrs] : []));
    expect(sources.map((a) => JSON.parse(a['local.followpaths'] as string))).toEqual([
      ['crates/index.crates.io-1949cf8c6b5b557f/itoa-1.0.15.crate'],
      ['ws/demo-0a1b2c3d4e5f60718293a4b5'],
      ['dirs/out-99aa88bb77cc66dd55ee44ff'],
    ]);
    for (const a of sources) expect(a['local.sharedkeyhint']).toBe(JSON.parse(a['local.followpaths'] as string)[0]);
    // the same path twice in one graph is one source
    const twice = renderUnitLlb([recipe(), recipe()], workspaceSpec(), { noNetwork: true });
    expect(twice.ops.filter((o) => 'source' in o && o.source.identifier === 'local://context').length).toBe(3);
  });

  test("the graph says which op is the unit's own step, and what its result holds", () => {
    const g = workspaceGraph();
    expect(g.own).toBe(g.ops.indexOf(execOf(g, workspaceSpec().key)));
    expect(g.resultDirs).toEqual(['out', 'meta']);
  });

  test('a registry crate is unpacked as ADD does, and its top directory mounted read-only', () => {
    const g = workspaceGraph();
    const exec = execOf(g, registrySpec().key);
    const source = exec.exec.mounts.find((m) => m.dest === registrySpec().source?.mountTarget) as LlbMount;
    expect(source).toMatchObject({ selector: '/itoa-1.0.15', readonly: true, output: -1 });
    const unpack = g.ops[exec.inputs[source.input]?.op as number];
    if (!unpack || !('file' in unpack)) throw new Error('the source is a file op');
    expect(unpack.file.actions[0]?.copy).toMatchObject({ src: '/crates/index.crates.io-1949cf8c6b5b557f/itoa-1.0.15.crate', dest: '/', attemptUnpackDockerCompatibility: true, mode: -1, timestamp: -1 });
  });

  test('mounts in path order; outputs and streams are results of their own, which the dependent and the export take', () => {
    const g = workspaceGraph();
    const dep = execOf(g, registrySpec().key);
    const own = execOf(g, workspaceSpec().key);
    const dests = own.exec.mounts.map((m) => m.dest);
    expect(dests).toEqual([...dests].sort());
    const outputs = own.exec.mounts.filter((m) => m.output >= 0);
    expect(outputs.map((m) => [m.dest, m.output])).toEqual([['/', 0], [SANDBOX.meta, 1], [SANDBOX.out, 2]]);
    expect(outputs.filter((m) => m.dest !== '/').every((m) => m.input === -1 && !m.readonly)).toBe(true);
    // the dependency's outputs: its exec's out mount, at the dependent's /rcbx/d/0
    const depMount = own.exec.mounts.find((m) => m.dest === '/rcbx/d/0') as LlbMount;
    const depOut = dep.exec.mounts.find((m) => m.dest === SANDBOX.out) as LlbMount;
    expect(own.inputs[depMount.input]).toEqual({ op: g.ops.indexOf(dep), output: depOut.output });
    // the export: the unit's out and meta results under /out and /meta
    const exported = g.ops[g.result.op];
    if (!exported || !('file' in exported)) throw new Error('the export is a file op');
    expect(exported.inputs).toEqual([{ op: g.ops.indexOf(own), output: 2 }, { op: g.ops.indexOf(own), output: 1 }]);
    expect(exported.file.actions.map((a) => [a.copy?.dest, a.secondaryInput])).toEqual([['/out', 0], ['/meta', 1]]);
  });

  test('incremental state: a locked cache mount named as the Dockerfile frontend names it (`/<id>`), neither an input nor a result', () => {
    const g = renderUnitLlb([recipe()], { ...workspaceSpec(), incremental: { id: 'rcbx-inc-0123' } }, { noNetwork: true });
    const own = execOf(g, workspaceSpec().key);
    const cache = own.exec.mounts.find((m) => m.dest === SANDBOX.incremental) as LlbMount;
    expect(cache).toEqual({ input: -1, dest: SANDBOX.incremental, output: -1, mountType: 3, cacheOpt: { ID: '/rcbx-inc-0123', sharing: 2 } });
    expect(own.exec.mounts.filter((m) => m.output >= 0).map((m) => m.dest)).toEqual(['/', SANDBOX.meta, SANDBOX.out]);
    expect(execOf(workspaceGraph(), workspaceSpec().key).exec.mounts.some((m) => m.mountType !== undefined)).toBe(false);
    // as BuildKit reads it: Mount.mountType (6) CACHE, Mount.cacheOpt (20) {ID, sharing LOCKED}
    const root = protobuf.parse(protoText, { keepCase: true }).root;
    const Op = root.lookupType('rcbx.Op');
    const ops = encodeGraph(g).definition.def.map((b) => Op.toObject(Op.decode(b), { longs: Number }) as { exec?: { mounts: Array<Record<string, unknown>> } });
    const wire = ops.flatMap((o) => o.exec?.mounts ?? []).find((m) => m.dest === SANDBOX.incremental);
    expect(wire).toMatchObject({ mountType: 3, cacheOpt: { ID: '/rcbx-inc-0123', sharing: 2 } });
    expect(root.lookupType('rcbx.Mount').fields.cacheOpt?.id).toBe(20);
    expect(root.lookupType('rcbx.Mount').fields.mountType?.id).toBe(6);
  });

  test('the image configuration: its environment (PATH added when it sets none), its user; no network', () => {
    const g = workspaceGraph();
    const dep = execOf(g, registrySpec().key).exec;
    expect(dep.meta.env).toEqual(['PATH=/opt/rust/bin:/usr/bin:/bin', 'LANG=C.UTF-8']);
    const own = execOf(g, workspaceSpec().key).exec;
    expect(own.meta.env).toEqual(['LANG=C.UTF-8', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']);
    expect(own.meta.user).toBe('builder');
    expect(own.network).toBe(2);
    expect(own.meta.args.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    const image = g.ops.find((o) => 'source' in o && o.source.identifier.startsWith('docker-image://'));
    expect(image && 'source' in image ? image.source.identifier : '').toBe(`docker-image://docker.io/${BASE}`);
  });

  test("the step runs the very script of the Dockerfile's RUN (what makes both routes' artifacts the same), then packs its result", () => {
    for (const spec of [registrySpec(), workspaceSpec()]) {
      const text = renderUnitStages(spec);
      const lines = text.split('\n');
      const run = lines.findIndex((l) => l.startsWith('RUN '));
      const end = lines.findIndex((l, i) => i > run && l.startsWith('FROM '));
      // The Dockerfile's line continuations joined as its parser joins them; the mount flags dropped.
      const body = lines.slice(run, end).join('\n').replaceAll(' \\\n    ', '\u0000').split('\u0000').filter((w, i) => !(i === 0 ? w.startsWith('RUN --mount=') : w.startsWith('--mount='))).join(' ');
      const script = body.startsWith('RUN ') ? body.slice(4) : body;
      const g = renderUnitLlb(spec.key === registrySpec().key ? [] : [recipe()], spec, { noNetwork: true });
      const llbScript = execOf(g, spec.key).exec.meta.args[2]?.replaceAll(' ', '') ?? '';
      expect(llbScript.slice(0, script.replaceAll(' ', '').length)).toBe(script.replaceAll(' ', ''));
      // Only on success (the rustc step exits before), and only into the result's meta dir.
      expect(llbScript.slice(script.replaceAll(' ', '').length)).toMatch(/^;ifcommand-vzstd.*mv\/rcbx\/meta\/\.result\.tar\.zst\.part\/rcbx\/meta\/result\.tar\.zst;rm-f\/rcbx\/meta\/\.tar-ok\/rcbx\/meta\/\.result\.tar\.zst\.part;fi$/);
      expect(g.resultPack).toBe('meta/result.tar.zst');
    }
  });

  test('a dependency given by its outputs is copied from the context and mounted as its outputs', () => {
    const g = renderUnitLlb([{ kind: 'outputs', key: registrySpec().key, ctxPath: 'outs/0123456789abcdef0123456789abcdef' }], workspaceSpec(), { noNetwork: true });
    const own = execOf(g, workspaceSpec().key);
    const depMount = own.exec.mounts.find((m) => m.dest === '/rcbx/d/0') as LlbMount;
    const copy = g.ops[own.inputs[depMount.input]?.op as number];
    if (!copy || !('file' in copy)) throw new Error('the outputs are a file op');
    expect(copy.file.actions[0]?.copy).toMatchObject({ src: '/outs/0123456789abcdef0123456789abcdef', dest: '/', dirCopyContents: true });
    expect(() => execOf(g, registrySpec().key)).toThrow();
  });

  test('a unit whose closure lacks a dependency, or whose image configuration is unknown, is refused', () => {
    expect(() => renderUnitLlb([], workspaceSpec(), { noNetwork: true })).toThrow(LlbError);
    const { baseImageConfig: _, ...spec } = registrySpec();
    expect(() => renderUnitLlb([], spec, { noNetwork: true })).toThrow(LlbError);
  });
});

describe('encodeGraph', () => {
  const root = protobuf.parse(protoText, { keepCase: true }).root;
  const Op = root.lookupType('rcbx.Op');
  const sha = (b: Uint8Array) => `sha256:${new Bun.CryptoHasher('sha256').update(b).digest('hex')}`;

  test('each op names its inputs by the digest of their bytes; the last op names the result', () => {
    const g = workspaceGraph();
    const def = encodeGraph(g).definition;
    expect(def.def.length).toBe(g.ops.length + 1);
    const digests: string[] = def.def.map(sha);
    def.def.forEach((bytes, i) => {
      const op = Op.toObject(Op.decode(bytes), { longs: Number, defaults: true }) as { inputs: Array<{ digest: string; index: number }> };
      const want = i < g.ops.length ? (g.ops[i]?.inputs ?? []).map((r) => ({ digest: digests[r.op] as string, index: r.output })) : [{ digest: digests[g.result.op] as string, index: g.result.output }];
      expect(op.inputs).toEqual(want);
    });
    expect(def.metadata[digests[g.result.op] as string]?.description['llb.customname']).toContain('export');
  });

  test("the digests are the ops' own, in graph order (what the status stream names them by)", () => {
    const g = workspaceGraph();
    const { definition, digests } = encodeGraph(g);
    expect(digests).toEqual(definition.def.slice(0, g.ops.length).map(sha));
  });

  test('the same graph encodes to the same bytes (cache keys are stable)', () => {
    expect(encodeGraph(workspaceGraph()).definition.def).toEqual(encodeGraph(workspaceGraph()).definition.def);
  });

  test("a copy keeps the source's mode and times (-1), and its flags, through the encoding", () => {
    const def = encodeGraph(workspaceGraph()).definition;
    const copies = def.def
      .map((b) => Op.toObject(Op.decode(b), { longs: Number }) as { file?: { actions: Array<{ copy?: Record<string, unknown> }> } })
      .flatMap((o) => o.file?.actions.map((a) => a.copy) ?? [])
      .filter((c) => c !== undefined);
    expect(copies.length).toBeGreaterThan(3);
    for (const c of copies) expect(c).toMatchObject({ mode: -1, timestamp: -1, createDestPath: true, followSymlink: true });
    expect(copies.some((c) => c.attemptUnpackDockerCompatibility === true)).toBe(true);
    expect(copies.some((c) => c.dirCopyContents === true)).toBe(true);
  });

  test('the definition is field 2 of the Solve request, as BuildKit reads it', () => {
    const Solve = root.lookupType('rcbx.SolveRequest');
    expect(Solve.fields.Definition?.id).toBe(2);
    const bytes = Solve.encode(Solve.fromObject({ Ref: 'r', Definition: encodeGraph(workspaceGraph()).definition })).finish();
    // field 2, wire type 2 (length-delimited): tag byte 0x12 right after field 1
    expect(bytes[0]).toBe(0x0a);
    expect(bytes[3]).toBe(0x12);
  });

  test('negative indices survive the encoding (scratch inputs, discarded outputs)', () => {
    const def = encodeGraph(workspaceGraph()).definition;
    const execs = def.def.map((b) => Op.toObject(Op.decode(b), { longs: Number }) as { exec?: { mounts: Array<{ input?: number; output?: number }> } }).filter((o) => o.exec);
    expect(execs.some((o) => o.exec?.mounts.some((m) => m.input === -1))).toBe(true);
    expect(execs.some((o) => o.exec?.mounts.some((m) => m.output === -1))).toBe(true);
  });
});

describe('normalizeImageRef', () => {
  test.each([
    ['debian', 'docker.io/library/debian:latest'],
    ['rust:1.95.0', 'docker.io/library/rust:1.95.0'],
    ['rustcbuildx/toolchain:1.95', 'docker.io/rustcbuildx/toolchain:1.95'],
    ['localhost:5000/x/y', 'localhost:5000/x/y:latest'],
    ['registry.example/x@sha256:abc', 'registry.example/x@sha256:abc'],
    ['localhost/rcbx:1', 'localhost/rcbx:1'],
  ])('%s → %s', (ref, want) => expect(normalizeImageRef(ref)).toBe(want));
});

describe("the step's pack (run here by sh, with the sandbox root moved to a temp dir)", () => {
  /** The script's part after rustc, as the exec runs it, and a sandbox with rustc's outputs and streams in it. */
  const setup = () => {
    const exec = execOf(renderUnitLlb([], registrySpec(), { noNetwork: true }), registrySpec().key).exec.meta.args[2] ?? '';
    const pack = exec.slice(exec.indexOf('if command -v zstd'));
    const root = mkdtempSync(join(tmpdir(), 'rcbx-pack-'));
    mkdirSync(join(root, 'out'));
    mkdirSync(join(root, 'meta'));
    writeFileSync(join(root, 'out', 'libx.rlib'), 'rlib bytes');
    for (const [f, text] of [['stdout', ''], ['stderr', 'warning\n'], ['status', '0\n']]) writeFileSync(join(root, 'meta', f as string), text as string);
    const run = (path: string) => Bun.spawnSync(['sh', '-c', pack.replaceAll(SANDBOX.root, root)], { env: { PATH: path } });
    return { root, run };
  };
  const tools = dirname(Bun.which('zstd') ?? '/usr/bin/zstd');

  test('with zstd: the outputs and the three streams, packed; nothing else left in meta/; status 0', () => {
    const { root, run } = setup();
    expect(run(`${tools}:/usr/bin:/bin`).exitCode).toBe(0);
    expect(readdirSync(join(root, 'meta')).sort()).toEqual(['result.tar.zst', 'status', 'stderr', 'stdout']);
    const listed = Bun.spawnSync(['sh', '-c', `zstd -dc ${join(root, 'meta', 'result.tar.zst')} | tar -tf -`]).stdout.toString().split('\n').filter(Boolean);
    expect(listed.sort()).toEqual(['meta/status', 'meta/stderr', 'meta/stdout', 'out/', 'out/libx.rlib']);
  });

  test('without zstd, or when tar fails: no pack, no leftovers, status 0 (rustc succeeded: the step did)', () => {
    const none = setup();
    const noZstd = mkdtempSync(join(tmpdir(), 'rcbx-nozstd-'));
    for (const tool of ['sh', 'tar', 'rm', 'mv']) symlinkSync(Bun.which(tool) as string, join(noZstd, tool));
    expect(none.run(noZstd).exitCode).toBe(0);
    expect(readdirSync(join(none.root, 'meta')).sort()).toEqual(['status', 'stderr', 'stdout']);

    const broken = setup();
    rmSync(join(broken.root, 'meta', 'status'));
    expect(broken.run(`${tools}:/usr/bin:/bin`).exitCode).toBe(0);
    expect(readdirSync(join(broken.root, 'meta')).sort()).toEqual(['stderr', 'stdout']);
  });
});
