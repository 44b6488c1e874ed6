//! How well expected trajectories predict, on a hold-out (`mbc-node support validate`), and the
//! two baselines they must beat: the whole pool's change (no neighbours) and an
//! expected-treatment-response regression on intake (OQ style, Finch et al. 2001; DOMAIN.md
//! §5). Pure: the node splits its episodes and asks.
//!
//! Every method gives, per session, a [`Band`] on the instrument's own scale; the figures
//! compare methods on the same test patients:
//! - the **exceedance** of a score at a session: (y − expected) / (P90 − expected) on the
//!   worse-up scale,
//!   so that 1 is the failure boundary and red is exceedance > 1 (or reliable deterioration);
//!   its maximum over sessions 2–3 is the continuous score behind "red by session 3", whose
//!   [`auc`] for final non-improvement is the card's AUC;
//! - sensitivity, specificity, PPV and NPV of the red signal itself ([`Confusion`]);
//! - [`pearson`] r of predicted and observed pre–post change;
//! - the share of scores beyond P90 (calibration: about 10 %).

use crate::instrument::Direction;
use crate::risk::{RiskModel, SuffStats};

use super::{Band, worse_up};

/// One-sided normal quantiles of the ETR bands: P75 and P90.
const Z75: f64 = 0.674_489_750_196_081_7;
const Z90: f64 = 1.281_551_565_544_600_5;

/// The area under the ROC curve of `score` for the positive class: the Mann–Whitney
/// probability that a positive scores above a negative (ties count half). `None` without both
/// classes.
pub fn auc(points: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = points
        .iter()
        .copied()
        .filter(|(s, _)| s.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|(_, p)| *p).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' mid-ranks (1-based), tied groups sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0;
        rank_sum += mid * sorted[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Pearson's correlation of (x, y); `None` with fewer than three points or no spread.
pub fn pearson(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// A 2 × 2 table of a binary prediction against an outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Confusion {
    /// Predicted and positive.
    pub true_positive: usize,
    /// Predicted, negative.
    pub false_positive: usize,
    /// Not predicted, positive.
    pub false_negative: usize,
    /// Not predicted, negative.
    pub true_negative: usize,
}

impl Confusion {
    /// Adds one patient.
    pub fn add(&mut self, predicted: bool, positive: bool) {
        match (predicted, positive) {
            (true, true) => self.true_positive += 1,
            (true, false) => self.false_positive += 1,
            (false, true) => self.false_negative += 1,
            (false, false) => self.true_negative += 1,
        }
    }

    fn share(a: usize, b: usize) -> Option<f64> {
        (a + b > 0).then(|| a as f64 / (a + b) as f64)
    }

    /// Positives predicted.
    pub fn sensitivity(&self) -> Option<f64> {
        Self::share(self.true_positive, self.false_negative)
    }

    /// Negatives not predicted.
    pub fn specificity(&self) -> Option<f64> {
        Self::share(self.true_negative, self.false_positive)
    }

    /// Predictions that were positive.
    pub fn ppv(&self) -> Option<f64> {
        Self::share(self.true_positive, self.false_positive)
    }

    /// Non-predictions that were negative.
    pub fn npv(&self) -> Option<f64> {
        Self::share(self.true_negative, self.false_negative)
    }
}

/// How far `score` lies toward the failure boundary of `band`: 0 at the expected score, 1 at
/// P90, on
/// the worse-up scale of `direction` (a band whose P90 equals its expected score is read with
/// a spread
/// of half a point, so the figure stays finite).
pub fn exceedance(band: &Band, score: f64, direction: Direction) -> f64 {
    let w = |v: f64| worse_up(direction, v);
    (w(score) - w(band.expected)) / (w(band.p90) - w(band.expected)).max(0.5)
}

/// One past episode's scores on the worse-up scale of a baseline: intake, then (session, score)
/// for sessions from 2.
pub type Course<'a> = (f64, &'a [(u32, f64)]);

/// The whole-pool baseline: every patient expected to change as the pool changed, whatever
/// their features. Per session t = 2 … `max_session` with at least `min_at_session` pool
/// episodes scored there, the quantiles of the change from intake (equal weights).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolChange {
    direction: Direction,
    /// (session, n, P25, P50, P75, P90 of the worse-up change).
    sessions: Vec<(u32, usize, [f64; 4])>,
}

impl PoolChange {
    /// From the pool's courses (intake and scores on the instrument's own scale).
    pub fn fit(
        courses: &[Course<'_>],
        direction: Direction,
        min_at_session: usize,
        max_session: u32,
    ) -> Self {
        let mut sessions = Vec::new();
        for t in 2..=max_session {
            let changes: Vec<(f64, f64)> = courses
                .iter()
                .filter_map(|(intake, s)| {
                    let y = s.iter().find(|(u, _)| *u == t)?.1;
                    Some((worse_up(direction, y) - worse_up(direction, *intake), 1.0))
                })
                .collect();
            if changes.len() < min_at_session.max(1) {
                continue;
            }
            let q = |p| super::weighted_quantile(&changes, p).unwrap_or(f64::NAN);
            sessions.push((t, changes.len(), [q(0.25), q(0.5), q(0.75), q(0.9)]));
        }
        Self {
            direction,
            sessions,
        }
    }

    /// The band of a patient with `intake` at session `t` (the last supported session's after
    /// it, as the neighbour curve's plateau).
    pub fn band(&self, intake: f64, t: u32) -> Option<Band> {
        let (_, n, q) = self
            .sessions
            .iter()
            .find(|(u, _, _)| *u == t)
            .or_else(|| self.sessions.last().filter(|(u, _, _)| t > *u))?;
        let at = |c: f64| worse_up(self.direction, worse_up(self.direction, intake) + c);
        Some(Band {
            session: t,
            n: *n,
            p25: at(q[0]),
            p50: at(q[1]),
            expected: at(q[1]),
            p75: at(q[2]),
            p90: at(q[3]),
        })
    }
}

/// The expected-treatment-response baseline (OQ style): the worse-up score at session t
/// regressed on intake, ln t and intake × ln t over the pool's sessions from 2, with the
/// residual SD per session (the pooled one where a session has fewer than `min_at_session`
/// residuals); P75 and P90 are the normal quantiles around the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Etr {
    direction: Direction,
    model: RiskModel,
    /// Residual SD per session 2 … `max_session` (index t − 2).
    sd: Vec<f64>,
    max_session: u32,
}

fn etr_x(intake: f64, t: u32) -> [f64; 4] {
    let lt = f64::from(t).ln();
    [1.0, intake, lt, intake * lt]
}

impl Etr {
    /// Fits the model; `None` when the pool cannot support it.
    pub fn fit(
        courses: &[Course<'_>],
        direction: Direction,
        min_at_session: usize,
        max_session: u32,
    ) -> Option<Self> {
        let w = |v: f64| worse_up(direction, v);
        let mut stats = SuffStats::new(4);
        let points = || {
            courses.iter().flat_map(|(intake, s)| {
                s.iter()
                    .filter(|(t, _)| (2..=max_session).contains(t))
                    .map(move |(t, y)| (w(*intake), *t, w(*y)))
            })
        };
        for (intake, t, y) in points() {
            stats.add(&etr_x(intake, t), y).ok()?;
        }
        let model = stats.fit(0.0).ok()?;
        let mut squares = vec![(0.0, 0usize); max_session.saturating_sub(1) as usize];
        for (intake, t, y) in points() {
            let slot = &mut squares[(t - 2) as usize];
            slot.0 += (y - model.predict(&etr_x(intake, t))).powi(2);
            slot.1 += 1;
        }
        let pooled = model.residual_sd;
        let sd = squares
            .iter()
            .map(|(ss, n)| {
                if *n >= min_at_session.max(2) {
                    (ss / (*n - 1) as f64).sqrt()
                } else {
                    pooled
                }
            })
            .collect();
        Some(Self {
            direction,
            model,
            sd,
            max_session,
        })
    }

    /// The band of a patient with `intake` at session `t` ≥ 2 (sessions past the last fitted
    /// one plateau at it).
    pub fn band(&self, intake: f64, t: u32) -> Option<Band> {
        if t < 2 {
            return None;
        }
        let t = t.min(self.max_session);
        let w = |v: f64| worse_up(self.direction, v);
        let mean = self.model.predict(&etr_x(w(intake), t));
        let sd = self.sd[(t - 2) as usize];
        Some(Band {
            session: t,
            n: self.model.n as usize,
            p25: w(mean - Z75 * sd),
            p50: w(mean),
            expected: w(mean),
            p75: w(mean + Z75 * sd),
            p90: w(mean + Z90 * sd),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        // Positives 3, 5; negatives 1, 4: pairs above 3 of 4.
        let p = [(3.0, true), (5.0, true), (1.0, false), (4.0, false)];
        assert_eq!(auc(&p), Some(0.75));
        // A tie counts half: positive 2 against negatives 2 and 1.
        assert_eq!(auc(&[(2.0, true), (2.0, false), (1.0, false)]), Some(0.75));
        assert_eq!(auc(&[(1.0, true)]), None);
        // Brute force on a grid with ties.
        let pts: Vec<(f64, bool)> = (0..40)
            .map(|i| (f64::from((i * 7) % 11), (i * 3) % 5 < 2))
            .collect();
        let (mut wins, mut pairs) = (0.0, 0.0);
        for a in pts.iter().filter(|p| p.1) {
            for b in pts.iter().filter(|p| !p.1) {
                pairs += 1.0;
                wins += if a.0 > b.0 {
                    1.0
                } else if a.0 == b.0 {
                    0.5
                } else {
                    0.0
                };
            }
        }
        assert!((auc(&pts).unwrap() - wins / pairs).abs() < 1e-12);
    }

    #[test]
    fn pearson_and_confusion_by_hand() {
        let r = pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 5.0)]).unwrap();
        // Σ(dx dy) = 3, Σdx² = 2, Σdy² = 4.667: r = 3 / √9.333.
        assert!((r - 3.0 / (2.0f64 * 14.0 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(pearson(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
        let mut c = Confusion::default();
        for (p, o) in [
            (true, true),
            (true, false),
            (false, true),
            (false, false),
            (false, false),
        ] {
            c.add(p, o);
        }
        assert_eq!(c.sensitivity(), Some(0.5));
        assert_eq!(c.ppv(), Some(0.5));
        assert_eq!(c.npv(), Some(2.0 / 3.0));
        assert_eq!(c.specificity(), Some(2.0 / 3.0));
    }

    #[test]
    fn etr_recovers_a_planted_model_and_orients_its_bands() {
        // y = 2 + 0.5·intake − 3·ln t exactly, plus ±1 alternating: residual SD ≈ 1.
        let data: Vec<(f64, Vec<(u32, f64)>)> = (0..200)
            .map(|i| {
                let intake = f64::from(10 + i % 15);
                let s = (2..=8)
                    .map(|t| {
                        let e = if (i + t) % 2 == 0 { 1.0 } else { -1.0 };
                        (t, 2.0 + 0.5 * intake - 3.0 * f64::from(t).ln() + e)
                    })
                    .collect();
                (intake, s)
            })
            .collect();
        let courses: Vec<Course<'_>> = data.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let etr = Etr::fit(&courses, Direction::LowerIsBetter, 30, 20).unwrap();
        let b = etr.band(20.0, 4).unwrap();
        assert!((b.p50 - (12.0 - 3.0 * 4f64.ln())).abs() < 0.05, "{b:?}");
        assert!((b.p90 - b.p50 - Z90).abs() < 0.05, "{b:?}");
        // Higher is better: the same data negated has its failure boundary below.
        let neg: Vec<(f64, Vec<(u32, f64)>)> = data
            .iter()
            .map(|(i, s)| (-i, s.iter().map(|(t, y)| (*t, -y)).collect()))
            .collect();
        let courses: Vec<Course<'_>> = neg.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let etr = Etr::fit(&courses, Direction::HigherIsBetter, 30, 20).unwrap();
        let c = etr.band(-20.0, 4).unwrap();
        assert!((c.p50 + b.p50).abs() < 1e-9 && (c.p90 + b.p90).abs() < 1e-9);
        assert!(exceedance(&c, c.p90, Direction::HigherIsBetter) > 0.999);
        // Past the data the bands plateau; intake has none.
        assert_eq!(
            etr.band(20.0, 40).unwrap().p50,
            etr.band(20.0, 20).unwrap().p50
        );
        assert!(etr.band(20.0, 1).is_none());
    }

    #[test]
    fn pool_change_adds_the_pools_change_to_the_patients_intake() {
        // Changes at session 2: −1 … −10 (intakes 20, scores 19 … 10).
        let data: Vec<(f64, Vec<(u32, f64)>)> = (1..=10)
            .map(|i| (20.0, vec![(2, 20.0 - f64::from(i))]))
            .collect();
        let courses: Vec<Course<'_>> = data.iter().map(|(i, s)| (*i, s.as_slice())).collect();
        let pool = PoolChange::fit(&courses, Direction::LowerIsBetter, 5, 20);
        let b = pool.band(12.0, 2).unwrap();
        // Type-1 quantiles of −10 … −1: P50 = −6 (5th of 10), P90 = −2 (9th).
        assert_eq!((b.p50, b.p90), (6.0, 10.0));
        assert_eq!(pool.band(12.0, 7).unwrap().p50, 6.0, "plateau");
        assert!(
            PoolChange::fit(&courses, Direction::LowerIsBetter, 11, 20)
                .band(12.0, 2)
                .is_none()
        );
    }
}
