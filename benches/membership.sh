#!/usr/bin/env bash
# Membership on real UDP gossip (127.0.0.1, many in-process nodes, 175 ms / phi 5): failure
# detection at N = 3, 10, 50, join time at N = 10, 50, gossip bytes per node sealed vs plain.
# Argument: detect | join | bytes | all (default all).
. "$(dirname "$0")/lib.sh"
cargo run --release -q -p wasmfleet-cluster --example membership_bench -- "${1:-all}"
