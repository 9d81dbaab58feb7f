#!/usr/bin/env bash
# Throughput of the same `hello` component through the wasmfleet gateway and through
# `wasmtime serve`, measured with wrk in the same run; prints req/s, latency and the ratio.
#
#   benches/gateway-rps.sh            # DURATION=10s CONNS=32 THREADS=1 by default
#
# Needs wrk (apt-get install wrk) and wasmtime-cli 48 (installed once, outside CI:
# cargo install wasmtime-cli --version 48.0.8 --locked --root ~/.cache/wasmtime-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"
WASMTIME="${WASMTIME:-$HOME/.cache/wasmtime-cli/bin/wasmtime}"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-1}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ -x "$WASMTIME" ] || { echo "wasmtime is missing at $WASMTIME (see the header of this script)" >&2; exit 1; }

cargo build --release -q
BIN="$CARGO_TARGET_DIR/release/wasmfleet"
HELLO="$CARGO_TARGET_DIR/wasm-modules/dist/hello.wasm"
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file pattern
  for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}
wait_200() { # url host
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "$1")" = 200 ] && return 0; sleep 0.02
  done
  echo "no 200 from $1" >&2; return 1
}
rps() { awk '/Requests\/sec/ {print $2}'; }

# --- wasmfleet: one agent, hello as a Deployment + Service ---
WASMFLEET_LOG=warn "$BIN" agent --data-dir "$tmp/data" --listen-api 127.0.0.1:0 --listen-gateway 127.0.0.1:0 --listen-cluster 127.0.0.1:0 \
  >"$tmp/agent.out" 2>&1 &
wait_line "$tmp/agent.out" "gateway listening on"
GW=$(awk '/gateway listening on/ {print $4}' "$tmp/agent.out")
export WASMFLEET_DATA_DIR="$tmp/data"
"$BIN" push hello:1.0 "$HELLO" >/dev/null
cat >"$tmp/hello.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata:
      labels: {app: hello}
      annotations: {wasmfleet.io/max-concurrency: "256"}
    spec:
      containers:
      - name: hello
        image: hello:1.0
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
YAML
"$BIN" apply -f "$tmp/hello.yaml" >/dev/null
wait_200 "$GW/" hello

# --- wasmtime serve on the same component ---
WPORT=$(free_port)
"$WASMTIME" serve -Scli --addr "127.0.0.1:$WPORT" "$HELLO" >"$tmp/wasmtime.out" 2>&1 &
wait_200 "http://127.0.0.1:$WPORT/" localhost

echo "machine: $(nproc) cores, $(uname -r); wrk -t$THREADS -c$CONNS -d$DURATION"
wrk -t"$THREADS" -c"$CONNS" -d2s -H 'Host: hello' "$GW/" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$WPORT/" >/dev/null
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H 'Host: hello' "$GW/" >"$tmp/wf.txt"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$WPORT/" >"$tmp/wt.txt"
WF=$(rps <"$tmp/wf.txt"); WT=$(rps <"$tmp/wt.txt")
lat() { awk '/^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print "p50 " p50 ", p99 " p99}' "$1"; }
echo "wasmfleet gateway: $WF req/s ($(lat "$tmp/wf.txt"))"
echo "wasmtime serve:    $WT req/s ($(lat "$tmp/wt.txt"))"
python3 -c "print(f'ratio wasmfleet / wasmtime serve: {$WF/$WT:.2f}x')"
PID=$(pgrep -f "$tmp/data" | head -1)
echo "agent RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"
