#!/usr/bin/env bash
# The point of the trajectories round, measured (issue 16): a new clinic of NEW patients
# joins five clinics of PATIENTS each (`mbc-node demo`), the network runs a benchmark and a
# trajectories round (rho RHO each), and the new clinic's validation card (leave-one-out:
# every ended episode a test patient) compares its own neighbours (each patient against the
# clinic's other ones: "alone"), the network's expected-trajectory model and stratum curves
# ("network"), and the same model from the exact pooled sums (the same rounds with noise
# off: "pooled", non-private). SEEDS synthetic networks; per seed and the mean: AUC of red by
# session 3 for final non-improvement, r of predicted and observed change, and calibration
# (share of scores beyond P90, ties half; 10 % is calibrated). Then the dropout model (a
# training of at most 5 iterations, RHO in all): its AUC, Brier score and mean risk on the new
# clinic's ended episodes, for the network's model, the same from exact sums ("pooled", the
# pooled non-private fit) and the clinic's own fit (5-fold cross-validated, "alone"). Debug
# build (its noise-off switch is what gives the pooled sums).
# Usage: scripts/network-value.sh [SEEDS] [PATIENTS] [NEW] [RHO]
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-5}; patients=${2:-400}; new=${3:-60}; rho=${4:-0.25}
cargo build -q -p mbc-node --bin mbc-node
bin=target/debug/mbc-node
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-network-value.XXXXXX")
trap 'rm -rf "$work"' EXIT
for s in $(seq 1 "$seeds"); do
    for mode in network pooled; do
        env=()
        [ "$mode" = pooled ] && env=(MBC_NODE_TEST_NO_NOISE=1)
        env "${env[@]}" "$bin" demo --dir "$work/$mode-$s" --seed "$s" --patients-per-clinic "$patients" \
            --new-clinic-patients "$new" --rho "$rho" --trajectories-rho "$rho" --dropout-rho "$rho" \
            >/dev/null 2>"$work/$mode-$s.log"
        "$bin" support validate --data-dir "$work/$mode-$s/nodes/new-clinic" --json >"$work/$mode-$s.json" || true
    done
done
python3 - "$work" "$seeds" "$patients" "$new" "$rho" <<'PY'
import json, statistics, sys, os
work, seeds, patients, new, rho = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
rows = {}
drop = {}
for s in range(1, seeds + 1):
    for mode in ("network", "pooled"):
        path = os.path.join(work, f"{mode}-{s}.json")
        try:
            cards = json.load(open(path))
        except Exception:
            continue
        for c in cards:
            d = c.get("dropout")
            if d:
                if mode == "network":
                    drop.setdefault("network model", []).append(d["network"])
                    if d.get("alone"):
                        drop.setdefault("alone (5-fold CV)", []).append(d["alone"])
                else:
                    drop.setdefault("pooled fit", []).append(d["network"])
            m = {f["method"]: f for f in c["methods"]}
            pick = {"alone": m.get("nearest_neighbours"), "network model": m.get("network_model"),
                    "network curves": m.get("network_curves")} if mode == "network" else \
                   {"pooled model": m.get("network_model"), "pooled curves": m.get("network_curves")}
            for name, f in pick.items():
                if f:
                    rows.setdefault((c["instrument"], name), []).append(f)
print(f"new clinic of ~{new} patients beside 5 clinics of {patients}, rho = {rho} per round, {seeds} seeds")
print(f"  {'instrument':<10} {'reference':<16} {'AUC':>6} {'(SD)':>6} {'r':>6} {'(SD)':>6} {'beyond P90':>11}  (mean and SD over seeds; test patients per seed)")
def mean(fs, key):
    v = [f[key] for f in fs if f.get(key) is not None]
    return statistics.mean(v) if v else float('nan')
def sd(fs, key):
    v = [f[key] for f in fs if f.get(key) is not None]
    return statistics.stdev(v) if len(v) > 1 else float('nan')
for (inst, name), fs in sorted(rows.items(), key=lambda kv: (kv[0][0], ["alone","network model","network curves","pooled model","pooled curves"].index(kv[0][1]))):
    print(f"  {inst:<10} {name:<16} {mean(fs,'auc'):6.3f} {sd(fs,'auc'):6.3f} {mean(fs,'r'):6.3f} {sd(fs,'r'):6.3f} {100*mean(fs,'above_p90_mid'):10.1f} %  ({statistics.mean(f['assessed'] for f in fs):.0f})")
print(f"  dropout risk on the new clinic's ended episodes with a known end (mean and SD over seeds):")
print(f"  {'model':<18} {'AUC':>6} {'(SD)':>6} {'Brier':>6} {'mean risk':>10} {'observed':>9}  (episodes)")
for name in ("alone (5-fold CV)", "network model", "pooled fit"):
    fs = drop.get(name, [])
    if not fs:
        continue
    obs = statistics.mean(f["dropouts"] / f["episodes"] for f in fs)
    print(f"  {name:<18} {mean(fs,'auc'):6.3f} {sd(fs,'auc'):6.3f} {mean(fs,'brier'):6.3f} {100*mean(fs,'mean_risk'):9.1f} % {100*obs:8.1f} %  ({statistics.mean(f['episodes'] for f in fs):.0f})")
PY
