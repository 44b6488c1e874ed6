//! The privacy ledger: every release is charged here before it leaves (DESIGN.md §2 P4).
//!
//! [`charge`] checks the clinic's policy and budget and records the release, with exactly the
//! bytes that will leave, in one transaction that holds the ledger's write lock from its start
//! ([`crate::store::ledger_transaction`]): two processes releasing at once are serialised by
//! SQLite, so they cannot overspend, and an import holding the clinical data's lock delays
//! neither. Only a [`Charged`] release can be sent,
//! and it carries its payload from the ledger; [`mark_sent`] records delivery. A crash between
//! the two leaves a `charged` row whose payload is sent later by [`pending`] — never charged
//! twice, never sent uncharged. A release whose bytes never left and never will (a round that
//! ended before this clinic's masked vector was sent) is refunded by [`mark_aborted`]: its row
//! stays, with status `aborted`, and its cost no longer counts. A `sent` release is never
//! refunded.
//!
//! Network rounds are also capped by the policy, kind by kind (a benchmark round does not
//! hold up a trajectories round): at most `max_rounds_per_period` charged rounds of a kind
//! per period, and at least `min_round_interval` between two of them (refunded rounds do not
//! count: nothing of them left).
//!
//! A training (a `dropout-model` fit) is several rounds under one id, each charged before its
//! vector leaves; its total ρ is declared in every round and weighed up front: the total
//! against the per-release maximum, what it may still cost against the period's budget, and
//! the round caps once per training, at its first charged iteration.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use protocol::dp;
use ring::digest;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use protocol::round::Training;

use crate::clock::rfc3339;
use crate::config::PrivacyConfig;

/// Budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar year.
    Year,
    /// Calendar quarter.
    Quarter,
    /// Calendar month.
    Month,
}

impl Period {
    /// Parses "year", "quarter" or "month".
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "year" => Self::Year,
            "quarter" => Self::Quarter,
            "month" => Self::Month,
            other => {
                bail!("[privacy] period must be \"year\", \"quarter\" or \"month\", not {other:?}")
            }
        })
    }

    /// The label of the period containing `t`: "2026", "2026-Q4", "2026-11".
    pub fn label(self, t: DateTime<Utc>) -> String {
        match self {
            Self::Year => format!("{}", t.year()),
            Self::Quarter => format!("{}-Q{}", t.year(), t.month0() / 3 + 1),
            Self::Month => format!("{}-{:02}", t.year(), t.month()),
        }
    }

    /// When the period containing `t` ends and the budget renews.
    pub fn renews(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let (y, m) = match self {
            Self::Year => (t.year() + 1, 1),
            Self::Quarter => {
                let next = (t.month0() / 3 + 1) * 3 + 1;
                if next > 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), next)
                }
            }
            Self::Month => {
                if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                }
            }
        };
        // Unwrap safety: the first of a month in a representable year always exists.
        Utc.from_utc_datetime(
            &NaiveDate::from_ymd_opt(y, m, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap(),
        )
    }
}

/// The clinic's privacy policy, validated from `[privacy]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// ρ per period.
    pub rho_per_period: f64,
    /// The period.
    pub period: Period,
    /// Largest ρ of one release.
    pub max_rho_per_release: f64,
    /// δ for (ε, δ) display.
    pub delta: f64,
    /// Most network-round contributions charged per period.
    pub max_rounds_per_period: u32,
    /// Least time between two charged network-round contributions.
    pub min_round_interval: chrono::Duration,
}

/// Ledger kinds starting with this are network-round contributions (capped per period).
pub const ROUND_KIND_PREFIX: &str = "round:";

/// Largest `[privacy] rho_per_period`: far beyond any meaningful budget, but finite.
const MAX_RHO_PER_PERIOD: f64 = 1000.0;

impl Policy {
    /// From the configuration, rejecting nonsense values.
    pub fn from_config(c: &PrivacyConfig) -> Result<Self> {
        let positive = |v: f64, key: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                bail!("[privacy] {key} must be a positive number, not {v}")
            }
        };
        if !(c.delta > 0.0 && c.delta < 1.0) {
            bail!("[privacy] delta must be between 0 and 1, not {}", c.delta);
        }
        let (lo, hi) = dp::RHO_RANGE;
        let max_rho = positive(c.max_rho_per_release, "max_rho_per_release")?;
        if !(lo..=hi).contains(&max_rho) {
            bail!("[privacy] max_rho_per_release must be between {lo:e} and {hi}, not {max_rho}");
        }
        let per_period = positive(c.rho_per_period, "rho_per_period")?;
        if per_period > MAX_RHO_PER_PERIOD {
            bail!(
                "[privacy] rho_per_period must be at most {MAX_RHO_PER_PERIOD}, not {per_period}"
            );
        }
        let hours = c.min_round_interval_hours;
        if !(hours.is_finite() && (0.0..=24.0 * 366.0).contains(&hours)) {
            bail!("[privacy] min_round_interval_hours must be 0 to 8784, not {hours}");
        }
        Ok(Self {
            rho_per_period: per_period,
            period: Period::parse(&c.period)?,
            max_rho_per_release: max_rho,
            delta: c.delta,
            max_rounds_per_period: c.max_rounds_per_period,
            min_round_interval: chrono::Duration::seconds((hours * 3600.0).round() as i64),
        })
    }
}

/// A release about to be charged: what it is, where it goes, its mechanism and its bytes.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Release id (hex).
    pub id: String,
    /// Kind, e.g. "local-benchmark".
    pub kind: String,
    /// Where it goes.
    pub counterpart: String,
    /// The calibrated mechanism.
    pub mechanism: dp::Mechanism,
    /// Shares summed in the released value (1: central).
    pub threshold: u32,
    /// Therapist-level sensitivity of the layout, if any (P3).
    pub therapist_sensitivity: Option<f64>,
    /// The layout of the released vector (version, blocks, bounds, scales).
    pub layout: protocol::round::LayoutRecord,
    /// Exactly the bytes that leave.
    pub payload: Vec<u8>,
    /// The training this round is an iteration of, if any.
    pub training: Option<Training>,
}

/// A fresh random release id (128 bits, hex).
pub fn new_id() -> Result<String> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(hex::encode(id))
}

/// Why a release was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Above the per-release maximum.
    #[error(
        "refused: this release would cost ρ = {rho}, above the clinic's maximum per release \
         ({max}; [privacy] max_rho_per_release)"
    )]
    OverRelease {
        /// Requested.
        rho: f64,
        /// Allowed.
        max: f64,
    },
    /// The period's budget would be exceeded.
    #[error(
        "refused: this release would cost ρ = {rho}, but only ρ = {remaining:.6} of the {limit} \
         budgeted for {period} is left ({spent:.6} spent); the budget renews on {renews}"
    )]
    OverBudget {
        /// Requested.
        rho: f64,
        /// Spent so far in the period.
        spent: f64,
        /// Left.
        remaining: f64,
        /// The period's budget.
        limit: f64,
        /// The period's label.
        period: String,
        /// When it renews (date).
        renews: String,
    },
    /// A training's declared total is above the per-release maximum.
    #[error(
        "refused: this training would cost ρ = {total} in all ({iterations} rounds), above the \
         clinic's maximum per release ({max}; [privacy] max_rho_per_release)"
    )]
    TrainingOverRelease {
        /// Declared total.
        total: f64,
        /// Its iterations.
        iterations: u32,
        /// Allowed.
        max: f64,
    },
    /// What a training may still cost would exceed the period's budget.
    #[error(
        "refused: the rest of this training may cost ρ = {rho} ({total} declared in all), but \
         only ρ = {remaining:.6} of the {limit} budgeted for {period} is left ({spent:.6} \
         spent); the budget renews on {renews}"
    )]
    TrainingOverBudget {
        /// What the training's remaining iterations may cost.
        rho: f64,
        /// Declared total.
        total: f64,
        /// Spent so far in the period.
        spent: f64,
        /// Left.
        remaining: f64,
        /// The period's budget.
        limit: f64,
        /// The period's label.
        period: String,
        /// When it renews (date).
        renews: String,
    },
    /// The period's cap on network rounds is reached.
    #[error(
        "refused: this clinic has contributed to {count} network round(s) of this kind in \
         {period}, its maximum ([privacy] max_rounds_per_period); the count renews on {renews}"
    )]
    TooManyRounds {
        /// Rounds charged in the period.
        count: u32,
        /// The period's label.
        period: String,
        /// When it renews (date).
        renews: String,
    },
    /// The last network round was too recent.
    #[error(
        "refused: this clinic contributed to a network round of this kind at {last}; it joins \
         the next no sooner than {next} ([privacy] min_round_interval_hours)"
    )]
    TooSoon {
        /// When the last round was charged.
        last: String,
        /// When the next may be.
        next: String,
    },
}

/// A charged release (a ledger row without its payload).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Release id.
    pub release_id: String,
    /// Kind.
    pub kind: String,
    /// Where it was charged to go (a file, a round's aggregator).
    pub counterpart: String,
    /// Budget period charged.
    pub period: String,
    /// ρ charged.
    pub rho: f64,
    /// ε at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Noise SD in the released value (encoded units).
    pub sigma: f64,
    /// Noise SD this node added.
    pub share_sigma: f64,
    /// Shares summed.
    pub threshold: u32,
    /// Per-patient L2 sensitivity.
    pub sensitivity: f64,
    /// Therapist-level sensitivity (P3).
    pub therapist_sensitivity: Option<f64>,
    /// ρ at therapist level.
    pub therapist_rho: Option<f64>,
    /// Layout as recorded (JSON): a [`protocol::round::LayoutRecord`] of the layout version
    /// the release was made with, shown by `audit` as it was written.
    pub layout: serde_json::Value,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// charged, sent or aborted.
    pub status: String,
    /// When it was charged.
    pub charged_at: String,
    /// When it was sent.
    pub sent_at: Option<String>,
    /// Where it was written, when that differs from `counterpart`'s file (a release resumed
    /// into another file).
    pub sent_to: Option<String>,
}

/// A charged release with the bytes to send.
#[derive(Debug, Clone)]
pub struct Charged {
    /// Its ledger entry.
    pub entry: Entry,
    /// The bytes to send.
    pub payload: Vec<u8>,
}

/// ρ spent in `period`: every release but the refunded ones.
fn spent_in(conn: &Connection, period: &str) -> rusqlite::Result<f64> {
    conn.query_row(
        "SELECT coalesce(sum(rho), 0.0) FROM release WHERE period = ?1 AND status != 'aborted'",
        [period],
        |r| r.get(0),
    )
}

/// Checks a network-round contribution against the round caps of its kind: rounds in the
/// period and the time since the last one (refunded rounds do not count).
fn check_rounds(conn: &Connection, policy: &Policy, kind: &str, now: DateTime<Utc>) -> Result<()> {
    let period = policy.period.label(now);
    let counted = "r.kind = ?1 AND r.status != 'aborted'";
    // The iterations of one training count as one round.
    let count: u32 = conn.query_row(
        &format!(
            "SELECT count(DISTINCT coalesce(c.training_id, r.release_id)) FROM release r
             LEFT JOIN round_contribution c ON c.release_id = r.release_id
             WHERE {counted} AND r.period = ?2"
        ),
        [kind, &period],
        |r| r.get(0),
    )?;
    if count >= policy.max_rounds_per_period {
        return Err(Refusal::TooManyRounds {
            count,
            period,
            renews: policy.period.renews(now).format("%Y-%m-%d").to_string(),
        }
        .into());
    }
    let last: Option<String> = conn.query_row(
        &format!("SELECT max(r.charged_at) FROM release r WHERE {counted}"),
        [kind],
        |r| r.get(0),
    )?;
    if let Some(last) = last {
        let at = DateTime::parse_from_rfc3339(&last)
            .with_context(|| format!("ledger time {last:?} is not RFC 3339"))?
            .with_timezone(&Utc);
        let next = at + policy.min_round_interval;
        if now < next {
            return Err(Refusal::TooSoon {
                last,
                next: rfc3339(next),
            }
            .into());
        }
    }
    Ok(())
}

/// Checks a cost against the policy and what is already spent.
fn check(policy: &Policy, rho: f64, spent: f64, now: DateTime<Utc>) -> Result<(), Refusal> {
    if rho > policy.max_rho_per_release {
        return Err(Refusal::OverRelease {
            rho,
            max: policy.max_rho_per_release,
        });
    }
    if spent + rho > policy.rho_per_period * (1.0 + 1e-12) {
        return Err(Refusal::OverBudget {
            rho,
            spent,
            remaining: (policy.rho_per_period - spent).max(0.0),
            limit: policy.rho_per_period,
            period: policy.period.label(now),
            renews: policy.period.renews(now).format("%Y-%m-%d").to_string(),
        });
    }
    Ok(())
}

/// Checks whether a release of `kind` and cost `rho` would be allowed now, without charging (to
/// refuse before doing expensive work; [`charge`] checks again, atomically).
///
/// For an iteration of `training`, the training is weighed as a whole: its declared total
/// against the per-release maximum, what its remaining iterations may cost (at most the
/// declared total less what this clinic was already charged for it) against the period's
/// budget, and the round caps only at its first charged iteration.
pub fn precheck(
    conn: &Connection,
    policy: &Policy,
    kind: &str,
    rho: f64,
    training: Option<&Training>,
    now: DateTime<Utc>,
) -> Result<()> {
    let spent = spent_in(conn, &policy.period.label(now))?;
    check(policy, rho, spent, now)?;
    let mut admitted = false;
    if let Some(t) = training {
        if t.total_rho > policy.max_rho_per_release {
            return Err(Refusal::TrainingOverRelease {
                total: t.total_rho,
                iterations: t.iterations,
                max: policy.max_rho_per_release,
            }
            .into());
        }
        let charged = charged_to_training(conn, &t.id)?;
        let left = f64::from(t.iterations.saturating_sub(t.iteration) + 1) * rho;
        let still = (t.total_rho - charged).min(left).max(rho);
        if spent + still > policy.rho_per_period * (1.0 + 1e-12) {
            return Err(Refusal::TrainingOverBudget {
                rho: still,
                total: t.total_rho,
                spent,
                remaining: (policy.rho_per_period - spent).max(0.0),
                limit: policy.rho_per_period,
                period: policy.period.label(now),
                renews: policy.period.renews(now).format("%Y-%m-%d").to_string(),
            }
            .into());
        }
        admitted = charged > 0.0;
    }
    if kind.starts_with(ROUND_KIND_PREFIX) && !admitted {
        check_rounds(conn, policy, kind, now)?;
    }
    Ok(())
}

/// ρ charged (and not refunded) to this clinic's iterations of training `id`.
pub fn charged_to_training(conn: &Connection, id: &str) -> Result<f64> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(r.rho), 0.0) FROM release r
         JOIN round_contribution c ON c.release_id = r.release_id
         WHERE c.training_id = ?1 AND r.status != 'aborted'",
        [id],
        |r| r.get(0),
    )?)
}

/// Charges a release: in one ledger transaction, checks the policy, budget and round caps
/// and records the release and its payload. Returns the charged release, whose payload may
/// now be sent.
pub fn charge(
    conn: &mut Connection,
    policy: &Policy,
    draft: Draft,
    now: DateTime<Utc>,
) -> Result<Charged> {
    charge_with(conn, policy, draft, now, |_| Ok(()))
}

/// [`charge`], running `also` in the same transaction after the release is recorded (a
/// round's own bookkeeping commits with its charge or not at all).
pub fn charge_with(
    conn: &mut Connection,
    policy: &Policy,
    draft: Draft,
    now: DateTime<Utc>,
    also: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
) -> Result<Charged> {
    let m = draft.mechanism;
    let epsilon = dp::epsilon(m.rho, policy.delta)?;
    let therapist_rho = draft
        .therapist_sensitivity
        .map(|s| dp::rho(s, m.total_sigma))
        .transpose()?;
    let period = policy.period.label(now);
    let sha = hex::encode(digest::digest(&digest::SHA256, &draft.payload));
    let layout = serde_json::to_value(&draft.layout)?;
    let tx = crate::store::ledger_transaction(conn)?;
    precheck(
        &tx,
        policy,
        &draft.kind,
        m.rho,
        draft.training.as_ref(),
        now,
    )?;
    tx.execute(
        "INSERT INTO release (release_id, kind, counterpart, period, rho, epsilon, delta, sigma,
            share_sigma, threshold, sensitivity, therapist_sensitivity, therapist_rho, layout,
            payload, payload_sha256, status, charged_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 'charged', ?17)",
        params![
            draft.id,
            draft.kind,
            draft.counterpart,
            period,
            m.rho,
            epsilon,
            policy.delta,
            m.total_sigma,
            m.sigma,
            draft.threshold,
            m.sensitivity,
            draft.therapist_sensitivity,
            therapist_rho,
            layout.to_string(),
            draft.payload,
            sha,
            rfc3339(now),
        ],
    )?;
    also(&tx)?;
    tx.commit()?;
    Ok(Charged {
        entry: Entry {
            release_id: draft.id,
            kind: draft.kind,
            counterpart: draft.counterpart,
            period,
            rho: m.rho,
            epsilon,
            delta: policy.delta,
            sigma: m.total_sigma,
            share_sigma: m.sigma,
            threshold: draft.threshold,
            sensitivity: m.sensitivity,
            therapist_sensitivity: draft.therapist_sensitivity,
            therapist_rho,
            layout,
            payload_sha256: sha,
            status: "charged".into(),
            charged_at: rfc3339(now),
            sent_at: None,
            sent_to: None,
        },
        payload: draft.payload,
    })
}

/// Records that a charged release was delivered.
pub fn mark_sent(conn: &Connection, id: &str, to: Option<&str>, now: DateTime<Utc>) -> Result<()> {
    let n = conn.execute(
        "UPDATE release SET status = 'sent', sent_at = ?2, sent_to = ?3
         WHERE release_id = ?1 AND status = 'charged'",
        params![id, rfc3339(now), to],
    )?;
    if n != 1 {
        bail!("release {id} is not waiting to be sent");
    }
    Ok(())
}

/// Refunds a charged release that never left and never will: its status becomes `aborted`
/// (the row stays, for the audit) and its cost no longer counts. A release already `sent` is
/// never refunded. Returns whether this call refunded it.
pub fn mark_aborted(conn: &Connection, id: &str) -> Result<bool> {
    let n = conn.execute(
        "UPDATE release SET status = 'aborted' WHERE release_id = ?1 AND status = 'charged'",
        [id],
    )?;
    Ok(n == 1)
}

const ENTRY_COLUMNS: &str = "release_id, kind, counterpart, period, rho, epsilon, delta, sigma,
    share_sigma, threshold, sensitivity, therapist_sensitivity, therapist_rho, layout,
    payload_sha256, status, charged_at, sent_at, sent_to";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let layout: String = r.get(13)?;
    Ok(Entry {
        release_id: r.get(0)?,
        kind: r.get(1)?,
        counterpart: r.get(2)?,
        period: r.get(3)?,
        rho: r.get(4)?,
        epsilon: r.get(5)?,
        delta: r.get(6)?,
        sigma: r.get(7)?,
        share_sigma: r.get(8)?,
        threshold: r.get(9)?,
        sensitivity: r.get(10)?,
        therapist_sensitivity: r.get(11)?,
        therapist_rho: r.get(12)?,
        layout: serde_json::from_str(&layout).unwrap_or(serde_json::Value::String(layout)),
        payload_sha256: r.get(14)?,
        status: r.get(15)?,
        charged_at: r.get(16)?,
        sent_at: r.get(17)?,
        sent_to: r.get(18)?,
    })
}

fn first_charged(conn: &Connection, condition: &str, args: &[&str]) -> Result<Option<Charged>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {ENTRY_COLUMNS}, payload FROM release
                 WHERE {condition} ORDER BY charged_at, rowid LIMIT 1"
            ),
            rusqlite::params_from_iter(args),
            |r| {
                Ok(Charged {
                    entry: entry(r)?,
                    payload: r.get(19)?,
                })
            },
        )
        .optional()?)
}

/// The oldest release of `kind` charged but not yet sent, with its payload.
pub fn pending(conn: &Connection, kind: &str) -> Result<Option<Charged>> {
    first_charged(conn, "kind = ?1 AND status = 'charged'", &[kind])
}

/// The release `id`, whatever its status, with its payload: a round announced again after a
/// restart is served from here, never charged twice.
pub fn get(conn: &Connection, id: &str) -> Result<Option<Charged>> {
    first_charged(conn, "release_id = ?1", &[id])
}

/// Every release, oldest first.
pub fn entries(conn: &Connection) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLUMNS} FROM release ORDER BY charged_at, rowid"
    ))?;
    let rows = stmt.query_map([], entry)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The budget of one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodBudget {
    /// Label, e.g. "2026".
    pub period: String,
    /// Releases charged (refunded ones not counted).
    pub releases: u64,
    /// Releases refunded (charged, never sent: their cost does not count).
    pub refunded: u64,
    /// ρ spent.
    pub rho_spent: f64,
    /// ρ budgeted.
    pub rho_limit: f64,
    /// ρ left.
    pub rho_remaining: f64,
    /// ε (at δ) of what was spent (zCDP composes by adding ρ).
    pub epsilon_spent: f64,
    /// ε (at δ) of the whole budget.
    pub epsilon_limit: f64,
}

/// The budget now and in every period with releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// The current period.
    pub current: PeriodBudget,
    /// When the current period's budget renews.
    pub renews: String,
    /// Largest ρ per release.
    pub max_rho_per_release: f64,
    /// δ used for ε.
    pub delta: f64,
    /// Every period with releases, oldest first (the current one included once it has any).
    pub periods: Vec<PeriodBudget>,
}

/// Spent and remaining budget.
pub fn budget(conn: &Connection, policy: &Policy, now: DateTime<Utc>) -> Result<Budget> {
    let period_budget = |period: String, releases: u64, refunded: u64, spent: f64| {
        Ok::<_, anyhow::Error>(PeriodBudget {
            period,
            releases,
            refunded,
            rho_spent: spent,
            rho_limit: policy.rho_per_period,
            rho_remaining: (policy.rho_per_period - spent).max(0.0),
            epsilon_spent: dp::epsilon(spent, policy.delta)?,
            epsilon_limit: dp::epsilon(policy.rho_per_period, policy.delta)?,
        })
    };
    let mut stmt = conn.prepare(
        "SELECT period, sum(status != 'aborted'), sum(status = 'aborted'),
                coalesce(sum(CASE WHEN status != 'aborted' THEN rho END), 0.0)
         FROM release GROUP BY period ORDER BY period",
    )?;
    let rows: Vec<(String, u64, u64, f64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let label = policy.period.label(now);
    let (releases, refunded, spent) = rows
        .iter()
        .find(|r| r.0 == label)
        .map_or((0, 0, 0.0), |r| (r.1, r.2, r.3));
    Ok(Budget {
        current: period_budget(label, releases, refunded, spent)?,
        renews: policy.period.renews(now).format("%Y-%m-%d").to_string(),
        max_rho_per_release: policy.max_rho_per_release,
        delta: policy.delta,
        periods: rows
            .into_iter()
            .map(|(p, n, a, s)| period_budget(p, n, a, s))
            .collect::<Result<_>>()?,
    })
}

#[cfg(test)]
mod tests;
