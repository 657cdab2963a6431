/**
 * A remote builder: a second docker engine in a network namespace of its own, reached over
 * DOCKER_HOST=ssh:// through sshd on loopback (scripts/remote-engine.sh, run here as the test setup).
 * Its store and cache are its own, so everything below happens there: the base image, the builds, the
 * engine dying. Real cargo, rustc, crates.io and both engines throughout.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/exec.ts';
import { BASE_BUILD_TIMEOUT, busyBuild, buildx, CLEANUP_TIMEOUT, copyProject, depsDigests, ENGINE_ONLY, ensureBaseImage, plainCargoAgrees, removeProject, ROOT, runRecords, RUSTCBUILDX, testEnv } from './harness.ts';

const LONG = 1_800_000;
const SCRIPT = join(ROOT, 'scripts/remote-engine.sh');
const STATE = '/var/lib/rcbx-remote';

/**
 * Starts the remote engine (idempotent) and gives the settings a user of it has: its DOCKER_HOST, and
 * the script's `ssh` (configured for the test host, as ~/.ssh/config would be) first on the test PATH.
 */
async function startRemote(): Promise<Record<string, string>> {
  const res = await run(['bash', SCRIPT, 'start'], { timeoutMs: 600_000 });
  if (res.code !== 0) throw new Error(`remote-engine.sh start failed:\n${res.stderr}`);
  const setting = (name: string) => new RegExp(`^${name}=(.+)$`, 'm').exec(res.stdout)?.[1];
  const host = setting('DOCKER_HOST');
  if (!host) throw new Error(`remote-engine.sh start printed no DOCKER_HOST:\n${res.stdout}`);
  // The same engine over tcp:// with mutual TLS, as docker's own variables choose it (when the script
  // could serve it: the TLS tests say why not).
  const tlsHost = setting('RCBX_REMOTE_TLS_HOST');
  const certs = setting('RCBX_REMOTE_TLS_CERT_PATH');
  tls = tlsHost && certs ? { DOCKER_HOST: tlsHost, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs } : {};
  tlsMissing = tlsHost && certs ? '' : `remote-engine.sh served no TLS endpoint:\n${res.stderr}`;
  return { DOCKER_HOST: host, PATH: `${join(STATE, 'bin')}:${testEnv().PATH}` };
}

let remote: Record<string, string> = {};
let tls: Record<string, string> = {};
let tlsMissing = '';

beforeAll(async () => {
  remote = await startRemote();
  await ensureBaseImage('docker');
  // The remote store starts empty: its base image is made there, as a user would.
  const built = await run([RUSTCBUILDX, 'base', 'build'], { env: testEnv(remote), timeoutMs: BASE_BUILD_TIMEOUT });
  if (built.code !== 0) throw new Error(`base build on the remote engine failed:\n${built.stdout}${built.stderr}`);
}, BASE_BUILD_TIMEOUT);

// Leave no daemon behind for whatever runs next (its store stays in /var/lib/rcbx-remote for the next start).
afterAll(() => run(['bash', SCRIPT, 'stop'], { timeoutMs: 120_000 }), CLEANUP_TIMEOUT);



/** How many ssh logins the test host's sshd has accepted so far. */
function sshLogins(): number {
  const log = join(STATE, 'sshd.log');
  return existsSync(log) ? (readFileSync(log, 'utf8').match(/Accepted publickey/g)?.length ?? 0) : 0;
}

describe('a remote engine over DOCKER_HOST=ssh://', () => {
  let dir = '';
  beforeAll(() => {
    dir = copyProject('examples/demo');
  });
  afterAll(() => removeProject(dir), CLEANUP_TIMEOUT);

  test('`base show` names the remote engine and its own base image', async () => {
    const show = await run([RUSTCBUILDX, 'base', 'show'], { env: testEnv(remote) });
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/^reason: +local-toolchain: /m);
    expect(show.stdout).toContain(`on docker (DOCKER_HOST=${remote.DOCKER_HOST})`);
  });

  test('every unit built there, over one shared ssh connection; artifacts byte-identical to the local engine\'s', async () => {
    const logins = sshLogins();
    const res = await buildx(dir, ['build', '--locked'], { ...remote, ...ENGINE_ONLY, CARGO_TARGET_DIR: join(dir, 't-remote') });
    expect(res.code).toBe(0);
    const there = runRecords(join(dir, 't-remote'));
    expect(there.length).toBeGreaterThan(15);
    expect(there.filter((r) => r.outcome === 'fallback')).toEqual([]);
    // Each docker call used to be a new ssh login (3.5 s a unit here): now one master carries them all
    // (two at most, when the first calls race to become it).
    expect(sshLogins() - logins).toBeLessThanOrEqual(2);

    const local = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, CARGO_TARGET_DIR: join(dir, 't-local') });
    expect(local.code).toBe(0);
    expect(depsDigests(join(dir, 't-remote'))).toEqual(depsDigests(join(dir, 't-local')));
  }, LONG);

  test('the same engine chosen by a docker context: found from the context files, one shared connection', async () => {
    const config = mkdtempSync(join(tmpdir(), 'rcbx-docker-config-'));
    try {
      const { DOCKER_HOST, ...rest } = remote;
      const made = await run(['docker', 'context', 'create', 'rcbx-remote-ctx', '--docker', `host=${DOCKER_HOST}`], { env: testEnv({ ...rest, DOCKER_CONFIG: config }) });
      expect(made.code).toBe(0);
      const logins = sshLogins();
      const target = join(dir, 't-context');
      const res = await buildx(dir, ['build', '--locked'], { ...rest, ...ENGINE_ONLY, DOCKER_CONFIG: config, DOCKER_CONTEXT: 'rcbx-remote-ctx', CARGO_TARGET_DIR: target });
      expect(res.code).toBe(0);
      expect(runRecords(target).filter((r) => r.outcome === 'fallback')).toEqual([]);
      expect(sshLogins() - logins).toBeLessThanOrEqual(2);
      expect(depsDigests(target)).toEqual(depsDigests(join(dir, 't-remote')));
    } finally {
      removeProject(config);
    }
  }, LONG);

  test('the same engine over its unix socket (DOCKER_HOST=unix://): through the broker, artifacts identical', async () => {
    const target = join(dir, 't-socket');
    const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, DOCKER_HOST: 'unix:///run/rcbx-remote.sock', CARGO_TARGET_DIR: target });
    expect(res.code).toBe(0);
    expect(runRecords(target).filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(depsDigests(target)).toEqual(depsDigests(join(dir, 't-remote')));
    const status = await run([RUSTCBUILDX, 'broker', 'status'], { env: testEnv({ DOCKER_HOST: 'unix:///run/rcbx-remote.sock' }) });
    expect(status.stdout).toMatch(/^\* broker pid \d+ for unix:\/\/\/run\/rcbx-remote\.sock: BuildKit /m);
  }, LONG);

  test('the same engine over tcp:// with mutual TLS (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH): through the broker, artifacts identical', async () => {
    expect(tlsMissing).toBe('');
    const target = join(dir, 't-tls');
    const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, ...tls, CARGO_TARGET_DIR: target });
    expect(res.code).toBe(0);
    expect(res.stderr).not.toContain('warning');
    expect(runRecords(target).filter((r) => r.outcome === 'fallback')).toEqual([]);
    expect(depsDigests(target)).toEqual(depsDigests(join(dir, 't-remote')));
    const status = await run([RUSTCBUILDX, 'broker', 'status'], { env: testEnv(tls) });
    expect(status.stdout).toMatch(/^\* broker pid \d+ for tcp:\/\/127\.0\.0\.1:\d+: BuildKit /m);
  }, LONG);

  test('tcp:// with TLS but no client certificate the engine accepts: one warning, the local rustc, the build succeeds', async () => {
    expect(tlsMissing).toBe('');
    // The engine's CA, so the client trusts the engine; no certificate of its own, which the engine refuses.
    const noCerts = mkdtempSync(join(tmpdir(), 'rcbx-no-certs-'));
    copyFileSync(join(tls.DOCKER_CERT_PATH!, 'ca.pem'), join(noCerts, 'ca.pem'));
    try {
      const target = join(dir, 't-tls-refused');
      const res = await buildx(dir, ['build', '--locked'], { ...ENGINE_ONLY, ...tls, DOCKER_CERT_PATH: noCerts, CARGO_TARGET_DIR: target });
      expect(res.code).toBe(0);
      expect(res.stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
      expect(runRecords(target).every((r) => r.outcome === 'fallback')).toBe(true);
      expect((await run([join(target, 'debug', 'rustcbuildx-demo')])).code).toBe(0);
    } finally {
      removeProject(noCerts);
    }
  }, LONG);

  test('unreachable: one warning naming it, the local rustc, the build succeeds', async () => {
    const res = await buildx(dir, ['build', '--locked'], { ...remote, ...ENGINE_ONLY, DOCKER_HOST: 'ssh://rcbxremote@127.0.0.1:1', CARGO_TARGET_DIR: join(dir, 't-unreachable') });
    expect(res.code).toBe(0);
    expect(res.stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
    expect(res.stderr).toContain('docker (DOCKER_HOST=ssh://rcbxremote@127.0.0.1:1)');
    const got = runRecords(join(dir, 't-unreachable'));
    expect(got.every((r) => r.outcome === 'fallback')).toBe(true);
    expect((await run([join(dir, 't-unreachable', 'debug', 'rustcbuildx-demo')])).code).toBe(0);
  }, LONG);

  test('the ssh connection drops mid-build: the broker reconnects, the build succeeds, one warning, target/ intact', async () => {
    const target = join(dir, 't-ssh-drop');
    const { job } = await busyBuild(dir, target, remote);
    try {
      // Every ssh process on the shared connection goes: the master, whose title names its control
      // socket, and the channels using it.
      const killed = await run(['pkill', '-f', `rustcbuildx-ssh-${process.getuid?.() ?? 0}`]);
      expect(killed.code).toBe(0);
      const [stderr, code] = await Promise.all([new Response(job.stderr).text(), job.exited]);
      expect(code).toBe(0);
      expect(stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
      await plainCargoAgrees(dir, target);
    } finally {
      job.kill();
    }
  }, LONG);

  test('the remote daemon dies mid-build: the build succeeds with the local rustc, one warning, target/ intact', async () => {
    const target = join(dir, 't-dies');
    const tmp = join(target, '.rustcbuildx', 'tmp');
    // A new RUSTFLAGS cfg: nothing of this build is in the remote's cache, so it is busy when it dies.
    const job = Bun.spawn(['cargo', 'buildx', 'build', '--locked'], {
      cwd: dir,
      env: testEnv({ ...remote, ...ENGINE_ONLY, CARGO_TARGET_DIR: target, RUSTFLAGS: `--cfg rcbx_dies_${crypto.randomUUID().slice(0, 8)}` }),
      stdout: 'pipe',
      stderr: 'pipe',
    });
    try {
      const deadline = Date.now() + 120_000;
      while (!(existsSync(tmp) && readdirSync(tmp).length > 0) && Date.now() < deadline) await Bun.sleep(20);
      await run(['bash', SCRIPT, 'stop'], { timeoutMs: 120_000 });
      const [stderr, code] = await Promise.all([new Response(job.stderr).text(), job.exited]);
      expect(code).toBe(0);
      expect(stderr.match(/rustcbuildx: warning:/g)?.length).toBe(1);
      // Said by whichever layer saw it first: the wrapper (the engine no longer answers) or the broker
      // (its connection broke during a build).
      expect(stderr).toMatch(/stopped answering during the build|connection to the engine broke/);
      expect((await run([join(target, 'debug', 'rustcbuildx-demo')])).stdout).toContain('hello');
      // target/ is plain cargo's: a plain build afterwards has nothing to do but accept it.
      const plain = await run(['cargo', 'build', '--locked'], { cwd: dir, env: testEnv({ CARGO_TARGET_DIR: target, RUSTFLAGS: '' }) });
      expect(plain.code).toBe(0);
    } finally {
      job.kill();
      await startRemote();
    }
  }, LONG);
});
