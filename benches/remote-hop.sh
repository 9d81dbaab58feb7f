#!/usr/bin/env bash
# The cost of the remote hop: the same hello load through the gateway of the node that runs
# the only replica (served locally) and through a node without one (forwarded over QUIC to
# it), measured with wrk in the same run. Prints the added p50 latency at one connection
# (goal <= 150 us) and the throughput ratio at 32 connections (goal >= 0.7x).
#
# If nginx is installed, the same run also measures a reference hop: nginx as a plain-HTTP
# reverse proxy (keep-alive upstream) in front of the local gateway. That is about the least
# an HTTP hop costs on the machine; wasmfleet's hop adds QUIC with mutual TLS.
#
#   benches/remote-hop.sh          # DURATION=10s by default; needs wrk (apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"
DURATION="${DURATION:-10s}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release -q
BIN="$CARGO_TARGET_DIR/release/wasmfleet"
HELLO="$CARGO_TARGET_DIR/wasm-modules/dist/hello.wasm"
tmp=$(mktemp -d)
cleanup() {
  [ -f "$tmp/ngx/nginx.pid" ] && kill "$(cat "$tmp/ngx/nginx.pid")" 2>/dev/null
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"
}
trap cleanup EXIT
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
agent() { # name extra-args...
  local name=$1; shift
  WASMFLEET_LOG=warn "$BIN" agent --data-dir "$tmp/$name" --node-name "$name" --listen-api 127.0.0.1:0 \
    --listen-gateway 127.0.0.1:0 --listen-cluster 127.0.0.1:0 "$@" >"$tmp/$name.out" 2>&1 &
  wait_line "$tmp/$name.out" "cluster listening on"
}

# Two nodes; only `web` (labelled role=web) may run hello.
agent web --labels role=web
CLUSTER=$(awk '/cluster listening on/ {print $4}' "$tmp/web.out")
TOKEN=$("$BIN" --data-dir "$tmp/web" token create)
agent edge --join "$CLUSTER" --join-token "$TOKEN"
GW_LOCAL=$(awk '/gateway listening on/ {print $4}' "$tmp/web.out")
GW_REMOTE=$(awk '/gateway listening on/ {print $4}' "$tmp/edge.out")
export WASMFLEET_DATA_DIR="$tmp/web"
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
      nodeSelector: {role: web}
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
wait_200 "$GW_LOCAL/" hello
wait_200 "$GW_REMOTE/" hello
node=$(curl -s -D - -o /dev/null -H 'Host: hello' "$GW_REMOTE/" | awk -F': ' 'tolower($1)=="x-wasmfleet-node" {print $2}' | tr -d '\r')
[ "$node" = web ] || { echo "expected the edge gateway to forward to web, got '$node'" >&2; exit 1; }

GW_NGINX=""
if command -v nginx >/dev/null; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$tmp/ngx/logs"
  cat >"$tmp/ngx/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream web { server ${GW_LOCAL#http://}; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_buffering off; }
  }
}
NGINX
  nginx -p "$tmp/ngx" -c "$tmp/ngx/nginx.conf"
  GW_NGINX="http://127.0.0.1:$port"
  wait_200 "$GW_NGINX/" hello
fi

echo "machine: $(nproc) cores, $(uname -r); wrk -t1, $DURATION per measurement"
p50() { awk '/^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s$/,"",v); print v*1e6}}'; }
rps() { awk '/Requests\/sec/ {print $2}'; }
for gw in "$GW_LOCAL" "$GW_REMOTE" $GW_NGINX; do wrk -t1 -c8 -d2s -H 'Host: hello' "$gw/" >/dev/null; done
measure() { # name url
  wrk -t1 -c1 -d"$DURATION" --latency -H 'Host: hello' "$2/" >"$tmp/$1-1.txt"
  wrk -t1 -c32 -d"$DURATION" --latency -H 'Host: hello' "$2/" >"$tmp/$1-32.txt"
}
measure local "$GW_LOCAL"
measure remote "$GW_REMOTE"
[ -n "$GW_NGINX" ] && measure nginx "$GW_NGINX"
L1=$(p50 <"$tmp/local-1.txt"); R1=$(p50 <"$tmp/remote-1.txt")
L32=$(rps <"$tmp/local-32.txt"); R32=$(rps <"$tmp/remote-32.txt")
printf '1 connection:   p50 local %s us, remote %s us: the hop adds %s us (goal <= 150 us)\n' \
  "$L1" "$R1" "$(awk -v a="$L1" -v b="$R1" 'BEGIN {printf "%.0f", b-a}')"
printf '32 connections: local %s req/s, remote %s req/s: ratio %sx (goal >= 0.7x)\n' \
  "$L32" "$R32" "$(awk -v a="$L32" -v b="$R32" 'BEGIN {printf "%.2f", b/a}')"
if [ -n "$GW_NGINX" ]; then
  N1=$(p50 <"$tmp/nginx-1.txt"); N32=$(rps <"$tmp/nginx-32.txt")
  printf 'reference, nginx proxy hop: adds %s us at 1 connection; %s req/s at 32: ratio %sx\n' \
    "$(awk -v a="$L1" -v b="$N1" 'BEGIN {printf "%.0f", b-a}')" "$N32" "$(awk -v a="$L32" -v b="$N32" 'BEGIN {printf "%.2f", b/a}')"
fi
