#!/usr/bin/env bash
# Import throughput: `mbc-node import` against the sqlite3 shell bulk-inserting the same rows
# into the same schema, in the same run on the same machine (DESIGN.md §12: target ratio >= 0.5).
#
# 1. generates one synthetic clinic with >= 10^6 assessments (`mbc-node synth`);
# 2. times `mbc-node import` of its four CSV files into a fresh node (parse, validate,
#    pseudonymise, insert, all in one transaction per file);
# 3. exports exactly the rows that import stored as one CSV file per table (`mbc-node store
#    query`: the store is encrypted), and times the sqlite3 shell's bulk loader (`.import`, its
#    fastest path) loading them in one transaction into a plain, unencrypted SQLite database
#    with the same schema and registry as a fresh node (same indexes, foreign keys on,
#    synchronous=NORMAL as the node uses). CSV round-trips every value but NULL, which only
#    the end of episodes still in treatment has (those go through a staging table). mbc-node also encrypts every page (SQLCipher); the baseline does not;
# 4. prints both rates and the ratio mbc-node / sqlite3.
#
# Usage: scripts/bench-import.sh [PATIENTS]   (default 75000 patients ≈ 1.1 million assessments)
set -euo pipefail
cd "$(dirname "$0")/.."
patients=${1:-75000}

source scripts/bench-common.sh
"$bin" init --data-dir "$work/node" --name bench >/dev/null
"$bin" init --data-dir "$work/fresh" --name bench >/dev/null
# The baseline: a plain SQLite copy of a fresh node (schema, built-in registry, clinic row).
python3 - "$bin" "$work/fresh" "$work/baseline.db" <<'PY'
import csv, io, sqlite3, subprocess, sys
bin, node, out = sys.argv[1:4]
def query(sql):
    text = subprocess.run([bin, "store", "query", "--data-dir", node, sql],
                          check=True, capture_output=True, text=True).stdout
    return list(csv.reader(io.StringIO(text)))[1:]
db = sqlite3.connect(out)
for (sql,) in query("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"):
    db.execute(sql)
for (table,) in query("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"):
    rows = query(f'SELECT * FROM "{table}"')
    if rows:
        marks = ",".join("?" * len(rows[0]))
        db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', [[None if v == "" else v for v in r] for r in rows])
db.execute(f"PRAGMA user_version = {query('PRAGMA user_version')[0][0]}")
db.commit()
db.execute("PRAGMA journal_mode = WAL")
db.close()
PY

t0=$(now)
"$bin" import --data-dir "$work/node" "$data/therapists.csv" "$data/patients.csv" \
    "$data/episodes.csv" "$data/assessments.csv" >/dev/null
t1=$(now)

tables="therapist patient episode casemix episode_therapist session assessment item_response episode_scores episode_attendance"
{
    echo "PRAGMA foreign_keys = ON;"
    echo "PRAGMA synchronous = NORMAL;"
    echo ".mode csv"
    echo "BEGIN;"
    for t in $tables; do
        if [ "$t" = episode ]; then
            # Episodes still in treatment have no end (NULL): CSV cannot say NULL, so they go
            # through a staging table and NULLIF (the only table with NULLs in synthetic data).
            "$bin" store query --data-dir "$work/node" "SELECT * FROM $t" >"$work/$t.csv"
            cols=$(sqlite3 "$work/baseline.db" "SELECT group_concat('nullif(\"' || name || '\", '''')', ', ') FROM pragma_table_info('$t')")
            echo ".import $work/$t.csv ${t}_staging"
            echo "INSERT INTO $t SELECT $cols FROM ${t}_staging;"
            echo "DROP TABLE ${t}_staging;"
        else
            "$bin" store query --data-dir "$work/node" "SELECT * FROM $t" | tail -n +2 >"$work/$t.csv"
            echo ".import $work/$t.csv $t"
        fi
    done
    echo "COMMIT;"
} >"$work/load.sql"
t2=$(now)
sqlite3 -bail "$work/baseline.db" <"$work/load.sql"
t3=$(now)

counts="SELECT (SELECT count(*) FROM assessment) || '|' || (SELECT count(*) FROM item_response) || '|' || (SELECT count(*) FROM session)"
mine=$("$bin" store query --data-dir "$work/node" "$counts" | tail -n 1)
theirs=$(sqlite3 "$work/baseline.db" "$counts")
[ "$mine" = "$theirs" ] || { echo "row counts differ: $mine vs $theirs" >&2; exit 1; }
IFS='|' read -r assessments items sessions <<<"$mine"
python3 - "$t0" "$t1" "$t2" "$t3" "$assessments" "$items" "$sessions" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
a, items, sessions = map(int, sys.argv[5:8])
mbc, base = t1 - t0, t3 - t2
print(f"rows: {a:,} assessments, {items:,} item responses, {sessions:,} sessions")
print(f"mbc-node import : {mbc:7.2f} s  {a / mbc:12,.0f} assessments/s")
print(f"sqlite3 baseline: {base:7.2f} s  {a / base:12,.0f} assessments/s")
print(f"ratio mbc-node / sqlite3 = {base / mbc:.2f} (target >= 0.5)")
PY
