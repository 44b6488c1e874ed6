//! The coordinator's round schedule (`[rounds] schedule`): each entry's round is started when
//! the last round of its kind that finished is at least its period old (or none ever did),
//! while no other round runs and enough clinics are connected for the threshold. A round that
//! aborts, or that cannot start, is tried again no sooner than [`RETRY`] (or its period, if
//! shorter). Clinics decide as for any round: by their own policy and budget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocol::round::default_threshold;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Aggregation, StartRequest, record};
use crate::config::ScheduledRound;
use crate::{clock, membership};

/// How often the schedule is looked at, at most (more often for shorter periods).
const TICK: Duration = Duration::from_secs(5);

/// Least time between two attempts at one entry.
pub const RETRY: Duration = Duration::from_secs(3600);

fn period(r: &ScheduledRound) -> Duration {
    Duration::from_secs_f64(r.every_days * 86_400.0)
}

/// Whether `r` is due at `now`: no round of its kind finished yet, or the last is a period old.
fn due(last_done: Option<&str>, r: &ScheduledRound, now: DateTime<Utc>) -> bool {
    let Some(last) = last_done.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return true;
    };
    let age = now.signed_duration_since(last.with_timezone(&Utc));
    age.to_std().is_ok_and(|age| age >= period(r))
}

/// Runs the schedule until `cancel`.
pub async fn run(agg: Arc<Aggregation>, schedule: Vec<ScheduledRound>, cancel: CancellationToken) {
    let Some(shortest) = schedule.iter().map(period).min() else {
        return;
    };
    let mut interval = tokio::time::interval((shortest / 4).clamp(Duration::from_secs(1), TICK));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tried: Vec<Option<Instant>> = vec![None; schedule.len()];
    info!(entries = schedule.len(), "round schedule on");
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        for (i, r) in schedule.iter().enumerate() {
            if agg.busy() {
                break;
            }
            if tried[i].is_some_and(|t| t.elapsed() < period(r).min(RETRY)) {
                continue;
            }
            let last = match record::last_done(agg.node.store().conn(), &r.kind) {
                Ok(last) => last,
                Err(e) => {
                    warn!(kind = %r.kind, "round schedule: couldn't read past rounds: {e:#}");
                    continue;
                }
            };
            if !due(last.as_deref(), r, clock::now_utc()) {
                continue;
            }
            match ready(&agg).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    info!(kind = %r.kind, "scheduled round waits: {why}");
                    continue;
                }
                Err(e) => {
                    warn!(kind = %r.kind, "round schedule: {e:#}");
                    continue;
                }
            }
            tried[i] = Some(Instant::now());
            let request = StartRequest {
                kind: r.kind.clone(),
                rho: r.rho,
                threshold: None,
                deadline_s: None,
                dim: None,
                plain: false,
                domains: r.domains.clone(),
                iterations: r.iterations,
            };
            match agg.start(&request) {
                Ok(s) => info!(kind = %r.kind, round = %s.round_id, "scheduled round started"),
                Err(e) => warn!(kind = %r.kind, "scheduled round not started: {e:#}"),
            }
            // One start per look: it runs in the background, and the next waits for it.
            break;
        }
    }
}

/// Why a round cannot start now (too few clinics connected for the default threshold), or
/// `None`.
async fn ready(agg: &Aggregation) -> anyhow::Result<Option<String>> {
    let n = {
        let store = agg.node.store();
        membership::load(store.conn())?.map_or(0, |m| m.roster.roster.members.len())
    };
    let connected = agg
        .client
        .peers()
        .await?
        .iter()
        .filter(|p| p.connected)
        .count();
    let threshold = default_threshold(n, true) as usize;
    Ok((connected + 1 < threshold).then(|| {
        format!(
            "{connected} of {} clinics connected, a round needs {threshold} with the coordinator",
            n.saturating_sub(1)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(days: f64) -> ScheduledRound {
        ScheduledRound {
            kind: "benchmark".into(),
            rho: 0.25,
            every_days: days,
            iterations: None,
            domains: Vec::new(),
        }
    }

    #[test]
    fn a_round_is_due_when_none_finished_or_the_last_is_a_period_old() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(due(None, &every(90.0), now));
        assert!(due(Some("2026-09-01T12:00:00Z"), &every(90.0), now));
        assert!(!due(Some("2026-09-10T12:00:00Z"), &every(90.0), now));
        assert!(due(Some("2026-12-03T11:00:00Z"), &every(1.0 / 48.0), now));
        assert!(!due(Some("2026-12-03T11:45:00Z"), &every(1.0 / 48.0), now));
        // A last round in the future (a clock set back) is not a period old.
        assert!(!due(Some("2027-01-01T00:00:00Z"), &every(1.0), now));
    }
}
