#!/usr/bin/env bash
# DOMAIN.md §11 acceptance test 3: recall of planted effective / ineffective therapist × domain
# cells at n ≈ 30 and n ≈ 50 eligible patients per therapist, with the EB-interval rule and with
# the raw-mean z-test, next to the analytic values of DOMAIN.md §7 (raw ≈ .71 / .90, EB ≈ .50 /
# .79 at n = 30 / 50 for ±2τ effects). Also prints precision (a label is right when the true
# effect has its sign), so the cost of each rule is visible.
#
# Usage: scripts/recall.sh [SEEDS]   (default 8 seeds × 50 therapists per n)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-8}
cargo build --release -q -p mbc-node
bin=target/release/mbc-node
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-recall.XXXXXX")
trap 'rm -rf "$work"' EXIT

for n in 30 50; do
    # About 82 % of patients are elevated on PHQ-9 at intake with two or more scores.
    caseload=$(python3 -c "print(round($n / 0.82))")
    for seed in $(seq 1 "$seeds"); do
        run="$work/n$n-s$seed"
        "$bin" synth --out "$run/data" --clinics 1 --seed "$seed" --therapists-per-clinic 50 \
            --caseload "$caseload" >/dev/null
        "$bin" init --data-dir "$run/node" --name recall >/dev/null
        "$bin" import --data-dir "$run/node" "$run"/data/clinic-01/{therapists,patients,episodes,assessments}.csv >/dev/null
        "$bin" stats --data-dir "$run/node" --min-show 1 --min-classify 1 --json >"$run/stats.json"
    done
done

python3 - "$work" "$seeds" <<'PY'
import hmac, hashlib, json, struct, sys, pathlib
work, seeds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
p = lambda b: struct.pack(">Q", len(b)) + b
def pseudonym(key, raw):
    msg = p(b"mbc-node/v1 pseudonym") + p(b"therapist") + p(raw.encode())
    return hmac.new(key, msg, hashlib.sha256).hexdigest()
print(f"{'n':>4} {'mean n':>7} {'planted':>8} {'recall EB':>10} {'recall z':>9} {'precision EB':>13} {'precision z':>12}   analytic recall EB / z")
analytic = {30: ".50 / .71", 50: ".79 / .90"}
for n in (30, 50):
    planted = found_eb = found_z = given_eb = right_eb = given_z = right_z = 0
    sizes = []
    for seed in range(1, seeds + 1):
        run = work / f"n{n}-s{seed}"
        key = (run / "node" / "pseudonym.key").read_bytes()
        truth = json.loads((run / "data" / "truth.json").read_text())
        stats = json.loads((run / "stats.json").read_text())
        for domain in stats["domains"]:
            if not domain["therapists"]:
                continue
            planted_by = {pseudonym(key, t["id"]): t["domains"][domain["id"]]["planted"]
                          for t in truth["clinics"][0]["therapists"]}
            effect_by = {pseudonym(key, t["id"]): t["domains"][domain["id"]]["effect_slope"]
                         for t in truth["clinics"][0]["therapists"]}
            for t in domain["therapists"]:
                sizes.append(t["n"])
                truth_label = planted_by[t["therapist"]]
                eb = t["label"]
                z = t["mean_residual"] / t["se"]
                z_label = "effective" if z < -1.96 else "ineffective" if z > 1.96 else "neutral"
                # Precision: a label is right when the true effect has that sign.
                true_sign = "effective" if effect_by[t["therapist"]] < 0 else "ineffective"
                for label, given, right in ((eb, "given_eb", "right_eb"), (z_label, "given_z", "right_z")):
                    if label in ("effective", "ineffective"):
                        globals()[given] += 1
                        globals()[right] += label == true_sign
                if truth_label != "typical":
                    planted += 1
                    found_eb += eb == truth_label
                    found_z += z_label == truth_label
    mean_n = sum(sizes) / len(sizes)
    print(f"{n:>4} {mean_n:>7.1f} {planted:>8} {found_eb / planted:>10.2f} {found_z / planted:>9.2f} "
          f"{right_eb / max(given_eb, 1):>13.2f} {right_z / max(given_z, 1):>12.2f}   {analytic[n]}")
PY
