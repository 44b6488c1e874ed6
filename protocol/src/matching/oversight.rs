//! Oversight of matching (issue 17): caseload fairness, outcomes by allocated level, and the
//! equity monitor. Pure summaries of the allocations the node's audit table recorded.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Level;
use crate::therapist::z95;

/// A group's best-level rate below this share of the overall rate is flagged (the
/// "four-fifths rule" of adverse-impact monitoring).
pub const EQUITY_RATIO: f64 = 0.8;

/// Allocations of one therapist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    /// As shown.
    pub therapist: String,
    /// (month `YYYY-MM`, allocations), every month of the report.
    pub by_month: Vec<(String, u64)>,
    /// All allocations.
    pub total: u64,
    /// Total over the mean total of the therapists listed (1 = an equal share).
    pub ratio_to_mean: f64,
}

/// Allocations per therapist per month from (therapist, month) pairs, every month listed
/// for every therapist (zeros included), therapists by total, most first.
pub fn fairness(allocations: &[(String, String)]) -> Vec<Load> {
    let mut months: Vec<&String> = allocations.iter().map(|(_, m)| m).collect();
    months.sort();
    months.dedup();
    let mut counts: BTreeMap<&String, BTreeMap<&String, u64>> = BTreeMap::new();
    for (t, m) in allocations {
        *counts.entry(t).or_default().entry(m).or_default() += 1;
    }
    let mean = allocations.len() as f64 / counts.len().max(1) as f64;
    let mut loads: Vec<Load> = counts
        .into_iter()
        .map(|(t, by)| {
            let total: u64 = by.values().sum();
            Load {
                therapist: t.clone(),
                by_month: months
                    .iter()
                    .map(|m| ((*m).clone(), by.get(m).copied().unwrap_or(0)))
                    .collect(),
                total,
                ratio_to_mean: total as f64 / mean,
            }
        })
        .collect();
    loads.sort_by(|a, b| b.total.cmp(&a.total).then(a.therapist.cmp(&b.therapist)));
    loads
}

/// Mean risk-adjusted change (the residual: negative = better than expected) of the patients
/// allocated at one level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelOutcome {
    /// The level allocated.
    pub level: Level,
    /// Allocations with an outcome.
    pub n: u64,
    /// Mean residual.
    pub mean: f64,
    /// Normal 95 % interval of the mean (`None` below two outcomes).
    pub interval: Option<(f64, f64)>,
}

/// Per level allocated (lowest first), the mean residual of its outcomes.
pub fn outcomes_by_level(outcomes: &[(Level, f64)]) -> Vec<LevelOutcome> {
    let mut by: BTreeMap<Level, Vec<f64>> = BTreeMap::new();
    for (l, r) in outcomes {
        by.entry(*l).or_default().push(*r);
    }
    by.into_iter()
        .map(|(level, rs)| {
            let n = rs.len() as f64;
            let mean = rs.iter().sum::<f64>() / n;
            let interval = (rs.len() >= 2).then(|| {
                let var = rs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
                let half = z95() * (var / n).sqrt();
                (mean - half, mean + half)
            });
            LevelOutcome {
                level,
                n: rs.len() as u64,
                mean,
                interval,
            }
        })
        .collect()
}

/// One group of one attribute in the equity monitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EquityGroup {
    /// The group (e.g. `Asian`, `female`, `25–34`, decile `3`).
    pub group: String,
    /// Allocations.
    pub n: u64,
    /// Of which at the best level.
    pub best: u64,
    /// best / n.
    pub rate: f64,
    /// rate / the overall rate (`None` when no allocation reached the best level).
    pub ratio: Option<f64>,
    /// rate < [`EQUITY_RATIO`] × the overall rate (exact: compared in integers).
    pub flagged: bool,
}

/// The equity monitor of one attribute.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Equity {
    /// The attribute (`ethnicity`, `sex`, `age band`, `deprivation decile`).
    pub attribute: String,
    /// Allocations with the attribute recorded.
    pub n: u64,
    /// Best-level rate over them.
    pub overall: f64,
    /// By group, in the attribute's order.
    pub groups: Vec<EquityGroup>,
}

/// The equity monitor: per attribute, the share of best-level allocations of each group
/// against the attribute's overall share. `allocations`: each allocation's (attribute,
/// group) pairs (an attribute not recorded is left out) and whether it was at the best level.
pub fn equity(allocations: &[(Vec<(String, String)>, bool)]) -> Vec<Equity> {
    let mut by: BTreeMap<&String, BTreeMap<&String, (u64, u64)>> = BTreeMap::new();
    for (groups, best) in allocations {
        for (attribute, group) in groups {
            let e = by.entry(attribute).or_default().entry(group).or_default();
            e.0 += 1;
            e.1 += u64::from(*best);
        }
    }
    by.into_iter()
        .map(|(attribute, groups)| {
            let total: u64 = groups.values().map(|g| g.0).sum();
            let all_best: u64 = groups.values().map(|g| g.1).sum();
            let overall = all_best as f64 / total as f64;
            let groups = groups
                .into_iter()
                .map(|(group, (n, best))| {
                    let rate = best as f64 / n as f64;
                    let ratio = (overall > 0.0).then(|| rate / overall);
                    // rate < 0.8 · overall in integers, exact at the boundary.
                    let flagged = 5 * u128::from(best) * u128::from(total)
                        < 4 * u128::from(all_best) * u128::from(n);
                    EquityGroup {
                        group: group.clone(),
                        n,
                        best,
                        rate,
                        ratio,
                        flagged,
                    }
                })
                .collect();
            Equity {
                attribute: attribute.clone(),
                n: total,
                overall,
                groups,
            }
        })
        .collect()
}
