import { describe, expect, test } from 'bun:test';
import {
  classifyRustcCall,
  InvalidRustcArgs,
  mapRemapFrom,
  mapRustcPaths,
  MissingArgfileReader,
  parseRustcArgs,
  renderRustcArgs,
  RustcArgsError,
  UnknownRustcFlag,
  withIncremental,
  withOutDir,
  withoutCodegen,
  withTargetCpu,
  type RustcCall,
} from '../../src/rustc/args';

// Argv arrays below are copied from calls cargo 1.95 made to a RUSTC_WRAPPER (rustc path dropped).
const REG = '/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f';
const DEPS = '/work/main/examples/demo/target/debug/deps';
const JSON_ARG = '--json=diagnostic-rendered-ansi,artifacts,future-incompat';
const JSON_KINDS = ['diagnostic-rendered-ansi', 'artifacts', 'future-incompat'];

const VERSION_PROBE = ['-vV'];

const TARGET_INFO_PROBE = [
  '-', '--crate-name', '___', '--print=file-names',
  '--crate-type', 'bin', '--crate-type', 'rlib', '--crate-type', 'dylib', '--crate-type', 'cdylib',
  '--crate-type', 'staticlib', '--crate-type', 'proc-macro',
  '--print=sysroot', '--print=split-debuginfo', '--print=crate-name', '--print=cfg', '-Wwarnings',
];

const BUILD_SCRIPT = [
  '--crate-name', 'build_script_build', '--edition=2021', `${REG}/quote-1.0.47/build.rs`, '--error-format=json',
  JSON_ARG, '--crate-type', 'bin', '--emit=dep-info,link', '-C', 'embed-bitcode=no',
  '--cfg', 'feature="proc-macro"', '--check-cfg', 'cfg(docsrs,test)',
  '--check-cfg', 'cfg(feature, values("default", "proc-macro"))', '-C', 'metadata=b146bbe0ecc151e0',
  '-C', 'extra-filename=-b03b8c60ca36676e', '--out-dir', '/work/main/examples/demo/target/debug/build/quote-b03b8c60ca36676e',
  '-L', `dependency=${DEPS}`, '--cap-lints', 'allow',
];

const LIB_WITH_EXTERNS = [
  '--crate-name', 'proc_macro2', '--edition=2021', `${REG}/proc-macro2-1.0.107/src/lib.rs`, '--error-format=json',
  JSON_ARG, '--crate-type', 'lib', '--emit=dep-info,metadata,link', '-C', 'embed-bitcode=no',
  '--cfg', 'feature="proc-macro"', '--check-cfg', 'cfg(docsrs,test)',
  '--check-cfg', 'cfg(feature, values("default", "nightly", "proc-macro", "span-locations"))',
  '-C', 'metadata=c45b252bd498f21f', '-C', 'extra-filename=-bc62778dbd4977c7', '--out-dir', DEPS,
  '-L', `dependency=${DEPS}`, '--extern', `unicode_ident=${DEPS}/libunicode_ident-49b462d488e72123.rmeta`,
  '--cap-lints', 'allow', '--cfg', 'wrap_proc_macro', '--cfg', 'proc_macro_span_location', '--cfg', 'proc_macro_span_file',
  '--check-cfg', 'cfg(fuzzing)', '--check-cfg', 'cfg(no_is_available)', '--check-cfg', 'cfg(no_literal_byte_character)',
  '--check-cfg', 'cfg(no_literal_c_string)', '--check-cfg', 'cfg(no_source_text)', '--check-cfg', 'cfg(proc_macro_span)',
  '--check-cfg', 'cfg(proc_macro_span_file)', '--check-cfg', 'cfg(proc_macro_span_location)',
  '--check-cfg', 'cfg(procmacro2_backtrace)', '--check-cfg', 'cfg(procmacro2_build_probe)',
  '--check-cfg', 'cfg(procmacro2_nightly_testing)', '--check-cfg', 'cfg(procmacro2_semver_exempt)',
  '--check-cfg', 'cfg(randomize_layout)', '--check-cfg', 'cfg(span_locations)', '--check-cfg', 'cfg(super_unstable)',
  '--check-cfg', 'cfg(wrap_proc_macro)',
];

const PROC_MACRO = [
  '--crate-name', 'serde_derive', '--edition=2021', `${REG}/serde_derive-1.0.229/src/lib.rs`, '--error-format=json',
  JSON_ARG, '--crate-type', 'proc-macro', '--emit=dep-info,link', '-C', 'prefer-dynamic', '-C', 'embed-bitcode=no',
  '--cfg', 'feature="default"', '--check-cfg', 'cfg(docsrs,test)',
  '--check-cfg', 'cfg(feature, values("default", "deserialize_in_place"))', '-C', 'metadata=1e83cad7e3a8e9ca',
  '-C', 'extra-filename=-891070be04d98e11', '--out-dir', DEPS, '-L', `dependency=${DEPS}`,
  '--extern', `proc_macro2=${DEPS}/libproc_macro2-bc62778dbd4977c7.rlib`,
  '--extern', `quote=${DEPS}/libquote-076c685bd5a54966.rlib`,
  '--extern', `syn=${DEPS}/libsyn-681ab145008ed48e.rlib`, '--extern', 'proc_macro', '--cap-lints', 'allow',
];

const BIN_INCREMENTAL = [
  '--crate-name', 'rustcbuildx_demo', '--edition=2021', 'src/main.rs', '--error-format=json', JSON_ARG,
  '--crate-type', 'bin', '--emit=dep-info,link', '-C', 'embed-bitcode=no', '-C', 'debuginfo=2',
  '--check-cfg', 'cfg(docsrs,test)', '--check-cfg', 'cfg(feature, values())', '-C', 'metadata=e6ecd1e27e0fc094',
  '-C', 'extra-filename=-36aadfce2873fda9', '--out-dir', DEPS,
  '-C', 'incremental=/work/main/examples/demo/target/debug/incremental', '-L', `dependency=${DEPS}`,
  '--extern', `anyhow=${DEPS}/libanyhow-f85147e1c9d68eab.rlib`, '--extern', `itoa=${DEPS}/libitoa-6c1e270c698fa6a6.rlib`,
  '--extern', `serde=${DEPS}/libserde-90ea9c81a65cb426.rlib`,
  '--extern', `serde_json=${DEPS}/libserde_json-819d220bc7d6e0ad.rlib`,
];

// A build script's own rustc probe (proc-macro2's build.rs), every option in `--name=value` form.
const BUILD_SCRIPT_PROBE = [
  '--cfg=procmacro2_build_probe', '--edition=2021', '--crate-name=proc_macro2', '--crate-type=lib', '--cap-lints=allow',
  '--emit=dep-info,metadata', '--out-dir', '/work/main/examples/demo/target/debug/build/proc-macro2-1f195612b489f3ee/out/probe',
  'src/probe/proc_macro_span.rs', '--target', 'x86_64-unknown-linux-gnu',
];

interface Case {
  name: string;
  argv: string[];
  expected: Partial<RustcCall>;
}

const REAL_CASES: Case[] = [
  {
    name: 'cargo -vV probe',
    argv: VERSION_PROBE,
    expected: {
      tokens: [
        { flag: '-v', value: undefined, spelling: 'bare' },
        { flag: '-V', value: undefined, spelling: 'bare' },
      ],
      input: undefined,
    },
  },
  {
    name: 'cargo target-info probe on stdin',
    argv: TARGET_INFO_PROBE,
    expected: {
      input: '-',
      crateName: '___',
      crateTypes: ['bin', 'rlib', 'dylib', 'cdylib', 'staticlib', 'proc-macro'],
      prints: ['file-names', 'sysroot', 'split-debuginfo', 'crate-name', 'cfg'],
      lints: [['warn', 'warnings']],
      emit: [],
    },
  },
  {
    name: 'build script compile',
    argv: BUILD_SCRIPT,
    expected: {
      crateName: 'build_script_build',
      edition: '2021',
      input: `${REG}/quote-1.0.47/build.rs`,
      errorFormat: 'json',
      json: JSON_KINDS,
      crateTypes: ['bin'],
      emit: ['dep-info', 'link'],
      codegen: [['embed-bitcode', 'no'], ['metadata', 'b146bbe0ecc151e0'], ['extra-filename', '-b03b8c60ca36676e']],
      metadata: 'b146bbe0ecc151e0',
      extraFilename: '-b03b8c60ca36676e',
      incremental: undefined,
      cfgs: ['feature="proc-macro"'],
      checkCfgs: ['cfg(docsrs,test)', 'cfg(feature, values("default", "proc-macro"))'],
      outDir: '/work/main/examples/demo/target/debug/build/quote-b03b8c60ca36676e',
      libSearchPaths: [{ kind: 'dependency', path: DEPS }],
      capLints: 'allow',
      externs: [],
      test: false,
    },
  },
  {
    name: 'lib with externs, --cfg and --check-cfg',
    argv: LIB_WITH_EXTERNS,
    expected: {
      crateName: 'proc_macro2',
      crateTypes: ['lib'],
      emit: ['dep-info', 'metadata', 'link'],
      externs: [{ name: 'unicode_ident', path: `${DEPS}/libunicode_ident-49b462d488e72123.rmeta`, modifiers: [] }],
      cfgs: ['feature="proc-macro"', 'wrap_proc_macro', 'proc_macro_span_location', 'proc_macro_span_file'],
      metadata: 'c45b252bd498f21f',
      extraFilename: '-bc62778dbd4977c7',
      outDir: DEPS,
    },
  },
  {
    name: 'proc-macro with a bare --extern proc_macro and -C prefer-dynamic',
    argv: PROC_MACRO,
    expected: {
      crateTypes: ['proc-macro'],
      codegen: [
        ['prefer-dynamic', undefined], ['embed-bitcode', 'no'],
        ['metadata', '1e83cad7e3a8e9ca'], ['extra-filename', '-891070be04d98e11'],
      ],
      externs: [
        { name: 'proc_macro2', path: `${DEPS}/libproc_macro2-bc62778dbd4977c7.rlib`, modifiers: [] },
        { name: 'quote', path: `${DEPS}/libquote-076c685bd5a54966.rlib`, modifiers: [] },
        { name: 'syn', path: `${DEPS}/libsyn-681ab145008ed48e.rlib`, modifiers: [] },
        { name: 'proc_macro', path: undefined, modifiers: [] },
      ],
    },
  },
  {
    name: 'bin with -C incremental',
    argv: BIN_INCREMENTAL,
    expected: {
      crateName: 'rustcbuildx_demo',
      input: 'src/main.rs',
      crateTypes: ['bin'],
      incremental: '/work/main/examples/demo/target/debug/incremental',
      metadata: 'e6ecd1e27e0fc094',
      extraFilename: '-36aadfce2873fda9',
      codegen: [
        ['embed-bitcode', 'no'], ['debuginfo', '2'], ['metadata', 'e6ecd1e27e0fc094'],
        ['extra-filename', '-36aadfce2873fda9'], ['incremental', '/work/main/examples/demo/target/debug/incremental'],
      ],
      capLints: undefined,
    },
  },
  {
    name: 'build script probe in --name=value form with --target',
    argv: BUILD_SCRIPT_PROBE,
    expected: {
      cfgs: ['procmacro2_build_probe'],
      crateName: 'proc_macro2',
      crateTypes: ['lib'],
      capLints: 'allow',
      emit: ['dep-info', 'metadata'],
      input: 'src/probe/proc_macro_span.rs',
      target: 'x86_64-unknown-linux-gnu',
    },
  },
];

const SYNTHETIC_CASES: Case[] = [
  {
    name: 'several --crate-type flags',
    argv: ['--crate-type', 'lib', '--crate-type=cdylib', '--crate-type', 'staticlib', 'src/lib.rs'],
    expected: { crateTypes: ['lib', 'cdylib', 'staticlib'] },
  },
  {
    name: '--crate-type comma list',
    argv: ['--crate-type', 'lib,rlib', 'src/lib.rs'],
    expected: { crateTypes: ['lib', 'rlib'] },
  },
  {
    name: '--extern modifiers, bare and =path forms',
    argv: [
      '--extern', 'noprelude:foo=/p', '--extern', 'priv:bar=/q', '--extern', 'noprelude,priv:baz=/r',
      '--extern', 'proc_macro', '--extern=eq=/s=t', 'src/lib.rs',
    ],
    expected: {
      externs: [
        { name: 'foo', path: '/p', modifiers: ['noprelude'] },
        { name: 'bar', path: '/q', modifiers: ['priv'] },
        { name: 'baz', path: '/r', modifiers: ['noprelude', 'priv'] },
        { name: 'proc_macro', path: undefined, modifiers: [] },
        // Only the first '=' separates: the path keeps the rest.
        { name: 'eq', path: '/s=t', modifiers: [] },
      ],
    },
  },
  {
    name: '-L kinds, joined and separate',
    argv: [
      '-L', 'native=/n', '-Lcrate=/c', '-L', 'dependency=/d', '-Lframework=/f', '-L', 'all=/a', '-L', '/plain',
      '-L', 'foo=bar', 'src/lib.rs',
    ],
    expected: {
      libSearchPaths: [
        { kind: 'native', path: '/n' },
        { kind: 'crate', path: '/c' },
        { kind: 'dependency', path: '/d' },
        { kind: 'framework', path: '/f' },
        { kind: 'all', path: '/a' },
        { kind: undefined, path: '/plain' },
        // rustc only strips a known kind.
        { kind: undefined, path: 'foo=bar' },
      ],
    },
  },
  {
    name: '--test and --target',
    argv: ['--test', '--target', 'aarch64-unknown-linux-gnu', '--crate-name', 't', 'tests/it.rs'],
    expected: { test: true, target: 'aarch64-unknown-linux-gnu', input: 'tests/it.rs' },
  },
  {
    name: 'joined short forms',
    argv: ['-Copt-level=3', '-L/x', '-o/out/bin', '-Dwarnings', '-Adead_code', '-Zthreads=8', '-lstatic=z', '-Fmissing_docs', 'm.rs'],
    expected: {
      codegen: [['opt-level', '3']],
      libSearchPaths: [{ kind: undefined, path: '/x' }],
      outFile: '/out/bin',
      lints: [['deny', 'warnings'], ['allow', 'dead_code'], ['forbid', 'missing_docs']],
      unstable: ['threads=8'],
      libs: ['static=z'],
      tokens: [
        { flag: '-C', value: 'opt-level=3', spelling: 'joined' },
        { flag: '-L', value: '/x', spelling: 'joined' },
        { flag: '-o', value: '/out/bin', spelling: 'joined' },
        { flag: '-D', value: 'warnings', spelling: 'joined' },
        { flag: '-A', value: 'dead_code', spelling: 'joined' },
        { flag: '-Z', value: 'threads=8', spelling: 'joined' },
        { flag: '-l', value: 'static=z', spelling: 'joined' },
        { flag: '-F', value: 'missing_docs', spelling: 'joined' },
        { flag: undefined, value: 'm.rs', spelling: 'bare' },
      ],
    },
  },
  {
    name: 'long aliases map to canonical flags',
    argv: [
      '--codegen', 'opt-level=1', '--codegen=debuginfo=2', '--allow=unused', '--warn', 'x', '--deny', 'y',
      '--forbid', 'z', '--force-warn', 'w', '--verbose', 'm.rs',
    ],
    expected: {
      codegen: [['opt-level', '1'], ['debuginfo', '2']],
      lints: [['allow', 'unused'], ['warn', 'x'], ['deny', 'y'], ['forbid', 'z'], ['force-warn', 'w']],
      tokens: [
        { flag: '-C', value: 'opt-level=1', spelling: 'separate' },
        { flag: '-C', value: 'debuginfo=2', spelling: 'joined-eq' },
        { flag: '-A', value: 'unused', spelling: 'joined-eq' },
        { flag: '-W', value: 'x', spelling: 'separate' },
        { flag: '-D', value: 'y', spelling: 'separate' },
        { flag: '-F', value: 'z', spelling: 'separate' },
        { flag: '--force-warn', value: 'w', spelling: 'separate' },
        { flag: '-v', value: undefined, spelling: 'bare' },
        { flag: undefined, value: 'm.rs', spelling: 'bare' },
      ],
    },
  },
  {
    name: 'grouped short switches (getopts), -g and -O',
    argv: ['-gO', '-gCopt-level=1', '-vC', 'debuginfo=1', 'm.rs'],
    expected: {
      tokens: [
        { flag: '-g', value: undefined, spelling: 'bare' },
        { flag: '-O', value: undefined, spelling: 'bare' },
        { flag: '-g', value: undefined, spelling: 'bare' },
        { flag: '-C', value: 'opt-level=1', spelling: 'joined' },
        { flag: '-v', value: undefined, spelling: 'bare' },
        { flag: '-C', value: 'debuginfo=1', spelling: 'separate' },
        { flag: undefined, value: 'm.rs', spelling: 'bare' },
      ],
      codegen: [['opt-level', '1'], ['debuginfo', '1']],
    },
  },
  {
    name: 'one-letter long names are the short options (getopts quirk rustc accepts)',
    argv: ['--o=out', '--C', 'opt-level=2', 'm.rs'],
    expected: {
      outFile: 'out',
      codegen: [['opt-level', '2']],
      tokens: [
        { flag: '-o', value: 'out', spelling: 'joined-eq' },
        { flag: '-C', value: 'opt-level=2', spelling: 'separate' },
        { flag: undefined, value: 'm.rs', spelling: 'bare' },
      ],
    },
  },
  {
    name: '--cfg separate and joined, -C underscores normalised',
    argv: ['--cfg', 'a', '--cfg=b="c"', '-C', 'opt_level=2', '-Cextra_filename=-x', 'm.rs'],
    expected: {
      cfgs: ['a', 'b="c"'],
      codegen: [['opt-level', '2'], ['extra-filename', '-x']],
      extraFilename: '-x',
    },
  },
  {
    name: '--print and --emit with =path outputs',
    argv: ['--print=cfg=/tmp/cfg.txt', '--print', 'native-static-libs', '--emit=link=/out/a,dep-info', '--emit', 'metadata', 'm.rs'],
    expected: {
      prints: ['cfg=/tmp/cfg.txt', 'native-static-libs'],
      emit: ['link=/out/a', 'dep-info', 'metadata'],
    },
  },
  {
    name: 'the rest of the stable and nightly flags',
    argv: [
      '--color', 'always', '--diagnostic-width=120', '--sysroot', '/sys', '--remap-path-prefix', '/a=b=/c',
      '--remap-path-prefix=/src=.', '--remap-path-scope', 'all', '-Z', 'unstable-options', '--env-set', 'A=b',
      '--cap-lints', 'warn', '--cap-lints', 'allow', '--error-format', 'short', '--json', 'artifacts',
      '--json=future-incompat', '-l', 'dylib=ssl', '-O', '-g', 'm.rs',
    ],
    expected: {
      sysroot: '/sys',
      // rustc splits at the last '='.
      remapPathPrefixes: [['/a=b', '/c'], ['/src', '.']],
      unstable: ['unstable-options'],
      capLints: 'allow',
      errorFormat: 'short',
      json: ['artifacts', 'future-incompat'],
      libs: ['dylib=ssl'],
    },
  },
  {
    name: 'values are taken whatever they look like; -- ends options',
    argv: ['-o', '-', '--crate-name', '--test', '--', '-odd.rs'],
    expected: { outFile: '-', crateName: '--test', test: false, input: '-odd.rs' },
  },
  {
    name: '--explain and --help',
    argv: ['--explain', 'E0308', '--help'],
    expected: {
      tokens: [
        { flag: '--explain', value: 'E0308', spelling: 'separate' },
        { flag: '-h', value: undefined, spelling: 'bare' },
      ],
    },
  },
];

const ALL_CASES = [...REAL_CASES, ...SYNTHETIC_CASES];

for (const c of ALL_CASES) {
  test(`parse: ${c.name}`, () => {
    expect(parseRustcArgs(c.argv)).toMatchObject(c.expected);
  });

  test(`render round-trip: ${c.name}`, () => {
    const call = parseRustcArgs(c.argv);
    const rendered = renderRustcArgs(call);
    expect(parseRustcArgs(rendered)).toEqual(call);
    // Rendering a rendered call is a fixed point.
    expect(renderRustcArgs(parseRustcArgs(rendered))).toEqual(rendered);
  });
}

test('cargo calls render back byte for byte', () => {
  for (const c of REAL_CASES.filter((c) => c.argv !== VERSION_PROBE)) {
    expect(renderRustcArgs(parseRustcArgs(c.argv))).toEqual(c.argv);
  }
  // A short group renders as separate switches, which rustc reads the same way.
  expect(renderRustcArgs(parseRustcArgs(['-vV']))).toEqual(['-v', '-V']);
});

test('render keeps the spelling of long aliases and joined forms', () => {
  const argv = ['--allow=x', '--codegen=lto', '--o=out', '-Copt-level=1', '--cfg', 'c', 'm.rs'];
  expect(renderRustcArgs(parseRustcArgs(argv))).toEqual(['--allow=x', '--codegen=lto', '--o=out', '-Copt-level=1', '--cfg', 'c', 'm.rs']);
  expect(renderRustcArgs(parseRustcArgs(['--allow', 'x', '--codegen', 'lto']))).toEqual(['-A', 'x', '-C', 'lto']);
});

const UNKNOWN: Array<[string[], string]> = [
  [['--bogus', 'm.rs'], '--bogus'],
  [['--bogus=1', 'm.rs'], '--bogus'],
  [['-X', 'm.rs'], '-X'],
  [['-gX'], '-X'],
  // rustc 1.95 only has `-Z crate-attr`; `--crate-attr` is rejected as unrecognized.
  [['--crate-attr', 'allow(unused)', 'm.rs'], '--crate-attr'],
  [['--crate-nam', 'x', 'm.rs'], '--crate-nam'],
  [['-C', 'bogus=1', 'm.rs'], '-C bogus'],
  [['-Cdebug_info=1', 'm.rs'], '-C debug_info'],
  [['--crate-type', 'lib,foo', 'm.rs'], '--crate-type foo'],
  [['--emit=link,foo', 'm.rs'], '--emit foo'],
  [['--print', 'host-triple'], '--print host-triple'],
  [['--extern', 'bogus:foo=/p', 'm.rs'], '--extern bogus:'],
  [['@shell-argfile:/tmp/a'], '@shell-argfile:'],
];

for (const [argv, flag] of UNKNOWN) {
  test(`unknown: ${argv.join(' ')}`, () => {
    let caught: unknown;
    try {
      parseRustcArgs(argv);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UnknownRustcFlag);
    expect(caught).toBeInstanceOf(RustcArgsError);
    expect((caught as UnknownRustcFlag).flag).toBe(flag);
    expect((caught as UnknownRustcFlag).message).toContain(`\`${flag}\``);
    expect((caught as UnknownRustcFlag).message).toContain('running rustc locally');
  });
}

const INVALID: Array<[string[], string]> = [
  [['--crate-name', 'a', '--crate-name', 'b', 'm.rs'], 'given more than once'],
  [['-v', '--verbose', 'm.rs'], 'given more than once'],
  [['--test', '--test', 'm.rs'], 'given more than once'],
  [['a.rs', 'b.rs'], 'multiple input filenames'],
  [['m.rs', '--cfg'], 'missing'],
  [['m.rs', '-C'], 'missing'],
  [['--test=1', 'm.rs'], 'takes no value'],
  [['-L', 'native=', 'm.rs'], 'empty search path'],
  [['--remap-path-prefix', 'abc', 'm.rs'], "must contain '='"],
];

for (const [argv, message] of INVALID) {
  test(`invalid: ${argv.join(' ')}`, () => {
    expect(() => parseRustcArgs(argv)).toThrow(InvalidRustcArgs);
    expect(() => parseRustcArgs(argv)).toThrow(message);
  });
}

test('@argfile: one argument per line, CRLF and a final newline tolerated, not recursive', () => {
  const files: Record<string, string> = {
    '/tmp/args': '--crate-name\r\nfrom_file\r\n--cfg\r\nfeature="a b"\r\n',
    '/tmp/more': '-Copt-level=2\n@/tmp/args',
  };
  const read: string[] = [];
  const reader = (path: string): string => {
    read.push(path);
    const text = files[path];
    if (text === undefined) throw new Error(`no such file ${path}`);
    return text;
  };
  const call = parseRustcArgs(['--edition=2021', '@/tmp/args', 'src/lib.rs'], reader);
  expect(call.crateName).toBe('from_file');
  expect(call.cfgs).toEqual(['feature="a b"']);
  expect(call.edition).toBe('2021');
  expect(call.input).toBe('src/lib.rs');
  expect(renderRustcArgs(call)).toEqual(['--edition=2021', '--crate-name', 'from_file', '--cfg', 'feature="a b"', 'src/lib.rs']);
  // A line starting with '@' inside an argfile is an ordinary argument: here a second input.
  expect(() => parseRustcArgs(['@/tmp/more', 'src/lib.rs'], reader)).toThrow('multiple input filenames');
  expect(parseRustcArgs(['@/tmp/more'], reader).input).toBe('@/tmp/args');
  expect(read).toEqual(['/tmp/args', '/tmp/more', '/tmp/more']);
});

test('@argfile without a reader is a typed error', () => {
  let caught: unknown;
  try {
    parseRustcArgs(['src/lib.rs', '@/tmp/args']);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(MissingArgfileReader);
  expect(caught).toBeInstanceOf(RustcArgsError);
  expect((caught as MissingArgfileReader).path).toBe('/tmp/args');
});

test('mapRustcPaths maps every path-valued part and keeps tokens consistent', () => {
  const argv = [
    ...BIN_INCREMENTAL, '-o', 'out/bin', '--sysroot', '/sys', '-C', 'linker=/usr/bin/cc', '-Cprofile-use=/p.profdata',
    '--remap-path-prefix', '/work=/r', '-L', '/plain', '-l', 'static=z', '--emit=link=/o/a', '--print=cfg=/o/cfg',
    '--target=/specs/t.json', '--extern', 'priv:x=/x.rlib', '-Z', 'dump-dep-graph=/z',
  ].filter((a) => a !== '--emit=dep-info,link');
  const original = parseRustcArgs(argv);
  const snapshot = structuredClone(original);
  const mapped = mapRustcPaths(original, (p) => (p.startsWith('/') ? `/sandbox${p}` : `/sandbox/cwd/${p}`));

  expect(mapped.input).toBe('/sandbox/cwd/src/main.rs');
  expect(mapped.outDir).toBe(`/sandbox${DEPS}`);
  expect(mapped.outFile).toBe('/sandbox/cwd/out/bin');
  expect(mapped.sysroot).toBe('/sandbox/sys');
  expect(mapped.incremental).toBe('/sandbox/work/main/examples/demo/target/debug/incremental');
  expect(mapped.libSearchPaths).toEqual([{ kind: 'dependency', path: `/sandbox${DEPS}` }, { kind: undefined, path: '/sandbox/plain' }]);
  expect(mapped.externs.map((e) => e.path)).toEqual([
    `/sandbox${DEPS}/libanyhow-f85147e1c9d68eab.rlib`, `/sandbox${DEPS}/libitoa-6c1e270c698fa6a6.rlib`,
    `/sandbox${DEPS}/libserde-90ea9c81a65cb426.rlib`, `/sandbox${DEPS}/libserde_json-819d220bc7d6e0ad.rlib`, '/sandbox/x.rlib',
  ]);
  expect(mapped.externs[4]).toEqual({ name: 'x', path: '/sandbox/x.rlib', modifiers: ['priv'] });
  expect(mapped.codegen).toContainEqual(['linker', '/sandbox/usr/bin/cc']);
  expect(mapped.codegen).toContainEqual(['profile-use', '/sandbox/p.profdata']);
  expect(mapped.emit).toEqual(['link=/sandbox/o/a']);
  expect(mapped.prints).toEqual(['cfg=/sandbox/o/cfg']);
  expect(mapped.target).toBe('/sandbox/specs/t.json');
  // Not paths we own: left exactly as given.
  expect(mapped.remapPathPrefixes).toEqual([['/work', '/r']]);
  expect(mapped.libs).toEqual(['static=z']);
  expect(mapped.unstable).toEqual(['dump-dep-graph=/z']);
  expect(mapped.metadata).toBe(original.metadata);
  expect(mapped.cfgs).toEqual(original.cfgs);
  // Tokens agree with the model, and the input call is untouched.
  expect(parseRustcArgs(renderRustcArgs(mapped))).toEqual(mapped);
  expect(renderRustcArgs(mapped)).toContain('incremental=/sandbox/work/main/examples/demo/target/debug/incremental');
  expect(original).toEqual(snapshot);
});

test('mapRustcPaths leaves stdin and a target triple alone', () => {
  const mapped = mapRustcPaths(parseRustcArgs([...TARGET_INFO_PROBE, '--target', 'x86_64-unknown-linux-gnu']), (p) => `/x${p}`);
  expect(mapped.input).toBe('-');
  expect(mapped.target).toBe('x86_64-unknown-linux-gnu');
  expect(renderRustcArgs(mapped)).toEqual([...TARGET_INFO_PROBE, '--target', 'x86_64-unknown-linux-gnu']);
});

test('withoutCodegen drops the keys from tokens and model', () => {
  const original = parseRustcArgs(BIN_INCREMENTAL);
  const noIncr = withoutCodegen(original, ['incremental']);
  expect(noIncr.incremental).toBeUndefined();
  expect(noIncr.codegen.map(([k]) => k)).toEqual(['embed-bitcode', 'debuginfo', 'metadata', 'extra-filename']);
  const at = BIN_INCREMENTAL.findIndex((a) => a.startsWith('incremental='));
  expect(renderRustcArgs(noIncr)).toEqual([...BIN_INCREMENTAL.slice(0, at - 1), ...BIN_INCREMENTAL.slice(at + 1)]);
  expect(original.incremental).toBe('/work/main/examples/demo/target/debug/incremental');

  const bare = withoutCodegen(original, ['metadata', 'extra_filename', 'debuginfo']);
  expect(bare.metadata).toBeUndefined();
  expect(bare.extraFilename).toBeUndefined();
  expect(bare.codegen).toEqual([['embed-bitcode', 'no'], ['incremental', '/work/main/examples/demo/target/debug/incremental']]);
  expect(bare.externs).toEqual(original.externs);

  // Keys match whichever of `_`/`-` the argv used.
  expect(withoutCodegen(parseRustcArgs(['-C', 'opt_level=2', '-Copt-level=3', 'm.rs']), ['opt-level']).codegen).toEqual([]);
  expect(withoutCodegen(original, ['lto'])).toEqual(original);
});

test("withIncremental: one `-C incremental` with the sandbox's dir; cargo's host paths gone", () => {
  const original = parseRustcArgs(BIN_INCREMENTAL);
  const inside = withIncremental(original, '/rcbx/inc');
  expect(inside.incremental).toBe('/rcbx/inc');
  const args = renderRustcArgs(inside);
  expect(args.filter((a) => a.includes('incremental'))).toEqual(['incremental=/rcbx/inc']);
  expect(args.join(' ')).not.toContain('/work/main/examples/demo/target/debug/incremental');
  const both = withIncremental(parseRustcArgs(['-Cincremental=/h/a', '-C', 'incremental=/h/b', 'm.rs']), '/rcbx/inc');
  expect(renderRustcArgs(both)).toEqual(['m.rs', '-C', 'incremental=/rcbx/inc']);
});

const CLASSIFY: Array<[string[], 'compile' | 'probe']> = [
  [VERSION_PROBE, 'probe'],
  [['-V'], 'probe'],
  [['--version'], 'probe'],
  [['-Vv'], 'probe'],
  [TARGET_INFO_PROBE, 'probe'],
  [['--print', 'sysroot'], 'probe'],
  [['--print=cfg', '--target', 'x86_64-unknown-linux-gnu'], 'probe'],
  [['--print=file-names', '--crate-type', 'lib', 'src/lib.rs'], 'probe'],
  [['--print', 'crate-name', 'src/lib.rs'], 'probe'],
  [['-C', 'help'], 'probe'],
  [['-Whelp', 'src/lib.rs'], 'probe'],
  [['--explain', 'E0308'], 'probe'],
  [['--help'], 'probe'],
  [['--', '-'], 'probe'],
  [['--crate-name', 'x'], 'probe'],
  [BUILD_SCRIPT, 'compile'],
  [LIB_WITH_EXTERNS, 'compile'],
  [PROC_MACRO, 'compile'],
  [BIN_INCREMENTAL, 'compile'],
  [BUILD_SCRIPT_PROBE, 'compile'],
  [['--print', 'native-static-libs', '--crate-type', 'staticlib', 'src/lib.rs'], 'compile'],
  [['--print=link-args', 'src/main.rs'], 'compile'],
  // '-' here is -o's value (stdout), not a stdin input.
  [['-o', '-', 'src/main.rs'], 'compile'],
  [['--crate-name', '-v', 'src/main.rs'], 'compile'],
  // An argfile may hold the input; it is not read here.
  [['@/tmp/args'], 'compile'],
  // Unknown flags do not throw here; the full parse decides.
  [['--bogus', 'src/main.rs'], 'compile'],
];

for (const [argv, kind] of CLASSIFY) {
  test(`classify ${kind}: ${argv.slice(0, 6).join(' ')}`, () => {
    expect(classifyRustcCall(argv)).toBe(kind);
  });
}

test('render never lets an empty joined value swallow the next argument', () => {
  const call = mapRustcPaths(parseRustcArgs(['-o/out/bin', 'm.rs']), (p) => (p === '/out/bin' ? '' : p));
  expect(renderRustcArgs(call)).toEqual(['-o', '', 'm.rs']);
  expect(parseRustcArgs(renderRustcArgs(call)).input).toBe('m.rs');
});

test('withOutDir replaces --out-dir in place, or adds it before any --', () => {
  const replaced = withOutDir(parseRustcArgs(BUILD_SCRIPT_PROBE), '/out');
  expect(replaced.outDir).toBe('/out');
  expect(renderRustcArgs(replaced)).toEqual(BUILD_SCRIPT_PROBE.map((a) => (a.endsWith('/out/probe') ? '/out' : a)));

  const added = withOutDir(parseRustcArgs(['--crate-name', 'x', '--', 'm.rs']), '/out');
  expect(added.outDir).toBe('/out');
  expect(added.input).toBe('m.rs');
  expect(renderRustcArgs(added)).toEqual(['--crate-name', 'x', '--out-dir', '/out', '--', 'm.rs']);
  expect(renderRustcArgs(withOutDir(parseRustcArgs(['m.rs']), '/o'))).toEqual(['m.rs', '--out-dir', '/o']);
});

describe('mapRemapFrom', () => {
  test('maps FROM through fn, keeps TO, leaves prefixes fn declines', () => {
    const call = parseRustcArgs(['--crate-name', 'x', 'src/lib.rs', '--remap-path-prefix=/home/u/proj=.', '--remap-path-prefix', '/elsewhere=/e']);
    const mapped = mapRemapFrom(call, (from) => (from === '/home/u/proj' ? '/rcbx/ws' : undefined));
    expect(mapped.remapPathPrefixes).toEqual([['/rcbx/ws', '.'], ['/elsewhere', '/e']]);
    expect(renderRustcArgs(mapped)).toEqual(['--crate-name', 'x', 'src/lib.rs', '--remap-path-prefix=/rcbx/ws=.', '--remap-path-prefix', '/elsewhere=/e']);
  });
});

describe('withTargetCpu', () => {
  const rewrite = (argv: string[], features: string[] = ['-amx-tile', '+rtm']) => renderRustcArgs(withTargetCpu(parseRustcArgs(argv), 'emeraldrapids', features));

  test('the model knows the target CPU rustc uses (the last) and every target-feature in order', () => {
    const call = parseRustcArgs(['-C', 'target-cpu=haswell', '-Ctarget_cpu=native', '-C', 'target-feature=+avx2', '--codegen=target-feature=-sse4.1', 'm.rs']);
    expect(call.targetCpu).toBe('native');
    expect(call.targetFeatures).toEqual(['+avx2', '-sse4.1']);
  });

  test('every spelling of -C target-cpu=native, with our features right after it', () => {
    const ours = ['-C', 'target-feature=-amx-tile,+rtm'];
    expect(rewrite(['-C', 'target-cpu=native', 'm.rs'])).toEqual(['-C', 'target-cpu=emeraldrapids', ...ours, 'm.rs']);
    expect(rewrite(['-Ctarget-cpu=native', 'm.rs'])).toEqual(['-Ctarget-cpu=emeraldrapids', ...ours, 'm.rs']);
    expect(rewrite(['--codegen', 'target_cpu=native', 'm.rs'])).toEqual(['-C', 'target-cpu=emeraldrapids', ...ours, 'm.rs']);
    expect(rewrite(['--codegen=target-cpu=native', 'm.rs'])).toEqual(['--codegen=target-cpu=emeraldrapids', ...ours, 'm.rs']);
    expect(rewrite(['--C=target-cpu=native', 'm.rs'])).toEqual(['--codegen=target-cpu=emeraldrapids', ...ours, 'm.rs']);
    expect(rewrite(['-gCtarget-cpu=native', 'm.rs'])).toEqual(['-g', '-Ctarget-cpu=emeraldrapids', ...ours, 'm.rs']);
  });

  test('the user\'s target features still come after ours, wherever they were', () => {
    const before = withTargetCpu(parseRustcArgs(['-C', 'target-feature=+avx2', '-C', 'target-cpu=native', '-C', 'target-feature=-sse4.1', 'm.rs']), 'x', ['+rtm']);
    expect(before.targetFeatures).toEqual(['+rtm', '+avx2', '-sse4.1']);
    expect(before.targetCpu).toBe('x');
    const after = withTargetCpu(parseRustcArgs(['-C', 'target-cpu=native', '-C', 'target-feature=-sse4.1', 'm.rs']), 'x', ['+rtm']);
    expect(after.targetFeatures).toEqual(['+rtm', '-sse4.1']);
  });

  test('only the last target-cpu is replaced; no features, no extra token', () => {
    expect(rewrite(['-C', 'target-cpu=native', '-C', 'target-cpu=native', 'm.rs'], [])).toEqual(['-C', 'target-cpu=native', '-C', 'target-cpu=emeraldrapids', 'm.rs']);
    expect(() => withTargetCpu(parseRustcArgs(['m.rs']), 'x', [])).toThrow(InvalidRustcArgs);
  });
});
