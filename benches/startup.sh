#!/usr/bin/env bash
# Agent RSS idle and with hello deployed, apply -> first 200 OK (module compiled at push, and
# a module compiled on first use after a cache wipe), release binary size, and a start under
# `ulimit -v 1048576` (1 GiB of address space).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"
cargo build --release -q
BIN="$CARGO_TARGET_DIR/release/wasmfleet"
HELLO="$CARGO_TARGET_DIR/wasm-modules/dist/hello.wasm"
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ms() { date +%s%3N; }
wait_line() { for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; cat "$1" >&2; return 1; }
start_agent() { # data-dir out [ulimit]
  ( [ -n "${3:-}" ] && ulimit -v "$3"; exec env WASMFLEET_LOG=warn "$BIN" agent --data-dir "$1" \
      --listen-api 127.0.0.1:0 --listen-gateway 127.0.0.1:0 --listen-cluster 127.0.0.1:0 ) >"$2" 2>&1 &
  wait_line "$2" "gateway listening on"
}
first_200() { # gw -> ms until 200
  local t0=$(ms)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: hello' "$1/")" = 200 ]; do sleep 0.002; done
  echo $(( $(ms) - t0 ))
}
rss() { awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/"$1"/status; }

strip -o "$tmp/wasmfleet.stripped" "$BIN"
echo "release binary: $(stat -c %s "$BIN") bytes, stripped $(stat -c %s "$tmp/wasmfleet.stripped") bytes"
start_agent "$tmp/a" "$tmp/a.out"
PID=$(pgrep -f "$tmp/a " | head -1 || pgrep -f "$tmp/a$" | head -1)
sleep 1
echo "agent RSS idle, nothing deployed: $(rss "$PID")"
GW=$(awk '/gateway listening on/ {print $4}' "$tmp/a.out")
export WASMFLEET_DATA_DIR="$tmp/a"
"$BIN" push hello:1.0 "$HELLO" >/dev/null
sed 's/replicas: 3/replicas: 1/' examples/hello.yaml >"$tmp/hello.yaml"
t0=$(ms); "$BIN" apply -f "$tmp/hello.yaml" >/dev/null; t1=$(first_200 "$GW")
echo "apply -> first 200 OK, module compiled at push: $(( $(ms) - t0 )) ms (after the CLI returned: ${t1} ms)"
sleep 1
echo "agent RSS with hello deployed: $(rss "$PID")"
kill "$PID"; wait "$PID" 2>/dev/null || true

# Cold: wipe the compiled-code cache, restart, re-apply under a new name so it must compile.
rm -rf "$tmp/a/compiled"
start_agent "$tmp/a" "$tmp/b.out"
GW=$(awk '/gateway listening on/ {print $4}' "$tmp/b.out")
"$BIN" delete -f "$tmp/hello.yaml" >/dev/null
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: hello' "$GW/")" = 404 ]; do sleep 0.01; done
pkill -f "$tmp/a" || true; sleep 0.5; rm -rf "$tmp/a/compiled"
start_agent "$tmp/a" "$tmp/c.out"
GW=$(awk '/gateway listening on/ {print $4}' "$tmp/c.out")
t0=$(ms); "$BIN" apply -f "$tmp/hello.yaml" >/dev/null; first_200 "$GW" >/dev/null
echo "apply -> first 200 OK, including compilation: $(( $(ms) - t0 )) ms"
pkill -f "$tmp/a" || true

# Small box: 1 GiB of address space.
start_agent "$tmp/small" "$tmp/s.out" 1048576
GW=$(awk '/gateway listening on/ {print $4}' "$tmp/s.out")
WASMFLEET_DATA_DIR="$tmp/small" "$BIN" push hello:1.0 "$HELLO" >/dev/null
WASMFLEET_DATA_DIR="$tmp/small" "$BIN" apply -f "$tmp/hello.yaml" >/dev/null
first_200 "$GW" >/dev/null
echo "under ulimit -v 1048576: agent started and served hello ($(WASMFLEET_DATA_DIR="$tmp/small" "$BIN" get node | tail -1))"
