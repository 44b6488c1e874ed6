//! `mbc-node match report`: oversight of the allocations the audit recorded. Caseload
//! fairness (allocations per therapist per month), outcomes by the level allocated (does
//! level 3 do better than level 1?), and the equity monitor (the share of best-level
//! allocations by ethnicity, sex, age band and deprivation decile; a group below 0.8× the
//! overall share is flagged).

use anyhow::Result;
use protocol::matching::{Equity, Level, LevelOutcome, Load, equity, fairness, outcomes_by_level};
use rusqlite::OptionalExtension;
use serde::Serialize;

use super::Groups;
use crate::node::{Node, Reference};
use crate::staff::StaffList;
use crate::stats;
use crate::stats::output::short;

/// The best level: what the equity monitor counts.
pub const BEST_LEVEL: Level = Level::L3;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MatchReport {
    /// Shortlists logged since (`None`: all).
    pub since: Option<String>,
    /// Shortlists shown.
    pub shortlists: u64,
    /// Of which urgent.
    pub urgent: u64,
    /// Allocations recorded (a therapist chosen).
    pub allocations: u64,
    /// Declines recorded (of a therapist, or of the whole list).
    pub declines: u64,
    /// Allocations per therapist per month.
    pub fairness: Vec<Load>,
    /// Mean residual of allocated patients' outcomes on their most elevated domain, by level.
    pub by_level: Vec<LevelOutcome>,
    /// Allocations without an outcome yet (no stored patient, no episode with the therapist,
    /// or fewer than two scores).
    pub without_outcome: u64,
    /// The equity monitor.
    pub equity: Vec<Equity>,
}

struct Allocation {
    patient: Option<i64>,
    therapist_id: i64,
    therapist: String,
    level: Level,
    month: String,
    groups: Groups,
    instrument: Option<String>,
}

/// The report over shortlists logged since `since` (an RFC 3339 prefix such as `2026-01`, or
/// all), therapists shown by the staff ids of `staff` where it names them.
pub fn report(node: &Node, since: Option<&str>, staff: &StaffList) -> Result<MatchReport> {
    // Outcomes are the engine's residuals: bring them up to date first.
    node.derive(&stats::Overrides::default(), &Reference::Latest)?;
    let store = node.store();
    let conn = store.conn();
    let from = since.unwrap_or("");
    let count = |sql: &str| -> rusqlite::Result<u64> { conn.query_row(sql, [from], |r| r.get(0)) };
    let shortlists = count("SELECT count(*) FROM match_request WHERE created_at >= ?1")?;
    let urgent = count("SELECT count(*) FROM match_request WHERE created_at >= ?1 AND urgent = 1")?;
    let declines = count(
        "SELECT count(*) FROM match_outcome o JOIN match_request r USING (request_id)
         WHERE r.created_at >= ?1 AND o.kind = 'declined'",
    )?;
    let mut stmt = conn.prepare(
        "SELECT r.patient_id, o.therapist_id, t.pseudonym, o.level, o.at, r.groups, r.request
         FROM match_outcome o JOIN match_request r USING (request_id)
         JOIN therapist t ON t.therapist_id = o.therapist_id
         WHERE r.created_at >= ?1 AND o.kind = 'chosen' ORDER BY o.at",
    )?;
    let allocations: Vec<Allocation> = stmt
        .query_map([from], |r| {
            let pseudonym: String = r.get(2)?;
            let at: String = r.get(4)?;
            let groups: String = r.get(5)?;
            let request: String = r.get(6)?;
            Ok(Allocation {
                patient: r.get(0)?,
                therapist_id: r.get(1)?,
                therapist: staff
                    .get(&pseudonym)
                    .unwrap_or_else(|| short(&pseudonym))
                    .to_string(),
                level: Level::from_number(r.get(3)?).unwrap_or(Level::L0),
                month: at.get(..7).unwrap_or(&at).to_string(),
                groups: serde_json::from_str(&groups).unwrap_or_default(),
                instrument: top_instrument(&request),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut episode = conn.prepare_cached(
        "SELECT episode_id FROM episode WHERE patient_id = ?1 AND therapist_id = ?2
         ORDER BY coalesce(start_date, referral_date, '') DESC, episode_id DESC LIMIT 1",
    )?;
    let mut residual = conn.prepare_cached(
        "SELECT residual FROM episode_outcome WHERE episode_id = ?1 AND instrument_id = ?2",
    )?;
    let mut outcomes = Vec::new();
    for a in &allocations {
        let (Some(patient), Some(instrument)) = (a.patient, &a.instrument) else {
            continue;
        };
        let Some(e): Option<i64> = episode
            .query_row(rusqlite::params![patient, a.therapist_id], |r| r.get(0))
            .optional()?
        else {
            continue;
        };
        let r: Option<Option<f64>> = residual
            .query_row(rusqlite::params![e, instrument], |r| r.get(0))
            .optional()?;
        if let Some(Some(r)) = r {
            outcomes.push((a.level, r));
        }
    }
    let loads: Vec<(String, String)> = allocations
        .iter()
        .map(|a| (a.therapist.clone(), a.month.clone()))
        .collect();
    let groups: Vec<(Vec<(String, String)>, bool)> = allocations
        .iter()
        .map(|a| (a.groups.pairs(), a.level == BEST_LEVEL))
        .collect();
    Ok(MatchReport {
        since: since.map(str::to_string),
        shortlists,
        urgent,
        allocations: allocations.len() as u64,
        declines,
        fairness: fairness(&loads),
        by_level: outcomes_by_level(&outcomes),
        without_outcome: (allocations.len() - outcomes.len()) as u64,
        equity: equity(&groups),
    })
}

/// The instrument of the most elevated domain of a logged request (the first domain when
/// none is elevated).
fn top_instrument(request: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(request).ok()?;
    let domains = v["request"]["intake"]["domains"].as_array()?;
    let top = domains
        .iter()
        .find(|d| d["elevated"].as_bool() == Some(true))
        .or(domains.first())?;
    top["instrument"].as_str().map(str::to_string)
}
