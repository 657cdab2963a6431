/**
 * The rustc command line as a typed model. One table (FLAGS) knows every flag of rustc 1.95, in the
 * spirit of sccache's src/compiler/rust.rs; the lexer follows rustc's getopts rules exactly, so what
 * we model is what rustc sees. Anything the table does not know throws, and the caller runs rustc
 * locally: guessing at an unknown flag could make a cached result wrong.
 */

export type CrateType = 'bin' | 'lib' | 'rlib' | 'dylib' | 'cdylib' | 'staticlib' | 'proc-macro';

/** `--extern noprelude,priv:name=path` → modifiers ['noprelude', 'priv']. */
export interface Extern {
  name: string;
  path: string | undefined;
  modifiers: string[];
}

export type LibKind = 'dependency' | 'crate' | 'native' | 'framework' | 'all';

/** `-L dependency=/x` → kind 'dependency'; `-L /x` → kind undefined (rustc treats it as 'all'). */
export interface LibSearchPath {
  kind: LibKind | undefined;
  path: string;
}

/** One option or positional as it appeared, in order: enough to render back an equivalent argv. */
export interface ArgToken {
  /** Canonical name ('-C' for `--codegen`, '-A' for `--allow`, '--' for the end-of-options marker); undefined for the positional input. */
  flag: string | undefined;
  value: string | undefined;
  /** 'separate': `-C x` / `--cfg x`; 'joined-eq': `--cfg=x`; 'joined': `-Cx`; 'bare': a switch or the positional. */
  spelling: 'separate' | 'joined-eq' | 'joined' | 'bare';
}

export interface RustcCall {
  /** The source of truth for rendering; every other field is derived from it. */
  tokens: ArgToken[];
  crateName: string | undefined;
  crateTypes: CrateType[];
  edition: string | undefined;
  /** '-' means stdin. */
  input: string | undefined;
  /** Comma items of every --emit: 'link', or 'link=path' when a path was given. */
  emit: string[];
  outDir: string | undefined;
  /** -o */
  outFile: string | undefined;
  /** Last `-C metadata=` (rustc hashes all of them; `codegen` has every one). */
  metadata: string | undefined;
  extraFilename: string | undefined;
  incremental: string | undefined;
  /** Last `-C target-cpu=` (the one rustc uses). */
  targetCpu: string | undefined;
  /** Every `-C target-feature=` value in order (rustc applies them all, left to right). */
  targetFeatures: string[];
  /** Every -C key[=value] in order; keys normalised to dashes (rustc also accepts `opt_level`). */
  codegen: Array<[string, string | undefined]>;
  externs: Extern[];
  libSearchPaths: LibSearchPath[];
  /** -l values as given. */
  libs: string[];
  cfgs: string[];
  checkCfgs: string[];
  target: string | undefined;
  /** Last --cap-lints: unlike most single-valued options rustc accepts it repeatedly. */
  capLints: string | undefined;
  errorFormat: string | undefined;
  /** Comma items of every --json, as rustc splits them. */
  json: string[];
  /** --print values as given, including any `=path` suffix. */
  prints: string[];
  test: boolean;
  sysroot: string | undefined;
  remapPathPrefixes: Array<[string, string]>;
  /** -Z values. */
  unstable: string[];
  /** [level, lint] with level one of allow/warn/deny/forbid/force-warn. */
  lints: Array<[level: string, lint: string]>;
}

export type CallKind = 'compile' | 'probe';

type Model = Omit<RustcCall, 'tokens'>;
type PathFn = (path: string) => string;

/** Base of every error here: the caller's cue to run rustc itself, uncached. */
export class RustcArgsError extends Error {
  override name = 'RustcArgsError';
}

export class UnknownRustcFlag extends RustcArgsError {
  override name = 'UnknownRustcFlag';
  constructor(
    readonly flag: string,
    detail?: string,
  ) {
    super(
      `rustcbuildx does not know the rustc flag \`${flag}\`${detail === undefined ? '' : ` (${detail})`}; ` +
        'running rustc locally without caching. If rustc accepts it, add it to the table in src/rustc/args.ts.',
    );
  }
}

/** A command line rustc itself would reject (missing value, repeated single option, two inputs…). */
export class InvalidRustcArgs extends RustcArgsError {
  override name = 'InvalidRustcArgs';
}

/** An `@path` argument was given but parseRustcArgs got no reader to expand it with. */
export class MissingArgfileReader extends RustcArgsError {
  override name = 'MissingArgfileReader';
  constructor(readonly path: string) {
    super(`rustc argument file \`@${path}\` needs an argfile reader to expand it`);
  }
}

interface SwitchSpec {
  readonly kind: 'switch';
  /** Canonical spelling: the short form when there is one, as rustc's help lists it. */
  readonly flag: string;
  readonly alias?: string;
  /** getopts rejects a second occurrence of an option not declared multi. */
  readonly repeatable: boolean;
  readonly apply?: (m: Model) => void;
}

interface ValueSpec {
  readonly kind: 'value';
  readonly flag: string;
  readonly alias?: string;
  readonly repeatable: boolean;
  /** Folds one occurrence into the model; throws for a value the model cannot represent. */
  readonly apply?: (m: Model, value: string) => void;
  /** Rewrites the path-valued parts of the value. */
  readonly mapPaths?: (value: string, fn: PathFn) => string;
}

type FlagSpec = SwitchSpec | ValueSpec;

const CRATE_TYPES: ReadonlySet<string> = new Set<CrateType>(['bin', 'lib', 'rlib', 'dylib', 'cdylib', 'staticlib', 'proc-macro']);
const LIB_KINDS: ReadonlySet<string> = new Set<LibKind>(['dependency', 'crate', 'native', 'framework', 'all']);
const EXTERN_MODIFIERS: ReadonlySet<string> = new Set(['noprelude', 'priv', 'force', 'nounused']);
const EMIT_KINDS: ReadonlySet<string> = new Set([
  'asm', 'llvm-bc', 'dep-info', 'link', 'llvm-ir', 'metadata', 'mir', 'obj', 'thin-link-bitcode',
]);
// From `rustc --help -v`, unstable ones included: rustc gates those itself.
const PRINT_KINDS: ReadonlySet<string> = new Set([
  'all-target-specs-json', 'backend-has-zstd', 'calling-conventions', 'cfg', 'check-cfg', 'code-models',
  'crate-name', 'crate-root-lint-levels', 'deployment-target', 'file-names', 'host-tuple', 'link-args',
  'native-static-libs', 'relocation-models', 'split-debuginfo', 'stack-protector-strategies',
  'supported-crate-types', 'sysroot', 'target-cpus', 'target-features', 'target-libdir', 'target-list',
  'target-spec-json', 'target-spec-json-schema', 'tls-models',
]);
/** The only print requests that let the compile go on (they report on the link). */
const COMPILING_PRINTS: ReadonlySet<string> = new Set(['link-args', 'native-static-libs']);
// From `rustc -C help`.
const CODEGEN_KEYS: ReadonlySet<string> = new Set([
  'ar', 'code-model', 'codegen-units', 'collapse-macro-debuginfo', 'control-flow-guard', 'debug-assertions',
  'debuginfo', 'default-linker-libraries', 'dlltool', 'dwarf-version', 'embed-bitcode', 'extra-filename',
  'force-frame-pointers', 'force-unwind-tables', 'help', 'incremental', 'inline-threshold',
  'instrument-coverage', 'jump-tables', 'link-arg', 'link-args', 'link-dead-code', 'link-self-contained',
  'linker', 'linker-features', 'linker-flavor', 'linker-plugin-lto', 'llvm-args', 'lto', 'metadata',
  'no-prepopulate-passes', 'no-redzone', 'no-stack-check', 'no-vectorize-loops', 'no-vectorize-slp',
  'opt-level', 'overflow-checks', 'panic', 'passes', 'prefer-dynamic', 'profile-generate', 'profile-use',
  'relocation-model', 'relro-level', 'remark', 'rpath', 'save-temps', 'soft-float', 'split-debuginfo',
  'strip', 'symbol-mangling-version', 'target-cpu', 'target-feature', 'unsafe-allow-abi-mismatch',
]);
/** Codegen options whose value is a file, directory or program path. */
const CODEGEN_PATH_KEYS: ReadonlySet<string> = new Set(['incremental', 'linker', 'dlltool', 'profile-generate', 'profile-use']);

/** Splits at the first '=': `key=value` → ['key', 'value'], `key` → ['key', undefined]. */
function splitEq(s: string): [string, string | undefined] {
  const eq = s.indexOf('=');
  return eq < 0 ? [s, undefined] : [s.slice(0, eq), s.slice(eq + 1)];
}

/** Maps the part after the first '=', if any: the shape of `--print cfg=path`, `--emit link=path`, `--extern a=path`. */
function mapAfterEq(value: string, fn: PathFn): string {
  const [head, path] = splitEq(value);
  return path === undefined ? value : `${head}=${fn(path)}`;
}

const codegenKey = (key: string): string => key.replaceAll('_', '-');
/** The normalised key of a `-C` token; undefined for any other token. */
const codegenKeyOf = (t: ArgToken): string | undefined => (t.flag === '-C' && t.value !== undefined ? codegenKey(splitEq(t.value)[0]) : undefined);

function parseCodegen(value: string): [string, string | undefined] {
  const [raw, v] = splitEq(value);
  const key = codegenKey(raw);
  if (!CODEGEN_KEYS.has(key)) throw new UnknownRustcFlag(`-C ${raw}`, 'unknown codegen option');
  return [key, v];
}

function parseExtern(value: string): Extern {
  const [spec, path] = splitEq(value);
  const colon = spec.indexOf(':');
  const modifiers = colon < 0 ? [] : spec.slice(0, colon).split(',');
  for (const mod of modifiers) {
    if (!EXTERN_MODIFIERS.has(mod)) throw new UnknownRustcFlag(`--extern ${mod}:`, 'unknown --extern modifier');
  }
  return { name: spec.slice(colon + 1), path, modifiers };
}

/**
 * A native library as `-l` (or a build script's `rustc-link-lib`) names it: `[KIND[:MODIFIERS]=]NAME[:RENAME]`,
 * its kind `dylib` when unsaid; undefined for a value of another shape.
 */
export function parseNativeLib(value: string): { kind: string; name: string } | undefined {
  const m = /^(?:(\w+)(?::[+-][\w,+-]+)?=)?([^\s:=]+)(?::\S*)?$/.exec(value.trim());
  return m ? { kind: m[1] ?? 'dylib', name: m[2]! } : undefined;
}

function parseLibSearchPath(value: string): LibSearchPath {
  const [head, rest] = splitEq(value);
  // rustc only strips a known kind; `-L foo=bar` is the path "foo=bar".
  const lib: LibSearchPath = rest !== undefined && LIB_KINDS.has(head) ? { kind: head as LibKind, path: rest } : { kind: undefined, path: value };
  if (lib.path === '') throw new InvalidRustcArgs(`empty search path given via \`-L ${value}\``);
  return lib;
}

function mapLibSearchPath(value: string, fn: PathFn): string {
  const lib = parseLibSearchPath(value);
  return lib.kind === undefined ? fn(value) : `${lib.kind}=${fn(lib.path)}`;
}

function parseCrateTypes(value: string): CrateType[] {
  return value.split(',').map((t) => {
    if (!CRATE_TYPES.has(t)) throw new UnknownRustcFlag(`--crate-type ${t}`, 'unknown crate type');
    return t as CrateType;
  });
}

function parseEmit(value: string): string[] {
  const items = value.split(',');
  for (const item of items) {
    const [kind] = splitEq(item);
    if (!EMIT_KINDS.has(kind)) throw new UnknownRustcFlag(`--emit ${kind}`, 'unknown output type');
  }
  return items;
}

function checkPrint(value: string): string {
  const [kind] = splitEq(value);
  if (!PRINT_KINDS.has(kind)) throw new UnknownRustcFlag(`--print ${kind}`, 'unknown print request');
  return value;
}

function parseRemap(value: string): [string, string] {
  // rustc splits at the last '=', so FROM may contain '=' but TO may not.
  const eq = value.lastIndexOf('=');
  if (eq < 0) throw new InvalidRustcArgs(`--remap-path-prefix must contain '=' between FROM and TO (got \`${value}\`)`);
  return [value.slice(0, eq), value.slice(eq + 1)];
}

function lint(flag: string, alias: string | undefined, level: string): ValueSpec {
  return { kind: 'value', flag, alias, repeatable: true, apply: (m, v) => m.lints.push([level, v]) };
}

/** Every flag of rustc 1.95 (`rustc --help -v`, plus the nightly-only `-Z` and `--env-set`). */
const FLAGS: readonly FlagSpec[] = [
  { kind: 'switch', flag: '-h', alias: '--help', repeatable: false },
  { kind: 'value', flag: '--cfg', repeatable: true, apply: (m, v) => m.cfgs.push(v) },
  { kind: 'value', flag: '--check-cfg', repeatable: true, apply: (m, v) => m.checkCfgs.push(v) },
  {
    kind: 'value', flag: '-L', repeatable: true,
    apply: (m, v) => m.libSearchPaths.push(parseLibSearchPath(v)),
    mapPaths: mapLibSearchPath,
  },
  { kind: 'value', flag: '-l', repeatable: true, apply: (m, v) => m.libs.push(v) },
  { kind: 'value', flag: '--crate-type', repeatable: true, apply: (m, v) => m.crateTypes.push(...parseCrateTypes(v)) },
  { kind: 'value', flag: '--crate-name', repeatable: false, apply: (m, v) => { m.crateName = v; } },
  { kind: 'value', flag: '--edition', repeatable: false, apply: (m, v) => { m.edition = v; } },
  {
    kind: 'value', flag: '--emit', repeatable: true,
    apply: (m, v) => m.emit.push(...parseEmit(v)),
    mapPaths: (v, fn) => v.split(',').map((item) => mapAfterEq(item, fn)).join(','),
  },
  { kind: 'value', flag: '--print', repeatable: true, apply: (m, v) => m.prints.push(checkPrint(v)), mapPaths: mapAfterEq },
  { kind: 'switch', flag: '-g', repeatable: true },
  { kind: 'switch', flag: '-O', repeatable: true },
  { kind: 'value', flag: '-o', repeatable: false, apply: (m, v) => { m.outFile = v; }, mapPaths: (v, fn) => fn(v) },
  { kind: 'value', flag: '--out-dir', repeatable: false, apply: (m, v) => { m.outDir = v; }, mapPaths: (v, fn) => fn(v) },
  { kind: 'value', flag: '--explain', repeatable: false },
  { kind: 'switch', flag: '--test', repeatable: false, apply: (m) => { m.test = true; } },
  {
    kind: 'value', flag: '--target', repeatable: false,
    apply: (m, v) => { m.target = v; },
    // rustc reads a target ending in .json as a path to a target spec file.
    mapPaths: (v, fn) => (v.endsWith('.json') ? fn(v) : v),
  },
  lint('-A', '--allow', 'allow'),
  lint('-W', '--warn', 'warn'),
  lint('--force-warn', undefined, 'force-warn'),
  lint('-D', '--deny', 'deny'),
  lint('-F', '--forbid', 'forbid'),
  { kind: 'value', flag: '--cap-lints', repeatable: true, apply: (m, v) => { m.capLints = v; } },
  {
    kind: 'value', flag: '-C', alias: '--codegen', repeatable: true,
    apply: (m, v) => {
      const entry = parseCodegen(v);
      m.codegen.push(entry);
      const [key, value] = entry;
      if (key === 'metadata') m.metadata = value;
      else if (key === 'extra-filename') m.extraFilename = value;
      else if (key === 'incremental') m.incremental = value;
      else if (key === 'target-cpu') m.targetCpu = value;
      else if (key === 'target-feature' && value !== undefined) m.targetFeatures.push(value);
    },
    mapPaths: (v, fn) => (CODEGEN_PATH_KEYS.has(parseCodegen(v)[0]) ? mapAfterEq(v, fn) : v),
  },
  { kind: 'switch', flag: '-V', alias: '--version', repeatable: false },
  { kind: 'switch', flag: '-v', alias: '--verbose', repeatable: false },
  { kind: 'value', flag: '--extern', repeatable: true, apply: (m, v) => m.externs.push(parseExtern(v)), mapPaths: mapAfterEq },
  { kind: 'value', flag: '--sysroot', repeatable: false, apply: (m, v) => { m.sysroot = v; }, mapPaths: (v, fn) => fn(v) },
  { kind: 'value', flag: '-Z', repeatable: true, apply: (m, v) => m.unstable.push(v) },
  { kind: 'value', flag: '--error-format', repeatable: false, apply: (m, v) => { m.errorFormat = v; } },
  { kind: 'value', flag: '--json', repeatable: true, apply: (m, v) => m.json.push(...v.split(',')) },
  { kind: 'value', flag: '--color', repeatable: false },
  { kind: 'value', flag: '--diagnostic-width', repeatable: false },
  { kind: 'value', flag: '--remap-path-prefix', repeatable: true, apply: (m, v) => m.remapPathPrefixes.push(parseRemap(v)) },
  { kind: 'value', flag: '--remap-path-scope', repeatable: false },
  { kind: 'value', flag: '--env-set', repeatable: true },
];

const BY_FLAG = new Map<string, FlagSpec>(FLAGS.map((s) => [s.flag, s]));
const BY_SHORT = new Map<string, FlagSpec>();
const BY_LONG = new Map<string, FlagSpec>();
for (const spec of FLAGS) {
  for (const name of [spec.flag, spec.alias]) {
    if (name?.startsWith('--')) BY_LONG.set(name.slice(2), spec);
    else if (name !== undefined) BY_SHORT.set(name.slice(1), spec);
  }
}

/** getopts reads a one-letter long name as the short option: rustc takes `--o x` and `--C=opt-level=1`. */
const lookupLong = (name: string): FlagSpec | undefined => (name.length === 1 ? BY_SHORT.get(name) : BY_LONG.get(name));

/** The `--name=` spelling of a flag; a short-only flag uses getopts' one-letter long form. */
const longSpelling = (spec: FlagSpec): string => spec.alias ?? (spec.flag.startsWith('--') ? spec.flag : `-${spec.flag}`);

const positional = (value: string): ArgToken => ({ flag: undefined, value, spelling: 'bare' });

/**
 * getopts' lexing as rustc configures it: options and the input may interleave, `--` ends options,
 * `-` is the stdin input, a value-taking option consumes the next argument whatever it looks like,
 * and short switches group (`-vV`, `-gCopt-level=1`). Strict mode throws on anything unknown or
 * malformed; lenient mode (for classification) skips it.
 */
function* lex(args: readonly string[], strict: boolean): Generator<ArgToken> {
  let i = 0;
  const take = (): string | undefined => args[i++];
  const separate = (spec: FlagSpec, value: string | undefined): ArgToken[] => {
    if (value !== undefined) return [{ flag: spec.flag, value, spelling: 'separate' }];
    if (strict) throw new InvalidRustcArgs(`argument to rustc option \`${spec.flag}\` missing`);
    return [];
  };
  for (let arg = take(); arg !== undefined; arg = take()) {
    if (arg === '--') {
      yield { flag: '--', value: undefined, spelling: 'bare' };
      for (let free = take(); free !== undefined; free = take()) yield positional(free);
    } else if (arg.startsWith('--')) {
      const [name, value] = splitEq(arg.slice(2));
      const spec = lookupLong(name);
      if (spec === undefined) {
        if (strict) throw new UnknownRustcFlag(`--${name}`);
      } else if (spec.kind === 'switch') {
        if (value === undefined) yield { flag: spec.flag, value: undefined, spelling: 'bare' };
        else if (strict) throw new InvalidRustcArgs(`rustc option \`${spec.flag}\` takes no value (got \`${arg}\`)`);
      } else if (value !== undefined) {
        yield { flag: spec.flag, value, spelling: 'joined-eq' };
      } else {
        yield* separate(spec, take());
      }
    } else if (arg.length > 1 && arg.startsWith('-')) {
      for (let j = 1; j < arg.length; j++) {
        const spec = BY_SHORT.get(arg.charAt(j));
        if (spec === undefined) {
          if (strict) throw new UnknownRustcFlag(`-${arg.charAt(j)}`, arg.length > 2 ? `in \`${arg}\`` : undefined);
        } else if (spec.kind === 'switch') {
          yield { flag: spec.flag, value: undefined, spelling: 'bare' };
        } else {
          // A value-taking letter ends the group: the rest of the word, or else the next argument, is its value.
          if (j + 1 < arg.length) yield { flag: spec.flag, value: arg.slice(j + 1), spelling: 'joined' };
          else yield* separate(spec, take());
          break;
        }
      }
    } else {
      yield positional(arg);
    }
  }
}

/** rustc's `@path` expansion: one argument per line (`str::lines`), not recursive, done before option parsing. */
function expandArgfiles(argv: readonly string[], readArgfile: ((path: string) => string) | undefined): string[] {
  const out: string[] = [];
  for (const arg of argv) {
    if (!arg.startsWith('@')) {
      out.push(arg);
      continue;
    }
    // Shell-quoted argfiles are a nightly feature with different splitting rules.
    if (arg.startsWith('@shell-argfile:')) throw new UnknownRustcFlag('@shell-argfile:', 'shell-quoted argument files are not modelled');
    const path = arg.slice(1);
    if (readArgfile === undefined) throw new MissingArgfileReader(path);
    const lines = readArgfile(path).split('\n');
    const last = lines.pop();
    out.push(...lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l)));
    // A final line ending does not start another argument.
    if (last !== undefined && last !== '') out.push(last);
  }
  return out;
}

function derive(tokens: readonly ArgToken[]): Model {
  const m: Model = {
    crateName: undefined, crateTypes: [], edition: undefined, input: undefined, emit: [],
    outDir: undefined, outFile: undefined, metadata: undefined, extraFilename: undefined, incremental: undefined,
    targetCpu: undefined, targetFeatures: [], codegen: [], externs: [], libSearchPaths: [], libs: [], cfgs: [], checkCfgs: [], target: undefined,
    capLints: undefined, errorFormat: undefined, json: [], prints: [], test: false, sysroot: undefined,
    remapPathPrefixes: [], unstable: [], lints: [],
  };
  const seen = new Set<FlagSpec>();
  for (const t of tokens) {
    if (t.flag === undefined) {
      if (t.value === undefined) throw new InvalidRustcArgs('a positional token has no value');
      if (m.input !== undefined) throw new InvalidRustcArgs(`multiple input filenames provided (\`${m.input}\` and \`${t.value}\`)`);
      m.input = t.value;
      continue;
    }
    if (t.flag === '--') continue;
    const spec = BY_FLAG.get(t.flag);
    if (spec === undefined) throw new UnknownRustcFlag(t.flag);
    if (!spec.repeatable) {
      if (seen.has(spec)) throw new InvalidRustcArgs(`rustc option \`${spec.flag}\` given more than once`);
      seen.add(spec);
    }
    if (spec.kind === 'switch') {
      if (t.value !== undefined) throw new InvalidRustcArgs(`rustc option \`${spec.flag}\` takes no value`);
      spec.apply?.(m);
    } else {
      if (t.value === undefined) throw new InvalidRustcArgs(`argument to rustc option \`${spec.flag}\` missing`);
      spec.apply?.(m, t.value);
    }
  }
  return m;
}

const build = (tokens: ArgToken[]): RustcCall => ({ tokens, ...derive(tokens) });

/**
 * Parses the argv cargo hands to rustc (without the rustc path). `@path` arguments are expanded
 * through readArgfile. Throws UnknownRustcFlag for anything outside the table, InvalidRustcArgs for
 * a command line rustc would reject, MissingArgfileReader for `@path` without a reader.
 */
export function parseRustcArgs(argv: readonly string[], readArgfile?: (path: string) => string): RustcCall {
  return build([...lex(expandArgfiles(argv, readArgfile), true)]);
}

/** An argv equivalent to the call's tokens, each in its original spelling (groups like `-vV` come out split). */
export function renderRustcArgs(call: RustcCall): string[] {
  return call.tokens.flatMap((t): string[] => {
    if (t.flag === '--') return ['--'];
    if (t.flag === undefined) {
      if (t.value === undefined) throw new InvalidRustcArgs('a positional token has no value');
      return [t.value];
    }
    const spec = BY_FLAG.get(t.flag);
    if (spec === undefined) throw new UnknownRustcFlag(t.flag);
    if (spec.kind === 'switch') return [spec.flag];
    if (t.value === undefined) throw new InvalidRustcArgs(`argument to rustc option \`${spec.flag}\` missing`);
    if (t.spelling === 'joined-eq') return [`${longSpelling(spec)}=${t.value}`];
    // An empty joined value (say, after mapRustcPaths) would swallow the next argument.
    if (t.spelling === 'joined' && t.value !== '') {
      return [spec.flag.startsWith('--') ? `${spec.flag}=${t.value}` : `${spec.flag}${t.value}`];
    }
    return [spec.flag, t.value];
  });
}

/**
 * A copy with every path-valued part mapped through fn: the input (not stdin), --out-dir, -o,
 * --extern paths, -L paths, --sysroot, --emit/--print `=path` outputs, a `--target x.json` spec and
 * -C incremental/linker/dlltool/profile-generate/profile-use. --remap-path-prefix is left alone, as
 * are -Z values (opaque) and -l (library names, not paths).
 */
export function mapRustcPaths(call: RustcCall, fn: (path: string) => string): RustcCall {
  return build(
    call.tokens.map((t): ArgToken => {
      if (t.value === undefined) return { ...t };
      if (t.flag === undefined) return { ...t, value: t.value === '-' ? t.value : fn(t.value) };
      const spec = BY_FLAG.get(t.flag);
      return spec?.kind === 'value' && spec.mapPaths !== undefined ? { ...t, value: spec.mapPaths(t.value, fn) } : { ...t };
    }),
  );
}

/** A copy without the -C options whose key is in keys (`opt_level` and `opt-level` are the same key). */
export function withoutCodegen(call: RustcCall, keys: readonly string[]): RustcCall {
  const drop = new Set(keys.map(codegenKey));
  return build(
    call.tokens
      .filter((t) => {
        const key = codegenKeyOf(t);
        return key === undefined || !drop.has(key);
      })
      .map((t) => ({ ...t })),
  );
}

/**
 * A copy compiling for `cpu` instead of the call's target CPU (the last `-C target-cpu`, the one rustc
 * uses), with `features` as one `-C target-feature` placed before the call's own: rustc applies them
 * left to right, so the user's still have the last word.
 */
export function withTargetCpu(call: RustcCall, cpu: string, features: readonly string[]): RustcCall {
  const tokens = call.tokens.map((t) => ({ ...t }));
  const at = tokens.findLastIndex((t) => codegenKeyOf(t) === 'target-cpu');
  if (at < 0) throw new InvalidRustcArgs('withTargetCpu: the call has no -C target-cpu');
  tokens[at] = { ...(tokens[at] as ArgToken), value: `target-cpu=${cpu}` };
  if (features.length > 0) {
    const firstUser = tokens.findIndex((t) => codegenKeyOf(t) === 'target-feature');
    const insertAt = firstUser < 0 ? at + 1 : Math.min(firstUser, at + 1);
    tokens.splice(insertAt, 0, { flag: '-C', value: `target-feature=${features.join(',')}`, spelling: 'separate' });
  }
  return build(tokens);
}

/**
 * The call with `-C incremental=<dir>` as its only incremental dir: cargo's (a host path) dropped, this one
 * added. The caller decides whether the call wants incremental state at all.
 */
export function withIncremental(call: RustcCall, dir: string): RustcCall {
  const tokens = call.tokens.filter((t) => codegenKeyOf(t) !== 'incremental').map((t) => ({ ...t }));
  return build([...tokens, { flag: '-C', value: `incremental=${dir}`, spelling: 'separate' }]);
}

/**
 * Maps the FROM side of every `--remap-path-prefix` (what rustc sees) and keeps TO (what the user asked
 * to see). `fn` returns undefined for a prefix to keep as it is.
 */
export function mapRemapFrom(call: RustcCall, fn: (from: string) => string | undefined): RustcCall {
  return build(
    call.tokens.map((t): ArgToken => {
      if (t.flag !== '--remap-path-prefix' || t.value === undefined) return { ...t };
      const [from, to] = parseRemap(t.value);
      const mapped = fn(from);
      return mapped === undefined ? { ...t } : { ...t, value: `${mapped}=${to}` };
    }),
  );
}

/** A copy writing to dir: the --out-dir value is replaced, or --out-dir added when the call had none. */
export function withOutDir(call: RustcCall, dir: string): RustcCall {
  const tokens = call.tokens.map((t): ArgToken => (t.flag === '--out-dir' ? { ...t, value: dir } : { ...t }));
  if (call.outDir === undefined) {
    // Before any `--`, after which it would read as a second input.
    const end = tokens.findIndex((t) => t.flag === '--');
    tokens.splice(end < 0 ? tokens.length : end, 0, { flag: '--out-dir', value: dir, spelling: 'separate' });
  }
  return build(tokens);
}

/** Options that print something and exit whatever else is on the command line. */
const PROBE_FLAGS: ReadonlySet<string> = new Set(['-V', '-h', '--explain']);
/** `-C help`, `-Z help`, `-W help` (any lint level) print help instead of compiling. */
const HELP_FLAGS: ReadonlySet<string> = new Set(['-C', '-Z', '-A', '-W', '-D', '-F', '--force-warn']);

/**
 * 'probe' when rustc will not compile a crate: version/help/explain requests, stdin input, no
 * input at all, or --print requests that stop before compiling. Lexes only (no model, no
 * validation); an `@argfile` counts as a possible input, since it is not read here.
 */
export function classifyRustcCall(argv: readonly string[]): CallKind {
  let sawInput = false;
  let printStops: boolean | undefined;
  for (const t of lex(argv, false)) {
    if (t.flag === undefined) {
      if (t.value === '-') return 'probe';
      sawInput = true;
    } else if (PROBE_FLAGS.has(t.flag) || (t.value === 'help' && HELP_FLAGS.has(t.flag))) {
      return 'probe';
    } else if (t.flag === '--print' && t.value !== undefined) {
      printStops = (printStops ?? true) && !COMPILING_PRINTS.has(splitEq(t.value)[0]);
    }
  }
  return !sawInput || printStops === true ? 'probe' : 'compile';
}
