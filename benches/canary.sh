#!/usr/bin/env bash
# Canary figures on real agents (127.0.0.1, port 0), 3 nodes, a Rollout of hello:
#   1. weight accuracy: at setWeight 1, 10 and 50 %, REQUESTS (10 000) GETs through each
#      gateway, counted by the revision that answered (hello names its replica);
#   2. abort time: a canary of `hostile` (which traps on /trap, a 500) under steady GETs of
#      /trap through every gateway, with an analysis of 1 s intervals: from the canary's first
#      failed request to the Rollout marked Degraded, and to the last failed request (traffic
#      back on the stable). ROUNDS rounds (3).
#
#   benches/canary.sh
#   REQUESTS=2000 ROUNDS=1 benches/canary.sh
. "$(dirname "$0")/lib.sh"
need_bin
need_hello
REQUESTS="${REQUESTS:-10000}"
ROUNDS="${ROUNDS:-3}"
HOSTILE="${HOSTILE:-$CARGO_TARGET_DIR/wasm-modules/dist/hostile.wasm}"

start_cluster 3
cli push hello:1.0 "$HELLO" >/dev/null 2>&1
cli push hostile:1.0 "$HOSTILE" >/dev/null 2>&1

rollout() { # image greeting steps-yaml
  cat >"$tmp/web.yaml" <<YAML
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate}
spec:
  metrics:
  - name: success
    interval: 1s
    count: 5
    successCondition: "successRate >= 0.95"
    provider: {wasmfleet: {minRequests: 10}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: $1
        env: [{name: GREETING, value: "$2"}]
  strategy:
    canary:
      steps:
$3
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

# Waits until the Rollout's progress satisfies a Python expression over `p` (its JSON).
wait_progress() { # expression
  python3 - "$(listener n1 api)" "$(cat "$tmp/n1/token")" "$1" <<'PY'
import json, sys, time, urllib.request
api, token, cond = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.time() + 60
while time.time() < deadline:
    req = urllib.request.Request(f"{api}/v1/objects/rollouts/default/web", headers={"Authorization": f"Bearer {token}"})
    try:
        p = json.load(urllib.request.urlopen(req, timeout=5))["status"]["rollout"]["progress"]
        if eval(cond):
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.05)
sys.exit("timed out waiting for " + cond)
PY
}

echo "== weight accuracy: $REQUESTS requests through each gateway"
printf '%-8s %-10s %10s %10s %10s\n' weight gateway canary total share
v=1
rollout hello:1.0 v0 "      - setWeight: 1
      - pause: {}"
wait_progress 'p["phase"] == "Healthy"'
for weight in 1 10 50; do
  v=$((v + 1))
  rollout hello:1.0 "v$v" "      - setWeight: $weight
      - pause: {}"
  wait_progress "p['phase'] == 'Paused' and p['weight'] == $weight and p['canary']"
  sleep 1
  for n in n1 n2 n3; do
    python3 - "$(listener $n gateway)" "$REQUESTS" "v$v" "$weight" "$n" <<'PY'
import http.client, sys, urllib.parse
url, n, canary, weight, node = sys.argv[1], int(sys.argv[2]), sys.argv[3] + "!", sys.argv[4], sys.argv[5]
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
hits = 0
for _ in range(n):
    conn.request("GET", "/", headers={"Host": "web"})
    body = conn.getresponse().read().decode()
    hits += body.startswith(canary)
print(f"{weight + '%':<8} {node:<10} {hits:>10} {n:>10} {100.0 * hits / n:>9.2f}%")
PY
  done
  # Promote (full) so the next weight starts from this revision as stable.
  cli rollout promote web --full >/dev/null 2>&1
  wait_progress 'p["phase"] == "Healthy" and not p["canary"]'
done

echo "== canary abort: analysis interval 1 s, count 5, successRate >= 0.95, hostile canary at 30 %"
printf '%-6s %22s %26s %12s\n' round first_fail_to_degraded_ms first_to_last_fail_ms failed
for round in $(seq 1 "$ROUNDS"); do
  v=$((v + 1))
  # A good revision first (straight to full weight), so each round starts from a healthy stable.
  rollout hello:1.0 "v$v" "      - setWeight: 100"
  wait_progress 'p["phase"] == "Healthy" and not p["canary"]'
  python3 - "$(listener n1 api)" "$(cat "$tmp/n1/token")" "$(listener n1 gateway)" "$(listener n2 gateway)" "$(listener n3 gateway)" "$round" <<'PY' &
import http.client, json, sys, threading, time, urllib.parse, urllib.request
api, token, gateways, rnd = sys.argv[1], sys.argv[2], sys.argv[3:6], sys.argv[6]
stop = time.time() + 25
fails = []
def load(url):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    while time.time() < stop:
        conn.request("GET", "/trap", headers={"Host": "web"})
        r = conn.getresponse(); r.read()
        if r.status >= 500:
            fails.append(time.time())
threads = [threading.Thread(target=load, args=(g,)) for g in gateways]
for t in threads: t.start()
degraded = None
while time.time() < stop and degraded is None:
    req = urllib.request.Request(f"{api}/v1/objects/rollouts/default/web", headers={"Authorization": f"Bearer {token}"})
    try:
        p = json.load(urllib.request.urlopen(req, timeout=5))["status"]["rollout"]["progress"]
        if p.get("aborted") and p.get("phase") == "Degraded":
            degraded = time.time()
    except Exception:
        pass
    time.sleep(0.02)
for t in threads: t.join()
if not fails or degraded is None:
    print(f"{rnd:<6} {'no abort seen':>22}")
else:
    print(f"{rnd:<6} {int((degraded - fails[0]) * 1000):>22} {int((fails[-1] - fails[0]) * 1000):>26} {len(fails):>12}")
PY
  load_pid=$!
  sleep 2
  rollout hostile:1.0 "bad$round" "      - setWeight: 30
      - analysis: {templates: [{templateName: success-rate}]}
      - setWeight: 100"
  wait "$load_pid"
done
