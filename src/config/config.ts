/**
 * Settings: one table (SETTINGS) says each setting's file key, environment variable, accepted values and
 * default. Values come in layers, each later one winning: the defaults, the user's file, the workspace's
 * `[workspace.metadata.rustcbuildx]`, a crate's `[package.metadata.rustcbuildx]` (per-crate keys only),
 * a named profile (`[profile.NAME]` of those files; `ci` when CI=true), then `RUSTCBUILDX_*` variables.
 * This module is pure: src/config/files.ts reads the files into layers.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export const RUNNERS = ['docker', 'docker-build', 'podman', 'none'] as const;
export type RunnerName = (typeof RUNNERS)[number];
export const LOG_LEVELS = ['off', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const BUILD_SCRIPT_MODES = ['host', 'sandbox'] as const;
export type BuildScriptMode = (typeof BUILD_SCRIPT_MODES)[number];
export const INCREMENTAL_MODES = ['auto', 'local', 'sandbox'] as const;
export type IncrementalMode = (typeof INCREMENTAL_MODES)[number];

export interface Config {
  /** undefined: pick the first engine that works (docker buildx, then `docker build`, then podman) */
  runner: RunnerName | undefined;
  /** base image chosen by the user; wins over the local toolchain image */
  baseImage: string | undefined;
  log: LogLevel;
  /** the docker / podman client binaries to call */
  dockerClient: string;
  podmanClient: string;
  /** extra environment variables the sandboxed rustc may see (names only; values come from the caller) */
  setEnvs: string[];
  /** hand builds to a long-lived broker holding one BuildKit connection (off: the CLI per unit) */
  broker: boolean;
  /** how long an idle broker waits for work before it exits */
  brokerIdleSeconds: number;
  /** where a unit cargo compiles incrementally is compiled again after an edit (see the table) */
  incremental: IncrementalMode;
  /** where build scripts run: in the engine like a compile, their results cached, or as cargo runs them */
  buildScripts: BuildScriptMode;
  /** shared result stores beside the local memo, tried in order */
  stores: StoreSpec[];
  /** crate-name globs whose results may be shared though private */
  share: string[];
  /** what the toolchain image holds beyond the toolchain and a C compiler */
  base: BaseExtras;
  /** the profile applied, if any */
  profile: string | undefined;
  /** per-crate settings, in the order they apply (later wins) */
  crates: CrateRule[];
  /** where each setting's value came from: `default`, a file and its table, or a variable */
  sources: Record<SettingKey, string>;
}

export interface BaseExtras {
  /** Debian packages installed into the image's rootfs */
  packages: string[];
  /** Dockerfile lines run on top (for what no package has) */
  dockerfile: string | undefined;
}

/**
 * A shared store of results: a directory (a CI cache dir, a network mount) or an OCI registry
 * repository. `writable`: results built here are offered to it (`ro:` in front makes it read-only).
 */
export interface StoreSpec {
  kind: 'dir' | 'oci';
  /** the directory, or `host[:port]/repository` */
  location: string;
  /** an `oci+http://` registry: plain HTTP though not on loopback */
  http: boolean;
  writable: boolean;
  /** as the setting spells it, for messages */
  text: string;
}

/** What may be set for one crate (`[crate.NAME]`, or the crate's own `[package.metadata.rustcbuildx]`). */
export interface CrateSettings {
  /** always compile this crate (and run its build script) with the local toolchain */
  local?: boolean;
  /** more variables this crate's compiles and build script are given */
  setEnvs?: string[];
  buildScripts?: BuildScriptMode;
}

export interface CrateRule {
  /** a package name or a glob (`acme-*`) */
  pattern: string;
  settings: CrateSettings;
  /** the file and table, for `env` and messages */
  source: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** A value a setting cannot take: `why` is said after the place (file and key, or the variable). */
class BadValue extends Error {}

type Raw = unknown;

/** Every setting's key in a config file (`base.packages` is `packages` in `[base]`). */
export const SETTING_KEYS = ['runner', 'base-image', 'log', 'docker', 'podman', 'set-envs', 'broker', 'broker-idle', 'incremental', 'build-scripts', 'cache', 'share', 'base.packages', 'base.dockerfile'] as const;
export type SettingKey = (typeof SETTING_KEYS)[number];

export interface SettingDef {
  key: SettingKey;
  env: string;
  /** the field of Config it sets */
  field: keyof Config;
  accepts: string;
  doc: string;
  /** the value as Config holds it; throws BadValue saying why not */
  parse(raw: Raw): unknown;
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const GLOB_RE = /^[A-Za-z0-9_*?-]+$/;
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]*$/;

function text(raw: Raw): string {
  if (typeof raw === 'string') return raw.trim();
  if (typeof raw === 'number' || typeof raw === 'boolean') return String(raw);
  throw new BadValue(`${JSON.stringify(raw)} is not a string`);
}

function oneOf<T extends string>(values: readonly T[], unsetOk = false) {
  return (raw: Raw): T | undefined => {
    const v = text(raw);
    if (v === '' && unsetOk) return undefined;
    if (!(values as readonly string[]).includes(v)) throw new BadValue(`"${v}" is not accepted`);
    return v as T;
  };
}

/** A list: a TOML array of strings, or one comma-separated string (what a variable holds). */
function list(raw: Raw, item: (s: string) => string | undefined = () => undefined): string[] {
  const items = Array.isArray(raw) ? raw.map((x) => text(x)) : text(raw).split(',').map((s) => s.trim());
  const out: string[] = [];
  for (const s of items.filter(Boolean)) {
    const bad = item(s);
    if (bad !== undefined) throw new BadValue(bad);
    out.push(s);
  }
  return out;
}

function onOff(raw: Raw): boolean {
  if (typeof raw === 'boolean') return raw;
  const v = text(raw);
  if (v === '' || v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  throw new BadValue(`"${v}" is not on or off`);
}

/** The settings, in the order `rustcbuildx doc` and `env` list them. */
export const SETTINGS: readonly SettingDef[] = [
  { key: 'runner', env: 'RUSTCBUILDX_RUNNER', field: 'runner', accepts: `${RUNNERS.join(', ')}; unset: the first that works`, doc: 'the engine: docker with buildx, `docker build` with BuildKit, podman, or none (the local rustc)', parse: oneOf(RUNNERS, true) },
  { key: 'base-image', env: 'RUSTCBUILDX_BASE_IMAGE', field: 'baseImage', accepts: 'an image reference holding exactly the local toolchain', doc: 'the image every sandboxed rustc runs in, instead of the local toolchain image `base build` makes', parse: (raw: Raw) => text(raw) || undefined },
  { key: 'log', env: 'RUSTCBUILDX_LOG', field: 'log', accepts: LOG_LEVELS.join(', '), doc: "debug: each unit's steps, Dockerfile and engine log in target/.rustcbuildx/log", parse: (raw: Raw) => oneOf(LOG_LEVELS, true)(raw) ?? 'off' },
  { key: 'docker', env: 'RUSTCBUILDX_DOCKER', field: 'dockerClient', accepts: 'a command on PATH or a path', doc: 'the docker client to call', parse: (raw: Raw) => text(raw) || 'docker' },
  { key: 'podman', env: 'RUSTCBUILDX_PODMAN', field: 'podmanClient', accepts: 'a command on PATH or a path', doc: 'the podman client to call', parse: (raw: Raw) => text(raw) || 'podman' },
  { key: 'set-envs', env: 'RUSTCBUILDX_SET_ENVS', field: 'setEnvs', accepts: 'variable names (A,B or ["A", "B"])', doc: 'variables of your environment every sandboxed step is given (their values become part of the keys)', parse: (raw: Raw) => list(raw, (s) => (NAME_RE.test(s) ? undefined : `"${s}" is not an environment variable name`)) },
  { key: 'broker', env: 'RUSTCBUILDX_BROKER', field: 'broker', accepts: 'on, off (or true, false)', doc: 'a long-lived process holding one BuildKit connection for every unit; off: the CLI per unit', parse: onOff },
  { key: 'broker-idle', env: 'RUSTCBUILDX_BROKER_IDLE', field: 'brokerIdleSeconds', accepts: 'seconds, 1 to 9999999', doc: 'how long an idle broker waits for work before it exits', parse: (raw: Raw) => {
    const v = text(raw) || '600';
    if (!/^[1-9][0-9]{0,6}$/.test(v)) throw new BadValue(`"${v}" is not a number of seconds`);
    return Number(v);
  } },
  { key: 'incremental', env: 'RUSTCBUILDX_INCREMENTAL', field: 'incremental', accepts: INCREMENTAL_MODES.join(', '), doc: "where an edited crate is compiled again: local (the local rustc with cargo's incremental state), sandbox, or auto (local when the engine runs on this machine)", parse: (raw: Raw) => oneOf(INCREMENTAL_MODES, true)(raw) ?? 'auto' },
  { key: 'build-scripts', env: 'RUSTCBUILDX_BUILD_SCRIPTS', field: 'buildScripts', accepts: BUILD_SCRIPT_MODES.join(', '), doc: 'where build scripts run: in the sandbox, cached like compiles, or on the host as cargo runs them', parse: (raw: Raw) => oneOf(BUILD_SCRIPT_MODES, true)(raw) ?? 'sandbox' },
  { key: 'cache', env: 'RUSTCBUILDX_CACHE', field: 'stores', accepts: '[ro:]dir:/PATH, [ro:]oci://HOST[:PORT]/REPO, oci+http://… (a list)', doc: 'shared result stores beside the local memo, tried in order; ro: makes one read-only', parse: (raw: Raw) => parseStoreList(list(raw)) },
  { key: 'share', env: 'RUSTCBUILDX_SHARE', field: 'share', accepts: 'crate names and globs (my-crate, acme-*)', doc: 'private crates whose results may be shared with the stores nonetheless', parse: (raw: Raw) => list(raw, (s) => (GLOB_RE.test(s) ? undefined : `"${s}" is not a crate name or glob (letters, digits, _, -, * and ?)`)) },
  { key: 'base.packages', env: 'RUSTCBUILDX_BASE_PACKAGES', field: 'base', accepts: 'Debian package names (["libssl-dev", "pkg-config"])', doc: 'packages the toolchain image holds beyond gcc and libc: system libraries and tools your builds link or run (`base build` makes the image; its tag and every key include them)', parse: (raw: Raw) => ({ packages: list(raw, (s) => (PACKAGE_RE.test(s) ? undefined : `"${s}" is not a Debian package name`)).sort(), dockerfile: undefined }) },
  { key: 'base.dockerfile', env: 'RUSTCBUILDX_BASE_DOCKERFILE', field: 'base', accepts: 'Dockerfile lines (RUN …)', doc: 'Dockerfile lines `base build` runs on top of the toolchain image, for what no package has (network allowed there)', parse: (raw: Raw) => ({ packages: [], dockerfile: text(raw) || undefined }) },
];

/** Per-crate keys, in a `[crate.NAME]` table or a crate's own `[package.metadata.rustcbuildx]`. */
export const CRATE_SETTINGS = [
  { key: 'local', accepts: 'true, false', doc: 'always compile this crate, and run its build script, with the local toolchain' },
  { key: 'set-envs', accepts: 'variable names', doc: "more variables this crate's compiles and build script are given (beside set-envs)" },
  { key: 'build-scripts', accepts: BUILD_SCRIPT_MODES.join(', '), doc: "where this crate's build script runs" },
] as const;

/** Settings that only a variable sets: they say where state lives, or are chosen per run. */
export const ENV_ONLY = [
  { env: 'RUSTCBUILDX_PROFILE', doc: 'the profile to apply (`[profile.NAME]`); with CI=true, `ci` when one is defined' },
  { env: 'RUSTCBUILDX_CONFIG', doc: 'the user config file (default: $XDG_CONFIG_HOME/rustcbuildx/config.toml, else ~/.config/rustcbuildx/config.toml)' },
  { env: 'RUSTCBUILDX_CACHE_DIR', doc: "the memo's place (default: $XDG_CACHE_HOME/rustcbuildx, else ~/.cache/rustcbuildx)" },
  { env: 'RUSTCBUILDX_LOCAL_CACHE', doc: 'off: no local memo, every unit asks the engine' },
  { env: 'RUSTCBUILDX_SSH_MUX', doc: 'off: with DOCKER_HOST=ssh://…, no shared ssh connection between docker calls' },
] as const;

/** One level of settings: what one file's table (or the environment) sets, already checked. */
export interface Layer {
  /** the file and table, or `environment` */
  source: string;
  values: Partial<Record<SettingKey, unknown>>;
  crates: CrateRule[];
  /** `[profile.NAME]` tables of this file, as layers of their own */
  profiles: Record<string, Layer>;
}

const byKey = new Map<string, SettingDef>(SETTINGS.map((s) => [s.key, s]));

/**
 * Checks one table of a config file (its top level, or a profile) into a layer. `where` names the file
 * and table; every error names the key and the values accepted.
 */
export function layerOf(table: Record<string, unknown>, where: string, opts: { profiles: boolean }): Layer {
  const layer: Layer = { source: where, values: {}, crates: [], profiles: {} };
  const fail = (key: string, why: string, accepts?: string): never => {
    throw new ConfigError(`${where}: ${key}: ${why}${accepts ? `; accepted: ${accepts}` : ''}`);
  };
  for (const [key, value] of Object.entries(table)) {
    if (key === 'base' || key === 'crate' || (key === 'profile' && opts.profiles)) {
      if (!isTable(value)) fail(key, `must be a table ([${key}${key === 'base' ? '' : '.NAME'}])`);
      const sub = value as Record<string, unknown>;
      if (key === 'base') {
        for (const [k, v] of Object.entries(sub)) {
          const def = byKey.get(`base.${k}`);
          if (!def) fail(`base.${k}`, 'unknown key', 'base.packages, base.dockerfile');
          setValue(layer, def!, v, fail);
        }
      } else if (key === 'crate') {
        for (const [pattern, settings] of Object.entries(sub)) {
          if (!GLOB_RE.test(pattern)) fail(`crate.${pattern}`, 'is not a crate name or glob (letters, digits, _, -, * and ?)');
          if (!isTable(settings)) fail(`crate.${pattern}`, 'must be a table of per-crate settings', CRATE_SETTINGS.map((c) => c.key).join(', '));
          layer.crates.push({ pattern, settings: crateSettingsOf(settings as Record<string, unknown>, `${where}: crate.${pattern}`), source: `${where} [crate.${pattern}]` });
        }
      } else {
        for (const [name, profile] of Object.entries(sub)) {
          if (!/^[A-Za-z0-9_-]+$/.test(name)) fail(`profile.${name}`, 'is not a profile name (letters, digits, _ and -)');
          if (!isTable(profile)) fail(`profile.${name}`, 'must be a table of settings');
          layer.profiles[name] = layerOf(profile as Record<string, unknown>, `${where} [profile.${name}]`, { profiles: false });
        }
      }
      continue;
    }
    const def = byKey.get(key);
    if (!def || def.key.startsWith('base.')) fail(key, 'unknown key', [...SETTINGS.filter((s) => !s.key.startsWith('base.')).map((s) => s.key), '[base]', '[crate.NAME]', ...(opts.profiles ? ['[profile.NAME]'] : [])].join(', '));
    setValue(layer, def!, value, fail);
  }
  return layer;
}

function setValue(layer: Layer, def: SettingDef, value: unknown, fail: (key: string, why: string, accepts?: string) => never): void {
  try {
    def.parse(value);
  } catch (err) {
    if (err instanceof BadValue || err instanceof ConfigError) fail(def.key, err.message, def.accepts);
    throw err;
  }
  layer.values[def.key] = value;
}

/** The per-crate keys of one table; `where` names the file and table. */
export function crateSettingsOf(table: Record<string, unknown>, where: string): CrateSettings {
  const out: CrateSettings = {};
  const accepts = (key: string) => CRATE_SETTINGS.find((c) => c.key === key)?.accepts;
  const fail = (key: string, why: string): never => {
    throw new ConfigError(`${where}: ${key}: ${why}${accepts(key) ? `; accepted: ${accepts(key)}` : ''}`);
  };
  for (const [key, value] of Object.entries(table)) {
    try {
      if (key === 'local') {
        if (typeof value !== 'boolean') throw new BadValue(`${JSON.stringify(value)} is not true or false`);
        out.local = value;
      } else if (key === 'set-envs') out.setEnvs = byKey.get('set-envs')!.parse(value) as string[];
      else if (key === 'build-scripts') out.buildScripts = (oneOf(BUILD_SCRIPT_MODES)(value) as BuildScriptMode);
      else throw new ConfigError(`${where}: ${key}: unknown key; accepted keys: ${CRATE_SETTINGS.map((c) => c.key).join(', ')}`);
    } catch (err) {
      if (err instanceof BadValue) fail(key, err.message);
      throw err;
    }
  }
  return out;
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** The environment as a layer: `RUSTCBUILDX_X=value`, a blank value counting as unset. */
export function envLayer(env: Record<string, string | undefined>): Layer {
  const layer: Layer = { source: 'environment', values: {}, crates: [], profiles: {} };
  for (const def of SETTINGS) {
    const value = env[def.env];
    // blank, or a list of nothing (` , `): unset
    if (value === undefined || value.replace(/[\s,]/g, '') === '') continue;
    try {
      def.parse(value);
    } catch (err) {
      if (err instanceof BadValue || err instanceof ConfigError) throw new ConfigError(`${def.env}=${value.trim()}: ${err.message}; accepted: ${def.accepts}`);
      throw err;
    }
    layer.values[def.key] = value;
  }
  return layer;
}

/**
 * The settings from file layers (lowest first) and the environment. The profile is RUSTCBUILDX_PROFILE,
 * else `ci` when CI=true and a file defines it; its tables apply above every file, below the environment.
 */
export function resolveConfig(files: readonly Layer[], env: Record<string, string | undefined>): Config {
  const named = env.RUSTCBUILDX_PROFILE?.trim() || undefined;
  const wanted = named ?? (env.CI === 'true' ? 'ci' : undefined);
  const profileLayers = wanted ? files.flatMap((l) => (l.profiles[wanted] ? [l.profiles[wanted]] : [])) : [];
  if (named && profileLayers.length === 0) {
    const known = [...new Set(files.flatMap((l) => Object.keys(l.profiles)))];
    throw new ConfigError(`RUSTCBUILDX_PROFILE=${named}: no [profile.${named}] in ${files.length ? files.map((f) => f.source).join(' or ') : 'any config file'}${known.length ? `; defined: ${known.join(', ')}` : ''}`);
  }
  const layers = [...files, ...profileLayers, envLayer(env)];
  const cfg = defaults();
  for (const layer of layers) {
    for (const def of SETTINGS) {
      if (!Object.hasOwn(layer.values, def.key)) continue;
      const value = def.parse(layer.values[def.key]);
      if (def.key === 'base.packages') cfg.base = { ...cfg.base, packages: (value as BaseExtras).packages };
      else if (def.key === 'base.dockerfile') cfg.base = { ...cfg.base, dockerfile: (value as BaseExtras).dockerfile };
      else (cfg as unknown as Record<string, unknown>)[def.field] = value;
      cfg.sources[def.key] = layer.source === 'environment' ? `environment ${def.env}` : layer.source;
    }
    cfg.crates.push(...layer.crates);
  }
  cfg.profile = profileLayers.length ? wanted : undefined;
  return cfg;
}

function defaults(): Config {
  const cfg = {
    base: { packages: [], dockerfile: undefined },
    profile: undefined,
    crates: [],
    sources: Object.fromEntries(SETTINGS.map((s) => [s.key, 'default'])) as Record<SettingKey, string>,
  } as unknown as Config;
  for (const def of SETTINGS) if (!def.key.startsWith('base.')) (cfg as unknown as Record<string, unknown>)[def.field] = def.parse('');
  return cfg;
}

/** The settings from the environment alone (no file read): for tests, and what a file-less setup gives. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  return resolveConfig([], env);
}

/**
 * One crate's settings: the rules matching its package name, in order, then its own manifest's table
 * (`ownLayer`, which ranks above the workspace and below a profile), an environment variable beating both.
 */
export function settingsForCrate(cfg: Config, pkg: string, own?: CrateRule): { settings: CrateSettings; sources: string[] } {
  const profiled = (r: CrateRule) => r.source.includes('[profile.');
  const matching = cfg.crates.filter((r) => globMatch(r.pattern, pkg));
  const ordered = [...matching.filter((r) => !profiled(r)), ...(own ? [own] : []), ...matching.filter(profiled)];
  const settings: CrateSettings = {};
  for (const r of ordered) Object.assign(settings, r.settings);
  if (cfg.sources['build-scripts'].startsWith('environment')) delete settings.buildScripts;
  return { settings, sources: ordered.map((r) => r.source) };
}

/** `*` any run of characters, `?` one: crate-name globs (RUSTCBUILDX_SHARE, [crate.NAME]). */
export function globMatch(glob: string, name: string): boolean {
  const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*').replaceAll('?', '.')}$`);
  return re.test(name);
}

const STORE_USAGE = 'a comma-separated list of dir:/ABSOLUTE/PATH and oci://HOST[:PORT]/REPOSITORY (oci+http:// for a registry without TLS), each optionally prefixed by ro: (read-only)';

/** `RUSTCBUILDX_CACHE`: e.g. `ro:oci://registry.example.com/team/rcbx,dir:/ci/cache`. */
export function parseStores(value: string): StoreSpec[] {
  return parseStoreList(value.split(',').map((s) => s.trim()).filter(Boolean));
}

function parseStoreList(items: readonly string[]): StoreSpec[] {
  const specs: StoreSpec[] = [];
  for (const item of items) {
    const writable = !item.startsWith('ro:');
    const rest = item.replace(/^r[ow]:/, '');
    const bad = (why: string) => new ConfigError(`"${item}" ${why}; the setting is ${STORE_USAGE}`);
    if (rest.startsWith('dir:')) {
      const location = rest.slice(4);
      if (!location.startsWith('/')) throw bad('is not an absolute directory');
      specs.push({ kind: 'dir', location: location.replace(/(.)\/+$/, '$1'), http: false, writable, text: item });
      continue;
    }
    const oci = /^oci(\+http)?:\/\/([^/\s]+)\/([^\s]+)$/.exec(rest);
    if (oci) {
      const [, http, host, repository] = oci as unknown as [string, string | undefined, string, string];
      const port = /:(\d+)$/.exec(host)?.[1];
      if (!/^([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/.test(host) || Number(port ?? 0) > 65535) {
        throw bad(`names the host "${host}", which is not HOST or HOST:PORT`);
      }
      if (!/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(repository)) throw bad(`names the repository "${repository}", which is not a valid repository name (lowercase letters, digits, . _ - and /)`);
      specs.push({ kind: 'oci', location: `${host}/${repository}`, http: http !== undefined, writable, text: item });
      continue;
    }
    throw bad('is neither a dir: nor an oci:// store');
  }
  return specs;
}

/** RUSTCBUILDX_CACHE_DIR, else `rustcbuildx` in the user's cache dir. */
export function cacheBaseDir(env: Record<string, string | undefined> = process.env): string {
  return env.RUSTCBUILDX_CACHE_DIR || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'rustcbuildx');
}
