#!/usr/bin/env bash
# The cost of the remote hop: the same hello load through the gateway of the node that runs
# the only replica (served locally) and through a node without one (forwarded over QUIC to
# it), measured with wrk in the same run. Prints the added p50 latency at one connection
# (goal <= 150 us) and the throughput ratio at 32 connections (goal >= 0.7x).
#
# If nginx is installed, the same run also measures a reference hop: nginx as a plain-HTTP
# reverse proxy (keep-alive upstream) in front of the local gateway. That is about the least
# an HTTP hop costs on the machine; wasmfleet's hop adds QUIC with mutual TLS.
#
#   benches/remote-hop.sh          # ROUNDS=5 of DURATION=3s by default; needs wrk (apt-get install wrk)
#   WASMFLEET_BIN=path/to/wasmfleet benches/remote-hop.sh       # that binary, nothing built
. "$(dirname "$0")/lib.sh"
need_bin
DURATION="${DURATION:-3s}"
ROUNDS="${ROUNDS:-5}"
EDGE_ARGS="${EDGE_ARGS:-}"   # extra agent flags for the forwarding node, e.g. "--lanes 1"
need_wrk
need_hello
on_exit '[ -f "$tmp/ngx/nginx.pid" ] && kill "$(cat "$tmp/ngx/nginx.pid")" 2>/dev/null'
agent() { # name extra-args...
  local name=$1; shift
  start_agent "$name" --node-name "$name" "$@"
}

# Two nodes; only `web` (labelled role=web) may run hello.
agent web --labels role=web
CLUSTER=$(listener web cluster)
TOKEN=$("$BIN" --data-dir "$tmp/web" token create)
agent edge --join "$CLUSTER" --join-token "$TOKEN" $EDGE_ARGS
GW_LOCAL=$(listener web gateway)
GW_REMOTE=$(listener edge gateway)
export WASMFLEET_DATA_DIR="$tmp/web"
"$BIN" push hello:1.0 "$HELLO" >/dev/null
hello_manifest "$tmp/hello.yaml" "role: web"
"$BIN" apply -f "$tmp/hello.yaml" >/dev/null
wait_200 "$GW_LOCAL/" hello
wait_200 "$GW_REMOTE/" hello
node=$(curl -s -D - -o /dev/null -H 'Host: hello' "$GW_REMOTE/" | awk -F': ' 'tolower($1)=="x-wasmfleet-node" {print $2}' | tr -d '\r')
[ "$node" = web ] || { echo "expected the edge gateway to forward to web, got '$node'" >&2; exit 1; }

GW_NGINX=""
if command -v nginx >/dev/null; then
  port=$(free_port)
  mkdir -p "$tmp/ngx/logs"
  cat >"$tmp/ngx/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $tmp/ngx/nginx.pid;
error_log $tmp/ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream web { server ${GW_LOCAL#http://}; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_buffering off; }
  }
}
NGINX
  nginx -p "$tmp/ngx" -c "$tmp/ngx/nginx.conf"
  GW_NGINX="http://127.0.0.1:$port"
  wait_200 "$GW_NGINX/" hello
fi

echo "machine: $(nproc) cores, $(uname -r); wrk -t1; $ROUNDS rounds of $DURATION per measurement"
for gw in "$GW_LOCAL" "$GW_REMOTE" $GW_NGINX; do wrk -t1 -c8 -d2s -H 'Host: hello' "$gw/" >/dev/null; done
# Rounds, each measuring every path back to back: on a shared machine the load of others
# drifts, so each round's hop and ratio compare measurements taken seconds apart, and the
# medians over rounds are reported.
# steal: the share of this VM's CPU time the hypervisor gave to others during the run
cpu_stat() { awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t, $9}' /proc/stat; }
stat0=$(cpu_stat)
names="local remote"
[ -n "$GW_NGINX" ] && names="$names nginx"
url() { case $1 in local) echo "$GW_LOCAL" ;; remote) echo "$GW_REMOTE" ;; nginx) echo "$GW_NGINX" ;; esac; }
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 32; do
    for name in $names; do
      wrk -t1 -c$c -d"$DURATION" --latency -H 'Host: hello' "$(url $name)/" >"$tmp/$name-$c.txt"
    done
    if [ $c = 1 ]; then
      for name in $names; do p50_us <"$tmp/$name-1.txt" >"$tmp/$name-1.r$round"; done
    else
      for name in $names; do rps <"$tmp/$name-32.txt" >"$tmp/$name-32.r$round"; done
    fi
  done
  L1=$(cat "$tmp/local-1.r$round"); L32=$(cat "$tmp/local-32.r$round")
  line="round $round: local $L1 us, $L32 req/s"
  for name in $names; do
    [ "$name" = local ] && continue
    X1=$(cat "$tmp/$name-1.r$round"); X32=$(cat "$tmp/$name-32.r$round")
    awk -v a="$L1" -v b="$X1" 'BEGIN {printf "%.0f\n", b-a}' >>"$tmp/$name.hop"
    awk -v a="$L32" -v b="$X32" 'BEGIN {printf "%.3f\n", b/a}' >>"$tmp/$name.ratio"
    line="$line; $name $X1 us, $X32 req/s"
  done
  echo "$line"
done
stat1=$(cpu_stat)
echo "steal during the run: $(echo "$stat0 $stat1" | awk '{d=$3-$1; printf "%.0f%%", (d > 0) ? 100*($4-$2)/d : 0}')"
list() { tr '\n' ' ' <"$1" | sed 's/ $//'; }
printf '1 connection:   the hop adds %s us at p50 (median of %s rounds: %s; goal <= 150 us)\n' \
  "$(median <"$tmp/remote.hop")" "$ROUNDS" "$(list "$tmp/remote.hop")"
printf '32 connections: remote/local throughput %sx (median of %s rounds: %s; goal >= 0.7x)\n' \
  "$(median <"$tmp/remote.ratio")" "$ROUNDS" "$(list "$tmp/remote.ratio")"
if [ -n "$GW_NGINX" ]; then
  printf 'reference, nginx proxy hop: adds %s us at 1 connection (%s), %sx at 32 (%s)\n' \
    "$(median <"$tmp/nginx.hop")" "$(list "$tmp/nginx.hop")" "$(median <"$tmp/nginx.ratio")" "$(list "$tmp/nginx.ratio")"
fi
