# What the shell benches share; a bench sources it first thing:
#
#   . "$(dirname "$0")/lib.sh"
#
# It sets `set -euo pipefail`, moves to the repository root, sets CARGO_TARGET_DIR (default
# ~/.cache/wasmfleet-target), and provides:
#   need_bin            sets BIN, the agent binary: $WASMFLEET_BIN if set (nothing is built;
#                       how benches/compare.sh runs two binaries), else the release build
#   HELLO               the hello component ($HELLO if set, else the one the build made);
#                       need_hello checks it is there
#   tmp                 a scratch directory, removed on exit with every agent started here
#   start_agent NAME [FLAGS...]
#                       `$BIN agent` on 127.0.0.1 port 0 with data in $tmp/NAME and output in
#                       $tmp/NAME.out; returns once it printed its listeners. ULIMIT_V=KIB runs
#                       it under `ulimit -v KIB`. Its pid is ${AGENT_PID[NAME]}.
#   start_cluster N     agents n1..nN joined to n1; defines `cli` (the CLI against n1);
#                       ZONED=1 puts node nI in zone zone-I
#   listener NAME api|gateway|cluster
#                       an address the agent printed (`gateway listening on http://...`)
#   stop_agent NAME     SIGTERM, wait up to 10 s for the exit, then SIGKILL
#   wait_line FILE PATTERN, wait_200 URL HOST, wait_status URL HOST CODE [POLL]
#                       bounded waits (30 s) on a line in a file or an HTTP status
#   hello_manifest FILE [NODE-SELECTOR]
#                       hello as a 1-replica Deployment (max-concurrency 256) and a Service
#   free_port, rps, p50_us, median, rss_mib PID, need_wrk, on_exit COMMAND (run at exit)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"

HELLO="${HELLO:-$CARGO_TARGET_DIR/wasm-modules/dist/hello.wasm}"

need_bin() {
  if [ -n "${WASMFLEET_BIN:-}" ]; then
    [ -x "$WASMFLEET_BIN" ] || { echo "WASMFLEET_BIN=$WASMFLEET_BIN is not an executable" >&2; exit 1; }
    BIN="$WASMFLEET_BIN"
  else
    cargo build --release -q
    BIN="$CARGO_TARGET_DIR/release/wasmfleet"
  fi
}

tmp=$(mktemp -d)
declare -A AGENT_PID=()
_on_exit=()
on_exit() { _on_exit+=("$1"); }
_cleanup() {
  local c
  for c in "${_on_exit[@]}"; do eval "$c" || true; done
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap _cleanup EXIT

need_wrk() { command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }; }
need_hello() { [ -f "$HELLO" ] || { echo "no hello component at $HELLO (build once, or set HELLO)" >&2; exit 1; }; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_line() { # file pattern
  local end=$((SECONDS + 30))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$end" ] || { echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1; }
    sleep 0.05
  done
}
wait_status() { # url host code [poll interval, default 0.02 s]
  local end=$((SECONDS + 30))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "$1")" = "$3" ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "no $3 from $1 (Host: $2) within 30 s" >&2; return 1; }
    sleep "${4:-0.02}"
  done
}
wait_200() { wait_status "$1" "$2" 200; } # url host

start_agent() { # name [agent flags...]
  local name=$1; shift
  : >"$tmp/$name.out"   # a restart must not find the previous run's lines
  ( [ -n "${ULIMIT_V:-}" ] && ulimit -v "$ULIMIT_V"
    exec env WASMFLEET_LOG=warn "$BIN" agent --data-dir "$tmp/$name" --listen-api 127.0.0.1:0 \
      --listen-gateway 127.0.0.1:0 --listen-cluster 127.0.0.1:0 "$@" ) >"$tmp/$name.out" 2>&1 &
  AGENT_PID[$name]=$!
  # The three listener lines are printed together, cluster last.
  wait_line "$tmp/$name.out" "cluster listening on"
}
# N agents n1..nN on 127.0.0.1 (port 0), n2.. joined to n1 with a token; `cli` talks to n1.
start_cluster() { # n   (ZONED=1: node nI in zone zone-I)
  zone() { if [ -n "${ZONED:-}" ]; then echo "--zone zone-$1"; fi; }
  # shellcheck disable=SC2046
  start_agent n1 --node-name n1 $(zone 1)
  cli() { "$BIN" --server "$(listener n1 api)" --token "$(cat "$tmp/n1/token")" "$@"; }
  local token i
  token=$(cli token create --ttl 1h | tail -1)
  for i in $(seq 2 "$1"); do
    # shellcheck disable=SC2046
    start_agent "n$i" --node-name "n$i" --join "$(listener n1 cluster)" --join-token "$token" $(zone "$i")
  done
}
listener() { # name api|gateway|cluster
  awk -v what="$2" '$1 == what && $2 == "listening" {print $4; exit}' "$tmp/$1.out"
}
stop_agent() { # name
  local pid=${AGENT_PID[$1]}
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

hello_manifest() { # file [node-selector, e.g. "role: web"]
  local selector=""
  [ -n "${2:-}" ] && selector="      nodeSelector: {$2}"
  cat >"$1" <<YAML
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
$selector
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
  # No blank line where there is no selector.
  sed -i '/^$/d' "$1"
}

rps() { awk '/Requests\/sec/ {print $2}'; }
p50_us() { awk '/^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s$/,"",v); print v*1e6}}'; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
rss_mib() { awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/"$1"/status; }
