#!/usr/bin/env bash
# Matching speed: `mbc-node match --phq9 18 --gad7 12 --json` (the engine's track records,
# every therapist's profile, capacity and rotation counts, the shortlist, one audit write)
# against `mbc-node stats --json` on the same store in the same run (the track records alone:
# what a shortlist costs beyond them). Each run 5 times, alternating; medians and the ratio.
# Usage: scripts/bench-match.sh [PATIENTS]   (default 20000 patients)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-20000}

source scripts/bench-common.sh
"$bin" init --data-dir "$work/node" --name bench >/dev/null
"$bin" import --data-dir "$work/node" "$data/therapists.csv" "$data/patients.csv" \
    "$data/episodes.csv" "$data/assessments.csv" >/dev/null
"$bin" stats --data-dir "$work/node" --json >/dev/null # derived tables current for both

mine=() theirs=()
for _ in 1 2 3 4 5; do
    t0=$(now)
    "$bin" match --data-dir "$work/node" --phq9 18 --gad7 12 --prefer gender=female \
        --window weekdays-pm --max-wait-days 90 --json >/dev/null
    t1=$(now); "$bin" stats --data-dir "$work/node" --json >/dev/null; t2=$(now)
    mine+=("$t0 $t1") theirs+=("$t1 $t2")
done
therapists=$("$bin" store query --data-dir "$work/node" "SELECT count(*) FROM therapist" | tail -n 1)
python3 - "$patients" "$therapists" "${mine[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
patients, therapists = sys.argv[1], sys.argv[2]
def median(pairs):
    v = list(map(float, pairs.split()))
    return statistics.median(b - a for a, b in zip(v[::2], v[1::2]))
m, s = median(sys.argv[3]), median(sys.argv[4])
print(f"{patients} patients, {therapists} therapists")
print(f"match (shortlist + audit)   {m * 1000:8.1f} ms")
print(f"stats (track records only)  {s * 1000:8.1f} ms")
print(f"ratio match / stats         {m / s:8.2f}")
PY
