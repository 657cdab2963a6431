import { describe, expect, test } from 'bun:test';
import { commandFor, describeEndpoint, endpointOf } from '../../src/engine/endpoint';

/** No docker config: the machine's own `docker context use` must not leak into these answers. */
const NO_CONFIG = { DOCKER_CONFIG: '/nonexistent/docker-config' };

describe('engine endpoints in messages', () => {
  test('the local default', () => {
    const e = endpointOf('docker', NO_CONFIG);
    expect(describeEndpoint(e)).toBe('docker (local default)');
    expect(commandFor(e, ['base', 'build'])).toBe('rustcbuildx base build');
  });

  test('a remote docker: every setting that chooses it, in the message and in the command', () => {
    const e = endpointOf('docker', { ...NO_CONFIG, DOCKER_HOST: 'ssh://me@big-box', BUILDX_BUILDER: 'farm', HOME: '/root', CONTAINER_HOST: 'x' });
    expect(describeEndpoint(e)).toBe('docker (DOCKER_HOST=ssh://me@big-box, BUILDX_BUILDER=farm)');
    expect(commandFor(e, ['base', 'build'])).toBe('DOCKER_HOST=ssh://me@big-box BUILDX_BUILDER=farm rustcbuildx base build');
  });

  test('values a shell would split are quoted; podman gets its runner flag and its own settings', () => {
    const e = endpointOf('podman', { ...NO_CONFIG, CONTAINER_HOST: 'ssh://me@box/run/podman sock', DOCKER_HOST: 'ignored' });
    expect(describeEndpoint(e)).toBe('podman (CONTAINER_HOST=ssh://me@box/run/podman sock)');
    expect(commandFor(e, ['base', 'build'])).toBe("'CONTAINER_HOST=ssh://me@box/run/podman sock' rustcbuildx base build --runner podman");
  });

  test('docker-build names DOCKER_CONTEXT but not BUILDX_BUILDER (it does not use buildx)', () => {
    const e = endpointOf('docker-build', { ...NO_CONFIG, DOCKER_CONTEXT: 'ci', BUILDX_BUILDER: 'farm' });
    expect(commandFor(e, ['base', 'build'])).toBe('DOCKER_CONTEXT=ci rustcbuildx base build --runner docker-build');
  });
});
