#!/usr/bin/env bash
# A real OCI registry on loopback (Debian's docker-registry, distribution 2.8), for tests and the benchmark:
#   scripts/registry.sh start DIR PORT [HTPASSWD]
#                        idempotent; the config, storage (DIR/data), pid and log live in DIR; serves
#                        http://127.0.0.1:PORT with deletion enabled; with HTPASSWD (bcrypt entries), basic
#                        auth. Returns once GET /v2/ answers.
#   scripts/registry.sh stop DIR [PORT]
#                        stops it and waits until it has exited (the storage stays)
# Installs the docker-registry package with apt-get when it is missing.
set -euo pipefail

say() { echo "registry: $*" >&2; }
die() { echo "registry: error: $*" >&2; exit 1; }

usage() { die "usage: $0 start DIR PORT [HTPASSWD] | stop DIR [PORT]"; }
[ $# -ge 2 ] || usage
cmd=$1
# stop: a DIR that is not there holds no registry.
[ "$cmd" = start ] && mkdir -p "$2"
[ -d "$2" ] || exit 0
DIR=$(cd "$2" && pwd)
PIDFILE=$DIR/pid

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# Any HTTP answer (a 401 too) means it serves; 000 is no connection.
answers() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/v2/")" != 000 ]; }

install_registry() {
  command -v docker-registry >/dev/null && return
  command -v apt-get >/dev/null || die "docker-registry is missing and there is no apt-get: install distribution's registry (https://distribution.github.io/distribution/)"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  say "installing docker-registry with apt-get"
  if ! "${sudo[@]}" apt-get install -y -qq docker-registry >/dev/null; then
    "${sudo[@]}" apt-get update -qq >/dev/null
    "${sudo[@]}" apt-get install -y -qq docker-registry >/dev/null || die "apt-get install docker-registry failed"
  fi
}

start() {
  local port=$1 htpasswd=${2:-}
  [[ $port =~ ^[0-9]+$ ]] || die "PORT must be a number, not \"$port\""
  if running; then
    answers "$port" || die "a registry from $DIR runs (pid $(cat "$PIDFILE")) but does not answer on port $port; run: $0 stop $DIR"
    return
  fi
  answers "$port" && die "something else already serves on 127.0.0.1:$port; choose another PORT"
  install_registry
  mkdir -p "$DIR/data"
  {
    echo "version: 0.1"
    echo "log: {level: warn, accesslog: {disabled: true}}"
    echo "storage: {filesystem: {rootdirectory: \"$DIR/data\"}, delete: {enabled: true}}"
    echo "http: {addr: \"127.0.0.1:$port\", secret: \"$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')\"}"
    if [ -n "$htpasswd" ]; then
      [ -f "$htpasswd" ] || die "no htpasswd file at $htpasswd"
      echo "auth: {htpasswd: {realm: rcbx-test, path: \"$(realpath "$htpasswd")\"}}"
    fi
  } >"$DIR/config.yml"
  # setsid: its own session, so it outlives the shell (and the test run's process group) that started it.
  setsid docker-registry serve "$DIR/config.yml" >"$DIR/log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + 20))
  while [ $SECONDS -lt $deadline ] && running; do
    answers "$port" && return
    sleep 0.2
  done
  cat "$DIR/log" >&2
  stop
  die "the registry did not come up on 127.0.0.1:$port (its log is above)"
}

stop() {
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PIDFILE"
}

case $cmd in
  start) [ $# -ge 3 ] || usage; start "$3" "${4:-}" ;;
  stop) stop ;;
  *) usage ;;
esac
