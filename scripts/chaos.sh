#!/usr/bin/env bash
# Chaos tests that need root and network namespaces, run by name (they are #[ignore]d in the
# default `cargo test`): tests/partition_netns.rs splits five real agents 2|3 with veths and
# bridges in namespaces of their own, checks both sides keep serving, heals, and checks they
# converge to one placement; and splits them again with wasi:keyvalue buckets: the majority
# keeps serving atomics, the minority refuses them, and every copy converges after the heal.
#
#   scripts/chaos.sh                        # build if needed, then run (as root)
#   CHAOS_TIMEOUT=600 scripts/chaos.sh      # time limit of the run, seconds (default 300)
#   CHAOS_SPLIT_SECS=60 scripts/chaos.sh    # hold the split longer once settled (default 3)
#
# Exits 0 with "chaos: SKIP: ..." when this machine cannot run it (not root, no `ip`, no
# network namespaces, veths or bridges); non-zero when a test fails or runs past the limit.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmfleet-target}"
timeout_secs="${CHAOS_TIMEOUT:-300}"

skip() {
    echo "chaos: SKIP: $*"
    exit 0
}

# Namespaces the test names `wfpart-<pid>-...`. Its drop guards remove them; a test killed
# from outside (the time limit below) cannot, so remove those whose test process is gone (or a
# zombie), with whatever still runs in them.
running() {
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
cleanup_stale() {
    local ns pid p
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^wfpart-[0-9]*-' || true); do
        pid="${ns#wfpart-}"
        pid="${pid%%-*}"
        if running "$pid"; then
            continue
        fi
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$p" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null && echo "chaos: removed leftover namespace $ns"
    done
}

# --- can this machine run it? ---
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces); run: sudo scripts/chaos.sh"
command -v ip >/dev/null 2>&1 || skip "needs iproute2's \`ip\`"
probe="wfchaos-check-$$"
ip netns add "$probe" 2>/dev/null || skip "\`ip netns add\` does not work here (container without CAP_SYS_ADMIN?)"
trap 'ip netns del "$probe" 2>/dev/null || true' EXIT
ip -n "$probe" link add wfbr type bridge 2>/dev/null || skip "cannot create a bridge in a network namespace"
ip -n "$probe" link add wfa type veth peer name wfb 2>/dev/null || skip "cannot create a veth pair"
ip netns del "$probe"
trap - EXIT

cleanup_stale
trap cleanup_stale EXIT

# --- build (not timed: a cold wasmtime build takes minutes), then run ---
echo "chaos: building"
cargo test --test partition_netns --no-run

# The agents' data dirs and logs go under one directory, kept when the run fails.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/wasmfleet-chaos.XXXXXX")
echo "chaos: running tests/partition_netns.rs (limit ${timeout_secs} s, files in $run_dir)"
started=$(date +%s)
set +e
TMPDIR="$run_dir" timeout --kill-after=15 "$timeout_secs" \
    cargo test --test partition_netns -- --ignored --nocapture --test-threads 1
status=$?
set -e
elapsed=$(( $(date +%s) - started ))
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "chaos: FAILED: still running after ${timeout_secs} s (every wait in the test is bounded: a hang is a bug); agent logs in $run_dir"
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "chaos: FAILED (exit $status) after ${elapsed} s; agent logs in $run_dir"
    exit "$status"
fi
rm -rf "$run_dir"
echo "chaos: ok (${elapsed} s)"
