#!/usr/bin/env bash
# What the integration tests need beyond `npm run setup`: libssl-dev and pkg-config, and a docker 20.10
# client (Debian bookworm's), to test the `DOCKER_BUILDKIT=1 docker build` runner that older clients use
# (kept in .cache/, not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
# test/integration/system-libs.test.ts builds openssl-sys against the system OpenSSL, here as in the
# sandbox: this machine needs what its build script asks for too.
missing=
if ! pkg-config --exists openssl 2>/dev/null; then
  missing=$(for p in libssl-dev pkg-config; do [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || echo "$p"; done)
fi
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "setup-test-deps: install $missing (the system-libs test needs them)" >&2; exit 1; }
  apt-get install -y -qq --no-install-recommends $missing >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
  echo "setup-test-deps: installed $missing"
fi
dest=.cache/docker-20.10/docker
[ -x "$dest" ] && exit 0
command -v apt-get >/dev/null || { echo "setup-test-deps: needs apt-get to fetch Debian's docker.io 20.10 client" >&2; exit 1; }
version=$(apt-cache madison docker.io | awk '$3 ~ /^20\.10\./ {print $3; exit}')
if [ -z "$version" ]; then apt-get update -qq >/dev/null; version=$(apt-cache madison docker.io | awk '$3 ~ /^20\.10\./ {print $3; exit}'); fi
[ -n "$version" ] || { echo "setup-test-deps: no docker.io 20.10 in the apt sources (Debian bookworm has it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "docker.io=$version" 2>/dev/null && dpkg-deb -x docker.io_*.deb x)
mkdir -p "$(dirname "$dest")"
cp "$work/x/usr/bin/docker" "$dest"
echo "setup-test-deps: docker client $version in $dest"
