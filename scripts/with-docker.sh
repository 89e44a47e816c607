#!/usr/bin/env bash
# Runs COMMAND with a private Docker daemon and a local image registry, both stopped by
# their pid when COMMAND ends (also when it fails, or on Ctrl-C):
#
#   scripts/with-docker.sh cargo test --release --test container
#
# Needs root and Debian's docker.io and docker-registry (apt-get install docker.io docker-registry).
# Nothing is reached outside this machine, and the host's own Docker set-up is left alone:
# - dockerd runs without a bridge, iptables rules or IP forwarding (--bridge=none
#   --iptables=false --ip-forward=false: upm's containers are --network=none), with its data
#   root, exec root (its containerd's too), socket, pidfile, key and an empty daemon.json in a
#   fresh temporary directory, all removed at the end;
# - docker-registry listens on 127.0.0.1 only, on a free port, storing in the same directory.
# COMMAND gets DOCKER_HOST (the private socket), DOCKER_CONFIG (an empty client config: no
# credential helper is consulted) and UPM_TEST_REGISTRY (the registry's 127.0.0.1:PORT), which
# tests/container.rs uses to give its docker images a real name@sha256: digest.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "with-docker: needs root (a rootful dockerd)" >&2; exit 1; }
for tool in dockerd docker-registry python3; do
  command -v "$tool" >/dev/null || { echo "with-docker: $tool is missing (apt-get install docker.io docker-registry)" >&2; exit 1; }
done
# The client upm itself would use: the first on its fixed PATH.
client=
for d in /usr/local/bin /usr/bin /bin /usr/local/sbin /usr/sbin /sbin; do
  [ -x "$d/docker" ] && { client=$d/docker; break; }
done
[ -n "$client" ] || { echo "with-docker: no docker client (apt-get install docker.io)" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/upm-docker.XXXXXX")
dockerd_pid=
registry_pid=

# stop PID NAME: SIGTERM, up to 20 s for it to finish, then SIGKILL.
stop() {
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "with-docker: $name ($pid) did not stop in 20 s: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  [ -z "$registry_pid" ] || stop "$registry_pid" docker-registry
  if [ -n "$dockerd_pid" ]; then
    # Containers a failed test left behind go with the daemon.
    stop "$dockerd_pid" dockerd
    wait "$dockerd_pid" 2>/dev/null || true
    # dockerd stops the containerd it started; should it not have, that one goes too.
    local cpid
    cpid=$(cat "$dir/exec/containerd/containerd.pid" 2>/dev/null || true)
    [ -z "$cpid" ] || stop "$cpid" containerd
  fi
  # A mount a killed daemon left behind would keep its files: unmount before removing.
  grep -o " $dir/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir" || echo "with-docker: could not remove $dir" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The daemon: its own everything, no network set-up on the host.
printf '{"deprecated-key-path": "%s/key.json"}\n' "$dir" >"$dir/daemon.json"
dockerd --config-file "$dir/daemon.json" \
  --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
  --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
  -H "unix://$dir/docker.sock" --log-level=warn >"$dir/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$dir/docker.sock"
export DOCKER_CONFIG="$dir/client"
mkdir -p "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json"
for i in $(seq 300); do
  "$client" version >/dev/null 2>&1 && break
  if ! kill -0 "$dockerd_pid" 2>/dev/null || [ "$i" = 300 ]; then
    echo "with-docker: dockerd did not come up; its log:" >&2
    cat "$dir/dockerd.log" >&2
    exit 1
  fi
  sleep 0.1
done

# The registry, on 127.0.0.1 at a port that was free a moment ago (tried again if taken since).
for attempt in 1 2 3; do
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  registry_pid=$!
  up=
  for i in $(seq 100); do
    kill -0 "$registry_pid" 2>/dev/null || break
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$port/v2/" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  [ -z "$up" ] || break
  stop "$registry_pid" docker-registry
  registry_pid=
  if [ "$attempt" = 3 ]; then
    echo "with-docker: docker-registry did not come up; its log:" >&2
    cat "$dir/registry.log" >&2
    exit 1
  fi
done
export UPM_TEST_REGISTRY="127.0.0.1:$port"
echo "with-docker: dockerd $dockerd_pid on $DOCKER_HOST, docker-registry $registry_pid on $UPM_TEST_REGISTRY" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
