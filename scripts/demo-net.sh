#!/usr/bin/env bash
# A coordinator and three clinics on 127.0.0.1, each a separate `mbc-node run` process:
# create the network, admit the clinics through join requests, start everyone, show status.
# Leaves nothing running. Usage: scripts/demo-net.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p mbc-node
bin=target/release/mbc-node
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-net-demo.XXXXXX")
source scripts/net-common.sh
trap 'stop_all; rm -rf "$work"' EXIT

coord=$(init_node "Coordinator")
"$bin" network create --data-dir "$coord" --network-id demo-net >/dev/null
echo "created network demo-net, coordinated by $(basename "$coord")"
start_node "$coord"
clinics=()
for name in "Riverside Talking Therapies" "Hillview Psychology" "Northgate Wellbeing"; do
    dir=$(init_node "$name")
    admit_node "$coord" "$dir" demo-net
    echo "admitted $name"
    start_node "$dir"
    clinics+=("$dir")
done
for d in "$coord" "${clinics[@]}"; do wait_peers "$d" 3; done
echo
for d in "$coord" "${clinics[@]}"; do
    echo "== $(basename "$d")"
    "$bin" status --data-dir "$d" | tail -2
done
echo
"$bin" network peers --data-dir "$coord"
