#!/usr/bin/env bash
# A rolling update under load on real agents (127.0.0.1, port 0): 3 nodes, REPLICAS replicas
# of hello (default 30), maxSurge 1 / maxUnavailable 0, wrk through every gateway while the
# template changes. Prints the time the rollout took (apply -> `rollout status` done), the
# time per step, and the requests that failed (non-2xx or socket errors, from wrk).
#
#   benches/rollout.sh                 # REPLICAS=30 ROUNDS=3
#   REPLICAS=12 ROUNDS=1 benches/rollout.sh
#   WAVES=1 benches/rollout.sh         # each node in its own zone, rolled out zone by zone
#                                      # (wasmfleet.io/rollout-waves: zone)
#
# hello has no readiness probe, so a new replica is ready as soon as it starts (well under a
# millisecond): the time per step is what pacing itself costs (a step needs two gossip hops:
# the coordinator sees the new replica ready, cuts an old one, sees it gone, grows the new set).
. "$(dirname "$0")/lib.sh"
need_bin
need_wrk
need_hello
declare -A WRK
REPLICAS="${REPLICAS:-30}"
ROUNDS="${ROUNDS:-3}"
METADATA="{name: web}"
if [ -n "${WAVES:-}" ]; then
  export ZONED=1
  METADATA="{name: web, annotations: {wasmfleet.io/rollout-waves: zone}}"
fi

start_cluster 3
cli push hello:1.0 "$HELLO" >/dev/null

manifest() { # greeting
  cat >"$tmp/web.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: $METADATA
spec:
  replicas: $REPLICAS
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: hello:1.0
        env: [{name: GREETING, value: "$1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
YAML
  cli apply -f "$tmp/web.yaml" >/dev/null 2>&1
}

manifest v0
cli rollout status deployment/web --timeout 120s >/dev/null
# Every gateway serves the Service before traffic starts (a node that joined last may still
# be catching up on the desired state).
for n in n1 n2 n3; do wait_200 "$(listener $n gateway)/" web; done
echo "(wrk runs ${WRK_SECONDS:-15} s per round; the rollout starts 1 s in)"
echo "3 nodes, $REPLICAS replicas${WAVES:+ in 3 zone waves}, maxSurge 1 maxUnavailable 0, wrk (1 thread, 4 connections) through every gateway"
printf '%-6s %10s %12s %10s %10s\n' round total_ms per_step_ms requests failed
for round in $(seq 1 "$ROUNDS"); do
  for n in n1 n2 n3; do
    wrk -t1 -c4 -d "${WRK_SECONDS:-15}s" ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} -H "Host: web" "$(listener $n gateway)/" >"$tmp/wrk-$n.out" 2>&1 &
    WRK[$n]=$!
  done
  sleep 1
  start=$(date +%s%N)
  manifest "v$round"
  cli rollout status deployment/web --timeout 120s >/dev/null
  took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  # wrk runs its whole window (the rollout inside it), then prints its counts.
  for n in n1 n2 n3; do wait "${WRK[$n]}" 2>/dev/null || true; done
  requests=0 failed=0
  for n in n1 n2 n3; do
    r=$(awk '/requests in/ {print $1}' "$tmp/wrk-$n.out"); requests=$((requests + ${r:-0}))
    f=$(awk '/Non-2xx/ {print $NF}' "$tmp/wrk-$n.out"); failed=$((failed + ${f:-0}))
    e=$(awk -F'[ ,]+' '/Socket errors/ {print $4+$6+$8+$10}' "$tmp/wrk-$n.out"); failed=$((failed + ${e:-0}))
  done
  printf '%-6s %10s %12s %10s %10s\n' "$round" "$took_ms" "$((took_ms / REPLICAS))" "$requests" "$failed"
  if [ "$failed" -gt 0 ]; then
    for n in n1 n2 n3; do
      echo "-- wrk through $n: $({ grep -E 'Non-2xx|Socket errors' "$tmp/wrk-$n.out" || true; } | tr '\n' ' ')"
      curl -s -H "Authorization: Bearer $(cat "$tmp/$n/token")" "$(listener $n api)/metrics" |
        grep -E '^wasmfleet_(gateway_unavailable|gateway_retried|replica_rejected|replica_traps|replica_timeouts)_total' |
        grep -v ' 0$' | head -5 || true
    done >&2
  fi
done
