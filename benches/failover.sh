#!/usr/bin/env bash
# Failover timeline, repeated: a local cluster of real agents (the demo), steady GETs from
# 4 clients, kill -9 of a node hosting a replica, then: kill -> every-survivor-visible death,
# kill -> replacement ready, failed requests. The killed node restarts between runs.
#
#   benches/failover.sh            # RUNS=20 by default
#
# Two scenarios in one run: traffic through a node without a local replica (2 replicas on
# 3 nodes: every request is forwarded over QUIC, so the kill hits in-flight forwarded
# requests), and through a node with one (3 replicas on 3 nodes, the demo's default).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"
RUNS="${RUNS:-20}"
cargo build --release -q
BIN="$CARGO_TARGET_DIR/release/wasmfleet"
echo "== traffic via a node with no local replica (forwarded over QUIC)"
"$BIN" demo --exit --gateway 127.0.0.1:0 --runs "$RUNS" --replicas 2 --traffic-via remote | sed -n '/kills, traffic via/,$p'
echo "== traffic via a node with a local replica"
"$BIN" demo --exit --gateway 127.0.0.1:0 --runs "$RUNS" --replicas 3 --traffic-via local | sed -n '/kills, traffic via/,$p'
