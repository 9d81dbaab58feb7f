#!/usr/bin/env bash
# Autoscaling on real agents (127.0.0.1, port 0), three measurements in one run:
#
#  1. overhead: what accounting guest time costs the gateway. Two single agents serve
#     `hello`, one with WASMFLEET_GUEST_TIME=off; wrk alternates between them for ROUNDS
#     rounds; prints each round's req/s and the median ratio.
#  2. reaction: a 3-node cluster, `burn` (10 ms of CPU per request, 100m requested) with an
#     autoscaler on cpu at 50 % (sync period 1 s, max 4); a load step with wrk; prints the
#     time from the step to the autoscaler's decision and to the added replicas serving.
#  3. cold start: `hello` autoscaled on requests per second with minReplicas 0; COLD rounds
#     of: wait until it is at zero, send one request (alternately through the gateway of the
#     node the replica starts on, "local", and another node's, "remote"); prints p50 / p99 /
#     max of the response time per kind.
#
#   benches/autoscale.sh                      # ROUNDS=5 DURATION=5s COLD=20
#   WASMFLEET_BIN=path/to/wasmfleet benches/autoscale.sh
. "$(dirname "$0")/lib.sh"
need_bin
need_wrk
need_hello
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5s}"
COLD="${COLD:-20}"
PARTS="${PARTS:-123}"   # which measurements to run, e.g. PARTS=1"
BURN="${BURN:-$CARGO_TARGET_DIR/wasm-modules/dist/burn.wasm}"
[ -f "$BURN" ] || { echo "no burn component at $BURN (build once, or set BURN)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(uname -r)"

# --- 1. overhead ---
if [[ $PARTS == *1* ]]; then
start_agent on --node-name on
WASMFLEET_GUEST_TIME=off start_agent off --node-name off
for a in on off; do
  WASMFLEET_DATA_DIR="$tmp/$a" "$BIN" push hello:1.0 "$HELLO" >/dev/null
  hello_manifest "$tmp/hello-$a.yaml"
  WASMFLEET_DATA_DIR="$tmp/$a" "$BIN" apply -f "$tmp/hello-$a.yaml" >/dev/null
  wait_200 "$(listener $a gateway)/" hello
  wrk -t1 -c32 -d2s -H 'Host: hello' "$(listener $a gateway)/" >/dev/null
done
echo "== 1. guest-time accounting: wrk -t1 -c32 -d$DURATION, alternating"
printf '%-6s %12s %12s %8s\n' round on_rps off_rps ratio
ratios=()
for r in $(seq 1 "$ROUNDS"); do
  # Which goes first alternates, so drift between the two windows cancels out.
  if [ $((r % 2)) = 1 ]; then
    on=$(wrk -t1 -c32 -d"$DURATION" -H 'Host: hello' "$(listener on gateway)/" | rps)
    off=$(wrk -t1 -c32 -d"$DURATION" -H 'Host: hello' "$(listener off gateway)/" | rps)
  else
    off=$(wrk -t1 -c32 -d"$DURATION" -H 'Host: hello' "$(listener off gateway)/" | rps)
    on=$(wrk -t1 -c32 -d"$DURATION" -H 'Host: hello' "$(listener on gateway)/" | rps)
  fi
  ratio=$(python3 -c "print(f'{$on/$off:.3f}')")
  ratios+=("$ratio")
  printf '%-6s %12s %12s %8s\n' "$r" "$on" "$off" "$ratio"
done
echo "median on/off: $(printf '%s\n' "${ratios[@]}" | median)"
stop_agent on
stop_agent off
fi
[[ $PARTS == *[23]* ]] || exit 0

# --- 2. reaction ---
start_cluster 3
cli push burn:1.0 "$BURN" >/dev/null
cli push hello:1.0 "$HELLO" >/dev/null
cat >"$tmp/work.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: work}
spec:
  replicas: 1
  selector: {matchLabels: {app: work}}
  template:
    metadata: {labels: {app: work}}
    spec:
      containers:
      - name: work
        image: burn:1.0
        resources: {requests: {cpu: 100m}}
---
apiVersion: v1
kind: Service
metadata: {name: work}
spec:
  selector: {app: work}
  ports: [{port: 80}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: work
  annotations: {wasmfleet.io/hpa-sync-period: 1s}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: work}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
YAML
cli apply -f "$tmp/work.yaml" >/dev/null
for n in n1 n2 n3; do wait_200 "$(listener $n gateway)/?ms=0" work; done
ready_work() { cli get replicas -o json | python3 -c 'import json,sys; print(sum(1 for r in json.load(sys.stdin) if r["owner"]=="Deployment/default/work" and r["ready"]))'; }
desired_work() { cli get hpa work -o json 2>/dev/null | python3 -c 'import json,sys; v=json.load(sys.stdin); v=v[0] if isinstance(v,list) else v; print(v.get("status",{}).get("desiredReplicas",0))'; }
until [ "$(ready_work)" = 1 ]; do sleep 0.1; done
echo "== 2. reaction: 3 nodes, burn 10 ms/request (100m requested), cpu target 50 %, sync 1 s, max 4"
wrk -t1 -c2 -d20s -H 'Host: work' "$(listener n1 gateway)/?ms=10" >"$tmp/wrk-work.out" 2>&1 &
WRK_PID=$!
start=$(date +%s%N)
decided="" served=""
while [ -z "$served" ]; do
  now_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  [ "$now_ms" -lt 20000 ] || { echo "no scale-up within 20 s" >&2; break; }
  if [ -z "$decided" ] && [ "$(desired_work)" -gt 1 ]; then decided=$now_ms; fi
  if [ -n "$decided" ] && [ "$(ready_work)" -gt 1 ]; then served=$now_ms; fi
  sleep 0.05
done
echo "load step -> autoscaler's decision: ${decided} ms; -> added replicas serving: ${served} ms (Kubernetes: 15 s sync period, then pod start)"
kill "$WRK_PID" 2>/dev/null || true; wait "$WRK_PID" 2>/dev/null || true

# --- 3. cold start ---
cat >"$tmp/idle.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: idle}
spec:
  replicas: 1
  selector: {matchLabels: {app: idle}}
  template:
    metadata: {labels: {app: idle}}
    spec:
      containers:
      - {name: idle, image: hello:1.0}
---
apiVersion: v1
kind: Service
metadata: {name: idle}
spec:
  selector: {app: idle}
  ports: [{port: 80}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: idle
  annotations: {wasmfleet.io/hpa-sync-period: 500ms}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: idle}
  minReplicas: 0
  maxReplicas: 2
  metrics:
  - type: Pods
    pods: {metric: {name: requests_per_second}, target: {type: AverageValue, averageValue: "1000"}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 1}
YAML
cli apply -f "$tmp/idle.yaml" >/dev/null
idle_on() { cli get replicas -o json | python3 -c 'import json,sys; print(" ".join(r["node"] for r in json.load(sys.stdin) if r["owner"]=="Deployment/default/idle"))'; }
at_zero() { local end=$((SECONDS + 60)); until [ -z "$(idle_on)" ]; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.1; done; }
echo "== 3. cold start from zero: $COLD requests, each after the target is back at zero"
: >"$tmp/cold.txt"
home=""
for i in $(seq 1 "$COLD"); do
  at_zero || { echo "never back at zero" >&2; break; }
  sleep 0.3   # every node has seen it at zero
  if [ -z "$home" ] || [ $((i % 2)) = 1 ]; then via=${home:-n1}; kind=local; else
    via=$(for n in n1 n2 n3; do [ "$n" != "$home" ] && echo $n && break; done); kind=remote; fi
  out=$(curl -s -o /dev/null -D - -w 'time=%{time_total}\n' -H 'Host: idle' "$(listener "$via" gateway)/")
  t=$(echo "$out" | awk -F= '/^time=/ {printf "%.1f", $2 * 1000}')
  held=$(echo "$out" | awk 'tolower($1) == "x-wasmfleet-cold-start:" {print $2+0}')
  if [ -z "$home" ]; then home=$(idle_on | awk '{print $1}'); kind=first; fi
  echo "$kind $t ${held:-0}" >>"$tmp/cold.txt"
done
python3 - "$tmp/cold.txt" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for kind in ("local", "remote"):
    v = sorted(float(r[1]) for r in rows if r[0] == kind)
    if not v:
        continue
    q = lambda p: v[min(len(v) - 1, int(round(p * (len(v) - 1))))]
    print(f"{kind:6} n={len(v):3}  p50 {q(0.5):7.1f} ms  p99 {q(0.99):7.1f} ms  max {v[-1]:7.1f} ms")
PY
echo "(the replica starts on $home; local = through its gateway, remote = through another node's)"
