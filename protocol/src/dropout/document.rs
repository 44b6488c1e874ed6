//! The release document of a `dropout-model` training: a [`NetworkDocument`] whose layout is
//! the last iteration's [`DropoutLayoutDescription`] and whose summary is the fitted
//! [`DropoutModel`] with every iteration's history. The coordinator writes it once training
//! ends; every node verifies, keeps and reads it with these types.

use serde::{Deserialize, Serialize};

use super::{DropoutLayout, LAYOUT_VERSION, Step, risk};
use crate::analysis::FEATURES;
use crate::benchmark::document::{BlockLayout, NetworkDocument};

/// Format name of a network dropout-model release.
pub const FORMAT: &str = "mbc-node/dropout-model-release";

/// A network dropout-model release, signed by the coordinator over its exact bytes.
pub type DropoutRelease = NetworkDocument<DropoutLayoutDescription, DropoutModel>;

/// What one iteration's vector holds and how each block is bounded (also the ledger's record
/// of a clinic's contribution to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropoutLayoutDescription {
    /// "dropout-model".
    pub kind: String,
    /// [`LAYOUT_VERSION`] of the writer.
    pub version: u32,
    /// Episodes one patient may contribute.
    pub max_episodes_per_patient: u32,
    /// The features, in coefficient order.
    pub features: Vec<String>,
    /// The domain whose intake the features take.
    pub domain: String,
    /// Its lowest score.
    pub lo: f64,
    /// Its highest score.
    pub hi: f64,
    /// The coefficients the episodes were evaluated at.
    pub model: Vec<f64>,
    /// The blocks, in vector order.
    pub blocks: Vec<BlockLayout>,
    /// Patient-level L2 sensitivity.
    pub sensitivity: f64,
}

impl DropoutLayoutDescription {
    /// The description of `layout`.
    pub fn of(layout: &DropoutLayout) -> Self {
        let l = layout.layout();
        let d = layout.domain();
        Self {
            kind: "dropout-model".into(),
            version: LAYOUT_VERSION,
            max_episodes_per_patient: layout.max_episodes(),
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            domain: d.id.clone(),
            lo: d.lo,
            hi: d.hi,
            model: layout.model().to_vec(),
            blocks: BlockLayout::all(l),
            sensitivity: l.sensitivity().patient,
        }
    }
}

/// One iteration of a training: the round, who contributed and what its step gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Iteration {
    /// 1, 2, …
    pub iteration: u32,
    /// Its round (hex).
    pub round_id: String,
    /// The clinics whose sums it holds.
    pub contributing: Vec<String>,
    /// The coefficients the episodes were evaluated at.
    pub model: Vec<f64>,
    /// Episodes summed (noisy).
    pub episodes: f64,
    /// Of them, ended in dropout (noisy).
    pub dropouts: f64,
    /// Mean Brier score at `model` (noisy).
    pub brier: Option<f64>,
    /// Largest change of a coefficient in the step it gave.
    pub change: f64,
    /// How far that step moved the predictions (weighted RMS change of the linear predictor).
    pub shift: f64,
    /// How far the step's noise moves them.
    pub shift_noise: f64,
    /// Whether that step was below the tolerance or its own noise.
    pub converged: bool,
}

impl Iteration {
    /// The record of `step`, taken from round `round_id` at `model` with `contributing`.
    pub fn new(
        iteration: u32,
        round_id: String,
        contributing: Vec<String>,
        model: &[f64],
        step: &Step,
    ) -> Self {
        Self {
            iteration,
            round_id,
            contributing,
            model: model.to_vec(),
            episodes: step.episodes,
            dropouts: step.dropouts,
            brier: step.brier,
            change: step.change,
            shift: step.shift,
            shift_noise: step.shift_noise,
            converged: step.converged,
        }
    }
}

/// The fitted network model of dropout risk (post-processing of the iterations' sums).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropoutModel {
    /// The domain whose intake the features take.
    pub domain: String,
    /// Its lowest score (the features' standardisation).
    pub lo: f64,
    /// Its highest score.
    pub hi: f64,
    /// The features, in coefficient order (standardised to [−1, 1] as the risk model's).
    pub features: Vec<String>,
    /// The coefficients after the last step.
    pub coefficients: Vec<f64>,
    /// The noise SD of each (release noise, or the clinics' fixed-point rounding).
    pub noise_sd: Vec<f64>,
    /// Whether the last step was below the tolerance or its own noise (else the round cap
    /// ended training).
    pub converged: bool,
    /// The training (16 hex digits).
    pub training_id: String,
    /// Most iterations, as declared.
    pub iterations_declared: u32,
    /// ρ of each iteration.
    pub rho_per_iteration: f64,
    /// Episodes with a known end in the last iteration (noisy).
    pub episodes: f64,
    /// Their share that ended in dropout (noisy).
    pub dropout_rate: Option<f64>,
    /// Mean Brier score of the last iteration, at the coefficients it was evaluated at.
    pub brier: Option<f64>,
    /// Every iteration, in order.
    pub iterations: Vec<Iteration>,
    /// Why training stopped before converging or reaching its cap (an iteration aborted), if
    /// it did: the model is then that of the iterations before.
    #[serde(default)]
    pub stopped: Option<String>,
}

impl DropoutModel {
    /// The model after `history` (its last entry's step is `last`) of training `training_id`
    /// over `layout`'s domain.
    pub fn new(
        layout: &DropoutLayout,
        training_id: String,
        iterations_declared: u32,
        rho_per_iteration: f64,
        last: &Step,
        history: Vec<Iteration>,
    ) -> Self {
        let d = layout.domain();
        Self {
            domain: d.id.clone(),
            lo: d.lo,
            hi: d.hi,
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            coefficients: last.model.clone(),
            noise_sd: last.noise_sd.clone(),
            converged: last.converged,
            training_id,
            iterations_declared,
            rho_per_iteration,
            episodes: last.episodes,
            dropout_rate: (last.episodes >= 1.0)
                .then(|| (last.dropouts / last.episodes).clamp(0.0, 1.0)),
            brier: last.brier,
            iterations: history,
            stopped: None,
        }
    }

    /// The dropout risk of an episode with raw intake features `features` ([`FEATURES`]
    /// order, domain units).
    pub fn risk(&self, features: &[f64]) -> Option<f64> {
        risk(&self.coefficients, self.lo, self.hi, features)
    }
}
