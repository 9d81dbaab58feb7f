#!/usr/bin/env bash
# Before/after comparison of two agent binaries in one run: the gateway bench
# (benches/gateway-rps.sh: wasmfleet's gateway vs `wasmtime serve`, req/s and ratio) and the
# failover timeline (benches/failover.sh: kill -> detected, kill -> replacement ready, failed
# requests, traffic via a node with and without a local replica), run alternately for the two
# binaries (before, after, then after, before, ...) so drift in the machine's load hits both
# alike; prints the median of the rounds side by side.
#
#   benches/compare.sh BEFORE_BIN AFTER_BIN
#   ROUNDS=3              rounds; each runs both benches once per binary
#   GW_DURATION=10s       wrk duration per measurement in the gateway bench
#   FAILOVER_RUNS=5       kills per scenario per round (at least 2: the demo prints its
#                         percentiles only for more than one)
#   HELLO=path            the hello component both serve (default: the one the build made)
#
# Needs what the two benches need: wrk and a wasmtime CLI (see benches/gateway-rps.sh).
# Per-run outputs are kept in the directory printed at the end when a run fails.
. "$(dirname "$0")/lib.sh"
[ $# -eq 2 ] || { echo "usage: benches/compare.sh BEFORE_BIN AFTER_BIN" >&2; exit 2; }
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2")
for b in "$BEFORE" "$AFTER"; do [ -x "$b" ] || { echo "$b is not an executable" >&2; exit 2; }; done
ROUNDS="${ROUNDS:-3}"
GW_DURATION="${GW_DURATION:-10s}"
FAILOVER_RUNS="${FAILOVER_RUNS:-5}"
[ "$FAILOVER_RUNS" -ge 2 ] || { echo "FAILOVER_RUNS must be at least 2" >&2; exit 2; }
need_wrk
need_hello
export HELLO
out="$tmp/runs"
mkdir -p "$out"

# Appends what one gateway-rps.sh output says to $out/<label>.<metric>.
parse_gateway() { # label file
  awk -v dir="$out" -v l="$1" '
    /^wasmfleet gateway:/ {print $3 >> (dir "/" l ".gw_rps.all")}
    /^wasmtime serve:/    {print $3 >> (dir "/" l ".wt_rps.all")}
    /^ratio wasmfleet/    {v = $NF; sub(/x$/, "", v); print v >> (dir "/" l ".ratio.all")}
  ' "$2"
}

# Appends what one failover.sh output says, per scenario (remote, local).
parse_failover() { # label file
  awk -v dir="$out" -v l="$1" '
    function after(word,   i) { for (i = 1; i < NF; i++) if ($i == word) return $(i + 1); return "" }
    /^== traffic via a node with no local replica/ {s = "remote"}
    /^== traffic via a node with a local replica/   {s = "local"}
    /kill -> detected/          {print after("p50") >> (dir "/" l "." s "_detected.all")}
    /kill -> replacement ready/ {print after("p50") >> (dir "/" l "." s "_ready.all")}
    /failed requests/           {print $3 >> (dir "/" l "." s "_failed.all"); print $5 >> (dir "/" l "." s "_requests.all")}
  ' "$2"
}

run_one() { # label bin round
  local label=$1 bin=$2 round=$3 f
  f="$out/$label.gateway.r$round"
  echo "round $round: $label: gateway-rps ($GW_DURATION)" >&2
  if WASMFLEET_BIN="$bin" DURATION="$GW_DURATION" benches/gateway-rps.sh >"$f" 2>"$f.err"; then
    parse_gateway "$label" "$f"
  else
    echo "  gateway-rps failed for $label (round $round): $(tail -3 "$f.err" | tr '\n' ' ')" >&2
    failed=1
  fi
  f="$out/$label.failover.r$round"
  echo "round $round: $label: failover ($FAILOVER_RUNS kills per scenario)" >&2
  # failover.sh exits non-zero when a request failed; its numbers count all the same.
  WASMFLEET_BIN="$bin" RUNS="$FAILOVER_RUNS" benches/failover.sh >"$f" 2>"$f.err" || true
  grep -q "kill -> detected" "$f" || { echo "  failover printed no timeline for $label (round $round): $(tail -3 "$f.err" | tr '\n' ' ')" >&2; failed=1; }
  parse_failover "$label" "$f"
}

failed=0
echo "before: $BEFORE ($(stat -c %s "$BEFORE") bytes, built $(date -r "$BEFORE" '+%F %T'))"
echo "after:  $AFTER ($(stat -c %s "$AFTER") bytes, built $(date -r "$AFTER" '+%F %T'))"
echo "machine: $(nproc) cores, $(uname -r); $ROUNDS rounds, alternating; gateway wrk $GW_DURATION, failover $FAILOVER_RUNS kills per scenario"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    run_one before "$BEFORE" "$round"; run_one after "$AFTER" "$round"
  else
    run_one after "$AFTER" "$round"; run_one before "$BEFORE" "$round"
  fi
done

med() { [ -s "$out/$1.$2.all" ] && median <"$out/$1.$2.all" || echo "-"; }
sum() { [ -s "$out/$1.$2.all" ] && awk '{s += $1} END {print s}' "$out/$1.$2.all" || echo "-"; }
change() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b != "-") printf "%.2fx", b / a; else print "-" }'; }
row() { printf '%-44s %14s %14s %10s\n' "$@"; }
echo
echo "median of $ROUNDS rounds"
row "" before after after/before
row "gateway req/s (wasmfleet)" "$(med before gw_rps)" "$(med after gw_rps)" "$(change "$(med before gw_rps)" "$(med after gw_rps)")"
row "wasmtime serve req/s (reference)" "$(med before wt_rps)" "$(med after wt_rps)" "$(change "$(med before wt_rps)" "$(med after wt_rps)")"
row "ratio wasmfleet / wasmtime serve" "$(med before ratio)x" "$(med after ratio)x" "$(change "$(med before ratio)" "$(med after ratio)")"
for s in remote local; do
  case $s in remote) what="via a node without a replica" ;; local) what="via a node with a replica" ;; esac
  row "failover $what:" "" "" ""
  row "  kill -> detected, p50 (ms)" "$(med before ${s}_detected)" "$(med after ${s}_detected)" "$(change "$(med before ${s}_detected)" "$(med after ${s}_detected)")"
  row "  kill -> replacement ready, p50 (ms)" "$(med before ${s}_ready)" "$(med after ${s}_ready)" "$(change "$(med before ${s}_ready)" "$(med after ${s}_ready)")"
  row "  failed requests (all rounds)" "$(sum before ${s}_failed) of $(sum before ${s}_requests)" "$(sum after ${s}_failed) of $(sum after ${s}_requests)" ""
done
if [ "$failed" -ne 0 ]; then
  keep=$(mktemp -d /tmp/wasmfleet-compare-XXXXXX)
  cp -r "$out/." "$keep/"
  echo "some runs failed; their outputs are in $keep" >&2
  exit 1
fi
