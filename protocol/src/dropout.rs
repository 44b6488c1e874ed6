//! The `dropout-model` round kind, layout version [`LAYOUT_VERSION`] (DESIGN.md §10, issue 16):
//! a logistic model of dropout risk from the intake features (DOMAIN.md §4.1: about 30 % drop
//! out; the best published pre-treatment AUC is about 0.66), which no single round can fit.
//! It is trained by damped Newton steps, one secure-aggregation round per iteration: each
//! round's spec carries the current coefficients β, each clinic returns the clipped, noised
//! sums of its episodes' gradient and Hessian terms at β, and the coordinator takes the step.
//!
//! The vector of one iteration ([`DropoutLayout`]; names prefixed `dropout.`):
//!
//! | block | kind | entries |
//! |---|---|---|
//! | `episodes` | counts | episodes, and those ended in dropout |
//! | `gradient` | clipped sums | Σ (y − p) x over the [`FEATURES`] x, standardised to [−1, 1] as the risk model takes them |
//! | `hessian` | sums of products | Σ u uᵀ (upper triangle), Σ u (y − p), Σ (y − p)² of u = √(p (1 − p)) x |
//!
//! where y is 1 for an episode that ended in dropout and p = 1 / (1 + e^(−βᵀx)). With |x_k| ≤ 1
//! and p (1 − p) ≤ ¼ every entry is bounded per episode, so [`crate::dp::Layout`] derives the
//! per-patient sensitivity as for every other release. Σ (y − p)² is the Brier score's sum at
//! β: how well the current model fits, at no extra cost.
//!
//! [`DropoutLayout::step`] post-processes a released (noisy) vector: the Newton step of the
//! ridge-penalised likelihood, (H + λI)⁻¹ (g − λβ) (λ from the noise of H, as the risk
//! model's ridge, and at least [`MIN_RIDGE_PER_EPISODE`] per episode), damped to at most
//! [`MAX_STEP`] in every coefficient, with the noise SD of the new coefficients (parametric
//! bootstrap; with an exact sum, of the clinics' fixed-point rounding). Training stops when the
//! step is below [`TOLERANCE`] or its own noise, or at the round cap. Post-processing costs no privacy budget; every iteration's round costs
//! its ρ.

use serde::{Deserialize, Serialize};

use crate::analysis::FEATURES;
use crate::benchmark::{
    Contribution, DomainSpec, MAX_PARAMS, feature_bounds, replicates, robust_spread, standardise,
    unit_bounds,
};
use crate::dp::{self, Block, Layout};

/// Version of the vector layout below; bump it on any change to blocks or bounds.
pub const LAYOUT_VERSION: u32 = 1;

/// Most iterations (rounds) one training may take.
pub const MAX_ITERATIONS: u32 = 20;

/// Largest change of one coefficient in one step (logit units per standardised feature): the
/// damping of the first steps from β = 0, where the quadratic model is poor.
pub const MAX_STEP: f64 = 2.0;

/// A coefficient beyond this in magnitude is refused in a spec (and a step is kept within it):
/// features in [−1, 1] never need more.
pub const MAX_COEFFICIENT: f64 = 50.0;

/// The step below which (largest coefficient change) training has converged.
pub const TOLERANCE: f64 = 1e-7;

/// A step that moves the predictions by less than this many times its noise moves them has
/// converged (at the optimum a step is the difference of two noisy fits: about √2 times).
pub const CONVERGED_NOISE: f64 = 2.0;

/// Ridge of the Newton step, in noise SDs of the summed Hessian (as the risk model's).
const RIDGE_NOISE_SDS: f64 = 3.0;

/// The least ridge, per episode: it holds the coefficients of features with no spread in the
/// data (a column equal to the intercept) at 0 instead of letting rounding walk them, and
/// moves the others by about 10⁻⁶ of their size.
pub const MIN_RIDGE_PER_EPISODE: f64 = 1e-6;

/// Budget weights of the blocks: counts, gradient, Hessian.
pub const WEIGHTS: [f64; 3] = [0.25, 1.0, 1.0];

/// Block indices.
const EPISODES: usize = 0;
const GRADIENT: usize = 1;
const HESSIAN: usize = 2;

/// One iteration's layout: the domain whose intake the features take, the episode cap and the
/// coefficients the clinics evaluate their episodes at.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutLayout {
    domain: DomainSpec,
    max_episodes: u32,
    model: Vec<f64>,
    layout: Layout,
}

/// The logistic function.
fn logistic(eta: f64) -> f64 {
    1.0 / (1.0 + (-eta).exp())
}

/// The risk under `model` of standardised features `x`.
fn predict(model: &[f64], x: &[f64]) -> f64 {
    logistic(x.iter().zip(model).map(|(x, b)| x * b).sum())
}

/// Raw intake features ([`FEATURES`] order) of a domain scored in [lo, hi], standardised to
/// [−1, 1] (the intercept stays 1) and clipped there.
pub fn standardised(lo: f64, hi: f64, features: &[f64]) -> Vec<f64> {
    features
        .iter()
        .zip(feature_bounds(lo, hi))
        .map(|(x, b)| standardise(*x, b).clamp(-1.0, 1.0))
        .collect()
}

impl DropoutLayout {
    /// The layout of an iteration at coefficients `model` ([`FEATURES`] long, each finite and
    /// at most [`MAX_COEFFICIENT`] in magnitude) over episodes scored on `domain`, a patient
    /// contributing at most `max_episodes` episodes.
    pub fn new(domain: DomainSpec, max_episodes: u32, model: Vec<f64>) -> Result<Self, dp::Error> {
        domain.validate()?;
        if !(1..=MAX_PARAMS.max_episodes).contains(&max_episodes) {
            return Err(dp::Error::Parameter(format!(
                "max_episodes must be 1 to {}",
                MAX_PARAMS.max_episodes
            )));
        }
        if model.len() != FEATURES.len()
            || model
                .iter()
                .any(|b| !b.is_finite() || b.abs() > MAX_COEFFICIENT)
        {
            return Err(dp::Error::Parameter(format!(
                "a dropout model has {} finite coefficients of at most {MAX_COEFFICIENT} in \
                 magnitude",
                FEATURES.len()
            )));
        }
        let x = unit_bounds(&feature_bounds(domain.lo, domain.hi));
        let p = x.len();
        let u: Vec<(f64, f64)> = x.iter().map(|(a, b)| (a.min(0.0) / 2.0, b / 2.0)).collect();
        let blocks = vec![
            Block::counts("dropout.episodes", 2).weighted(WEIGHTS[EPISODES]),
            Block::clipped_sums("dropout.gradient", 1, vec![-1.0; p], vec![1.0; p])
                .weighted(WEIGHTS[GRADIENT]),
            Block::sum_of_products("dropout.hessian", u, (-1.0, 1.0)).weighted(WEIGHTS[HESSIAN]),
        ];
        let layout = Layout::new(blocks, max_episodes)?;
        Ok(Self {
            domain,
            max_episodes,
            model,
            layout,
        })
    }

    /// The release layout (blocks, scales, sensitivity).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The domain whose intake the features take.
    pub fn domain(&self) -> &DomainSpec {
        &self.domain
    }

    /// Episodes one patient may contribute.
    pub fn max_episodes(&self) -> u32 {
        self.max_episodes
    }

    /// The coefficients this iteration evaluates the episodes at.
    pub fn model(&self) -> &[f64] {
        &self.model
    }

    /// Encodes a clinic's contributions of domain 0 (the layout's one domain) whose dropout is
    /// known, in the caller's order (a patient's first `max_episodes` count).
    pub fn encode(&self, contributions: &[Contribution]) -> Result<Vec<i64>, dp::Error> {
        let mut enc = self.layout.encoder();
        for c in contributions.iter().filter(|c| c.domain == 0) {
            let Some(dropout) = c.dropout else { continue };
            if c.features.len() != FEATURES.len() {
                return Err(dp::Error::Parameter(format!(
                    "{} features, expected {}",
                    c.features.len(),
                    FEATURES.len()
                )));
            }
            let x = standardised(self.domain.lo, self.domain.hi, &c.features);
            let p = predict(&self.model, &x);
            let y = f64::from(u8::from(dropout));
            let r = y - p;
            // Every block or none: the episode cap is per block, the counts block first.
            if !enc.add(c.patient, EPISODES, 0, &[1.0, y])? {
                continue;
            }
            let g: Vec<f64> = x.iter().map(|x| r * x).collect();
            enc.add(c.patient, GRADIENT, 0, &g)?;
            let w = (p * (1.0 - p)).sqrt();
            let u: Vec<f64> = x.iter().map(|x| w * x).collect();
            enc.add_products(c.patient, HESSIAN, &u, r)?;
        }
        Ok(enc.finish())
    }

    /// The Newton step from a released vector whose noise has standard deviation `sigma`
    /// (encoded units; 0 for an exact sum).
    pub fn step(&self, values: &[i64], sigma: f64) -> Result<Step, dp::Error> {
        let decoded = self.layout.decode(values)?;
        let block = |i: usize| {
            let b = &self.layout.blocks()[i];
            (
                &decoded[b.offset()..b.offset() + b.len()],
                sigma / b.scale(),
            )
        };
        let (counts, _) = block(EPISODES);
        let (gradient, gradient_sd) = block(GRADIENT);
        let (hessian, hessian_sd) = block(HESSIAN);
        let p = FEATURES.len();
        let tri = p * (p + 1) / 2;
        let episodes = counts[0].max(0.0);
        let ridge = (RIDGE_NOISE_SDS * hessian_sd).max(MIN_RIDGE_PER_EPISODE * episodes.max(1.0));
        // The Newton step of the ridge-penalised log-likelihood ℓ(β) − λ‖β‖²/2:
        // (H + λI)⁻¹ (g − λβ).
        let solve = |h: &[f64], g: &[f64]| -> Option<Vec<f64>> {
            let a = nalgebra::DMatrix::from_row_slice(p, p, &crate::risk::symmetric(p, &h[..tri]));
            let mut b = nalgebra::DVector::from_column_slice(g);
            for i in 0..p {
                b[i] -= ridge * self.model[i];
            }
            // Noise may leave the summed H indefinite: its eigenvalues are floored at 0 (the
            // Hessian of a log-likelihood is never negative) before the ridge is added.
            let eigen = a.symmetric_eigen();
            let inverse = eigen.eigenvalues.map(|mu| 1.0 / (mu.max(0.0) + ridge));
            let q = &eigen.eigenvectors;
            let step = q * nalgebra::DMatrix::from_diagonal(&inverse) * q.transpose() * b;
            step.iter()
                .all(|v| v.is_finite())
                .then(|| damped(&self.model, step.as_slice()))
        };
        let next = solve(hessian, gradient).ok_or_else(|| {
            dp::Error::Parameter("the summed Hessian gives no Newton step".into())
        })?;
        let change = next
            .iter()
            .zip(&self.model)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // The noise of the new coefficients: both sums redrawn with their noise, or with
        // the fixed-point rounding of the clinics' sums (uniform within ± half a unit of the
        // scale per episode and entry) when that is larger: an exact sum is exact only to it.
        let rounding =
            |i: usize| (episodes.max(1.0) / 12.0).sqrt() / self.layout.blocks()[i].scale();
        let sd = hessian_sd
            .max(gradient_sd)
            .max(rounding(HESSIAN))
            .max(rounding(GRADIENT));
        let both: Vec<f64> = hessian[..tri].iter().chain(gradient).copied().collect();
        let reps = replicates(&both, sd, &|v| solve(&v[..tri], &v[tri..]));
        let noise_sd: Vec<f64> = robust_spread(&next, &reps)
            .into_iter()
            .map(|s| if s.is_finite() { s } else { f64::MAX })
            .collect();
        // Convergence on the scale of the predictions, not of single coefficients (features
        // standardised to their bounds are nearly collinear with the intercept, so a
        // coefficient's noise can be large while the predictions' is small): the step's
        // weighted RMS change of the linear predictor over the episodes, against the same of
        // the noise (the replicates' deviations).
        let shift = |d: &[f64]| {
            let h = nalgebra::DMatrix::from_row_slice(
                p,
                p,
                &crate::risk::symmetric(p, &hessian[..tri]),
            );
            let eigen = h.symmetric_eigen();
            let v = nalgebra::DVector::from_column_slice(d);
            let q = eigen.eigenvectors.transpose() * v;
            let quad: f64 = q
                .iter()
                .zip(eigen.eigenvalues.iter())
                .map(|(q, mu)| q * q * mu.max(0.0))
                .sum();
            (quad / hessian[0].max(f64::MIN_POSITIVE)).sqrt()
        };
        let delta: Vec<f64> = next.iter().zip(&self.model).map(|(a, b)| a - b).collect();
        let moved = shift(&delta);
        let mut noise: Vec<f64> = reps
            .iter()
            .map(|r| shift(&r.iter().zip(&next).map(|(a, b)| a - b).collect::<Vec<_>>()))
            .filter(|v| v.is_finite())
            .collect();
        noise.sort_by(f64::total_cmp);
        let shift_noise = noise.get(noise.len() / 2).copied().unwrap_or(f64::MAX);
        Ok(Step {
            // At the optimum a step goes from one noisy fit to another: it moves the
            // predictions by about √2 times one fit's noise, so within twice that it is noise.
            converged: change < TOLERANCE || moved < CONVERGED_NOISE * shift_noise,
            model: next,
            change,
            shift: moved,
            shift_noise,
            noise_sd,
            episodes,
            dropouts: counts[1].max(0.0),
            brier: (episodes > 0.0).then(|| (hessian[tri + p] / episodes).max(0.0)),
        })
    }
}

/// `model` plus the Newton step `step`, the step scaled so that no coefficient moves by more
/// than [`MAX_STEP`], and each kept within [`MAX_COEFFICIENT`].
fn damped(model: &[f64], step: &[f64]) -> Vec<f64> {
    let largest = step.iter().map(|s| s.abs()).fold(0.0, f64::max);
    let scale = if largest > MAX_STEP {
        MAX_STEP / largest
    } else {
        1.0
    };
    model
        .iter()
        .zip(step)
        .map(|(b, s)| (b + scale * s).clamp(-MAX_COEFFICIENT, MAX_COEFFICIENT))
        .collect()
}

/// One iteration's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The coefficients after the step (the next iteration's).
    pub model: Vec<f64>,
    /// The largest change of a coefficient.
    pub change: f64,
    /// How far the step moves the predictions: the RMS change of the linear predictor over
    /// the episodes, each weighted by p (1 − p) (the Hessian's weight).
    pub shift: f64,
    /// The same for the step's noise (median over the bootstrap replicates).
    pub shift_noise: f64,
    /// The SD release noise gives each new coefficient (for an exact sum, the clinics'
    /// fixed-point rounding).
    pub noise_sd: Vec<f64>,
    /// Whether training has converged: the largest coefficient change below [`TOLERANCE`],
    /// or the predictions moved less than [`CONVERGED_NOISE`] times the step's noise.
    pub converged: bool,
    /// Episodes summed (noisy).
    pub episodes: f64,
    /// Of them, ended in dropout (noisy).
    pub dropouts: f64,
    /// The mean Brier score at the iteration's coefficients (noisy).
    pub brier: Option<f64>,
}

/// The dropout risk of an episode with raw intake features `features` ([`FEATURES`] order) of
/// a domain scored in [lo, hi] under `model`; `None` when the lengths differ.
pub fn risk(model: &[f64], lo: f64, hi: f64, features: &[f64]) -> Option<f64> {
    if model.len() != FEATURES.len() || features.len() != FEATURES.len() {
        return None;
    }
    Some(predict(model, &standardised(lo, hi, features)))
}

/// How well a dropout model's risks rank and fit one clinic's ended episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Episodes with a known end.
    pub episodes: usize,
    /// Of them, ended in dropout.
    pub dropouts: usize,
    /// Area under the ROC curve of the risk for dropout (0.5: no better than chance).
    pub auc: Option<f64>,
    /// Mean Brier score.
    pub brier: Option<f64>,
    /// Mean predicted risk (calibration in the large: against `dropouts / episodes`).
    pub mean_risk: Option<f64>,
}

impl Check {
    /// The figures of `risks`: (predicted risk, ended in dropout) per episode.
    pub fn of(risks: &[(f64, bool)]) -> Self {
        let n = risks.len();
        let mean = |f: &dyn Fn(&(f64, bool)) -> f64| {
            (n > 0).then(|| risks.iter().map(f).sum::<f64>() / n as f64)
        };
        Self {
            episodes: n,
            dropouts: risks.iter().filter(|(_, y)| *y).count(),
            auc: crate::trajectory::validation::auc(risks),
            brier: mean(&|(p, y)| (p - f64::from(u8::from(*y))).powi(2)),
            mean_risk: mean(&|(p, _)| *p),
        }
    }
}

/// A network dropout model checked on one clinic's ended episodes, beside the clinic's own
/// model (the same logistic fit of its data alone, each episode predicted by a fit without
/// it: [`FOLDS`]-fold cross-validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// The release of the network model.
    pub release_id: String,
    /// The network model's figures.
    pub network: Check,
    /// The clinic's own, cross-validated (`None` with fewer than [`FOLDS`] dropouts or
    /// completions).
    pub alone: Option<Check>,
}

/// Folds of the clinic's own cross-validated fit.
pub const FOLDS: usize = 5;

/// The exact (noise-free) fit of `contributions` alone (a clinic fitting its own data, which
/// never leaves it): the training's Newton steps on the clinic's sum, to convergence.
pub fn fit(domain: &DomainSpec, contributions: &[Contribution]) -> Result<Vec<f64>, dp::Error> {
    let mut model = vec![0.0; FEATURES.len()];
    for _ in 0..MAX_ITERATIONS {
        let layout = DropoutLayout::new(domain.clone(), 1, model)?;
        let step = layout.step(&layout.encode(contributions)?, 0.0)?;
        model = step.model;
        if step.converged {
            break;
        }
    }
    Ok(model)
}

/// Every labelled episode of `contributions` (domain 0, a patient's first) predicted by the
/// clinic's own fit on the other [`FOLDS`] − 1 folds (episodes dealt to folds in turn):
/// (risk, ended in dropout).
pub fn cross_validated(
    domain: &DomainSpec,
    contributions: &[Contribution],
) -> Result<Vec<(f64, bool)>, dp::Error> {
    let mut seen = std::collections::HashSet::new();
    let labelled: Vec<&Contribution> = contributions
        .iter()
        .filter(|c| c.domain == 0 && c.dropout.is_some() && seen.insert(c.patient))
        .collect();
    let mut out = Vec::with_capacity(labelled.len());
    for fold in 0..FOLDS {
        let train: Vec<Contribution> = labelled
            .iter()
            .enumerate()
            .filter(|(i, _)| i % FOLDS != fold)
            .map(|(_, c)| (*c).clone())
            .collect();
        let model = fit(domain, &train)?;
        for c in labelled.iter().skip(fold).step_by(FOLDS) {
            if let (Some(r), Some(y)) = (risk(&model, domain.lo, domain.hi, &c.features), c.dropout)
            {
                out.push((r, y));
            }
        }
    }
    Ok(out)
}

pub mod document;

#[cfg(test)]
mod tests;
