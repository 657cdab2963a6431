/** Two unit specs the renderers' tests share: a crates.io crate and a workspace crate that depends on it. */
import type { UnitSpec } from '../../src/render/dockerfile';
import { SANDBOX } from '../../src/plan/sandbox-paths';

export const BASE = 'rustcbuildx/toolchain:1.95.0-59807616e1fa-x86_64-unknown-linux-gnu';
export const INDEX = 'index.crates.io-1949cf8c6b5b557f';

/** itoa from crates.io: an archive source, nothing to copy in. */
export function registrySpec(): UnitSpec {
  const dir = `/rcbx/cargo/registry/src/${INDEX}/itoa-1.0.15`;
  return {
    key: 'itoa-0123abcd4567ef89',
    baseImage: BASE,
    baseImageConfig: { env: ['PATH=/opt/rust/bin:/usr/bin:/bin', 'LANG=C.UTF-8'], user: '' },
    source: { staged: { kind: 'archive', ctxPath: `crates/${INDEX}/itoa-1.0.15.crate`, topDir: 'itoa-1.0.15' }, mountTarget: dir },
    inputs: [],
    cwd: dir,
    env: [
      ['CARGO', '/usr/local/cargo/bin/cargo'],
      ['CARGO_CRATE_NAME', 'itoa'],
      ['CARGO_MANIFEST_DIR', dir],
      ['CARGO_PKG_AUTHORS', 'David Tolnay <dtolnay@gmail.com>'],
      ['CARGO_PKG_DESCRIPTION', 'Fast integer primitive to string conversion'],
      ['CARGO_PKG_NAME', 'itoa'],
      ['CARGO_PKG_VERSION', '1.0.15'],
    ],
    program: ['rustc'],
    args: [
      '--crate-name', 'itoa', '--edition=2018', 'src/lib.rs', '--error-format=json',
      '--json=diagnostic-rendered-ansi,artifacts,future-incompat', '--crate-type', 'lib',
      '--emit=dep-info,metadata,link', '-C', 'embed-bitcode=no', '-C', 'debuginfo=2',
      '--check-cfg', 'cfg(docsrs,test)', '--check-cfg', 'cfg(feature, values("no-panic"))',
      '-C', 'metadata=0123abcd4567ef89', '-C', 'extra-filename=-0123abcd4567ef89',
      '--out-dir', SANDBOX.out, '-L', 'dependency=/rcbx/t/debug/deps', '--cap-lints', 'allow',
    ],
    mkdirs: ['/rcbx/t/debug/deps'],
  };
}

/** A workspace crate (mixed-case key on purpose): a tree source, a dependency unit and an OUT_DIR tree. */
export function workspaceSpec(): UnitSpec {
  return {
    key: 'Demo-ABCdef0123456789',
    baseImage: BASE,
    baseImageConfig: { env: ['LANG=C.UTF-8'], user: 'builder' },
    source: { staged: { kind: 'tree', ctxPath: 'ws/demo-0a1b2c3d4e5f60718293a4b5' }, mountTarget: '/rcbx/ws/crates/demo' },
    inputs: [
      { kind: 'unit', key: 'itoa-0123abcd4567ef89', target: '/rcbx/d/0' },
      { kind: 'tree', ctxPath: 'dirs/out-99aa88bb77cc66dd55ee44ff', target: '/rcbx/t/debug/build/demo-99aa/out' },
    ],
    cwd: '/rcbx/ws',
    env: [
      ['CARGO_CRATE_NAME', 'demo'],
      ['CARGO_PKG_DESCRIPTION', "A demo crate.\nIt's got \"quotes\", $HOME, `ticks` and a trailing newline.\n"],
      ['CARGO_PKG_NAME', 'demo'],
      ['OUT_DIR', '/rcbx/t/debug/build/demo-99aa/out'],
    ],
    program: ['clippy-driver', 'rustc'],
    args: [
      '--crate-name', 'demo', '--edition=2021', 'crates/demo/src/main.rs', '--crate-type', 'bin',
      '--cfg', 'feature="default"', '-C', 'extra-filename=-ABCdef0123456789', '--out-dir', SANDBOX.out,
      '-L', 'dependency=/rcbx/t/debug/deps', '--extern', 'itoa=/rcbx/d/0/libitoa-0123abcd4567ef89.rmeta', '-L', 'dependency=/rcbx/d/0',
    ],
    mkdirs: ['/rcbx/t/debug/deps'],
  };
}
