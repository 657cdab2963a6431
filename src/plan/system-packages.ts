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

export interface MissingPart {
  /** what was missing, as the user would name it (`the library ssl (-lssl)`) */
  what: string;
  /** the Debian package with it, when known */
  package: string | undefined;
}

/** The first missing part the output names, if any. */
export function missingPart(output: string): MissingPart | undefined {
  // JSON diagnostics escape their text: read it as it would print.
  const text = output.replaceAll('\\n', '\n').replaceAll('\\"', '"').replaceAll('\\u001b', '\u001b');
  const lib = /(?:cannot find|unable to find library) -l:?([\w.+-]+?)(?:\.so|\.a)?(?=[:\s"'`]|$)/m.exec(text)?.[1];
  if (lib) return { what: `the library ${lib} (-l${lib})`, package: LIBRARIES[lib] };
  const module = /Package '?([\w.+-]+)'?,? (?:required by '[^']*', )?was not found in the pkg-config search path/.exec(text)?.[1] ?? /could not find system library '([\w.+-]+)'/.exec(text)?.[1];
  if (module) return { what: `the pkg-config module ${module}`, package: MODULES[module] };
  if (/The pkg-config command could not be found|pkg-config: (?:not found|No such file)|failed to run pkg-config|"pkg-config": No such file/i.test(text)) return { what: 'the program pkg-config', package: 'pkg-config' };
  if (/Could not find directory of OpenSSL installation|OPENSSL_DIR unset/.test(text)) return { what: 'the OpenSSL headers and libraries', package: 'libssl-dev' };
  const header = /fatal error: ([\w./+-]+\.h): No such file or directory/.exec(text)?.[1];
  if (header) return { what: `the header ${header}`, package: HEADERS[header] };
  const tool =
    /failed to find tool "([\w.+-]+)"/.exec(text)?.[1] ??
    /is `([\w.+-]+)` not installed\?/.exec(text)?.[1] ??
    /(?:^|[\s:"'])(?:sh: \d+: )?([\w.+-]+): (?:command )?not found/m.exec(text)?.[1] ??
    /failed to execute command: No such file or directory[^\n]*?"([\w.+-]+)"/.exec(text)?.[1];
  if (tool && tool !== 'ld') return { what: `the program ${tool}`, package: TOOLS[tool] };
  return undefined;
}

/** The fix, as a clause of a fallback reason: what the image lacks and the package to add. */
export function missingPartHint(output: string): string | undefined {
  const part = missingPart(output);
  if (!part) return undefined;
  return part.package
    ? `the image lacks ${part.what}: add "${part.package}" to base.packages, then run \`rustcbuildx base build\``
    : `the image lacks ${part.what}: add the package that provides it to base.packages, then run \`rustcbuildx base build\``;
}
