#!/usr/bin/env bash
# meshd demo on static endpoints: no root, no Consul, no Docker.
# Starts meshd on loopback ports of its own, shows its effective
# configuration and probes, and stops it cleanly with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=bin/meshd
[ -x "$bin" ] || { echo "demo: $bin is missing; run 'make build' first" >&2; exit 1; }

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

export MESHD_OUTBOUND_ADDR=127.0.0.1:25001
export MESHD_INBOUND_ADDR=127.0.0.1:25006
export MESHD_ADMIN_ADDR=127.0.0.1:25000
export MESHD_HEALTH_ADDR=127.0.0.1:25021
export MESHD_STATIC_ENDPOINTS='payments=127.0.0.1:28081,127.0.0.1:28082,127.0.0.1:28083'
export MESHD_UPSTREAM_PAYMENTS_REQUEST_TIMEOUT=2s

echo "== starting meshd (logs in $work/meshd.log)"
"$bin" run >"$work/meshd.log" 2>&1 &
pid=$!

get() { # get URL: prints the body, or fails after 5 s
  for _ in $(seq 50); do
    if out=$( (exec 3<>/dev/tcp/127.0.0.1/"${1#*:}" && printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3 && cat <&3) 2>/dev/null); then
      printf '%s\n' "$out" | sed -n '/^\r\{0,1\}$/,$p' | tail -n +2
      return 0
    fi
    sleep 0.1
  done
  return 1
}

echo "== /ready on the health port"
get 127.0.0.1:25021 /ready
echo "== effective configuration (admin API /config)"
get 127.0.0.1:25000 /config
echo "== stopping meshd with SIGTERM"
kill -TERM "$pid"
wait "$pid" && echo "meshd exited with status 0"
pid=""
echo "== meshd's log"
cat "$work/meshd.log"
