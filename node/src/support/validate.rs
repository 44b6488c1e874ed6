//! `mbc-node support validate`: the validation card of the clinic's own data. Per instrument,
//! a time-split hold-out: the pool is the episodes that ended before the cut date (the day by
//! which 70 % of the ended episodes with two or more scores had ended), the test the later
//! ones. Each test patient is assessed as `support` would have assessed them then (from
//! intake, against the pool), and by two baselines in the same run: the whole pool's change
//! (no neighbours) and an intake regression (OQ-style expected treatment response). Figures,
//! per method (`protocol::trajectory::validation`):
//! - AUC of "red by session 3" (the exceedance behind the red signal, its maximum over
//!   sessions 2–3) for final non-improvement (no reliable improvement at the last score), and
//!   the red signal's sensitivity, specificity, PPV and NPV; its sensitivity for the patients
//!   who end reliably deteriorated;
//! - r of predicted (expected score at the patient's last session − intake) and observed
//!   pre–post change;
//! - the share of scores beyond P90 at each session and overall (calibration: about 10 %;
//!   judged with scores equal to P90 counted half, since whole-number scores tie with it).
//!
//! Test patients count for "by session 3" when scored at session 2 or 3 and at a later
//! session (their outcome is not the signal's own score). The card passes when the
//! neighbours' figures meet `[support]`; the card is stored (`support_validation`) and the
//! latest card of an instrument switches its not-on-track alerts on or off.

use anyhow::{Result, bail};
use protocol::instrument::Instrument;
use protocol::trajectory::validation::{self, Confusion, Etr, PoolChange};
use protocol::trajectory::{Band, Settings, Signal, signal_in, worse_up};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{
    Assessor, LOCAL, NETWORK_CURVES, NETWORK_MODEL, Network, PoolRule, band_at, network_expectation,
};
use crate::config::SupportConfig;
use crate::store::Store;

/// Share of the ended episodes (by last day) in the hold-out's pool.
pub const POOL_SHARE: f64 = 0.7;
/// Fewest test patients scored by session 3 for a card to judge.
pub const MIN_TEST: usize = 30;
/// The `cut_date` of a leave-one-out card (a clinic too small for a time split).
pub const LEAVE_ONE_OUT: &str = "leave-one-out";

/// One method's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// `nearest_neighbours`, `whole_pool` or `intake_regression`.
    pub method: &'static str,
    /// Test patients it gave an expectation at session 2 or 3.
    pub assessed: usize,
    /// AUC of red-by-session-3's exceedance for final non-improvement.
    pub auc: Option<f64>,
    /// The red signal by session 3 against final non-improvement.
    pub red_by_session_3: Confusion,
    /// Sensitivity.
    pub sensitivity: Option<f64>,
    /// Specificity.
    pub specificity: Option<f64>,
    /// PPV.
    pub ppv: Option<f64>,
    /// NPV.
    pub npv: Option<f64>,
    /// Test patients who ended reliably deteriorated.
    pub deteriorators: usize,
    /// Of them, the share red by session 3.
    pub deteriorator_sensitivity: Option<f64>,
    /// r of predicted and observed pre–post change.
    pub r: Option<f64>,
    /// Test patients in r.
    pub r_n: usize,
    /// Share of scores (sessions ≥ 2) beyond P90: those the red signal flags.
    pub above_p90: Option<f64>,
    /// The same with scores equal to P90 counted half (mid-p): the calibration the card
    /// judges, since whole-number scores tie with the boundary (strictly beyond, a calibrated
    /// band of whole numbers flags less than 10 %).
    pub above_p90_mid: Option<f64>,
    /// Per session: (session, scores, share beyond P90, ties half).
    pub above_p90_by_session: Vec<(u32, usize, f64)>,
}

/// The card of one instrument.
#[derive(Debug, Clone, Serialize)]
pub struct Card {
    /// Instrument id.
    pub instrument: String,
    /// Pool: episodes that ended before this day ([`LEAVE_ONE_OUT`] for a clinic too small
    /// for a time split: every ended episode tested against the others).
    pub cut_date: String,
    /// Pool episodes (leave-one-out: the largest pool a test patient had).
    pub pool: usize,
    /// Test episodes (ended on or after the cut).
    pub test: usize,
    /// Test patients with outcomes (non-improvement, deterioration) and a score by session 3.
    pub non_improved: usize,
    /// The figures: neighbours first, then the two baselines, then the network's model and
    /// curves when a trajectories release is kept.
    pub methods: Vec<Figures>,
    /// The thresholds it was judged by.
    pub thresholds: SupportConfig,
    /// The reference `support` takes for this instrument: `nearest_neighbours`,
    /// `network_model` or `network_curves` (the one that meets the thresholds, else the best
    /// AUC).
    pub preferred: &'static str,
    /// Whether the preferred reference's figures meet them.
    pub passed: bool,
    /// In words.
    pub verdict: String,
    /// The network's dropout model on this clinic's ended episodes, beside the clinic's own
    /// (for the instrument measuring the model's domain; `support validate` adds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<protocol::dropout::Validation>,
}

/// Per test patient and method: what it predicted.
#[derive(Default)]
struct Tally {
    early: Vec<(f64, bool)>,
    confusion: Confusion,
    deteriorators: (usize, usize),
    change: Vec<(f64, f64)>,
    /// (session, 1 beyond P90, ½ at it, 0 within).
    beyond: Vec<(u32, f64)>,
}

impl Tally {
    /// Adds one test patient: their scores (intake first) and the band a method gives at a
    /// session.
    ///
    /// The score whose AUC is reported is `risk` when given (the neighbours' early warning),
    /// else the largest exceedance at sessions 2–3.
    fn add(
        &mut self,
        inst: &Instrument,
        scores: &[(u32, f64)],
        band: impl Fn(u32) -> Option<Band>,
        risk: Option<f64>,
    ) {
        let w = |v: f64| worse_up(inst.direction, v);
        let Some(&(_, intake)) = scores.first() else {
            return;
        };
        let rc = inst.reliable_change().unwrap_or(f64::INFINITY);
        let &(last_t, last) = scores.last().unwrap_or(&(0, intake));
        for &(t, y) in scores.iter().skip(1) {
            if let Some(b) = band(t) {
                let at = if (w(y) - w(b.p90)).abs() < 1e-9 {
                    0.5
                } else {
                    0.0
                };
                self.beyond
                    .push((t, if w(y) > w(b.p90) { 1.0 } else { at }));
            }
        }
        if let Some(b) = band(last_t).filter(|_| last_t >= 2) {
            self.change
                .push((w(b.expected) - w(intake), w(last) - w(intake)));
        }
        // Red by session 3, for patients scored after it.
        if last_t <= 3 {
            return;
        }
        let mut score: Option<f64> = None;
        let mut red = false;
        for &(t, y) in scores.iter().filter(|(t, _)| (2..=3).contains(t)) {
            let b = band(t);
            red |= signal_in(inst, b.as_ref(), intake, y) == Signal::Red;
            let Some(b) = b else { continue };
            let mut e = validation::exceedance(&b, y, inst.direction);
            if w(y) - w(intake) >= rc {
                e = e.max(1.0 + 1e-9);
            }
            score = Some(score.map_or(e, |s: f64| s.max(e)));
        }
        let Some(score) = score else { return };
        let score = risk.unwrap_or(score);
        let non_improved = w(intake) - w(last) < rc;
        self.early.push((score, non_improved));
        self.confusion.add(red, non_improved);
        if w(last) - w(intake) >= rc {
            self.deteriorators.0 += 1;
            self.deteriorators.1 += usize::from(red);
        }
    }

    fn figures(&self, method: &'static str, max_session: u32) -> Figures {
        let share = |v: &[f64], strict: bool| {
            (!v.is_empty()).then(|| {
                let hits: f64 = v.iter().map(|b| if strict { b.floor() } else { *b }).sum();
                hits / v.len() as f64
            })
        };
        let all: Vec<f64> = self.beyond.iter().map(|(_, b)| *b).collect();
        let by_session = (2..=max_session)
            .filter_map(|t| {
                let v: Vec<f64> = self
                    .beyond
                    .iter()
                    .filter(|(u, _)| *u == t)
                    .map(|(_, b)| *b)
                    .collect();
                share(&v, false).map(|s| (t, v.len(), s))
            })
            .collect();
        Figures {
            method,
            assessed: self.early.len(),
            auc: validation::auc(&self.early),
            red_by_session_3: self.confusion,
            sensitivity: self.confusion.sensitivity(),
            specificity: self.confusion.specificity(),
            ppv: self.confusion.ppv(),
            npv: self.confusion.npv(),
            deteriorators: self.deteriorators.0,
            deteriorator_sensitivity: (self.deteriorators.0 > 0)
                .then(|| self.deteriorators.1 as f64 / self.deteriorators.0 as f64),
            r: validation::pearson(&self.change),
            r_n: self.change.len(),
            above_p90: share(&all, true),
            above_p90_mid: share(&all, false),
            above_p90_by_session: by_session,
        }
    }
}

fn band(e: &super::Expected) -> Band {
    Band {
        session: e.session,
        n: e.n,
        p25: e.p25,
        p50: e.expected,
        expected: e.expected,
        p75: e.p75,
        p90: e.p90,
    }
}

/// The card of every instrument with enough ended episodes; each stored.
pub fn validate(
    store: &Store,
    gap_weeks: u32,
    settings: &Settings,
    thresholds: &SupportConfig,
    now: &str,
) -> Result<Vec<Card>> {
    let t = thresholds;
    let sane = (0.0..=1.0).contains(&t.min_auc)
        && (-1.0..=1.0).contains(&t.min_r)
        && 0.0 <= t.above_p90[0]
        && t.above_p90[0] <= t.above_p90[1]
        && t.above_p90[1] <= 1.0;
    if !sane {
        bail!(
            "[support] in config.toml: min_auc must be in [0, 1], min_r in [-1, 1], and \
             above_p90 = [low, high] with 0 ≤ low ≤ high ≤ 1"
        );
    }
    // Every ended episode with its last day (a pool "ended before the end of time").
    let all = Assessor::new(
        store,
        gap_weeks,
        settings,
        &PoolRule::EndedBefore("9999-12-31".to_string()),
        false,
    )?;
    let network = Network::load(store, &thresholds.network_reference)?;
    let mut cards = Vec::new();
    for (k, inst) in all.instruments().iter().enumerate() {
        let mut days: Vec<&str> = all.eligible(k).into_iter().map(|(_, d)| d).collect();
        let split = if days.len() >= 2 * settings.k_min {
            days.sort_unstable();
            let cut = days[((days.len() as f64 * POOL_SHARE) as usize).min(days.len() - 1)];
            Split::Before(cut.to_string())
        } else if days.len() >= MIN_TEST && network.as_ref().is_some_and(|n| n.domain(k).is_some())
        {
            // Too small for a time split, but the network's reference can be judged on every
            // ended episode (and the clinic's own neighbours, each against the others).
            Split::LeaveOneOut(all.eligible(k).into_iter().map(|(id, _)| id).collect())
        } else {
            continue;
        };
        let network = network.as_ref().filter(|n| n.domain(k).is_some());
        cards.push(card(
            store, gap_weeks, settings, thresholds, network, k, inst, &split,
        )?);
    }
    if cards.is_empty() {
        bail!(
            "too few ended episodes to validate on (at least {} with two or more scores on an \
             instrument, or {MIN_TEST} and a network trajectories release for it); signals stay \
             prompts, not alerts",
            2 * settings.k_min
        );
    }
    let tx = store.conn().unchecked_transaction()?;
    for c in &cards {
        tx.execute(
            "INSERT INTO support_validation
                 (validated_at, instrument_id, cut_date, pool, test, passed, card)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now,
                c.instrument,
                c.cut_date,
                c.pool,
                c.test,
                c.passed,
                serde_json::to_string(c)?
            ],
        )?;
    }
    tx.commit()?;
    Ok(cards)
}

/// How a card splits the clinic's ended episodes into pool and test.
#[derive(Debug, Clone)]
enum Split {
    /// The pool ended before this day, the test on or after it.
    Before(String),
    /// A clinic too small for a time split (fewer than 2·k_min ended episodes): every ended
    /// episode (these) is a test patient, its pool every other one.
    LeaveOneOut(Vec<i64>),
}

/// What a test patient is assessed against: the pool's assessor and the two baselines fitted
/// on the pool.
struct Against<'c> {
    assessor: Assessor<'c>,
    whole: PoolChange,
    etr: Option<Etr>,
}

impl<'c> Against<'c> {
    fn new(
        store: &'c Store,
        gap_weeks: u32,
        settings: &Settings,
        rule: &PoolRule,
        k: usize,
        inst: &Instrument,
    ) -> Result<Self> {
        let assessor = Assessor::new(store, gap_weeks, settings, rule, true)?;
        let pool_scores = assessor.pool_scores(k)?;
        let courses: Vec<validation::Course<'_>> = pool_scores
            .iter()
            .filter_map(|s| Some((s.first()?.1, s.as_slice())))
            .collect();
        let (min, max) = (settings.min_at_session, settings.max_session);
        Ok(Self {
            whole: PoolChange::fit(&courses, inst.direction, min, max),
            etr: Etr::fit(&courses, inst.direction, min, max),
            assessor,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn card(
    store: &Store,
    gap_weeks: u32,
    settings: &Settings,
    thresholds: &SupportConfig,
    network: Option<&Network>,
    k: usize,
    inst: &Instrument,
    split: &Split,
) -> Result<Card> {
    let against = |rule: PoolRule| Against::new(store, gap_weeks, settings, &rule, k, inst);
    let (shared, test, cut) = match split {
        Split::Before(cut) => {
            let a = against(PoolRule::EndedBefore(cut.clone()))?;
            let test: Vec<i64> = a
                .assessor
                .eligible(k)
                .into_iter()
                .filter(|(_, d)| *d >= cut.as_str())
                .map(|(id, _)| id)
                .collect();
            (Some(a), test, cut.clone())
        }
        Split::LeaveOneOut(test) => (None, test.clone(), LEAVE_ONE_OUT.to_string()),
    };
    let (mut nn, mut pool, mut reg) = (Tally::default(), Tally::default(), Tally::default());
    // The network references (`network`, when it has this instrument's domain), judged on the
    // same test patients (each clinic's data is in the network's sums, these patients' too:
    // one clinic among several, under DP noise).
    let (mut model, mut curves) = (Tally::default(), Tally::default());
    let mut largest_pool = 0;
    for id in &test {
        let own;
        let Against {
            assessor,
            whole,
            etr,
        } = match &shared {
            Some(a) => a,
            None => {
                own = against(PoolRule::AllBut(Some(*id)))?;
                &own
            }
        };
        largest_pool = largest_pool.max(assessor.pool_size(k));
        let Some(s) = assessor.assess_on(*id, k)? else {
            continue;
        };
        let scores: Vec<(u32, f64)> = s.observed.iter().map(|o| (o.session, o.score)).collect();
        let intake = scores[0].1;
        let early: Vec<(u32, f64)> = scores
            .iter()
            .copied()
            .filter(|(t, _)| (2..=3).contains(t))
            .collect();
        let risk = if early.is_empty() {
            None
        } else {
            assessor.early_risk(*id, k, &early)?
        };
        nn.add(inst, &scores, |t| band_at(&s.expected, t).map(band), risk);
        pool.add(inst, &scores, |t| whole.band(intake, t), None);
        reg.add(
            inst,
            &scores,
            |t| etr.as_ref().and_then(|e| e.band(intake, t)),
            None,
        );
        if let Some(net) = network {
            for (tally, bands) in [
                (&mut model, net.model_bands(k, intake)),
                (&mut curves, net.curve_bands(k, intake)),
            ] {
                if let Some(bands) = bands {
                    let e = network_expectation(bands);
                    tally.add(inst, &scores, |t| e.at(t), None);
                }
            }
        }
    }
    let mut methods = vec![
        nn.figures(LOCAL, settings.max_session),
        pool.figures("whole_pool", settings.max_session),
        reg.figures("intake_regression", settings.max_session),
    ];
    if network.is_some() {
        methods.push(model.figures(NETWORK_MODEL, settings.max_session));
        methods.push(curves.figures(NETWORK_CURVES, settings.max_session));
    }
    // The reference `support` takes: of the neighbours and the network's two, the one that
    // meets the thresholds, else the best AUC (ties: the clinic's own neighbours).
    let candidates = [LOCAL, NETWORK_MODEL, NETWORK_CURVES];
    let best = methods
        .iter()
        .filter(|f| candidates.contains(&f.method))
        .filter(|f| f.method == LOCAL || f.assessed >= MIN_TEST)
        .map(|f| (f, judge(f, thresholds)))
        .max_by(|(a, (pa, _)), (b, (pb, _))| {
            (pa, a.auc.unwrap_or(0.0))
                .partial_cmp(&(pb, b.auc.unwrap_or(0.0)))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.method.eq(LOCAL).cmp(&b.method.eq(LOCAL)))
        })
        .map(|(f, _)| f.method)
        .unwrap_or(LOCAL);
    let preferred = methods
        .iter()
        .find(|f| f.method == best)
        .unwrap_or(&methods[0]);
    let (passed, verdict) = judge(preferred, thresholds);
    let verdict = if best == LOCAL {
        verdict
    } else {
        format!(
            "{verdict} (the network's {best}, release {})",
            network
                .as_ref()
                .map_or("", |n| n.release_id.get(..12).unwrap_or_default())
        )
    };
    Ok(Card {
        instrument: inst.id.clone(),
        cut_date: cut,
        pool: shared
            .as_ref()
            .map_or(largest_pool, |a| a.assessor.pool_size(k)),
        test: test.len(),
        non_improved: nn.early.iter().filter(|(_, p)| *p).count(),
        methods,
        thresholds: thresholds.clone(),
        preferred: best,
        passed,
        verdict,
        dropout: None,
    })
}

/// Whether the neighbours' figures meet the thresholds, and the verdict in words.
fn judge(f: &Figures, t: &SupportConfig) -> (bool, String) {
    let mut failed = Vec::new();
    let mut met = Vec::new();
    if f.assessed < MIN_TEST {
        failed.push(format!(
            "only {} test patients scored by session 3 (at least {MIN_TEST})",
            f.assessed
        ));
    }
    let mut check = |ok: bool, text: String| {
        if ok {
            met.push(text)
        } else {
            failed.push(text)
        }
    };
    match f.auc {
        Some(a) => check(
            a >= t.min_auc,
            format!("AUC {a:.2} (at least {:.2})", t.min_auc),
        ),
        None => check(
            false,
            "no AUC (no non-improvers or no improvers)".to_string(),
        ),
    }
    match f.r {
        Some(r) => check(r >= t.min_r, format!("r {r:.2} (at least {:.2})", t.min_r)),
        None => check(false, "no r".to_string()),
    }
    match f.above_p90_mid {
        Some(s) => check(
            (t.above_p90[0]..=t.above_p90[1]).contains(&s),
            format!(
                "{:.1} % beyond P90, ties half ({:.0}–{:.0} %)",
                100.0 * s,
                100.0 * t.above_p90[0],
                100.0 * t.above_p90[1]
            ),
        ),
        None => check(false, "no scores beyond session 1".to_string()),
    }
    if failed.is_empty() {
        (true, format!("passed: {}", met.join(", ")))
    } else {
        (false, format!("failed: {}", failed.join("; ")))
    }
}

/// An instrument's latest stored card, as `support validate` kept it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// When it was validated.
    pub validated_at: String,
    /// Whether it passed.
    pub passed: bool,
    /// The card, as stored (JSON of [`Card`], read loosely: older cards may lack a field).
    pub card: serde_json::Value,
}

/// The latest stored card of every instrument validated, by instrument id.
pub fn latest(store: &Store) -> Result<Vec<Stored>> {
    let mut stmt = store.conn().prepare(
        "SELECT v.validated_at, v.passed, v.card FROM support_validation v
         WHERE v.validation_id = (SELECT max(w.validation_id) FROM support_validation w
                                  WHERE w.instrument_id = v.instrument_id)
         ORDER BY v.instrument_id",
    )?;
    let rows: Vec<(String, bool, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    rows.into_iter()
        .map(|(validated_at, passed, card)| {
            Ok(Stored {
                validated_at,
                passed,
                card: serde_json::from_str(&card)?,
            })
        })
        .collect()
}

/// Whether an instrument's not-on-track alerts are on.
#[derive(Debug, Clone, Serialize)]
pub struct Switch {
    /// Instrument id.
    pub instrument: String,
    /// On or off.
    pub on: bool,
    /// Why, in words.
    pub why: String,
}

/// Whether not-on-track alerts are on per instrument the store has scores on: on when the
/// instrument's latest `support validate` card passed.
pub fn switches(store: &Store) -> Result<Vec<Switch>> {
    let conn = store.conn();
    let mut stmt = conn.prepare(
        "SELECT passed, validated_at, card FROM support_validation WHERE instrument_id = ?1
         ORDER BY validation_id DESC LIMIT 1",
    )?;
    let mut used = conn.prepare("SELECT 1 FROM episode_scores WHERE instrument_id = ?1 LIMIT 1")?;
    let mut instruments = Vec::new();
    for i in store.registry()?.instruments() {
        if used.exists([&i.id])? {
            instruments.push(i.clone());
        }
    }
    instruments
        .iter()
        .map(|i| {
            let last: Option<(bool, String, String)> = stmt
                .query_row([&i.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let summary = |card: &str| {
                serde_json::from_str::<serde_json::Value>(card)
                    .ok()
                    .and_then(|v| v["verdict"].as_str().map(str::to_string))
                    .unwrap_or_default()
            };
            Ok(match last {
                None => Switch {
                    instrument: i.id.clone(),
                    on: false,
                    why: "off: not validated on this clinic's data yet (mbc-node support \
                          validate)"
                        .to_string(),
                },
                Some((passed, at, card)) => Switch {
                    instrument: i.id.clone(),
                    on: passed,
                    why: format!(
                        "{}: validation card of {at} {}",
                        if passed { "on" } else { "off" },
                        summary(&card)
                    ),
                },
            })
        })
        .collect()
}
