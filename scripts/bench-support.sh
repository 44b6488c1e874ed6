#!/usr/bin/env bash
# One patient's clinical support page: `mbc-node support PATIENT --json` (per instrument: the
# pool of ended episodes and their features, standardisation, the exact k nearest neighbours,
# bands, signals) against `mbc-node stats --json` (the whole clinic's statistics) on the same
# store, in the same run (issue 15: target <= 1.5x: a clinician opening a patient's page must
# not wait longer than for the whole clinic's statistics). Each is run 5 times, alternating;
# medians and the ratio. Then the caseload, `mbc-node alerts --json` (every open episode's
# latest signal and unresolved alerts), against `stats --json` on the same store (target <= 2x).
# The import's time is printed too: it includes the alert check of every open episode.
#
# Usage: scripts/bench-support.sh [PATIENTS]   (default 100000 patients: a pool of ~10^5)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-100000}

source scripts/bench-common.sh
"$bin" init --data-dir "$work/node" --name bench >/dev/null
t_import0=$(now)
"$bin" import --data-dir "$work/node" "$data/therapists.csv" "$data/patients.csv" \
    "$data/episodes.csv" "$data/assessments.csv" >/dev/null
t_import1=$(now)
"$bin" stats --data-dir "$work/node" --json >/dev/null # derived tables current, cache warm
patient=$(sed -n 2p "$data/assessments.csv" | cut -d, -f1)
"$bin" support --data-dir "$work/node" "$patient" --json >/dev/null

mine=() theirs=() caseload=()
for _ in 1 2 3 4 5; do
    t0=$(now); "$bin" support --data-dir "$work/node" "$patient" --json >/dev/null; t1=$(now)
    "$bin" stats --data-dir "$work/node" --json >/dev/null; t2=$(now)
    "$bin" alerts --data-dir "$work/node" --json >/dev/null; t3=$(now)
    mine+=("$t0 $t1") theirs+=("$t1 $t2") caseload+=("$t2 $t3")
done
open=$("$bin" alerts --data-dir "$work/node" --json |
    python3 -c "import json,sys; print(len(json.load(sys.stdin)['episodes']))")
assessments=$(($(wc -l < "$data/assessments.csv") - 1))
pool=$("$bin" support --data-dir "$work/node" "$patient" --json |
    python3 -c "import json,sys; print(max(i['basis']['pool'] for i in json.load(sys.stdin)['instruments'] if i['basis']))")
python3 - "$pool" "${mine[*]}" "${theirs[*]}" "${caseload[*]}" "$open" "$assessments" <<'PY'
import statistics, sys
pool = int(sys.argv[1])
def median(pairs):
    v = list(map(float, pairs.split()))
    return statistics.median(b - a for a, b in zip(v[::2], v[1::2]))
mine, base = median(sys.argv[2]), median(sys.argv[3])
print(f"pool: {pool:,} ended episodes per instrument")
print(f"mbc-node support PATIENT --json: {mine:6.3f} s (median of 5)")
print(f"mbc-node stats --json          : {base:6.3f} s (median of 5)")
print(f"ratio support / stats = {mine / base:.2f} (target <= 1.5)")
cases = median(sys.argv[4])
print(f"mbc-node alerts --json         : {cases:6.3f} s (median of 5; {int(sys.argv[5]):,} open "
      f"episodes, {int(sys.argv[6]):,} assessments)")
print(f"ratio alerts / stats = {cases / base:.2f} (target <= 2)")
PY
python3 -c "print(f'import (with the alert check of every open episode): {$t_import1 - $t_import0:.1f} s')"
