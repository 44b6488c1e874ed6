//! Post-processing of a released benchmark vector: rates, distributions, the risk model with
//! bootstrap noise SDs, τ² and σ², expected curves, suppression. Costs no privacy budget.

use super::{
    ANOVA_BLOCK, ANOVA_SPLIT, BenchmarkLayout, Bins, SESSIONS, SUPPRESS_CURVE_SD,
    SUPPRESS_RELATIVE_SD, SUPPRESS_TAU2_RELATIVE_SD, feature_bounds, unstandardise,
};
use crate::analysis::FEATURES;
use crate::dp;
use crate::risk::SuffStats;
use crate::therapist::{AnovaSums, VarianceComponents, tau2_unclamped, variance_from_sums};

impl BenchmarkLayout {
    /// Post-processes a released vector whose noise has standard deviation `sigma` (encoded
    /// units; 0 for an exact sum).
    pub fn summarise(&self, values: &[i64], sigma: f64) -> Result<Vec<DomainSummary>, dp::Error> {
        let decoded = self.layout.decode(values)?;
        Ok((0..self.domains.len())
            .map(|d| self.summarise_domain(d, &decoded, sigma))
            .collect())
    }

    fn summarise_domain(&self, d: usize, decoded: &[f64], sigma: f64) -> DomainSummary {
        let spec = &self.domains[d];
        let block = |i: usize| {
            let b = &self.layout.blocks()[self.block_index(d, i)];
            (
                &decoded[b.offset()..b.offset() + b.len()],
                sigma / b.scale(),
            )
        };
        let mut suppressed = Vec::new();
        // Outcomes.
        let (o, o_sd) = block(0);
        let count = |i: usize| o[i].max(0.0);
        let mut rate = |name: &str, num: usize, den: usize| {
            let den_v = count(den);
            if den_v <= 0.0 || o_sd / den_v > SUPPRESS_RELATIVE_SD {
                suppressed.push(name.to_owned());
                None
            } else {
                Some((count(num) / den_v).clamp(0.0, 1.0))
            }
        };
        let rates = Rates {
            reliable_improvement: rate("reliable_improvement", 3, 1),
            reliable_deterioration: rate("reliable_deterioration", 4, 1),
            recovery: rate("recovery", 5, 2),
            reliable_recovery: rate("reliable_recovery", 6, 2),
        };
        let (intake_bins, change_bins) = self.bins[d];
        let (ih, ih_sd) = block(1);
        let (ch, ch_sd) = block(2);
        let intake = Distribution::from_histogram(ih, intake_bins, ih_sd);
        let change = Distribution::from_histogram(ch, change_bins, ch_sd);
        if intake.is_none() {
            suppressed.push("intake".into());
        }
        if change.is_none() {
            suppressed.push("change".into());
        }
        // Risk model from the noisy sums, with a ridge on the scale of the noise, and the
        // spread the noise gives its coefficients and its predictions.
        let (r, r_sd) = block(3);
        let n = count(0).round() as u64;
        let bounds = feature_bounds(spec.lo, spec.hi);
        let ridge = (RIDGE_NOISE_SDS * r_sd).max(1e-6);
        let estimate = fit_risk(r, n, ridge);
        let risk = estimate
            .as_ref()
            .map(|b| unstandardise(b, &bounds, (spec.lo, spec.hi)));
        // Replicates of the raw coefficients under the release's noise added again: their
        // spread is the coefficients' noise SD, and a clinic measures on its own episodes how
        // far they move predictions (`analysis`, when it takes this model as its reference).
        let unstd = |b: &[f64]| unstandardise(b, &bounds, (spec.lo, spec.hi));
        let risk_replicates = estimate
            .as_ref()
            .map(|_| replicates(r, r_sd, &|sums| fit_risk(sums, n, ridge).map(|b| unstd(&b))))
            .unwrap_or_default();
        let risk_sd = risk
            .as_ref()
            .map(|beta| robust_spread(beta, &risk_replicates));
        if risk.is_none() {
            suppressed.push("risk".into());
        }
        // Expected curves per band: a point where the mean score's noise SD (delta method:
        // √(sd_sum² + mean² sd_count²) / count) is small against the score range.
        let ((sums, sum_sd), (counts, count_sd)) = (block(4), block(5));
        let curves = (0..spec.bands.len())
            .map(|band| {
                (0..SESSIONS)
                    .map(|s| {
                        let (sum, n) = (sums[band * SESSIONS + s], counts[band * SESSIONS + s]);
                        if n <= 0.0 || count_sd / n > SUPPRESS_RELATIVE_SD {
                            return None;
                        }
                        let mean = (sum / n).clamp(spec.lo, spec.hi);
                        let sd = sum_sd.hypot(mean * count_sd) / n;
                        (sd <= SUPPRESS_CURVE_SD * spec.range()).then_some(mean)
                    })
                    .collect()
            })
            .collect();
        let mut a = [0.0; 6];
        let mut a_sd = [0.0; 6];
        for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
            let (v, sd) = block(ANOVA_BLOCK + i);
            for (e, x) in entries.iter().zip(v) {
                a[*e] = *x;
                a_sd[*e] = sd;
            }
        }
        let (variance, tau2_sd) = noisy_variance(a, a_sd);
        if variance.is_none() {
            suppressed.push("variance".into());
        }
        DomainSummary {
            id: spec.id.clone(),
            episodes: count(0),
            finished: count(1),
            at_caseness: count(2),
            rates,
            intake,
            change,
            risk,
            risk_sd,
            risk_replicates,
            variance,
            tau2_sd,
            curves,
            suppressed,
        }
    }
}

/// Ridge of the released risk model, in noise SDs of the sums: the noise matrix's spectral norm
/// is about 2√p noise SDs, so a smaller ridge can leave the noisy XᵀX indefinite.
const RIDGE_NOISE_SDS: f64 = 3.0;

/// Bootstrap replicates behind [`DomainSummary::risk_sd`].
pub const BOOTSTRAP: usize = 64;

/// A released τ² replaces a clinic's own only when its noise SD is at most this fraction of
/// max(τ², σ²/10) (half the release's own suppression threshold).
pub const REFERENCE_MAX_TAU2_RELATIVE_SD: f64 = 0.5;

/// Whether a released τ² (noise SD `sd`) is precise enough to replace a clinic's own
/// ([`REFERENCE_MAX_TAU2_RELATIVE_SD`]).
pub fn tau2_usable(tau2: f64, sigma2: f64, sd: f64) -> bool {
    sd <= REFERENCE_MAX_TAU2_RELATIVE_SD * tau2.max(sigma2 / 10.0)
}

/// The risk model's standardised coefficients from the risk block's (decoded) sums.
fn fit_risk(sums: &[f64], n: u64, ridge: f64) -> Option<Vec<f64>> {
    let p = FEATURES.len();
    let tri = p * (p + 1) / 2;
    SuffStats::from_sums(p, n, &sums[..tri], &sums[tri..tri + p], sums[tri + p])
        .ok()?
        .fit(ridge)
        .ok()
        .map(|m| m.beta)
}

/// `fit` of `sums` with noise of SD `sd` added to every entry again, [`BOOTSTRAP`] times
/// (post-processing of the released sums only; the draws are seeded by the sums, so the
/// replicates are reproducible). Failed fits are left out.
pub(crate) fn replicates(
    sums: &[f64],
    sd: f64,
    fit: &dyn Fn(&[f64]) -> Option<Vec<f64>>,
) -> Vec<Vec<f64>> {
    use rand_core::{RngCore, SeedableRng};
    let seed = sums
        .iter()
        .fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut gauss = || {
        // Box–Muller from two uniforms in (0, 1].
        let u = |r: &mut rand_chacha::ChaCha20Rng| {
            ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        };
        let (a, b) = (u(&mut rng), u(&mut rng));
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    };
    (0..BOOTSTRAP)
        .filter_map(|_| {
            let noisy: Vec<f64> = sums.iter().map(|x| x + sd * gauss()).collect();
            fit(&noisy)
        })
        .collect()
}

/// 1.4826 × the median absolute deviation of the replicates from `estimate`, per entry: a
/// robust SD (an unlucky replicate near a singular XᵀX must not dominate it).
pub fn robust_spread(estimate: &[f64], replicates: &[Vec<f64>]) -> Vec<f64> {
    (0..estimate.len())
        .map(|k| {
            let mut d: Vec<f64> = replicates
                .iter()
                .map(|r| (r[k] - estimate[k]).abs())
                .collect();
            if d.is_empty() {
                return f64::INFINITY;
            }
            d.sort_by(f64::total_cmp);
            1.4826 * d[d.len() / 2]
        })
        .collect()
}

/// Variance components from noisy ANOVA sums `a` ([`AnovaSums::to_array`] order) whose
/// entries carry noise of SD `sd`, and the SD that noise gives τ² (finite differences of the
/// unclamped estimate, one SD per entry, combined in quadrature: a τ² clamped at 0 keeps the
/// noise SD of the estimate it was clamped from). Suppressed (`None`) when τ² cannot be
/// estimated or its noise SD exceeds it (or σ²/10 when τ² is near 0): a shown τ² is at least
/// one noise SD.
pub(super) fn noisy_variance(
    a: [f64; 6],
    sd: [f64; 6],
) -> (Option<VarianceComponents>, Option<f64>) {
    let Some(vc) = variance_from_sums(AnovaSums::from_array(a)) else {
        return (None, None);
    };
    let mut sq = 0.0;
    for e in 0..6 {
        let mut up = a;
        up[e] += sd[e];
        let mut down = a;
        down[e] -= sd[e];
        let tau2 = |x: [f64; 6]| tau2_unclamped(AnovaSums::from_array(x));
        let d = match (tau2(up), tau2(down)) {
            (Some(u), Some(l)) => (u - l) / 2.0,
            _ => return (None, None),
        };
        sq += d * d;
    }
    let tau2_sd = sq.sqrt();
    let scale = vc.tau2.max(vc.sigma2 / 10.0);
    if tau2_sd > SUPPRESS_TAU2_RELATIVE_SD * scale {
        (None, Some(tau2_sd))
    } else {
        (Some(vc), Some(tau2_sd))
    }
}

/// NHS TT-style rates among finished courses (`None`: suppressed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Reliable improvement / finished.
    pub reliable_improvement: Option<f64>,
    /// Reliable deterioration / finished.
    pub reliable_deterioration: Option<f64>,
    /// Recovered / finished at caseness.
    pub recovery: Option<f64>,
    /// Reliably recovered / finished at caseness.
    pub reliable_recovery: Option<f64>,
}

/// Mean and quartiles of a histogram (bin centres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distribution {
    /// Mean.
    pub mean: f64,
    /// 25th, 50th and 75th percentiles.
    pub quartiles: [f64; 3],
}

impl Distribution {
    fn from_histogram(counts: &[f64], bins: Bins, sd: f64) -> Option<Self> {
        let counts: Vec<f64> = counts.iter().map(|c| c.max(0.0)).collect();
        let total: f64 = counts.iter().sum();
        // Noise over all bins has SD sd·√bins; suppress when it is large against the total.
        if total <= 0.0 || sd * (counts.len() as f64).sqrt() / total > SUPPRESS_RELATIVE_SD {
            return None;
        }
        let mean = counts
            .iter()
            .enumerate()
            .map(|(i, c)| c * bins.centre(i))
            .sum::<f64>()
            / total;
        let quantile = |q: f64| {
            let mut acc = 0.0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= q * total {
                    return bins.centre(i);
                }
            }
            bins.centre(bins.n - 1)
        };
        Some(Self {
            mean,
            quartiles: [quantile(0.25), quantile(0.5), quantile(0.75)],
        })
    }
}

/// Post-processed benchmark figures for one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSummary {
    /// Domain id.
    pub id: String,
    /// Episodes with pre and post (noisy, ≥ 0).
    pub episodes: f64,
    /// Finished courses.
    pub finished: f64,
    /// Finished courses at caseness at the start.
    pub at_caseness: f64,
    /// Rates.
    pub rates: Rates,
    /// Intake score distribution.
    pub intake: Option<Distribution>,
    /// Change (post − pre) distribution.
    pub change: Option<Distribution>,
    /// Risk model coefficients in [`FEATURES`] order.
    pub risk: Option<Vec<f64>>,
    /// The standard deviation release noise gives each coefficient (parametric bootstrap).
    pub risk_sd: Option<Vec<f64>>,
    /// The coefficients refitted with the release's noise added again ([`BOOTSTRAP`]
    /// replicates): a clinic measures on its own episodes how far noise moves the model's
    /// predictions before taking it as its reference ([`crate::analysis::REFERENCE_MAX_PREDICTION_SD`]).
    pub risk_replicates: Vec<Vec<f64>>,
    /// Therapist variance components.
    pub variance: Option<VarianceComponents>,
    /// Standard deviation the release noise gives τ² (first-order propagation).
    pub tau2_sd: Option<f64>,
    /// Expected mean score per severity band (rows) and session 1..[`SESSIONS`] (columns).
    pub curves: Vec<Vec<Option<f64>>>,
    /// Figures withheld because noise dominates them.
    pub suppressed: Vec<String>,
}
