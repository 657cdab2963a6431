/** The Rust toolchain as `rustc -vV` describes it, and the base-image tag derived from it. */

export type Channel = 'stable' | 'beta' | 'nightly' | 'dev' | 'custom';

export interface Toolchain {
  /** e.g. `1.95.0`, `1.96.0-beta.3`, `1.97.0-nightly` */
  release: string;
  /** full commit hash, or undefined for builds that report `unknown` */
  commitHash: string | undefined;
  commitDate: string | undefined;
  host: string;
  channel: Channel;
  /** the exact `rustc -vV` text: two toolchains are the same only if this is equal */
  verbose: string;
}

export class ToolchainParseError extends Error {
  override name = 'ToolchainParseError';
}

export function parseRustcVersion(verbose: string): Toolchain {
  const fields = new Map<string, string>();
  for (const line of verbose.split('\n')) {
    const m = /^([a-zA-Z-]+): (.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) fields.set(m[1], m[2].trim());
  }
  const release = fields.get('release');
  const host = fields.get('host');
  if (!release || !host) {
    throw new ToolchainParseError(`not the output of \`rustc -vV\` (no release/host line):\n${verbose.slice(0, 200)}`);
  }
  const commit = fields.get('commit-hash');
  const commitHash = commit && /^[0-9a-f]{7,40}$/.test(commit) ? commit : undefined;
  const date = fields.get('commit-date');
  return {
    release,
    commitHash,
    commitDate: date && date !== 'unknown' ? date : undefined,
    host,
    channel: channelOf(release, commitHash),
    verbose: verbose.trim(),
  };
}

function channelOf(release: string, commitHash: string | undefined): Channel {
  if (!commitHash) return 'custom';
  if (release.endsWith('-nightly')) return 'nightly';
  if (release.includes('-beta')) return 'beta';
  if (release.endsWith('-dev')) return 'dev';
  return /^\d+\.\d+\.\d+$/.test(release) ? 'stable' : 'custom';
}

export const TOOLCHAIN_REPO = 'rustcbuildx/toolchain';

/**
 * The local base image's tag: one per toolchain, so several coexist. Release and commit identify
 * rustup toolchains; a custom build without a commit hash is identified by a hash of its `-vV` text.
 * `extras` (extrasId of the configured packages and Dockerfile lines) gives each such image its own tag.
 */
export function toolchainTag(tc: Toolchain, extras = ''): string {
  const id = tc.commitHash ? tc.commitHash.slice(0, 12) : `h${sha256(tc.verbose).slice(0, 12)}`;
  // The extras' id last, so it survives the 128-character limit.
  const tag = `${tc.release}-${id}-${tc.host}`.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, extras ? 113 : 128);
  return `${TOOLCHAIN_REPO}:${tag}${extras ? `-x${extras}` : ''}`;
}

/** The official image with the same release, usable only for stable releases and with a registry. */
export function officialImage(tc: Toolchain): string | undefined {
  return tc.channel === 'stable' ? `docker.io/library/rust:${tc.release}-slim` : undefined;
}

// Bun's hasher, not node:crypto: loading node:crypto alone costs ~9 ms of start-up, per rustc call.
export function sha256(data: string | Uint8Array): string {
  return new Bun.CryptoHasher('sha256').update(data).digest('hex');
}
