#!/usr/bin/env bash
# The dashboard's two heaviest pages as a browser gets them from a running node (issue 18):
#   - the caseload (GET /) of a supervisor of every therapist: every open episode, against
#     `mbc-node alerts --json` on the same store (target <= 2x);
#   - a patient's page (GET /patient/EPISODE: the support chart and tables, the view recorded),
#     against `mbc-node support PATIENT --json` (target <= 1.5x).
# Timed side by side with farm-bench (A and B in turn, ratio pair by pair); each fetch is one
# curl process, as each CLI call is one mbc-node process.
# Usage: scripts/bench-dashboard.sh [PATIENTS]   (default 25000 patients: about 1,000 open episodes)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-25000}

source scripts/bench-common.sh
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
node="$work/node"
"$bin" init --data-dir "$node" --name bench --listen /ip4/127.0.0.1/tcp/0 \
    --dashboard 127.0.0.1:0 >/dev/null
"$bin" import --data-dir "$node" "$data/therapists.csv" "$data/patients.csv" \
    "$data/episodes.csv" "$data/assessments.csv" >/dev/null
"$bin" network create --data-dir "$node" --network-id bench >/dev/null
therapists=$(tail -n +2 "$data/therapists.csv" | cut -d, -f1 | sed 's/^/--therapist /' | tr '\n' ' ')
# shellcheck disable=SC2086
printf 'a long enough password\n' |
    "$bin" users add sven --data-dir "$node" --role supervisor $therapists --password-stdin >/dev/null
"$bin" run --data-dir "$node" >"$work/run.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$node/dashboard.addr" ] && break; sleep 0.1; done
addr=$(cat "$node/dashboard.addr")
jar="$work/cookies"
token=$(curl -s -c "$jar" -b "$jar" "http://$addr/login" | grep -o 'name="token" value="[^"]*"' | cut -d'"' -f4)
curl -s -c "$jar" -b "$jar" -o /dev/null \
    -d "name=sven&password=a+long+enough+password&token=$token" "http://$addr/login"
csrf=$(curl -s -b "$jar" "http://$addr/" | grep -o 'name="csrf" value="[^"]*"' | sed -n 1p | cut -d'"' -f4)
patient=$(sed -n 2p "$data/assessments.csv" | cut -d, -f1)
page=$(curl -s -b "$jar" -o /dev/null -w '%{redirect_url}' -d "csrf=$csrf&id=$patient" \
    "http://$addr/patient/find")
[ -n "$page" ] || { echo "the patient's page was not found" >&2; exit 1; }
open=$("$bin" alerts --data-dir "$node" --json |
    python3 -c "import json,sys; print(len(json.load(sys.stdin)['episodes']))")
shown=$(curl -s -b "$jar" "http://$addr/" | grep -o '<tr><td class="sig' | wc -l)
echo "$patients patients; $open open episodes ($shown rows on the caseload page); patient $patient at $page"
echo "== caseload: GET / (A) against alerts --json (B)"
farm-bench -n 7 --timeout 600 --vs "$bin alerts --data-dir $node --json" -- \
    curl -s -f -o /dev/null -b "$jar" "http://$addr/"
echo "== patient page: GET $page (A) against support $patient --json (B)"
farm-bench -n 7 --timeout 600 --vs "$bin support --data-dir $node $patient --json" -- \
    curl -s -f -o /dev/null -b "$jar" "$page"
