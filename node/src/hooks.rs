//! Every test switch of the program: environment variables named `MBC_NODE_TEST_*` that make a
//! process misbehave on purpose (crash, hang, skip noise, record its traffic) so that tests and
//! benchmarks can watch what the rest of the system does. Each says which builds honour it:
//! switches that weaken privacy or could leave a clinic's data half-written work in debug
//! builds only; the one that benchmarks need (a clinic killed mid-round) works in every build.

use std::ffi::OsString;

/// Debug builds only: contributions to rounds carry no noise, so a test can check a decoded
/// sum exactly (and the aggregator summarises as if σ were 0).
pub const NO_NOISE: &str = "MBC_NODE_TEST_NO_NOISE";

/// Every build (scripts/bench-round.sh uses it with the release binary): set to a round
/// request's step ("keys", "shares", "survivors" or "unmask"), the process aborts when that
/// request arrives, as a clinic killed mid-round; `step@N` (e.g. "shares@2") only in iteration
/// N of a training.
pub const EXIT_AT: &str = "MBC_NODE_TEST_EXIT_AT";

/// Debug builds only: set to N, this clinic declines iteration N of every training (as if it
/// were offline for that round), so a test can watch it rejoin the next.
pub const DECLINE_ITERATION: &str = "MBC_NODE_TEST_DECLINE_ITERATION";

/// Debug builds only: `release` aborts right after the ledger charge and before the release is
/// written (a crash between charge and send).
pub const FAIL_AFTER_CHARGE: &str = "MBC_NODE_TEST_FAIL_AFTER_CHARGE";

/// Debug builds only: an import pauses for ever after this many rows, so a test can kill the
/// process mid-transaction without guessing at timing.
pub const HANG_AFTER_ROWS: &str = "MBC_NODE_TEST_HANG_AFTER_ROWS";

/// Debug builds only: every message this node seals (requests, responses, gossip) is appended,
/// hex-encoded, one per line, to the file this names, so that a test can search everything the
/// node sent for raw data.
pub const WIRE_TAP: &str = "MBC_NODE_TEST_WIRE_TAP";

fn debug_var(name: &str) -> Option<OsString> {
    if cfg!(debug_assertions) {
        std::env::var_os(name)
    } else {
        None
    }
}

/// Whether [`NO_NOISE`] is on.
pub fn no_noise() -> bool {
    debug_var(NO_NOISE).is_some()
}

/// Whether [`EXIT_AT`] names `step` (of training iteration `iteration`, if the request
/// belongs to one).
pub fn exit_at(step: &str, iteration: Option<u32>) -> bool {
    std::env::var(EXIT_AT).is_ok_and(|v| match v.split_once('@') {
        None => v == step,
        Some((s, n)) => s == step && iteration.is_some_and(|i| n.parse() == Ok(i)),
    })
}

/// The iteration of [`DECLINE_ITERATION`], when set.
pub fn decline_iteration() -> Option<u32> {
    debug_var(DECLINE_ITERATION)?.to_str()?.parse().ok()
}

/// Whether [`FAIL_AFTER_CHARGE`] is on.
pub fn fail_after_charge() -> bool {
    debug_var(FAIL_AFTER_CHARGE).is_some()
}

/// The row count of [`HANG_AFTER_ROWS`], when set.
pub fn hang_after_rows() -> Option<u64> {
    debug_var(HANG_AFTER_ROWS)?.to_str()?.parse().ok()
}

/// The file of [`WIRE_TAP`], when set.
pub fn wire_tap() -> Option<std::path::PathBuf> {
    debug_var(WIRE_TAP).map(Into::into)
}
