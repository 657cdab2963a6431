/**
 * What a step that failed in the sandbox lacked (a library to link, a pkg-config module, a header, a
 * tool), read from its output, and the Debian package that provides it: the fix a user can act on is
 * `base.packages`. The tables name the packages of Debian 12; an unknown name is said without one.
 */

/** `-l` names (`libNAME.so`) → the package with the library to link. */
const LIBRARIES: Readonly<Record<string, string>> = {
  ssl: 'libssl-dev', crypto: 'libssl-dev', z: 'zlib1g-dev', sqlite3: 'libsqlite3-dev', pq: 'libpq-dev',
  'dbus-1': 'libdbus-1-dev', udev: 'libudev-dev', fontconfig: 'libfontconfig-dev', freetype: 'libfreetype-dev',
  X11: 'libx11-dev', xcb: 'libxcb1-dev', asound: 'libasound2-dev', curl: 'libcurl4-openssl-dev', git2: 'libgit2-dev',
  ssh2: 'libssh2-1-dev', lzma: 'liblzma-dev', bz2: 'libbz2-dev', zstd: 'libzstd-dev', gmp: 'libgmp-dev', ffi: 'libffi-dev',
  'pcre2-8': 'libpcre2-dev', mysqlclient: 'default-libmysqlclient-dev', sodium: 'libsodium-dev', expat: 'libexpat1-dev',
  xml2: 'libxml2-dev', png16: 'libpng-dev', jpeg: 'libjpeg-dev', systemd: 'libsystemd-dev', seccomp: 'libseccomp-dev',
  cap: 'libcap-dev', pcap: 'libpcap-dev', 'usb-1.0': 'libusb-1.0-0-dev', uuid: 'uuid-dev', magic: 'libmagic-dev',
  archive: 'libarchive-dev', zmq: 'libzmq3-dev', clang: 'libclang-dev', 'stdc++': 'g++', protobuf: 'libprotobuf-dev',
  'gtk-3': 'libgtk-3-dev', 'gdk-3': 'libgtk-3-dev', 'glib-2.0': 'libglib2.0-dev', 'gobject-2.0': 'libglib2.0-dev',
  cairo: 'libcairo2-dev', 'pango-1.0': 'libpango1.0-dev', EGL: 'libegl-dev', GL: 'libgl-dev', wayland: 'libwayland-dev',
  xkbcommon: 'libxkbcommon-dev', hdf5: 'libhdf5-dev', lz4: 'liblz4-dev', snappy: 'libsnappy-dev', rocksdb: 'librocksdb-dev',
};

/** pkg-config modules → package. */
const MODULES: Readonly<Record<string, string>> = {
  openssl: 'libssl-dev', libssl: 'libssl-dev', libcrypto: 'libssl-dev', sqlite3: 'libsqlite3-dev', zlib: 'zlib1g-dev',
  libpq: 'libpq-dev', 'dbus-1': 'libdbus-1-dev', libudev: 'libudev-dev', fontconfig: 'libfontconfig-dev', freetype2: 'libfreetype-dev',
  x11: 'libx11-dev', xcb: 'libxcb1-dev', alsa: 'libasound2-dev', libcurl: 'libcurl4-openssl-dev', libgit2: 'libgit2-dev',
  libssh2: 'libssh2-1-dev', liblzma: 'liblzma-dev', libzstd: 'libzstd-dev', 'gtk+-3.0': 'libgtk-3-dev', 'glib-2.0': 'libglib2.0-dev',
  libsystemd: 'libsystemd-dev', 'libusb-1.0': 'libusb-1.0-0-dev', uuid: 'uuid-dev', libseccomp: 'libseccomp-dev',
  libpcap: 'libpcap-dev', 'libxml-2.0': 'libxml2-dev', libpng: 'libpng-dev', libsodium: 'libsodium-dev', libffi: 'libffi-dev',
  xkbcommon: 'libxkbcommon-dev', 'wayland-client': 'libwayland-dev', cairo: 'libcairo2-dev', protobuf: 'libprotobuf-dev',
};

/** Headers → package. */
const HEADERS: Readonly<Record<string, string>> = {
  'zlib.h': 'zlib1g-dev', 'openssl/ssl.h': 'libssl-dev', 'openssl/opensslv.h': 'libssl-dev', 'openssl/crypto.h': 'libssl-dev',
  'sqlite3.h': 'libsqlite3-dev', 'libpq-fe.h': 'libpq-dev', 'curl/curl.h': 'libcurl4-openssl-dev', 'bzlib.h': 'libbz2-dev',
  'lzma.h': 'liblzma-dev', 'zstd.h': 'libzstd-dev', 'ffi.h': 'libffi-dev', 'libudev.h': 'libudev-dev', 'dbus/dbus.h': 'libdbus-1-dev',
};

/** Programs → package. */
const TOOLS: Readonly<Record<string, string>> = {
  'pkg-config': 'pkg-config', pkgconf: 'pkg-config', make: 'make', cmake: 'cmake', 'c++': 'g++', 'g++': 'g++', clang: 'clang',
  perl: 'perl', python3: 'python3', python: 'python3', nasm: 'nasm', yasm: 'yasm', protoc: 'protobuf-compiler', git: 'git',
  autoreconf: 'autoconf', autoconf: 'autoconf', automake: 'automake', libtool: 'libtool', m4: 'm4', bison: 'bison', flex: 'flex',
  ninja: 'ninja-build', meson: 'meson', 'llvm-config': 'llvm-dev', mold: 'mold', 'ld.lld': 'lld', lld: 'lld',
};

/** Words before `: not found` that are not programs (a message's level, the linker's own line). */
const NOT_TOOLS = new Set(['ld', 'pkg-config', 'warning', 'error', 'note', 'help', 'file', 'package', 'library', 'Error', 'Warning']);

/** The Debian package holding the library a `-lNAME` links, when the table knows it. */
export function packageForLibrary(name: string): string | undefined {
  return Object.hasOwn(LIBRARIES, name) ? LIBRARIES[name] : undefined;
}

export interface MissingPart {
  /** what was missing, as the user would name it (`the library ssl (-lssl)`) */
  what: string;
  /** the Debian package with it, when known */
  package: string | undefined;
}

/** Every missing part the output names (one per package), in the order a fix needs them. */
export function missingParts(output: string): MissingPart[] {
  // JSON diagnostics escape their text: read it as it would print.
  const text = output.replaceAll('\\n', '\n').replaceAll('\\"', '"');
  const found: MissingPart[] = [];
  const add = (what: string, pkg: string | undefined) => {
    if (!found.some((f) => f.what === what || (pkg !== undefined && f.package === pkg))) found.push({ what, package: pkg });
  };
  for (const m of text.matchAll(/(?:cannot find|unable to find library) -l(:(?:lib)?)?([\w.+-]+?)(?:\.so[\d.]*|\.a)?(?=[:\s"'`]|$)/gm)) {
    // `-l:libfoo.so` names the file: the library is foo
    const lib = m[2]!;
    add(`the library ${lib} (-l${m[1] ? `${m[1]}${lib}` : lib})`, LIBRARIES[lib]);
  }
  for (const m of text.matchAll(/Package '?([\w.+-]+)'?,? (?:required by '[^']*', )?was not found in the pkg-config search path|could not find system library '([\w.+-]+)'/g)) {
    const module = (m[1] ?? m[2])!;
    add(`the pkg-config module ${module}`, MODULES[module]);
  }
  if (/Could not find directory of OpenSSL installation|OPENSSL_DIR unset/.test(text)) add('the OpenSSL headers and libraries', 'libssl-dev');
  if (/The pkg-config command could not be found|`pkg-config`\s+could not be found|pkg-config: (?:not found|No such file)|failed to run pkg-config|"pkg-config": No such file/i.test(text)) add('the program pkg-config', 'pkg-config');
  for (const m of text.matchAll(/fatal error: ([\w./+-]+\.h): No such file or directory/g)) add(`the header ${m[1]}`, HEADERS[m[1]!]);
  const tools = [
    ...text.matchAll(/failed to find tool "([\w.+-]+)"/g),
    ...text.matchAll(/is `([\w.+-]+)` not installed\?/g),
    ...text.matchAll(/(?:^|[\s:"'])(?:sh: \d+: )?([\w.+-]+): (?:command )?not found/gm),
    ...text.matchAll(/failed to execute command: No such file or directory[^\n]*?"([\w.+-]+)"/g),
  ];
  for (const m of tools) if (m[1] && !NOT_TOOLS.has(m[1])) add(`the program ${m[1]}`, TOOLS[m[1]]);
  return found;
}

/** The first missing part the output names, if any. */
export function missingPart(output: string): MissingPart | undefined {
  return missingParts(output)[0];
}

/**
 * `add "a", "b" to base.packages` (`add "a" and <rest> to base.packages` when some are not known by
 * name): the advice of a fallback reason. `packagesAdvised` reads the names back (\`base suggest\`).
 */
export function adviseBasePackages(packages: readonly string[], rest?: string): string {
  const add = [packages.map((p) => `"${p}"`).join(', '), rest ?? ''].filter(Boolean).join(' and ');
  return `add ${add} to base.packages`;
}

/** The packages a reason's advice names (see adviseBasePackages). */
export function packagesAdvised(reason: string): string[] {
  const m = /\badd ((?:"[a-z0-9][a-z0-9+.-]*"(?:, )?)+)(?: and [^"]*?)? to base\.packages/.exec(reason);
  return m ? [...m[1]!.matchAll(/"([^"]+)"/g)].map((x) => x[1]!) : [];
}

/** The fix, as a clause of a fallback reason: what the image lacks and the packages to add. */
export function missingPartHint(output: string): string | undefined {
  const parts = missingParts(output);
  if (parts.length === 0) return undefined;
  const what = parts.map((p) => p.what);
  const known = parts.flatMap((p) => (p.package ? [p.package] : []));
  const unknown = parts.some((p) => !p.package);
  const lacks = what.length === 1 ? what[0] : `${what.slice(0, -1).join(', ')} and ${what[what.length - 1]}`;
  return `the image lacks ${lacks}: ${adviseBasePackages(known, unknown ? 'the package that provides ' + (known.length ? 'the rest' : 'it') : undefined)}, then run \`rustcbuildx base build\``;
}
