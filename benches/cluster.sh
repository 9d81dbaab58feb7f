#!/usr/bin/env bash
# Replication on real agent processes (127.0.0.1, port 0): write replication at 5 nodes,
# 10 MiB module transfer vs loopback TCP, join time. Extra arguments go to the bench
# (`benches/cluster.sh --test` for a quick smoke run).
. "$(dirname "$0")/lib.sh"
cargo build --release -q
cargo bench -q --bench replication -- "$@"
