//! Therapist × domain track records (DOMAIN.md §2.5, §7).
//!
//! Residuals are oriented so that **negative = better than expected** on every instrument. Per
//! therapist j the engine needs only (n_j, Σr, Σr²), so the same estimators work on one
//! clinic's data or on DP-noised network sums.
//!
//! - Variance components by one-way ANOVA (method of moments): MSB, MSW, n₀,
//!   τ² = max(0, (MSB − MSW)/n₀), σ² = MSW, with a 95 % interval from the F distribution of
//!   MSB/MSW (Searle 1971), exact for balanced groups and normal effects.
//! - Empirical Bayes: λ_j = τ²/(τ² + σ²/n_j), û_j = λ_j·r̄_j, interval û_j ± z·√(τ²(1−λ_j)).
//! - Labels: EB interval entirely below −m = effective, above +m = ineffective (default; m is
//!   an optional clinical margin, 0 unless set); or the Kraus (2011) rule on risk-adjusted
//!   change, r̄_j + Ē ≤ −RC effective (the average patient, adjusted to the average case,
//!   reliably improved), ≥ +RC ineffective (reliably worsened), where Ē is the mean expected
//!   change of the domain's eligible patients. Below the classification minimum the label is
//!   "insufficient data"; below the display minimum nothing is reported.

use statrs::distribution::{ContinuousCDF, FisherSnedecor, Normal};

/// One therapist's residual sums on a domain.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Group {
    /// Eligible patients.
    pub n: u64,
    /// Σ r.
    pub sum: f64,
    /// Σ r².
    pub sum_sq: f64,
}

impl Group {
    /// Adds one residual.
    pub fn add(&mut self, r: f64) {
        self.n += 1;
        self.sum += r;
        self.sum_sq += r * r;
    }

    /// Mean residual.
    pub fn mean(&self) -> f64 {
        self.sum / self.n as f64
    }
}

/// Between- and within-therapist variance of residuals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceComponents {
    /// Therapists (groups with n ≥ 1).
    pub therapists: u64,
    /// Patients.
    pub patients: u64,
    /// Between-therapist variance τ² (≥ 0).
    pub tau2: f64,
    /// Within-therapist variance σ².
    pub sigma2: f64,
    /// 95 % interval of τ².
    pub tau2_interval: (f64, f64),
    /// Intraclass correlation τ²/(τ² + σ²).
    pub icc: f64,
    /// Effective group size n₀.
    pub n0: f64,
    /// Overall mean residual.
    pub mean: f64,
}

/// The sums one-way ANOVA needs, over therapists with at least one patient. They add across
/// clinics, and are what a network release carries (`benchmark` block `anova`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AnovaSums {
    /// N = Σⱼ nⱼ.
    pub n: f64,
    /// Σ r.
    pub sum: f64,
    /// Σ r².
    pub sum_sq: f64,
    /// Σⱼ Sⱼ²/nⱼ.
    pub between: f64,
    /// J, therapists.
    pub therapists: f64,
    /// Σⱼ nⱼ².
    pub n_sq: f64,
}

impl AnovaSums {
    /// The sums of per-therapist groups (empty groups ignored).
    pub fn of<'a>(groups: impl IntoIterator<Item = &'a Group>) -> Self {
        let mut s = Self::default();
        for g in groups.into_iter().filter(|g| g.n > 0) {
            let n = g.n as f64;
            s.n += n;
            s.sum += g.sum;
            s.sum_sq += g.sum_sq;
            s.between += g.sum * g.sum / n;
            s.therapists += 1.0;
            s.n_sq += n * n;
        }
        s
    }

    /// As an array, in the order [N, Σr, Σr², Σⱼ Sⱼ²/nⱼ, J, Σⱼ nⱼ²].
    pub fn to_array(self) -> [f64; 6] {
        [
            self.n,
            self.sum,
            self.sum_sq,
            self.between,
            self.therapists,
            self.n_sq,
        ]
    }

    /// From an array in [`AnovaSums::to_array`] order.
    pub fn from_array(a: [f64; 6]) -> Self {
        Self {
            n: a[0],
            sum: a[1],
            sum_sq: a[2],
            between: a[3],
            therapists: a[4],
            n_sq: a[5],
        }
    }
}

/// One-way ANOVA estimates from per-therapist sums. `None` with fewer than 2 therapists or no
/// within-therapist degrees of freedom.
pub fn variance_components(groups: &[Group]) -> Option<VarianceComponents> {
    variance_from_sums(AnovaSums::of(groups))
}

/// One-way ANOVA estimates (method of moments, DOMAIN.md §7) from sums that may carry DP noise:
/// J is rounded, sums of squares are clamped at 0. `None` with fewer than 2 therapists, no
/// within-therapist degrees of freedom, or a non-positive n₀ or MSW.
pub fn variance_from_sums(s: AnovaSums) -> Option<VarianceComponents> {
    let (j, n) = (s.therapists.round(), s.n);
    if j < 2.0 || n - j < 1.0 {
        return None;
    }
    let mean = s.sum / n;
    let ssb = (s.between - s.sum * s.sum / n).max(0.0);
    let ssw = (s.sum_sq - s.between).max(0.0);
    let (df_b, df_w) = (j - 1.0, n - j);
    let (msb, msw) = (ssb / df_b, ssw / df_w);
    let n0 = (n - s.n_sq / n) / df_b;
    if n0.is_nan() || n0 <= 0.0 {
        return None;
    }
    let tau2 = ((msb - msw) / n0).max(0.0);
    let icc = if tau2 + msw > 0.0 {
        tau2 / (tau2 + msw)
    } else {
        0.0
    };
    let tau2_interval = tau2_interval(msb, msw, n0, df_b, df_w);
    Some(VarianceComponents {
        therapists: j as u64,
        patients: n.round().max(0.0) as u64,
        tau2,
        sigma2: msw,
        tau2_interval,
        icc,
        n0,
        mean,
    })
}

/// The method-of-moments τ² of `s` before it is clamped at 0, (MSB − MSW)/n₀: negative when
/// the groups differ less than chance would make them. Its sensitivity to noise in the sums is
/// what a released τ² carries, also when the released value is clamped.
pub fn tau2_unclamped(s: AnovaSums) -> Option<f64> {
    let (j, n) = (s.therapists.round(), s.n);
    if j < 2.0 || n - j < 1.0 {
        return None;
    }
    let (df_b, df_w) = (j - 1.0, n - j);
    let msb = (s.between - s.sum * s.sum / n) / df_b;
    let msw = (s.sum_sq - s.between) / df_w;
    let n0 = (n - s.n_sq / n) / df_b;
    (n0.is_finite() && n0 > 0.0).then(|| (msb - msw) / n0)
}

/// 95 % interval for τ² from the interval for the ICC based on F = MSB/MSW.
fn tau2_interval(msb: f64, msw: f64, n0: f64, df_b: f64, df_w: f64) -> (f64, f64) {
    if msw <= 0.0 {
        return (0.0, f64::INFINITY);
    }
    let Ok(f) = FisherSnedecor::new(df_b, df_w) else {
        return (0.0, f64::INFINITY);
    };
    let f0 = msb / msw;
    let icc = |fx: f64| ((fx - 1.0) / (fx + n0 - 1.0)).clamp(0.0, 1.0 - 1e-12);
    let lo = icc(f0 / f.inverse_cdf(0.975));
    let hi = icc(f0 / f.inverse_cdf(0.025));
    // ICC = τ²/(τ² + σ²) ⇒ τ² = σ²·ICC/(1 − ICC), with σ² estimated by MSW.
    let to_tau2 = |icc: f64| msw * icc / (1.0 - icc);
    (to_tau2(lo), to_tau2(hi))
}

/// A therapist's label on a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Patients reliably did better than expected.
    Effective,
    /// Neither.
    Neutral,
    /// Patients reliably did worse than expected.
    Ineffective,
    /// Fewer patients than the classification minimum.
    InsufficientData,
}

impl Label {
    /// Lower-case, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Effective => "effective",
            Label::Neutral => "neutral",
            Label::Ineffective => "ineffective",
            Label::InsufficientData => "insufficient data",
        }
    }
}

/// How labels are assigned (DOMAIN.md §2.5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// (b) the 95 % empirical-Bayes interval excludes 0.
    #[default]
    EbInterval,
    /// (a) Kraus 2011: the mean risk-adjusted change (mean residual plus the mean expected
    /// change) is beyond ± the instrument's reliable change.
    Kraus,
}

impl Rule {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::EbInterval => "eb-interval",
            Rule::Kraus => "kraus",
        }
    }
}

/// Minimum patients per therapist × domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minimums {
    /// To show the statistic at all (default 10).
    pub show: u64,
    /// To give a label other than "insufficient data" (default 30).
    pub classify: u64,
}

impl Default for Minimums {
    fn default() -> Self {
        Self {
            show: 10,
            classify: 30,
        }
    }
}

/// One therapist's record on one domain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackRecord {
    /// Eligible patients.
    pub n: u64,
    /// Mean residual r̄ (negative = better than expected).
    pub mean: f64,
    /// Standard error of r̄, √(σ²/n).
    pub se: f64,
    /// Shrinkage factor λ.
    pub shrinkage: f64,
    /// Empirical-Bayes effect û.
    pub eb: f64,
    /// 95 % EB interval.
    pub eb_interval: (f64, f64),
    /// Label.
    pub label: Label,
}

/// How track records of one domain are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Criteria {
    /// The rule.
    pub rule: Rule,
    /// Display and classification minimums.
    pub minimums: Minimums,
    /// Clinical margin m ≥ 0 (eb-interval rule): an effect is labelled only when its whole
    /// interval lies beyond ±m points.
    pub margin: f64,
    /// The instrument's reliable change on the domain's scale (Kraus rule).
    pub reliable_change: Option<f64>,
    /// Mean expected change (oriented: negative = improvement) of the domain's eligible
    /// patients, the average case that risk-adjusted change refers to (Kraus rule).
    pub expected_change: Option<f64>,
}

/// The track record of one group, or `None` below the display minimum.
pub fn track_record(g: &Group, vc: &VarianceComponents, c: &Criteria) -> Option<TrackRecord> {
    let min = c.minimums;
    if g.n < min.show.max(1) {
        return None;
    }
    let n = g.n as f64;
    let mean = g.mean();
    let se = (vc.sigma2 / n).sqrt();
    let denom = vc.tau2 + vc.sigma2 / n;
    let shrinkage = if denom > 0.0 { vc.tau2 / denom } else { 0.0 };
    let eb = shrinkage * mean;
    let half = z95() * (vc.tau2 * (1.0 - shrinkage)).sqrt();
    let eb_interval = (eb - half, eb + half);
    let label = if g.n < min.classify {
        Label::InsufficientData
    } else {
        match c.rule {
            Rule::EbInterval if eb_interval.1 < -c.margin => Label::Effective,
            Rule::EbInterval if eb_interval.0 > c.margin => Label::Ineffective,
            Rule::Kraus => match (c.reliable_change, c.expected_change) {
                (Some(rc), Some(e)) if mean + e <= -rc => Label::Effective,
                (Some(rc), Some(e)) if mean + e >= rc => Label::Ineffective,
                _ => Label::Neutral,
            },
            Rule::EbInterval => Label::Neutral,
        }
    };
    Some(TrackRecord {
        n: g.n,
        mean,
        se,
        shrinkage,
        eb,
        eb_interval,
        label,
    })
}

/// The two-sided 95 % normal quantile, 1.959964….
pub fn z95() -> f64 {
    // Unwrap safety: the standard normal is a valid distribution.
    Normal::new(0.0, 1.0).unwrap().inverse_cdf(0.975)
}

/// Wilson score 95 % interval for k successes in n trials; `None` when n = 0.
pub fn wilson(k: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (k, n, z) = (k as f64, n as f64, z95());
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(rs: &[f64]) -> Group {
        let mut g = Group::default();
        rs.iter().for_each(|r| g.add(*r));
        g
    }

    #[test]
    fn anova_hand_computed() {
        // Groups {1,2,3}, {4,5,6}, {7,8,9}: means 2, 5, 8, grand mean 5.
        // SSB = 3·(9 + 0 + 9) = 54, MSB = 27; SSW = 3·2 = 6, MSW = 1; n₀ = 3.
        // τ² = (27 − 1)/3 = 26/3; ICC = (26/3)/(26/3 + 1) = 26/29.
        let vc = variance_components(&[
            group(&[1., 2., 3.]),
            group(&[4., 5., 6.]),
            group(&[7., 8., 9.]),
        ])
        .unwrap();
        assert!((vc.tau2 - 26.0 / 3.0).abs() < 1e-12);
        assert!((vc.sigma2 - 1.0).abs() < 1e-12);
        assert!((vc.n0 - 3.0).abs() < 1e-12);
        assert!((vc.icc - 26.0 / 29.0).abs() < 1e-12);
        assert!(vc.tau2_interval.0 < vc.tau2 && vc.tau2 < vc.tau2_interval.1);
        // Unbalanced n₀ = (N − Σn²/N)/(J − 1): sizes 2 and 4 -> (6 − 20/6)/1 = 8/3.
        let vc = variance_components(&[group(&[0., 1.]), group(&[2., 3., 4., 5.])]).unwrap();
        assert!((vc.n0 - 8.0 / 3.0).abs() < 1e-12);
        assert!(variance_components(&[group(&[1., 2.])]).is_none());
    }

    #[test]
    fn no_between_variance_truncates_at_zero() {
        let vc = variance_components(&[group(&[1., -1.]), group(&[2., -2.]), group(&[3., -3.])])
            .unwrap();
        assert_eq!(vc.tau2, 0.0);
        assert_eq!(vc.icc, 0.0);
        assert_eq!(vc.tau2_interval.0, 0.0);
    }

    fn vc(tau2: f64, sigma2: f64) -> VarianceComponents {
        VarianceComponents {
            therapists: 50,
            patients: 2000,
            tau2,
            sigma2,
            tau2_interval: (0.0, 1.0),
            icc: tau2 / (tau2 + sigma2),
            n0: 40.0,
            mean: 0.0,
        }
    }

    #[test]
    fn shrinkage_matches_domain_table() {
        // DOMAIN.md §7: ICC .05 -> reliability .34 at n = 10, .61 at n = 30, .72 at n = 50.
        let v = vc(0.05, 0.95);
        for (n, lambda) in [(10, 0.34), (30, 0.61), (50, 0.72), (100, 0.84)] {
            let g = Group {
                n,
                sum: -(n as f64),
                sum_sq: 2.0 * n as f64,
            };
            let criteria = Criteria {
                minimums: Minimums {
                    show: 1,
                    classify: 1,
                },
                ..Criteria::default()
            };
            let t = track_record(&g, &v, &criteria).unwrap();
            assert_eq!((t.shrinkage * 100.0).round() / 100.0, lambda, "n = {n}");
            assert!((t.eb - t.shrinkage * t.mean).abs() < 1e-12);
            let half = z95() * (0.05 * (1.0 - t.shrinkage)).sqrt();
            assert!((t.eb_interval.1 - t.eb - half).abs() < 1e-12);
        }
    }

    /// The label of a group of n residuals of mean `mean` (PHQ-9: RC 6; patients expected to
    /// improve by 7 points on average).
    #[track_caller]
    fn label_with(mean: f64, n: u64, rule: Rule, margin: f64) -> Option<Label> {
        let g = Group {
            n,
            sum: mean * n as f64,
            sum_sq: 0.0,
        };
        let criteria = Criteria {
            rule,
            minimums: Minimums::default(),
            margin,
            reliable_change: Some(6.0),
            expected_change: Some(-7.0),
        };
        track_record(&g, &vc(1.7, 32.5), &criteria).map(|t| t.label)
    }

    #[track_caller]
    fn label(mean: f64, n: u64, rule: Rule) -> Option<Label> {
        label_with(mean, n, rule, 0.0)
    }

    #[test]
    fn labels() {
        assert_eq!(
            label(-3.0, 9, Rule::EbInterval),
            None,
            "below the display minimum"
        );
        assert_eq!(
            label(-3.0, 29, Rule::EbInterval),
            Some(Label::InsufficientData)
        );
        assert_eq!(label(-4.0, 50, Rule::EbInterval), Some(Label::Effective));
        assert_eq!(label(4.0, 50, Rule::EbInterval), Some(Label::Ineffective));
        assert_eq!(label(0.5, 50, Rule::EbInterval), Some(Label::Neutral));
        // Kraus 2011 on risk-adjusted change −7 + r̄: the average patient of a typical therapist
        // reliably improves (≤ −6), one 1 point worse than expected does not, and one whose
        // patients end 13 points worse than expected reliably deteriorates (≥ +6).
        assert_eq!(label(0.0, 30, Rule::Kraus), Some(Label::Effective));
        assert_eq!(label(1.0, 30, Rule::Kraus), Some(Label::Effective));
        assert_eq!(label(1.1, 30, Rule::Kraus), Some(Label::Neutral));
        assert_eq!(label(12.9, 30, Rule::Kraus), Some(Label::Neutral));
        assert_eq!(label(13.0, 30, Rule::Kraus), Some(Label::Ineffective));
        // A clinical margin: the interval must clear ±m, not just 0.
        assert_eq!(
            label_with(-4.0, 50, Rule::EbInterval, 0.5),
            Some(Label::Effective)
        );
        assert_eq!(
            label_with(-4.0, 50, Rule::EbInterval, 3.0),
            Some(Label::Neutral)
        );
        assert_eq!(
            label_with(4.0, 50, Rule::EbInterval, 3.0),
            Some(Label::Neutral)
        );
    }

    #[test]
    fn wilson_known_values() {
        // 50 of 100: 0.4038 to 0.5962 (standard tables).
        let (lo, hi) = wilson(50, 100).unwrap();
        assert!(
            (lo - 0.4038).abs() < 1e-4 && (hi - 0.5962).abs() < 1e-4,
            "{lo} {hi}"
        );
        // 0 of 10: 0 to 0.2775.
        let (lo, hi) = wilson(0, 10).unwrap();
        assert!(lo.abs() < 1e-12 && (hi - 0.2775).abs() < 1e-4, "{lo} {hi}");
        assert_eq!(wilson(0, 0), None);
        assert!((z95() - 1.959964).abs() < 1e-6);
    }
}
