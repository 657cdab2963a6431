#!/usr/bin/env bash
# A second, separate docker engine reachable like a remote builder, for tests and the benchmark:
#   scripts/remote-engine.sh start [--latency-ms N]
#                                    idempotent; prints the settings to use it (eval-able lines). With
#                                    --latency-ms, also a delaying TCP relay in front of sshd (N ms each way,
#                                    bench/lib/delay-relay.ts) reached as DOCKER_HOST=ssh://rcbx-remote-slow
#   scripts/remote-engine.sh stop    stops its dockerd, sshd and relay (the store stays for the next start)
#   scripts/remote-engine.sh env     prints the settings only
#   scripts/remote-engine.sh status  exits 0 when the engine answers over ssh (and through the relay, if any)
# The engine runs in a network namespace of its own (`rcbx-remote`, loopback only) with its own data
# root, so it shares no store or cache with the machine's engine; sshd on 127.0.0.1:$PORT, with its own
# host key and a test user whose key is in ./state, lets the docker client reach it as
# DOCKER_HOST=ssh://rcbx-remote. The ssh client settings live in $STATE/ssh_config; $STATE/bin/ssh is
# `ssh -F` that file, to be put first on PATH (a real user has the same in ~/.ssh/config).
# This kernel has no netem: the relay gives the path a real network's round trip (the benchmark's remote
# scenarios use it); rcbx-remote stays the direct, undelayed path.
# The same engine is also reachable as DOCKER_HOST=tcp://127.0.0.1:$TLS_PORT with DOCKER_TLS_VERIFY=1 and
# DOCKER_CERT_PATH=$STATE/tls/client (a CA, server and client certificates made here by openssl; socat
# terminates mutual TLS in front of the engine's socket, as a TLS proxy in front of a daemon does).
# Needs root (network namespaces, a second dockerd, sshd). Facts behind it: ../shared/facts/remote.md.
set -euo pipefail

STATE=${RCBX_REMOTE_STATE:-/var/lib/rcbx-remote}
NS=rcbx-remote
PORT=${RCBX_REMOTE_PORT:-2222}
USER_NAME=rcbxremote
SOCK=/run/rcbx-remote.sock
HOST_ALIAS=rcbx-remote
SLOW_ALIAS=rcbx-remote-slow
SLOW_PORT=${RCBX_REMOTE_SLOW_PORT:-2223}
TLS_PORT=${RCBX_REMOTE_TLS_PORT:-2376}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "remote-engine: $*" >&2; }
die() { echo "remote-engine: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, a second dockerd, sshd)"

settings() {
  echo "DOCKER_HOST=ssh://$HOST_ALIAS"
  echo "PATH=$STATE/bin:$PATH"
  if relay_running; then
    echo "RCBX_REMOTE_SLOW_HOST=ssh://$SLOW_ALIAS"
    echo "RCBX_REMOTE_LATENCY_MS=$(cat "$STATE/relay.delay")"
  fi
  if tls_answers; then
    echo "RCBX_REMOTE_TLS_HOST=tcp://127.0.0.1:$TLS_PORT"
    echo "RCBX_REMOTE_TLS_CERT_PATH=$STATE/tls/client"
  fi
}

tls_answers() {
  [ -f "$STATE/tls/client/cert.pem" ] && DOCKER_HOST=tcp://127.0.0.1:$TLS_PORT DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$STATE/tls/client \
    timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# A CA, a server certificate for 127.0.0.1 and a client certificate (docker's mutual TLS), once: made in
# a scratch dir and renamed into place, so an interrupted run leaves nothing half made.
make_tls_material() {
  local d=$STATE/tls
  [ -f "$d/client/cert.pem" ] && return 0
  local t=$STATE/tls.new
  rm -rf "$t" "$d"; mkdir -p "$t/client"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=rcbx-remote-ca -keyout "$t/ca-key.pem" -out "$t/ca.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$t/server-key.pem" -out "$t/server.csr" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$t/server.ext" &&
    openssl x509 -req -days 3650 -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" -CAcreateserial -extfile "$t/server.ext" -out "$t/server-cert.pem" &&
    openssl req -newkey rsa:2048 -nodes -subj /CN=rcbx-client -keyout "$t/client/key.pem" -out "$t/client.csr" &&
    printf 'extendedKeyUsage=clientAuth\n' >"$t/client.ext" &&
    openssl x509 -req -days 3650 -in "$t/client.csr" -CA "$t/ca.pem" -CAkey "$t/ca-key.pem" -CAcreateserial -extfile "$t/client.ext" -out "$t/client/cert.pem" &&
    cp "$t/ca.pem" "$t/client/ca.pem" && chmod 600 "$t"/*-key.pem "$t/client/key.pem"
  } >"$STATE/openssl.log" 2>&1 || { say "making TLS certificates failed (log: $STATE/openssl.log)"; return 1; }
  mv "$t" "$d"
}

stop_tls() {
  [ -f "$STATE/tls.pid" ] && kill "$(cat "$STATE/tls.pid")" 2>/dev/null || true
  pkill -f "socat OPENSSL-LISTEN:$TLS_PORT," 2>/dev/null || true
  for _ in $(seq 1 20); do pgrep -f "socat OPENSSL-LISTEN:$TLS_PORT," >/dev/null || break; sleep 0.25; done
  rm -f "$STATE/tls.pid"
}

# Best effort: without it the ssh endpoint still serves (the TLS tests then say it is missing).
start_tls() {
  tls_answers && return 0
  stop_tls
  if ! command -v socat >/dev/null 2>&1; then
    say "installing socat"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null 2>&1; } ||
      { say "no TLS endpoint: socat cannot be installed"; return 0; }
  fi
  make_tls_material || { say "no TLS endpoint"; return 0; }
  local d=$STATE/tls
  nohup socat "OPENSSL-LISTEN:$TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$d/server-cert.pem,key=$d/server-key.pem,cafile=$d/ca.pem,verify=1" \
    "UNIX-CONNECT:$SOCK" >"$STATE/tls.log" 2>&1 &
  echo $! >"$STATE/tls.pid"
  for _ in $(seq 1 20); do tls_answers && break; sleep 0.25; done
  if tls_answers; then
    say "TLS on tcp://127.0.0.1:$TLS_PORT reaches it: DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$d/client"
  else
    stop_tls
    say "no TLS endpoint: 127.0.0.1:$TLS_PORT does not answer (log: $STATE/tls.log)"
  fi
}

relay_running() { [ -f "$STATE/relay.pid" ] && [ -f "$STATE/relay.delay" ] && kill -0 "$(cat "$STATE/relay.pid")" 2>/dev/null; }

engine_answers() { DOCKER_HOST=unix://$SOCK timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
ssh_answers() { timeout 20 "$STATE/bin/ssh" "${1:-$HOST_ALIAS}" docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# The second Host entry: the same user, key and host key, through the relay's port. HostKeyAlias makes
# ssh look the key up under the direct entry's name, so the one known_hosts line serves both.
slow_alias_config() {
  printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n  HostKeyAlias [127.0.0.1]:%s\n  CheckHostIP no\n' "$SLOW_ALIAS" "$SLOW_PORT" "$PORT"
  login_options
}

# What both Host entries share: the test user, its key, the one known_hosts, never a prompt.
login_options() {
  cat <<EOF
  User $USER_NAME
  IdentityFile $STATE/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
}

stop_relay() {
  if [ -f "$STATE/relay.pid" ]; then
    local pid; pid=$(cat "$STATE/relay.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/relay.pid" "$STATE/relay.delay"
}

# A delaying TCP relay on 127.0.0.1:$SLOW_PORT in front of sshd (bun runs bench/lib/delay-relay.ts).
start_relay() {
  local delay=$1
  if relay_running && [ "$(cat "$STATE/relay.delay")" = "$delay" ] && ssh_answers "$SLOW_ALIAS"; then return; fi
  stop_relay
  local bun; bun=$(command -v bun || true)
  [ -n "$bun" ] || bun="$ROOT/node_modules/.bin/bun"
  [ -x "$bun" ] || die "the latency relay needs bun (not on PATH, nor in $ROOT/node_modules/.bin)"
  nohup "$bun" "$ROOT/bench/lib/delay-relay.ts" --listen "127.0.0.1:$SLOW_PORT" --to "127.0.0.1:$PORT" \
    --delay-ms "$delay" >"$STATE/relay.log" 2>&1 &
  echo $! >"$STATE/relay.pid"
  echo "$delay" >"$STATE/relay.delay"
  for _ in $(seq 1 20); do ssh_answers "$SLOW_ALIAS" && break; sleep 0.5; done
  ssh_answers "$SLOW_ALIAS" || { stop_relay; die "ssh through the latency relay does not work (log: $STATE/relay.log)"; }
  say "relay on 127.0.0.1:$SLOW_PORT adds $delay ms each way: DOCKER_HOST=ssh://$SLOW_ALIAS"
}

start() {
  local latency=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --latency-ms) [ $# -ge 2 ] || die "--latency-ms needs a value"; latency=$2; shift 2 ;;
      --latency-ms=*) latency=${1#*=}; shift ;;
      *) die "start: unknown option $1 (usage: start [--latency-ms N])" ;;
    esac
  done
  [ -z "$latency" ] || [[ "$latency" =~ ^[0-9]+$ ]] || die "--latency-ms must be a whole number of milliseconds, got $latency"
  mkdir -p "$STATE/bin" "$STATE/docker" "$STATE/exec"
  if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
    say "installing openssh-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
  fi
  id "$USER_NAME" >/dev/null 2>&1 || { useradd -m -s /bin/sh "$USER_NAME"; usermod -p '*' "$USER_NAME"; }

  # The engine: its own namespace (loopback only) and data root.
  if ! ip netns list | grep -qw "$NS"; then
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
  fi
  if ! engine_answers; then
    # `ip netns exec` remounts /sys, which dockerd refuses; nsenter joins only the network namespace.
    nohup nsenter --net=/run/netns/$NS dockerd --data-root "$STATE/docker" --exec-root "$STATE/exec" \
      --pidfile "$STATE/dockerd.pid" -H "unix://$SOCK" --group "$USER_NAME" \
      --bridge=none --iptables=false --ip-masq=false >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do engine_answers && break; sleep 1; done
    engine_answers || die "the second dockerd did not answer within 60 s (log: $STATE/dockerd.log)"
    say "started a second dockerd in network namespace $NS ($SOCK)"
  fi

  # sshd on loopback, its own config and keys; the remote side's docker client reaches the second engine.
  [ -f "$STATE/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/host_key"
  [ -f "$STATE/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/client_key"
  local home; home=$(getent passwd "$USER_NAME" | cut -d: -f6)
  mkdir -p "$home/.ssh"
  cp "$STATE/client_key.pub" "$home/.ssh/authorized_keys"
  chown -R "$USER_NAME" "$home/.ssh"; chmod 700 "$home/.ssh"; chmod 600 "$home/.ssh/authorized_keys"
  cat >"$STATE/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $STATE/host_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $USER_NAME
SetEnv DOCKER_HOST=unix://$SOCK
MaxSessions 100
MaxStartups 100:30:200
EOF
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$STATE/host_key.pub")" >"$STATE/known_hosts"
  { printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n' "$HOST_ALIAS" "$PORT"; login_options; } >"$STATE/ssh_config"
  # A relay started earlier keeps its entry (a plain `start` must not take it away from a running bench).
  if [ -n "$latency" ] || relay_running; then slow_alias_config >>"$STATE/ssh_config"; fi
  printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$STATE/ssh_config" >"$STATE/bin/ssh"
  chmod 755 "$STATE/bin/ssh"
  if ! ssh_answers; then
    [ -f "$STATE/sshd.pid" ] && kill "$(cat "$STATE/sshd.pid")" 2>/dev/null || true
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/sshd.log"
    for _ in $(seq 1 20); do ssh_answers && break; sleep 0.5; done
    ssh_answers || die "ssh to the second engine does not work (logs: $STATE/sshd.log, $STATE/dockerd.log)"
    say "sshd on 127.0.0.1:$PORT reaches it: DOCKER_HOST=ssh://$HOST_ALIAS with $STATE/bin first on PATH"
  fi
  [ -z "$latency" ] || start_relay "$latency"
  start_tls
  settings
}

status() {
  engine_answers || die "the second dockerd does not answer on $SOCK"
  ssh_answers || die "ssh://$HOST_ALIAS does not reach it"
  if relay_running; then
    ssh_answers "$SLOW_ALIAS" || die "ssh://$SLOW_ALIAS (the latency relay) does not reach it"
    say "up: ssh://$HOST_ALIAS, and ssh://$SLOW_ALIAS with $(cat "$STATE/relay.delay") ms each way"
  else
    say "up: ssh://$HOST_ALIAS (no latency relay)"
  fi
}

stop() {
  stop_relay
  stop_tls
  local pids=()
  for pidfile in "$STATE/sshd.pid" "$STATE/dockerd.pid"; do
    [ -f "$pidfile" ] && pids+=("$(cat "$pidfile")")
  done
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null || true
  # Each login's session process outlives the listening sshd (a shared connection keeps one open).
  pkill -u "$USER_NAME" 2>/dev/null || true
  # Gone, not just silent: a dockerd still shutting down keeps its pidfile and refuses the next start.
  for _ in $(seq 1 60); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$STATE/dockerd.pid" "$STATE/sshd.pid"
  # dockerd makes its data root a private mount of itself; a killed one leaves it behind.
  if mountpoint -q "$STATE/docker"; then umount "$STATE/docker" 2>/dev/null || true; fi
  say "stopped"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  env) settings ;;
  status) status ;;
  *) die "usage: $0 start [--latency-ms N]|stop|env|status" ;;
esac
