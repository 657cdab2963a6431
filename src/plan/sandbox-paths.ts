/**
 * The fixed layout inside every sandbox. Host paths (checkout, CARGO_HOME, target dir) never appear in
 * a rustc step, so its cache key is the same wherever the project lives; `PathMap` translates both ways.
 */
import { resolve } from 'node:path';

export const SANDBOX = {
  root: '/rcbx',
  workspace: '/rcbx/ws',
  cargoHome: '/rcbx/cargo',
  target: '/rcbx/t',
  out: '/rcbx/out',
  meta: '/rcbx/meta',
  /** dependency output dirs, `/rcbx/d/<n>` */
  deps: '/rcbx/d',
  external: '/rcbx/ext',
  /** a build script's program, when its run is the step */
  program: '/rcbx/bin',
  /** rustc's incremental state, a cache mount of the engine's (never part of a result) */
  incremental: '/rcbx/inc',
} as const;

export interface HostRoots {
  /** cargo's working directory for workspace members (the workspace root); unset for registry/git crates */
  workspace: string | undefined;
  cargoHome: string;
  target: string;
  /** where rustc writes this unit's outputs on the host */
  outDir: string;
}

export class PathMap {
  /** longest host prefix first, so nested roots (a target dir inside the workspace) win */
  private readonly pairs: Array<[host: string, sandbox: string]>;

  readonly roots: HostRoots;

  constructor(roots: HostRoots) {
    // Normalised (no trailing slash, no `..`), so CARGO_HOME=/x/ matches like /x.
    this.roots = {
      workspace: roots.workspace === undefined ? undefined : resolve(roots.workspace),
      cargoHome: resolve(roots.cargoHome),
      target: resolve(roots.target),
      outDir: resolve(roots.outDir),
    };
    roots = this.roots;
    const pairs: Array<[string, string]> = [
      [roots.target, SANDBOX.target],
      [roots.cargoHome, SANDBOX.cargoHome],
    ];
    if (roots.workspace) pairs.push([roots.workspace, SANDBOX.workspace]);
    this.pairs = pairs.sort((a, b) => b[0].length - a[0].length);
  }

  /** Host absolute path → sandbox path, or undefined when it lies outside every known root. */
  toSandbox(hostAbs: string): string | undefined {
    for (const [host, sandbox] of this.pairs) {
      if (hostAbs === host) return sandbox;
      if (hostAbs.startsWith(host + '/')) return sandbox + hostAbs.slice(host.length);
    }
    return undefined;
  }

  /**
   * Every host path under a root in a text (a list of flags, a search path) given as its sandbox path: a
   * root matches only as whole path components, at the start of a word, after a separator, or after a
   * flag's letters (`-I/path`).
   */
  toSandboxText(text: string): string {
    let result = text;
    // Longest first: a target dir inside the workspace is replaced before the workspace is.
    for (const [host, sandbox] of this.pairs) {
      result = result.replace(new RegExp(`(?<=^|[\\s"':,;=(\\x1f]|(?:^|[\\s\\x1f])-[A-Za-z]+)${escapeRegExp(host)}(?=[/\\s"':,;=)\\x1f]|$)`, 'gm'), () => sandbox);
    }
    return result;
  }

  /** Rewrites every sandbox path in a text (dep-info, diagnostics) to its host path. */
  toHostText(text: string, escape: (s: string) => string = (s) => s): string {
    const table: Array<[string, string]> = [
      [SANDBOX.out, this.roots.outDir],
      [SANDBOX.target, this.roots.target],
      [SANDBOX.cargoHome, this.roots.cargoHome],
    ];
    if (this.roots.workspace) table.push([SANDBOX.workspace, this.roots.workspace]);
    let result = text;
    for (const [sandbox, host] of table) {
      // A root is matched only as a whole path component: `/rcbx/t/…` or `/rcbx/t` at a boundary.
      const replacement = escape(host);
      // A function, so `$&`-like sequences in a host path are inserted literally.
      result = result.replace(new RegExp(`${escapeRegExp(sandbox)}(?=[/\\s"':,;)]|$)`, 'gm'), () => replacement);
    }
    return result;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A path as it must appear inside a JSON string. */
export function jsonEscape(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}
