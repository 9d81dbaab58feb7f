#!/usr/bin/env bash
# wasi:keyvalue kept by the cluster, timed from inside a component on a 3-node cluster
# (127.0.0.1, port 0): the `kv` component's /bench route runs N operations and times each
# with the guest's monotonic clock (so the numbers are the host call, no HTTP).
#
#   get   a key this node owns (with 3 nodes and 3 copies every node owns every key): local
#   set   acknowledged once 2 copies are durable (the primary's and one more)
#   incr  atomics.increment, from every node: the key's primary runs it itself, the others
#         send it to the primary
# Then the agent's RSS before and after 10 000 keys of 1 KiB.
#
#   benches/kv.sh                     # N=2000
. "$(dirname "$0")/lib.sh"
need_bin
N="${N:-2000}"
KV_WASM="${KV_WASM:-$CARGO_TARGET_DIR/wasm-modules/dist/kv.wasm}"
[ -f "$KV_WASM" ] || { echo "no kv component at $KV_WASM (build once, or set KV_WASM)" >&2; exit 1; }
echo "machine: $(nproc) cores, $(uname -r); N=$N operations per measurement"

start_cluster 3
cli push kv:1.0 "$KV_WASM" >/dev/null
cat >"$tmp/kv.yaml" <<'YAML'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: kv}
spec:
  selector: {matchLabels: {app: kv}}
  template:
    metadata: {labels: {app: kv}}
    spec:
      containers: [{name: kv, image: kv:1.0}]
---
apiVersion: v1
kind: Service
metadata: {name: kv}
spec:
  selector: {app: kv}
  ports: [{port: 80}]
YAML
cli apply -f "$tmp/kv.yaml" >/dev/null
# Every node runs its replica (a DaemonSet) and routes to it.
for n in n1 n2 n3; do
  end=$((SECONDS + 30))
  until [ "$(cli get replicas | grep -c "^kv-$n .*Running")" = 1 ]; do
    [ "$SECONDS" -lt "$end" ] || { echo "no kv replica on $n" >&2; exit 1; }
    sleep 0.1
  done
  wait_status "$(listener $n gateway)/get?key=warm" kv 404
done

bench() { # node op key [extra query]
  curl -s -H 'Host: kv' "$(listener "$1" gateway)/bench?op=$2&n=$N&key=$3${4:-}"
}
us() { awk '{printf "p50 %.1f us, p99 %.1f us, max %.1f us", $1/1000, $2/1000, $3/1000}'; }

curl -s -H 'Host: kv' "$(listener n1 gateway)/set?key=reading&value=21.5" >/dev/null
sleep 0.2
for n in n1 n2 n3; do bench "$n" get reading >/dev/null; done # warm
echo "== get (local owner), 16-byte value"
for n in n1 n2 n3; do echo "$n: $(bench "$n" get reading | us)"; done
echo "== set, 16-byte value, acknowledged on 2 durable copies"
for n in n1 n2 n3; do echo "$n: $(bench "$n" set "s-$n" | us)"; done
echo "== incr of one counter from every node (the fastest node is the key's primary)"
for n in n1 n2 n3; do echo "$n: $(bench "$n" incr hits | us)"; done
echo "counter: $(cli kv get default hits) (expected $((3 * N)))"

pid=${AGENT_PID[n1]}
before=$(rss_mib "$pid")
curl -s -H 'Host: kv' "$(listener n1 gateway)/bench?op=fill&n=10000&key=k&valuelen=1024" >/dev/null
echo "== RSS of n1: $before before, $(rss_mib "$pid") after 10 000 keys of 1 KiB ($(du -sh "$tmp/n1/kv.redb" | cut -f1) on disk)"
