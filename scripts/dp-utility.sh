#!/usr/bin/env bash
# Distributed vs central vs local DP error at equal ρ, at t = n − 1. Each clinic adds σ²/(t − 1)
# so that the others' contributions alone carry σ² (issue 12): the exact ratio is √(n/(t − 1)),
# 1.118 at n = 10 (DESIGN.md §12's 1.06 assumed σ²/t shares). Monte Carlo with OpenDP's discrete
# Gaussian sampler; prints RMSEs and ratios. Usage: scripts/dp-utility.sh [clinics=10] [entries=2000] [trials=20]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p mbc-protocol --example dp_utility -- "$@"
