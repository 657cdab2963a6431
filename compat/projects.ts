/**
 * The projects `npm run compat` builds: real code from crates.io, each chosen for a shape that has broken
 * (or could break) the wrapper. Sources are fetched by cargo; only each project's Cargo.lock is kept here
 * (compat/locks/NAME/Cargo.lock), so every run builds the same versions.
 */

export interface CompatProject {
  name: string;
  /** what this project exercises */
  shape: string;
  /** one crates.io package, or several unpacked side by side as the path members of one workspace */
  source: { crate: string; version: string } | { workspace: ReadonlyArray<{ crate: string; version: string }> };
  /** `test` also runs the tests, whose results must match plain cargo's */
  command: 'build' | 'test';
  /** more arguments for cargo, after the command */
  args?: readonly string[];
}

export const COMPAT_PROJECTS: readonly CompatProject[] = [
  { name: 'ripgrep', shape: 'CLI, few dependencies, a build script', source: { crate: 'ripgrep', version: '15.2.0' }, command: 'build' },
  { name: 'fd-find', shape: 'CLI; jemalloc built by its build script with make', source: { crate: 'fd-find', version: '10.5.0' }, command: 'build' },
  { name: 'hyperfine', shape: 'CLI, clap derive, serde derive', source: { crate: 'hyperfine', version: '1.20.0' }, command: 'build' },
  { name: 'sd', shape: 'CLI with tests (the binary run by its tests)', source: { crate: 'sd', version: '1.0.0' }, command: 'test' },
  { name: 'du-dust', shape: 'CLI, rayon, clap', source: { crate: 'du-dust', version: '1.2.7' }, command: 'build' },
  { name: 'just', shape: 'CLI, proc-macro heavy (serde, clap, strum derives)', source: { crate: 'just', version: '1.59.0' }, command: 'build' },
  { name: 'tokei', shape: 'CLI, many units, build script generating code', source: { crate: 'tokei', version: '15.0.0' }, command: 'build' },
  { name: 'openssl', shape: 'system library: libssl through openssl-sys and pkg-config (tests link it)', source: { crate: 'openssl', version: '0.10.82' }, command: 'test' },
  // Its tests need nightly (assert_matches) with plain cargo too: its examples link.
  { name: 'rusqlite', shape: 'system library: libsqlite3 without `bundled` (examples link it)', source: { crate: 'rusqlite', version: '0.43.0' }, command: 'build', args: ['--examples'] },
  { name: 'flate2-zlib', shape: 'system library: zlib through libz-sys, dynamic (tests link it)', source: { crate: 'flate2', version: '1.1.11' }, command: 'test', args: ['--no-default-features', '--features', 'zlib'] },
  // Its published package lacks files its tests include: its examples build.
  { name: 'zstd', shape: 'C compiled by cc in a build script (examples link it)', source: { crate: 'zstd', version: '0.14.4' }, command: 'build', args: ['--examples'] },
  { name: 'ring', shape: 'C and assembly compiled by a build script', source: { crate: 'ring', version: '0.17.14' }, command: 'build' },
  // The case of the system-libraries issue: zlib found by libz-sys with pkg-config, linked by the binary.
  { name: 'bat', shape: 'CLI, 224 units; its binary links the system zlib (libz-sys, pkg-config)', source: { crate: 'bat', version: '0.26.1' }, command: 'build' },
  {
    name: 'clap-workspace',
    shape: 'workspace of path members (clap and its builder, derive, lexer), proc-macro',
    source: {
      workspace: [
        { crate: 'clap', version: '4.6.9' },
        { crate: 'clap_builder', version: '4.6.7' },
        { crate: 'clap_derive', version: '4.6.9' },
        { crate: 'clap_lex', version: '1.1.2' },
      ],
    },
    command: 'build',
    args: ['--workspace', '--features', 'clap/derive'],
  },
];
