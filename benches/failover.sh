#!/usr/bin/env bash
# Failover timeline, repeated: a local cluster of real agents (the demo), steady GETs from
# 4 clients, kill -9 of a node hosting a replica, then: kill -> every-survivor-visible death,
# kill -> replacement ready, failed requests. The killed node restarts between runs.
#
#   benches/failover.sh            # RUNS=20 by default
#   WASMFLEET_BIN=path/to/wasmfleet benches/failover.sh        # that binary, nothing built
#
# Two scenarios in one run: traffic through a node without a local replica (2 replicas on
# 3 nodes: every request is forwarded over QUIC, so the kill hits in-flight forwarded
# requests), and through a node with one (3 replicas on 3 nodes, the demo's default).
. "$(dirname "$0")/lib.sh"
need_bin
RUNS="${RUNS:-20}"
# A scenario with failed requests exits non-zero, after the other scenario ran too.
status=0
echo "== traffic via a node with no local replica (forwarded over QUIC)"
"$BIN" demo --exit --gateway 127.0.0.1:0 --runs "$RUNS" --replicas 2 --traffic-via remote | sed -n '/kills, traffic via/,$p' || status=1
echo "== traffic via a node with a local replica"
"$BIN" demo --exit --gateway 127.0.0.1:0 --runs "$RUNS" --replicas 3 --traffic-via local | sed -n '/kills, traffic via/,$p' || status=1
exit "$status"
