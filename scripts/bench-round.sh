#!/usr/bin/env bash
# Secure-aggregation round benchmark (issue 6, DESIGN.md §12), release build, all on 127.0.0.1:
#  NODES nodes (coordinator + clinics) as separate `mbc-node run` processes, vectors of DIM
#  entries (bench rounds: synthetic full-range 64-bit vectors, no clinic data), REPS repetitions
#  of each, interleaved so that drift hits all alike:
#   plain    one request per node, the vector sent unmasked (the baseline)
#   secure   the full SecAgg round, threshold t = NODES - 1
#   dropout  the same with one clinic killed when the shares arrive (recovered by the others)
#  Reports median round times and their ratios (targets: secure/plain <= 5, dropout/secure
#  <= 1.2), bytes each node sent (round messages; target secure/plain <= 1.10), and the
#  distributed-DP RMSE against central at t = n - 1 (exact sqrt(n/(t-1)): each clinic adds
#  sigma^2/(t-1) so that the others alone carry sigma^2).
# Usage: scripts/bench-round.sh [NODES] [DIM] [REPS]
#
# scripts/bench-round.sh kinds [NODES] [REPS] [PATIENTS] (issue 16): NODES nodes each holding a
#  synthetic clinic of PATIENTS patients; REPS interleaved runs of a `trajectories` round (the
#  clinics encode their data, the coordinator summarises and signs) against a `bench` round of
#  the same vector length and threshold (synthetic vectors, no data, no summary), and a
#  `benchmark` round (clinic data, its own length); target trajectories/bench <= 1.2. Then a
#  `dropout-model` training of at most 5 iterations against a training of 1 (one round), both at
#  ρ = 2 per iteration (little noise, so Newton runs its course): target <= 6x.
#
# scripts/bench-round.sh sweep [SIZES="5 10 20 40 60"] [DIM=10000] [REPS=3] (issue 16): for each
#  network size n a fresh network of n nodes, REPS interleaved plain and secure bench rounds
#  (t = n - 1); prints the medians, secure/plain, and the fitted exponents of secure time and of
#  secure/plain in n (least squares on log-log; target: secure/plain <= 5 and time growing no
#  faster than n^1.3).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=rounds
if [ "${1:-}" = kinds ]; then mode=kinds; shift; fi
if [ "${1:-}" = sweep ]; then mode=sweep; shift; fi
cargo build --release -q -p mbc-node --bin mbc-node
cargo build --release -q -p mbc-protocol --example dp_utility
bin=target/release/mbc-node
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-bench-round.XXXXXX")
source scripts/net-common.sh
trap 'stop_all; rm -rf "$work"' EXIT

if [ "$mode" = kinds ]; then
    nodes=${1:-10}; reps=${2:-5}; patients=${3:-400}
    "$bin" synth --out "$work/data" --clinics "$nodes" --seed 1 --patients-per-clinic "$patients" >/dev/null
    coord=$(init_node "Coordinator")
    "$bin" network create --data-dir "$coord" --network-id kinds >/dev/null
    dirs=("$coord")
    for i in $(seq 2 "$nodes"); do
        d=$(init_node "Clinic $i"); admit_node "$coord" "$d" kinds; dirs+=("$d")
    done
    i=0
    for d in "${dirs[@]}"; do
        i=$((i + 1)); c=$(printf 'clinic-%02d' "$i")
        "$bin" import --data-dir "$d" "$work/data/$c/therapists.csv" "$work/data/$c/patients.csv" \
            "$work/data/$c/episodes.csv" "$work/data/$c/assessments.csv" >/dev/null
        # Rounds back to back, more of them than a period allows.
        sed -i -e 's/^rho_per_period = .*/rho_per_period = 100.0/' \
            -e 's/^max_rho_per_release = .*/max_rho_per_release = 10.0/' \
            -e 's/^max_rounds_per_period = .*/max_rounds_per_period = 1000/' \
            -e 's/^min_round_interval_hours = .*/min_round_interval_hours = 0.0/' "$d/config.toml"
    done
    for d in "${dirs[@]}"; do start_node "$d"; done
    for d in "${dirs[@]}"; do wait_peers "$d" $((nodes - 1)); done
    t=$((nodes - 1))
    start() { "$bin" round start --data-dir "$coord" --deadline 60 --wait --json --threshold "$t" "$@" | tr -d '\n'; }
    first=$(start --kind trajectories --rho 0.25)
    dim=$(echo "$first" | python3 -c 'import json,sys; print(json.load(sys.stdin)["dim"])')
    start --kind bench --dim "$dim" >/dev/null # warm-up
    : >"$work/results"
    for r in $(seq 1 "$reps"); do
        echo "trajectories $(start --kind trajectories --rho 0.25)" >>"$work/results"
        echo "bench $(start --kind bench --dim "$dim")" >>"$work/results"
        echo "benchmark $(start --kind benchmark --rho 0.25)" >>"$work/results"
        echo "training1 $(start --kind dropout-model --iterations 1 --rho 2 --domain depression)" >>"$work/results"
        echo "training5 $(start --kind dropout-model --iterations 5 --rho 10 --domain depression)" >>"$work/results"
    done
    python3 - "$work/results" "$nodes" "$dim" "$reps" "$patients" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    kind, status = line.split(" ", 1)
    r = json.loads(status)
    assert r["step"] == "done", (kind, r)
    runs.setdefault(kind, []).append(r)
n, dim, reps, patients = sys.argv[2:6]
med = {k: statistics.median(r["elapsed_ms"] for r in rs) for k, rs in runs.items()}
print(f"{n} nodes of {patients} patients each, d = {dim}, t = n - 1, {reps} runs each, 127.0.0.1, release build (median round time):")
print(f"  bench (same length, no data)   {med['bench']:8.1f} ms")
print(f"  trajectories (clinic data)     {med['trajectories']:8.1f} ms   trajectories/bench {med['trajectories']/med['bench']:5.2f}x  (target <= 1.2)")
bdim = runs["benchmark"][0]["dim"]
print(f"  benchmark (clinic data, d = {bdim}) {med['benchmark']:8.1f} ms   trajectories/benchmark {med['trajectories']/med['benchmark']:5.2f}x")
def training(r):
    t = r["training"]
    assert t["finished"] and r["release_id"], r
    return t["elapsed_ms"], len(t["history"])
t1 = statistics.median(training(r)[0] for r in runs["training1"])
t5 = statistics.median(training(r)[0] for r in runs["training5"])
its = sorted(training(r)[1] for r in runs["training5"])
print(f"  dropout-model, 1 iteration      {t1:8.1f} ms   (d = {runs['training1'][0]['dim']})")
print(f"  dropout-model, <= 5 iterations  {t5:8.1f} ms   ran {its} iterations; training5/training1 {t5/t1:5.2f}x  (target <= 6)")
for k in ("bench", "trajectories", "benchmark"):
    steps = {s: statistics.median(r["step_ms"][s] for r in runs[k]) for s in runs[k][0]["step_ms"]}
    print(f"  {k} steps (median ms): " + ", ".join(f"{s} {v:.1f}" for s, v in steps.items()))
PY
    exit 0
fi

if [ "$mode" = sweep ]; then
    sizes=${1:-"5 10 20 40 60"}; dim=${2:-10000}; reps=${3:-3}
    : >"$work/sweep"
    for size in $sizes; do
        root="$work/n$size"; mkdir -p "$root"
        # (wait_peers sets a global n: the size has its own name)
        outer=$work; work=$root; pids=()
        form_network "$size" "sweep-$size"
        coord=${dirs[0]}
        sweep_round() { "$bin" round start --data-dir "$coord" --kind bench --dim "$dim" --deadline 120 --wait --json "$@" | tr -d '\n'; }
        sweep_round --plain >/dev/null; sweep_round --threshold $((size - 1)) >/dev/null # warm-up
        for r in $(seq 1 "$reps"); do
            echo "$size plain $(sweep_round --plain)" >>"$outer/sweep"
            echo "$size secure $(sweep_round --threshold $((size - 1)))" >>"$outer/sweep"
        done
        stop_all
        work=$outer
    done
    python3 - "$work/sweep" "$dim" "$reps" <<'PY'
import json, math, statistics, sys
runs, steps = {}, {}
for line in open(sys.argv[1]):
    n, kind, status = line.split(" ", 2)
    r = json.loads(status)
    assert r["step"] == "done" and r["exact"] is True, (n, kind, r)
    runs.setdefault((int(n), kind), []).append(r["elapsed_ms"])
    if kind == "secure":
        steps.setdefault(int(n), []).append(r["step_ms"])
sizes = sorted({n for n, _ in runs})
print(f"n-sweep, d = {sys.argv[2]}, t = n - 1, {sys.argv[3]} runs each, 127.0.0.1, release build (median ms):")
print(f"  {'n':>4} {'plain':>9} {'secure':>9} {'secure/plain':>13}")
xs, secure, ratio = [], [], []
for n in sizes:
    p, s = statistics.median(runs[(n, "plain")]), statistics.median(runs[(n, "secure")])
    print(f"  {n:>4} {p:9.1f} {s:9.1f} {s / p:12.2f}x")
    xs.append(math.log(n)); secure.append(math.log(s)); ratio.append(math.log(s / p))
def slope(ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
if len(sizes) > 1:
    print(f"  fitted: secure time ~ n^{slope(secure):.2f} (target <= 1.3), secure/plain ~ n^{slope(ratio):.2f}")
for n in sizes:
    med = {k: statistics.median(s[k] for s in steps[n]) for k in steps[n][0]}
    print(f"  n = {n} secure steps (median ms): " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()))
PY
    exit 0
fi

nodes=${1:-10}; dim=${2:-10000}; reps=${3:-7}

form_network "$nodes" bench
coord=${dirs[0]}
victim=${dirs[$((nodes - 1))]}
t=$((nodes - 1))

round() { # round ARGS... -> status JSON on one line
    "$bin" round start --data-dir "$coord" --kind bench --dim "$dim" --deadline 30 --wait --json "$@" \
        | tr -d '\n'
}

# The victim is restarted with the kill switch before each dropout round and normally after.
restart_victim() {
    local pid
    pid=$(pgrep -f -- "run --data-dir $victim\$" || true)
    [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null || true; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; }
    rm -f "$victim.out"
    if [ "$1" = kill ]; then
        MBC_NODE_TEST_EXIT_AT=shares "$bin" run --data-dir "$victim" >"$victim.out" 2>>"$victim.log" &
        disown $! # its abort is the point; keep bash from reporting it
    else
        "$bin" run --data-dir "$victim" >"$victim.out" 2>>"$victim.log" &
    fi
    pids+=($!)
    for _ in $(seq 1 300); do [ -s "$victim.out" ] && break; sleep 0.05; done
    wait_peers "$coord" $((nodes - 1))
}

round --plain >/dev/null; round --threshold "$t" >/dev/null # warm-up
: >"$work/results"
for r in $(seq 1 "$reps"); do
    echo "plain $(round --plain)" >>"$work/results"
    echo "secure $(round --threshold "$t")" >>"$work/results"
    restart_victim kill
    echo "dropout $(round --threshold "$t")" >>"$work/results"
    restart_victim normal
done
dp=$(target/release/examples/dp_utility "$nodes" 10000 40)

python3 - "$work/results" "$nodes" "$dim" "$reps" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    kind, status = line.split(" ", 1)
    runs.setdefault(kind, []).append(json.loads(status))
for kind, rs in runs.items():
    for r in rs:
        assert r["step"] == "done", (kind, r)
        assert r["exact"] is True, (kind, r)
        if kind == "dropout":
            assert r["participants"][-1]["dropped"].startswith("shares"), r
def med(kind): return statistics.median(r["elapsed_ms"] for r in runs[kind])
def bytes_per_node(kind):
    # Clinics that completed the round: what each sent, median over clinics and runs.
    return statistics.median(p["bytes_sent"] for r in runs[kind] for p in r["participants"] if not p["dropped"])
n, dim, reps = sys.argv[2], sys.argv[3], sys.argv[4]
p, s, d = med("plain"), med("secure"), med("dropout")
print(f"{n} nodes, d = {dim}, {reps} runs each, 127.0.0.1, release build (median round time):")
print(f"  plain (unmasked, one request)  {p:8.1f} ms")
print(f"  secure (SecAgg, t = n-1)       {s:8.1f} ms   secure/plain   {s/p:5.2f}x  (target <= 5)")
print(f"  one dropout at the shares step {d:8.1f} ms   dropout/secure {d/s:5.2f}x  (target <= 1.2)")
steps = {k: statistics.median(r["step_ms"][k] for r in runs["secure"]) for k in runs["secure"][0]["step_ms"]}
print("  secure steps (median ms): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
bp, bs = bytes_per_node("plain"), bytes_per_node("secure")
print(f"  bytes sent per node: plain {bp:.0f}, secure {bs:.0f}   secure/plain {bs/bp:5.3f}x  (target <= 1.10)")
PY
echo "distributed DP error at t = n - 1 (OpenDP sampler; scripts/dp-utility.sh; exact sqrt(n/(t-1))):"
echo "$dp" | sed 's/^/  /'
