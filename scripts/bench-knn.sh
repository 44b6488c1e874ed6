#!/usr/bin/env bash
# Exact kNN of clinical support over a pool of N episodes x D features against one streaming
# pass over the same matrix, in the same run (issue 15 target: <= 1.3 at 10^6 x 25).
# Usage: scripts/bench-knn.sh [N=1000000] [D=25] [runs=9]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p mbc-protocol --example knn_bench -- "$@"
