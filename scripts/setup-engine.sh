#!/usr/bin/env bash
# Makes a BuildKit engine available: docker engine + buildx plugin (started if not running), podman, and
# mmdebstrap for local base images. Idempotent: where something already works it is left alone.
# Prints one line per thing it did; exits non-zero with the exact commands when it cannot install.
set -euo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
fi

MANUAL_STEPS='On Debian 12 / Ubuntu, as root:
  # docker engine >= 23 with the buildx plugin (Debian trixie packages install on bookworm):
  apt-get install docker.io docker-buildx   # from a trixie source pinned at priority 100, or your distro
  dockerd &                                  # when no service manager starts it
  apt-get install podman mmdebstrap'

can_install() {
  [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }
}

need_install() {
  can_install || die "cannot install $* here (not Debian/Ubuntu, or not root and no passwordless sudo).
$MANUAL_STEPS"
}

APT_UPDATED=""
apt_update() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

buildx_works() { docker buildx version >/dev/null 2>&1; }
daemon_answers() { timeout 10 docker info >/dev/null 2>&1; }

# Debian bookworm's docker.io (20.10) lacks buildx; trixie's docker.io 26 + docker-buildx install on
# bookworm with bookworm's own dependencies. Pin trixie low so nothing else is ever upgraded from it.
add_trixie_source() {
  local list=/etc/apt/sources.list.d/rustcbuildx-trixie.sources pref=/etc/apt/preferences.d/rustcbuildx-trixie
  [ -f "$list" ] && return 0
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | grep -m1 debian || true)
  [ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | grep -m1 debian || true)
  [ -n "$uri" ] || die "no Debian mirror found in the apt sources to add trixie from.
$MANUAL_STEPS"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" | $SUDO tee "$list" >/dev/null
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' | $SUDO tee "$pref" >/dev/null
  APT_UPDATED=""
  say "added a trixie apt source pinned at priority 100 ($list) for docker.io and docker-buildx only"
}

install_docker() {
  need_install "docker engine with buildx"
  if grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
    add_trixie_source
    apt_update
    apt_install docker.io/trixie docker-buildx/trixie
    say "installed docker.io and docker-buildx from trixie"
  else
    apt_update
    apt_install docker.io docker-buildx || die "could not install docker.io docker-buildx.
$MANUAL_STEPS"
    say "installed docker.io and docker-buildx"
  fi
}

start_dockerd() {
  command -v dockerd >/dev/null 2>&1 || die "dockerd is not installed.
$MANUAL_STEPS"
  [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ] || die "the docker daemon is not running and this user cannot start it: run 'sudo dockerd &'"
  local log=/var/log/rustcbuildx-dockerd.log
  $SUDO sh -c "nohup dockerd >$log 2>&1 &"
  for _ in $(seq 1 120); do
    daemon_answers && { say "started dockerd (log: $log)"; return 0; }
    sleep 0.5
  done
  tail -n 20 "$log" >&2 || true
  die "dockerd did not answer within 60 s (log: $log)"
}

# --- docker + buildx ---
if ! command -v dockerd >/dev/null 2>&1 && ! daemon_answers; then
  install_docker
elif ! buildx_works; then
  if [ -x /usr/libexec/docker/cli-plugins/docker-buildx ] || [ -x "$HOME/.docker/cli-plugins/docker-buildx" ]; then :; else
    install_docker
  fi
fi
buildx_works || die "docker buildx does not work even after install ('docker buildx version' fails)."
daemon_answers || start_dockerd

# --- podman (a second engine the runner supports) ---
if ! command -v podman >/dev/null 2>&1; then
  need_install podman
  apt_update
  apt_install podman
  say "installed podman"
fi

# --- mmdebstrap (makes base-image root filesystems from the machine's own apt sources) ---
if ! command -v mmdebstrap >/dev/null 2>&1 && [ -f /etc/debian_version ]; then
  need_install mmdebstrap
  apt_update
  apt_install mmdebstrap
  say "installed mmdebstrap"
fi

say "engine ready: docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), buildx $(docker buildx version | awk '{print $2}')$(command -v podman >/dev/null && printf ', podman %s' "$(podman --version | awk '{print $3}')")"
