#!/usr/bin/env bash
# Agent RSS idle and with hello deployed, apply -> first 200 OK (module compiled at push, and
# a module compiled on first use after a cache wipe), release binary size, and a start under
# `ulimit -v 1048576` (1 GiB of address space).
#
#   WASMFLEET_BIN=path/to/wasmfleet benches/startup.sh         # that binary, nothing built
. "$(dirname "$0")/lib.sh"
need_bin
need_hello
ms() { date +%s%3N; }
first_200() { # gw -> ms until 200
  local t0=$(ms)
  wait_status "$1/" hello 200 0.002
  echo $(( $(ms) - t0 ))
}

strip -o "$tmp/wasmfleet.stripped" "$BIN"
echo "release binary: $(stat -c %s "$BIN") bytes, stripped $(stat -c %s "$tmp/wasmfleet.stripped") bytes"
start_agent a
# Not a synchronisation: RSS is read after a second of idling.
sleep 1
echo "agent RSS idle, nothing deployed: $(rss_mib "${AGENT_PID[a]}")"
GW=$(listener a gateway)
export WASMFLEET_DATA_DIR="$tmp/a"
"$BIN" push hello:1.0 "$HELLO" >/dev/null
sed 's/replicas: 3/replicas: 1/' examples/hello.yaml >"$tmp/hello.yaml"
t0=$(ms); "$BIN" apply -f "$tmp/hello.yaml" >/dev/null; t1=$(first_200 "$GW")
echo "apply -> first 200 OK, module compiled at push: $(( $(ms) - t0 )) ms (after the CLI returned: ${t1} ms)"
sleep 1
echo "agent RSS with hello deployed: $(rss_mib "${AGENT_PID[a]}")"
stop_agent a

# Cold: wipe the compiled-code cache, restart, re-apply under a new name so it must compile.
rm -rf "$tmp/a/compiled"
start_agent a
GW=$(listener a gateway)
"$BIN" delete -f "$tmp/hello.yaml" >/dev/null
wait_status "$GW/" hello 404 0.01
stop_agent a
rm -rf "$tmp/a/compiled"
start_agent a
GW=$(listener a gateway)
t0=$(ms); "$BIN" apply -f "$tmp/hello.yaml" >/dev/null; first_200 "$GW" >/dev/null
echo "apply -> first 200 OK, including compilation: $(( $(ms) - t0 )) ms"
stop_agent a

# Small box: 1 GiB of address space.
ULIMIT_V=1048576 start_agent small
GW=$(listener small gateway)
WASMFLEET_DATA_DIR="$tmp/small" "$BIN" push hello:1.0 "$HELLO" >/dev/null
WASMFLEET_DATA_DIR="$tmp/small" "$BIN" apply -f "$tmp/hello.yaml" >/dev/null
first_200 "$GW" >/dev/null
echo "under ulimit -v 1048576: agent started and served hello ($(WASMFLEET_DATA_DIR="$tmp/small" "$BIN" get node | tail -1))"
