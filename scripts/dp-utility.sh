#!/usr/bin/env bash
# Distributed vs central vs local DP error at equal ρ (DESIGN.md §12: distributed ≤ 1.06×
# central at t = n − 1). Monte Carlo with OpenDP's discrete Gaussian sampler; prints RMSEs and
# ratios. Usage: scripts/dp-utility.sh [clinics=10] [entries=2000] [trials=20]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p mbc-protocol --example dp_utility -- "$@"
