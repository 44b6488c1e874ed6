#!/usr/bin/env bash
# Network benchmark (issue 5, DESIGN.md §12):
#  1. 20 nodes (coordinator + 19 clinics) on 127.0.0.1, fully connected: RSS per idle node
#     (target <= 50 MB).
#  2. Request-response round trip between two of them (signed echo over Noise + Yamux, measured
#     inside the node) against a plain TCP echo between two processes on loopback, same payload,
#     same run: p50 and p99, and their ratio.
# Usage: scripts/bench-net.sh [NODES] [ROUND_TRIPS] [PAYLOAD_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-20}; count=${2:-2000}; size=${3:-64}
cargo build --release -q -p mbc-node --bin mbc-node --example tcp_echo
bin=target/release/mbc-node
echo_bin=target/release/examples/tcp_echo
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-bench-net.XXXXXX")
source scripts/net-common.sh
trap 'stop_all; rm -rf "$work"' EXIT

form_network "$nodes" bench
coord=${dirs[0]}
sleep 5 # idle: let identify, gossipsub heartbeats and roster pulls settle before reading RSS
total=0; max=0
for p in "${pids[@]}"; do
    kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status")
    total=$((total + kb)); [ "$kb" -gt "$max" ] && max=$kb
done
echo "idle RSS over $nodes nodes: mean $((total / nodes / 1024)) MB, max $((max / 1024)) MB (target <= 50 MB)"

peer=$(sed 's/.*"peer_id":"\([^"]*\)".*/\1/' "$coord.out")
"$bin" network ping --data-dir "${dirs[1]}" "$peer" --count 200 --size "$size" >/dev/null # warm-up
mbc=$("$bin" network ping --data-dir "${dirs[1]}" "$peer" --count "$count" --size "$size" --json)
eport=$((port_base + nodes + 50))
"$echo_bin" serve "$eport" >"$work/echo.out" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/echo.out" ] && break; sleep 0.05; done
"$echo_bin" ping "127.0.0.1:$eport" 200 "$size" >/dev/null # warm-up
tcp=$("$echo_bin" ping "127.0.0.1:$eport" "$count" "$size")
python3 - "$mbc" "$tcp" "$count" "$size" <<'PY'
import json, sys
m, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"round trip, {sys.argv[3]} x {sys.argv[4]} B on loopback:")
print(f"  mbc-node signed request-response  p50 {m['p50_us']:8.1f} us   p99 {m['p99_us']:8.1f} us")
print(f"  plain TCP echo                    p50 {t['p50_us']:8.1f} us   p99 {t['p99_us']:8.1f} us")
print(f"  ratio                             p50 {m['p50_us']/t['p50_us']:8.1f} x    p99 {m['p99_us']/t['p99_us']:8.1f} x")
PY
