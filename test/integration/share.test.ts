/**
 * Sharing results with a team and CI (RUSTCBUILDX_CACHE) through a real registry (Debian's
 * docker-registry on loopback, scripts/registry.sh) and a directory: what one configuration pushes
 * another at another path, with another CARGO_HOME and an empty memo, takes; private crates never leave;
 * a damaged result is rejected and rebuilt; a store that is down costs one warning; `verify` catches an
 * altered result. Real cargo, rustc, crates.io and the engine throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { readRecords, type UnitRecord } from '../../src/run-state.ts';
import { BASE_BUILD_TIMEOUT, buildx, CLEANUP_TIMEOUT, copyProject, depsDigests, ensureBaseImage, removeProject, ROOT, RUSTCBUILDX, testEnv } from './harness.ts';

const LONG = 1_200_000;
const REGISTRY = join(ROOT, 'scripts/registry.sh');
const PORT = 5000 + Math.floor(Math.random() * 500) + 300;
const regDir = mkdtempSync(join(tmpdir(), 'rcbx-it-registry-'));
const STORE = `oci://127.0.0.1:${PORT}/team/rcbx`;
const temps: string[] = [];
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

/** Markers no build has ever seen: one in a private crate's source, one in what its build script writes, one in a crate named to share. */
const nonce = crypto.randomUUID().replaceAll('-', '');
const M_SOURCE = `rcbx-private-src-${nonce}`;
const M_SCRIPT = `rcbx-private-gen-${nonce}`;
const M_NAMED = `rcbx-named-${nonce}`;

function withMarkers(dir: string): string {
  const lib = join(dir, 'crates/core-lib/src/lib.rs');
  writeFileSync(lib, `${readFileSync(lib, 'utf8')}\npub const SECRET: &str = "${M_SOURCE}";\n`);
  const script = join(dir, 'crates/core-lib/build.rs');
  writeFileSync(script, readFileSync(script, 'utf8').replace('pub const GENERATED: u32 = 42;\\n', `pub const GENERATED: u32 = 42;\\npub const SECRET_GEN: &str = \\"${M_SCRIPT}\\";\\n`));
  const macros = join(dir, 'crates/macros/src/lib.rs');
  writeFileSync(macros, readFileSync(macros, 'utf8').replace('let text = input.to_string();', `let text = input.to_string();\n    std::hint::black_box("${M_NAMED}");`));
  return dir;
}

/** Each file under the registry's storage, and its zstd- or gzip-decompressed bytes: where a marker would be. */
function storageHolds(marker: string): string[] {
  const bytes = Buffer.from(marker);
  const hits: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        walk(path);
        continue;
      }
      const data = readFileSync(path);
      const views = [data];
      for (const inflate of [(b: Buffer) => Bun.zstdDecompressSync(b), (b: Buffer) => Bun.gunzipSync(new Uint8Array(b))]) {
        try {
          views.push(Buffer.from(inflate(data)));
        } catch {
          // not this compression
        }
      }
      if (views.some((v) => v.includes(bytes))) hits.push(path);
    }
  };
  walk(join(regDir, 'data'));
  return hits;
}

/**
 * The artifacts of the crates.io units: what a store serves, byte for byte. The workspace's own crates
 * are compiled incrementally (dev profile), whose bytes depend on the state they started from.
 */
function sharedDigests(target: string): Record<string, string> {
  return Object.fromEntries(Object.entries(depsDigests(target)).filter(([name]) => !/^(lib)?(core_lib|macros|app)-/.test(name)));
}

interface Listed {
  key: string;
  where: string;
  crate?: string;
  kind?: string;
  size: number;
}

async function listStore(env: Record<string, string>): Promise<Listed[]> {
  const res = await run([RUSTCBUILDX, 'cache', 'ls', '--json'], { env: testEnv(env) });
  expect(res.code, res.stderr).toBe(0);
  return JSON.parse(res.stdout) as Listed[];
}

function records(target: string): UnitRecord[] {
  const runs = join(target, '.rustcbuildx', 'runs');
  return readdirSync(runs)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => readRecords(join(runs, f)));
}

let first = '';
let targetA = '';
const memoA = tempDir('rcbx-it-memo-a-');

beforeAll(async () => {
  const started = await run(['bash', REGISTRY, 'start', regDir, String(PORT)], { timeoutMs: 300_000 });
  if (started.code !== 0) throw new Error(`registry.sh start failed:\n${started.stdout}${started.stderr}`);
  await ensureBaseImage('docker');
  first = withMarkers(copyProject('test/fixtures/workspace'));
  targetA = join(first, 'target');
}, BASE_BUILD_TIMEOUT);

afterAll(async () => {
  await run(['bash', REGISTRY, 'stop', regDir, String(PORT)], { timeoutMs: 60_000 });
  rmSync(regDir, { recursive: true, force: true });
  removeProject(first);
  temps.forEach((d) => rmSync(d, { recursive: true, force: true }));
}, CLEANUP_TIMEOUT);

describe('sharing results through a registry', () => {
  test('a first machine pushes every unit from crates.io and the crate it names, and nothing private', async () => {
    const res = await buildx(first, ['build', '--locked'], { RUSTCBUILDX_CACHE: STORE, RUSTCBUILDX_SHARE: 'macros', RUSTCBUILDX_CACHE_DIR: memoA });
    expect(res.code, res.stderr).toBe(0);
    const listed = (await listStore({ RUSTCBUILDX_CACHE: STORE, RUSTCBUILDX_LOCAL_CACHE: 'off' })).filter((e) => e.where === `oci://127.0.0.1:${PORT}/team/rcbx`);
    const crates = new Set(listed.map((e) => e.crate));
    for (const c of ['serde', 'serde_derive', 'itoa', 'libc', 'zstd-sys', 'thiserror', 'anyhow', 'macros']) expect(crates.has(c), c).toBe(true);
    for (const c of ['core-lib', 'app']) expect(crates.has(c), c).toBe(false);
    // Build scripts' runs too: zstd-sys's C, serde's and libc's probes.
    expect(listed.filter((e) => e.kind === 'build-script-run').map((e) => e.crate).sort()).toEqual(expect.arrayContaining(['libc', 'serde', 'zstd-sys']));
    // The search finds what was shared (the named crate's marker), so its silence on the others means something.
    expect(storageHolds(M_NAMED).length).toBeGreaterThan(0);
    expect(storageHolds(M_SOURCE)).toEqual([]);
    expect(storageHolds(M_SCRIPT)).toEqual([]);
    // The local memo holds the private ones, with the reason they stay.
    const memo = await listStore({ RUSTCBUILDX_CACHE_DIR: memoA });
    expect(memo.some((e) => e.crate === 'core-lib' && e.where === 'memo')).toBe(true);
  }, LONG);

  test('a second configuration (another path, CARGO_HOME and memo) takes every shared unit from the store; same artifacts', async () => {
    const second = withMarkers(copyProject('test/fixtures/workspace'));
    temps.push(second);
    const target = tempDir('rcbx-it-target-b-');
    const res = await buildx(second, ['build', '--locked'], {
      RUSTCBUILDX_CACHE: `ro:${STORE}`,
      // The team's setting: a private crate is looked for in the store only where it is named to share.
      RUSTCBUILDX_SHARE: 'macros',
      CARGO_HOME: tempDir('rcbx-it-home-b-'),
      CARGO_TARGET_DIR: target,
      RUSTCBUILDX_CACHE_DIR: tempDir('rcbx-it-memo-b-'),
    });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/from the shared store\)/);
    const recs = records(target);
    expect(recs.filter((r) => r.from === 'store').length).toBeGreaterThan(20);
    // What never left the first machine, and only that, was built here: the workspace's crates, core-lib's
    // build script and its run (macros was named to share).
    expect(recs.filter((r) => r.from !== 'store').map((r) => r.crate).sort()).toEqual(['app', 'build_script_build', 'core-lib', 'core_lib']);
    expect(sharedDigests(target)).toEqual(sharedDigests(targetA));
    const app = await run([join(target, 'debug', 'app')]);
    expect(app.code).toBe(0);
  }, LONG);

  test('a damaged result in the store is rejected, said once, and built instead', async () => {
    const itoa = (await listStore({ RUSTCBUILDX_CACHE: STORE, RUSTCBUILDX_LOCAL_CACHE: 'off' })).find((e) => e.crate === 'itoa' && e.where.startsWith('oci://'));
    expect(itoa).toBeDefined();
    const manifest = (await (await fetch(`http://127.0.0.1:${PORT}/v2/team/rcbx/manifests/${itoa?.key}`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as { layers: Array<{ digest: string }> };
    const digest = (manifest.layers[0]?.digest ?? '').replace('sha256:', '');
    const blob = join(regDir, 'data/docker/registry/v2/blobs/sha256', digest.slice(0, 2), digest, 'data');
    const data = readFileSync(blob);
    const at = Math.floor(data.length / 2);
    data[at] = (data[at] ?? 0) ^ 0xff;
    writeFileSync(blob, data);

    const target = tempDir('rcbx-it-target-c-');
    const res = await buildx(first, ['build', '--locked'], { RUSTCBUILDX_CACHE: `ro:${STORE}`, CARGO_TARGET_DIR: target, RUSTCBUILDX_CACHE_DIR: tempDir('rcbx-it-memo-c-') });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr.match(/served a damaged result/g)?.length).toBe(1);
    expect(res.stderr).toContain('for itoa');
    const recs = records(target).filter((r) => r.crate === 'itoa');
    expect(recs.map((r) => r.from === 'store')).toEqual([false]);
    expect(sharedDigests(target)).toEqual(sharedDigests(targetA));
  }, LONG);

  test('a store that is down costs one warning; the next store in the list serves, and the build succeeds', async () => {
    const dirStore = tempDir('rcbx-it-dir-store-');
    // Filled by a first build, as a CI job's cache step would keep it.
    const fill = await buildx(first, ['build', '--locked'], { RUSTCBUILDX_CACHE: `dir:${dirStore}`, CARGO_TARGET_DIR: tempDir('rcbx-it-target-d-'), RUSTCBUILDX_CACHE_DIR: tempDir('rcbx-it-memo-d-') });
    expect(fill.code, fill.stderr).toBe(0);
    expect(readdirSync(join(dirStore, 'rcbx-results')).length).toBeGreaterThan(20);

    const target = tempDir('rcbx-it-target-e-');
    const res = await buildx(first, ['build', '--locked'], {
      RUSTCBUILDX_CACHE: `oci://127.0.0.1:1/nobody/home,ro:dir:${dirStore}`,
      CARGO_TARGET_DIR: target,
      RUSTCBUILDX_CACHE_DIR: tempDir('rcbx-it-memo-e-'),
    });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr.match(/warning: cache store oci:\/\/127\.0\.0\.1:1\/nobody\/home failed/g)?.length).toBe(1);
    const recs = records(target);
    expect(recs.filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(recs.filter((r) => r.from === 'store').length).toBeGreaterThan(20);
    expect(sharedDigests(target)).toEqual(sharedDigests(targetA));
  }, LONG);
});

describe('rustcbuildx cache', () => {
  test('push what may be shared, pull it elsewhere for offline work, list, size, remove and prune', async () => {
    const dirStore = tempDir('rcbx-it-cache-cmd-');
    const cli = (args: string[], env: Record<string, string>, cwd = first) => run([RUSTCBUILDX, 'cache', ...args], { cwd, env: testEnv(env) });
    // The first machine's memo to a directory: the private results stay, and say why.
    const pushed = await cli(['push'], { RUSTCBUILDX_CACHE_DIR: memoA, RUSTCBUILDX_CACHE: `dir:${dirStore}` });
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.stdout).toMatch(/^pushed [1-9]\d* results to dir:\S+; 0 were there already$/m);
    // core-lib's compile, its build script's compile and run, macros and app.
    expect(pushed.stdout).toContain('\n  kept 5 here: a crate of the workspace or a path dependency\n');
    const again = await cli(['push'], { RUSTCBUILDX_CACHE_DIR: memoA, RUSTCBUILDX_CACHE: `dir:${dirStore}` });
    expect(again.stdout).toMatch(/^pushed 0 results to dir:\S+; [1-9]\d* were there already$/m);

    // Pulled into an empty memo: the project's packages only, each checked before it is kept.
    const memo = tempDir('rcbx-it-cache-pull-');
    const pulled = await cli(['pull'], { RUSTCBUILDX_CACHE_DIR: memo, RUSTCBUILDX_CACHE: `ro:dir:${dirStore}` });
    expect(pulled.code, pulled.stderr).toBe(0);
    const listed = await listStore({ RUSTCBUILDX_CACHE_DIR: memo });
    expect(listed.length).toBeGreaterThan(20);
    expect(listed.every((e) => e.where === 'memo')).toBe(true);
    expect(pulled.stdout).toContain(`pulled ${listed.length} results into ${memo}/results; 0 were there already`);
    // Offline now: every shared unit from the memo, no store configured.
    const target = tempDir('rcbx-it-target-f-');
    const offline = await buildx(first, ['build', '--locked', '--offline'], { RUSTCBUILDX_CACHE_DIR: memo, CARGO_TARGET_DIR: target });
    expect(offline.code, offline.stderr).toBe(0);
    expect(records(target).filter((r) => r.outcome === 'cached' && r.from === 'memo').length).toBe(listed.length);

    const table = await cli(['ls'], { RUSTCBUILDX_CACHE_DIR: memo });
    expect(table.stdout).toMatch(/^CRATE +VERSION +KIND +SIZE +LAST USED +WHERE/);
    // Pulled: the pusher's to share, so `cache push` does not pass it on unless named.
    expect(table.stdout).toMatch(new RegExp(`^itoa +1\\.\\d+\\.\\d+ +lib +[\\d.]+ kB +\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d +memo +private: pulled from dir:${dirStore}$`, 'm'));
    expect(table.stdout).toMatch(/^core-lib +0\.1\.0 +lib +.* +memo +private: a crate of the workspace or a path dependency$/m);
    const du = await cli(['du'], { RUSTCBUILDX_CACHE_DIR: memo, RUSTCBUILDX_CACHE: `dir:${dirStore}` });
    // With what the offline build added: the private units, built there.
    const now = await listStore({ RUSTCBUILDX_CACHE_DIR: memo });
    expect(now.length).toBe(listed.length + 5);
    expect(du.stdout).toContain(`memo ${memo}/results: ${now.length} results`);
    expect(du.stdout).toMatch(new RegExp(`^dir:${dirStore}: \\d+ results`, 'm'));

    const removed = await cli(['rm', 'itoa', 'serde*'], { RUSTCBUILDX_CACHE_DIR: memo });
    expect(removed.code).toBe(0);
    const left = await listStore({ RUSTCBUILDX_CACHE_DIR: memo });
    expect(left.some((e) => e.crate === 'itoa' || e.crate?.startsWith('serde'))).toBe(false);
    expect(removed.stdout).toContain(`removed ${now.length - left.length} results of itoa, serde*`);

    const pruned = await cli(['prune', '--max-size', '1M'], { RUSTCBUILDX_CACHE_DIR: memo });
    expect(pruned.code, pruned.stderr).toBe(0);
    const total = (await listStore({ RUSTCBUILDX_CACHE_DIR: memo })).reduce((n, e) => n + e.size, 0);
    expect(total).toBeLessThanOrEqual(1_000_000);
    expect((await cli(['prune', '--max-size', 'lots'], { RUSTCBUILDX_CACHE_DIR: memo })).stderr).toContain('--max-size lots: a size such as 500M or 10G');
  }, LONG);
});

describe('rustcbuildx verify', () => {
  test('passes on an honest cache and finds a result altered in the memo, with its manifest made to agree', async () => {
    const env = { RUSTCBUILDX_CACHE_DIR: memoA };
    const honest = await run([RUSTCBUILDX, 'verify', '--crate', 'itoa', '--crate', 'libc', '--', '--locked'], { cwd: first, env: testEnv(env), timeoutMs: LONG });
    expect(honest.code, honest.stdout + honest.stderr).toBe(0);
    expect(honest.stdout).toMatch(/verify: [1-9]\d* units compared with what the cache serves: \d+ identical, 0 differ/);

    // A cache that lies consistently: the rlib changed, and the manifest's size and sha256 with it.
    const entries = (await listStore(env)).filter((e) => e.crate === 'itoa' && e.kind === 'lib' && e.where === 'memo');
    expect(entries.length).toBeGreaterThan(0);
    for (const e of entries) {
      const entry = join(memoA, 'results', e.key.slice(0, 2), e.key);
      const doc = JSON.parse(readFileSync(join(entry, 'manifest.json'), 'utf8')) as { files: Array<{ path: string; size: number; sha256: string }> };
      const rlib = doc.files.find((f) => f.path.endsWith('.rlib'));
      expect(rlib).toBeDefined();
      const file = join(entry, rlib?.path ?? '');
      const bytes = Buffer.concat([readFileSync(file), Buffer.from('backdoor')]);
      writeFileSync(file, bytes);
      Object.assign(rlib ?? {}, { size: bytes.length, sha256: new Bun.CryptoHasher('sha256').update(bytes).digest('hex') });
      writeFileSync(join(entry, 'manifest.json'), JSON.stringify(doc));
    }
    const caught = await run([RUSTCBUILDX, 'verify', '--crate', 'itoa', '--', '--locked'], { cwd: first, env: testEnv(env), timeoutMs: LONG });
    expect(caught.code, caught.stdout + caught.stderr).toBe(1);
    expect(caught.stdout).toMatch(/^DIFFERS {2}itoa \S+ \(lib, itoa-[0-9a-f]+\), served by the local memo: out\/libitoa-[0-9a-f]+\.rlib$/m);
    expect(existsSync(join(targetA, 'rustcbuildx-verify'))).toBe(true);
  }, LONG);
});
