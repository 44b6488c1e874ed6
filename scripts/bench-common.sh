# Shared set-up of the benchmark scripts (sourced): the sqlite3 baseline tool, a release build,
# a temporary work directory removed on exit, and one synthetic clinic of $patients patients in
# $work/synth/clinic-01 (exported as $data). Sets $bin, $work, $data.
if ! command -v sqlite3 >/dev/null; then
    echo "installing sqlite3 (Debian package) for the baseline" >&2
    apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null
fi
cargo build --release -q -p mbc-node
bin=target/release/mbc-node
work=$(mktemp -d "${TMPDIR:-/tmp}/mbc-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$bin" synth --out "$work/synth" --clinics 1 --seed 42 --patients-per-clinic "$patients" >/dev/null
data="$work/synth/clinic-01"
now() { date +%s.%N; }
