#!/usr/bin/env bash
# Derivation speed: `mbc-node stats --json` (every episode's first and last scores, outcomes,
# NHS TT metrics, risk models, variance components, track records) against a bare
# `SELECT sum(score) FROM assessment` scan of the same (encrypted) store by the same SQLite,
# `mbc-node store query` (the sqlite3 shell cannot open an encrypted store), in the same run
# (DESIGN.md §12: target <= 2x). Each is run 5 times, alternating; medians and ratios.
#
# Two figures for mbc-node: "derive" is a run whose derived tables are already current (the
# normal case when statistics are read again), "derive + store" forces rewriting all derived
# tables (~240k rows for 10^6 assessments), as the first run after an import does.
#
# Usage: scripts/bench-stats.sh [PATIENTS]   (default 75000 patients ≈ 1.1 million assessments)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-75000}

source scripts/bench-common.sh
"$bin" init --data-dir "$work/node" --name bench >/dev/null
"$bin" import --data-dir "$work/node" "$data/therapists.csv" "$data/patients.csv" \
    "$data/episodes.csv" "$data/assessments.csv" >/dev/null
"$bin" stats --data-dir "$work/node" --json >/dev/null # warm the page cache for both

mine=() stored=() theirs=()
rule=kraus
for _ in 1 2 3 4 5; do
    t0=$(now); "$bin" stats --data-dir "$work/node" --json >/dev/null; t1=$(now)
    "$bin" store query --data-dir "$work/node" "SELECT sum(score) FROM assessment" >/dev/null; t2=$(now)
    # A different rule each time: the derived tables must be rewritten.
    "$bin" stats --data-dir "$work/node" --json --rule "$rule" >/dev/null; t3=$(now)
    rule=$([ "$rule" = kraus ] && echo eb-interval || echo kraus)
    mine+=("$t0 $t1") theirs+=("$t1 $t2") stored+=("$t2 $t3")
    "$bin" stats --data-dir "$work/node" --json >/dev/null # back to the default derivation
done
assessments=$("$bin" store query --data-dir "$work/node" "SELECT count(*) FROM assessment" | tail -n 1)
python3 - "$assessments" "${mine[*]}" "${theirs[*]}" "${stored[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1])
def median(pairs):
    v = list(map(float, pairs.split()))
    return statistics.median(b - a for a, b in zip(v[::2], v[1::2]))
mine, base, stored = median(sys.argv[2]), median(sys.argv[3]), median(sys.argv[4])
print(f"assessments: {n:,}")
print(f"mbc-node stats --json (derive)          : {mine:6.3f} s (median of 5)")
print(f"mbc-node stats --json (derive + store)  : {stored:6.3f} s (median of 5)")
print(f"store query SELECT sum(score) FROM assessment: {base:6.3f} s (median of 5)")
print(f"ratio derive / scan = {mine / base:.2f} (target <= 2); derive + store / scan = {stored / base:.2f}")
PY
