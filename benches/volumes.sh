#!/usr/bin/env bash
# Replicated volumes on real agents (127.0.0.1, port 0): failover time with data and the data
# lost, against the stated recovery point (one syncPeriod plus one transfer).
#
# A 3-node cluster runs the `sensor` module as a Deployment of one replica writing a reading
# every INTERVAL_MS (each synced) into a `replicated` claim (syncPeriod SYNC). ROUNDS times:
# wait until both holders have a complete copy, kill -9 the writer, and measure
#   failover: kill -> the first reading written by the replica on its new node;
#   lost:     readings the old writer wrote before the kill that the new node's copy lacks
#             (its sensor continues after the last reading it holds);
# then restart the killed node and let it rejoin. Prints each round and the medians.
#
#   benches/volumes.sh                   # ROUNDS=5 INTERVAL_MS=20 SYNC=1s
. "$(dirname "$0")/lib.sh"
need_bin
ROUNDS="${ROUNDS:-5}"
INTERVAL_MS="${INTERVAL_MS:-20}"
SYNC="${SYNC:-1s}"
SENSOR="${SENSOR:-$CARGO_TARGET_DIR/wasm-modules/dist/sensor.wasm}"
[ -f "$SENSOR" ] || { echo "no sensor component at $SENSOR (build once, or set SENSOR)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(uname -r); sensor every ${INTERVAL_MS} ms, syncPeriod $SYNC"

start_cluster 3
on() { local n=$1; shift; "$BIN" --server "$(listener "$n" api)" --token "$(cat "$tmp/$n/token")" "$@"; }
cli push sensor:1.0 "$SENSOR" >/dev/null
cat >"$tmp/volumes.yaml" <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: bench}
provisioner: wasmfleet.io/replicated
parameters: {replicas: "2", syncPeriod: "$SYNC"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: readings}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: bench
  resources: {requests: {storage: 64Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sensor}
spec:
  replicas: 1
  selector: {matchLabels: {app: sensor}}
  template:
    metadata: {labels: {app: sensor}}
    spec:
      containers:
      - name: sensor
        image: sensor:1.0
        env:
        - {name: SENSOR_INTERVAL_MS, value: "$INTERVAL_MS"}
        - {name: SENSOR_FSYNC, value: "1"}
        volumeMounts: [{name: data, mountPath: /data}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: readings}
YAML
cli apply -f "$tmp/volumes.yaml" >/dev/null

# The claim's volume view as node $1 reports it: "volume writer complete-holders".
claim() {
  on "$1" get pvc readings -o json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin).get("status", {})
w = s.get("wasmfleet", {})
holders = [c for c in w.get("copies", []) if not c["writer"] and c["complete"]]
print(s.get("volumeName", ""), w.get("node", ""), len(holders))' 2>/dev/null || true
}
log_of() { echo "$tmp/$1/pv/$2/data/readings.log"; }
last_seq() { tail -n 1 "$1" 2>/dev/null | sed -n 's/.* seq=\([0-9]*\) .*/\1/p'; }

failovers=(); losses=()
for round in $(seq 1 "$ROUNDS"); do
  # Every node agrees on the writer, and both holders have a complete copy.
  end=$((SECONDS + 60))
  until views=$(for n in n1 n2 n3; do claim "$n"; done | sort -u) && [ "$(wc -l <<<"$views")" = 1 ] \
      && read -r volume writer holders <<<"$views" && [ -n "$writer" ] && [ "$holders" = 2 ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "no agreed writer with two complete copies: $views" >&2; exit 1; }
    sleep 0.2
  done
  sleep 1 # a few snapshots with new readings
  old_log=$(log_of "$writer" "$volume")
  t0=$(date +%s%N)
  kill -9 "${AGENT_PID[$writer]}"
  wait "${AGENT_PID[$writer]}" 2>/dev/null || true
  written=$(last_seq "$old_log")
  # Wait for a reading by another node after the kill.
  new=""; first=""
  end=$((SECONDS + 30))
  while [ -z "$first" ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "round $round: no new writer within 30 s" >&2; exit 1; }
    for n in n1 n2 n3; do
      [ "$n" = "$writer" ] && continue
      f=$(log_of "$n" "$volume")
      # The first reading this node wrote after the old writer's last one in its copy.
      first=$(awk -v me="node=$n " -v old="node=$writer " '
        index($0, old) { seen = 1; mine = "" ; next }
        seen && index($0, me) && mine == "" { match($0, /seq=[0-9]+/); mine = substr($0, RSTART + 4, RLENGTH - 4) }
        END { print mine }' "$f" 2>/dev/null)
      if [ -n "$first" ]; then new=$n; break; fi
    done
    [ -n "$first" ] || sleep 0.01
  done
  t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
  lost=$(( written + 1 - first ))
  [ "$lost" -lt 0 ] && lost=0
  echo "round $round: killed $writer; $new writes after ${ms} ms; lost $lost readings of ${INTERVAL_MS} ms ($((lost * INTERVAL_MS)) ms of data; bound: syncPeriod $SYNC + one transfer)"
  failovers+=("$ms"); losses+=("$((lost * INTERVAL_MS))")
  start_agent "$writer" --node-name "$writer"
  end=$((SECONDS + 30))
  until [ "$(on "$new" get nodes 2>/dev/null | grep -c ' Alive ')" = 3 ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "$writer did not rejoin" >&2; exit 1; }
    sleep 0.2
  done
done
echo "failover (kill -9 -> replica writing on a holder): median $(printf '%s\n' "${failovers[@]}" | median) ms, max $(printf '%s\n' "${failovers[@]}" | sort -g | tail -1) ms"
echo "data lost: median $(printf '%s\n' "${losses[@]}" | median) ms, max $(printf '%s\n' "${losses[@]}" | sort -g | tail -1) ms of readings"
