//! The release documents of a `benchmark` vector as typed structs (DESIGN.md §10): the
//! network's signed [`NetworkRelease`] and a clinic's stand-alone [`LocalRelease`]. Both the
//! writer (the aggregator, `mbc-node release`) and every reader (`benchmark list | show`, the
//! HTML report, the network reference of local track records) use these types, so they share
//! one shape. Field names are the JSON keys documents have always had; a reader accepts a
//! document without the optional figures (older releases) and ignores keys it does not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::{BenchmarkLayout, DomainSummary, LAYOUT_VERSION, SESSIONS};
use crate::analysis::FEATURES;
use crate::dp::{self, Mechanism, Sensitivity};
use crate::therapist::VarianceComponents;

/// Format name of a network benchmark release.
pub const NETWORK_FORMAT: &str = "mbc-node/benchmark-release";

/// Format name of a clinic's stand-alone release.
pub const LOCAL_FORMAT: &str = "mbc-node/release";

/// Kind of a clinic's stand-alone benchmark release.
pub const LOCAL_KIND: &str = "local-benchmark";

/// A network benchmark release, signed by the coordinator over its exact bytes.
pub type NetworkRelease = NetworkDocument<LayoutDescription, DomainRelease>;

/// A release of a network round, signed by the coordinator over its exact bytes: its
/// provenance, the layout `L` of its vector, the vector, and its post-processing per domain
/// `S`. The benchmark's is [`NetworkRelease`]; the trajectories' is
/// [`crate::trajectories::document::TrajectoriesRelease`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkDocument<L, S> {
    /// The format name ([`NETWORK_FORMAT`], or the round kind's).
    pub format: String,
    /// Document version (1).
    pub version: u32,
    /// Release id.
    pub release_id: String,
    /// Network id.
    pub network_id: String,
    /// Round id (hex).
    pub round_id: String,
    /// Issue time (RFC 3339).
    pub issued_at: String,
    /// Budget period the round charged.
    pub period: String,
    /// Software that wrote it.
    pub software: String,
    /// The aggregator's public key (hex).
    pub aggregator: String,
    /// Which clinics were invited and contributed.
    pub clinics: Clinics,
    /// How the release was made private.
    pub privacy: Privacy,
    /// What the vector holds.
    pub layout: L,
    /// The released (noisy) sum.
    pub values: Vec<i64>,
    /// Its post-processing, per domain.
    pub summary: Vec<S>,
}

impl<L, S> NetworkDocument<L, S> {
    /// The same provenance and vector with another layout description and summary.
    pub fn with<L2, S2>(self, layout: L2, summary: Vec<S2>) -> NetworkDocument<L2, S2> {
        NetworkDocument {
            format: self.format,
            version: self.version,
            release_id: self.release_id,
            network_id: self.network_id,
            round_id: self.round_id,
            issued_at: self.issued_at,
            period: self.period,
            software: self.software,
            aggregator: self.aggregator,
            clinics: self.clinics,
            privacy: self.privacy,
            layout,
            values: self.values,
            summary,
        }
    }
}

/// A clinic's stand-alone release of its own benchmark vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalRelease {
    /// [`LOCAL_FORMAT`].
    pub format: String,
    /// [`LOCAL_KIND`].
    pub kind: String,
    /// Release id (the ledger's).
    pub release_id: String,
    /// Software that wrote it.
    pub software: String,
    /// The clinic's name.
    pub clinic: String,
    /// Budget period charged.
    pub period: String,
    /// How the release was made private.
    pub privacy: Privacy,
    /// What the vector holds.
    pub layout: LayoutDescription,
    /// The released (noisy) vector.
    pub values: Vec<i64>,
    /// Its post-processing, per domain.
    pub summary: Vec<DomainRelease>,
}

/// Clinics of a network round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clinics {
    /// Invited.
    pub invited: usize,
    /// Contributing (the survivors whose inputs are in the sum).
    pub contributing: usize,
    /// Names of the contributing clinics.
    pub names: Vec<String>,
}

/// The `privacy` object: unit, ρ and ε at δ, σ, sensitivities, the mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    /// Privacy unit ("patient").
    pub unit: String,
    /// ρ (zCDP) of the release for one patient.
    pub rho: f64,
    /// ε at `delta`.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Noise scale in the released vector (encoded units).
    pub sigma: f64,
    /// Patient-level L2 sensitivity.
    pub sensitivity: f64,
    /// Therapist-level L2 sensitivity, when a block aggregates therapist quantities.
    #[serde(default)]
    pub therapist_sensitivity: Option<f64>,
    /// ρ for one therapist's whole caseload.
    #[serde(default)]
    pub therapist_rho: Option<f64>,
    /// How noise was added.
    pub mechanism: String,
    /// "on", or "off (test build)".
    pub noise: String,
    /// Network rounds: noise scale in the sum of the survivors' shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_in_sum: Option<f64>,
    /// Network rounds: noise scale each clinic added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_sigma: Option<f64>,
    /// Network rounds: the secret-sharing threshold t.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
}

impl Privacy {
    /// The privacy of a release made by `mechanism` for `sensitivity`, at `delta`; `noise_on`
    /// is false only in test builds that switch noise off.
    pub fn new(
        mechanism: &Mechanism,
        delta: f64,
        sensitivity: Sensitivity,
        description: &str,
        noise_on: bool,
    ) -> Result<Self, dp::Error> {
        let therapist_rho = sensitivity
            .therapist
            .map(|s| dp::rho(s, mechanism.total_sigma))
            .transpose()?;
        Ok(Self {
            unit: "patient".into(),
            rho: mechanism.rho,
            epsilon: dp::epsilon(mechanism.rho, delta)?,
            delta,
            sigma: mechanism.total_sigma,
            sensitivity: sensitivity.patient,
            therapist_sensitivity: sensitivity.therapist,
            therapist_rho,
            mechanism: description.into(),
            noise: if noise_on { "on" } else { "off (test build)" }.into(),
            sigma_in_sum: None,
            share_sigma: None,
            threshold: None,
        })
    }
}

/// What the release vector holds and how each block is bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutDescription {
    /// "benchmark".
    pub kind: String,
    /// [`LAYOUT_VERSION`] of the writer.
    pub version: u32,
    /// Episodes one patient may contribute per domain.
    pub max_episodes_per_patient: u32,
    /// Episodes one therapist may contribute per domain to the ANOVA blocks.
    pub caseload_cap: u32,
    /// The risk model's features, in coefficient order.
    pub features: Vec<String>,
    /// Sessions of the expected curves.
    pub sessions: usize,
    /// The domains, in vector order.
    pub domains: Vec<DomainLayout>,
    /// The blocks, in vector order.
    pub blocks: Vec<BlockLayout>,
    /// Patient-level L2 sensitivity.
    pub sensitivity: f64,
    /// Therapist-level L2 sensitivity.
    #[serde(default)]
    pub therapist_sensitivity: Option<f64>,
}

/// One domain of a layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainLayout {
    /// Domain id.
    pub id: String,
    /// Lowest score (domain units).
    pub lo: f64,
    /// Highest score.
    pub hi: f64,
    /// Lower bounds of the intake severity bands.
    pub bands: Vec<f64>,
    /// Bins of the intake histogram.
    pub intake_bins: BinsLayout,
    /// Bins of the change histogram.
    pub change_bins: BinsLayout,
}

/// Histogram bins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BinsLayout {
    /// Left edge of the first bin.
    pub start: f64,
    /// Bin width.
    pub width: f64,
    /// Number of bins.
    pub n: usize,
}

/// One block of a layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockLayout {
    /// Block name (`<domain>.<block>`).
    pub name: String,
    /// Block kind.
    pub kind: String,
    /// First index in the vector.
    pub offset: usize,
    /// Groups (rows).
    pub groups: usize,
    /// Entries per group.
    pub width: usize,
    /// Fixed-point scale: a decoded entry is value / scale.
    pub scale: f64,
    /// Per-episode bounds of each entry of a group.
    pub episode_bounds: Vec<[f64; 2]>,
    /// L2 bound of one patient's contribution to the block.
    pub patient_l2_bound: f64,
}

impl BlockLayout {
    /// The blocks of `layout`, in vector order.
    pub fn all(layout: &dp::Layout) -> Vec<Self> {
        layout
            .blocks()
            .iter()
            .map(|b| Self {
                name: b.name().into(),
                kind: b.kind().as_str().into(),
                offset: b.offset(),
                groups: b.groups(),
                width: b.width(),
                scale: b.scale(),
                episode_bounds: b.bounds().map(|(lo, hi)| [lo, hi]).collect(),
                patient_l2_bound: b.patient_bound(),
            })
            .collect()
    }
}

impl LayoutDescription {
    /// The description of `layout`.
    pub fn of(layout: &BenchmarkLayout) -> Self {
        let l = layout.layout();
        let bins = |b: super::Bins| BinsLayout {
            start: b.start,
            width: b.width,
            n: b.n,
        };
        Self {
            kind: "benchmark".into(),
            version: LAYOUT_VERSION,
            max_episodes_per_patient: layout.params().max_episodes,
            caseload_cap: layout.params().caseload_cap,
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            sessions: SESSIONS,
            domains: layout
                .domains()
                .iter()
                .enumerate()
                .map(|(d, s)| {
                    let (intake, change) = layout.bins(d);
                    DomainLayout {
                        id: s.id.clone(),
                        lo: s.lo,
                        hi: s.hi,
                        bands: s.bands.clone(),
                        intake_bins: bins(intake),
                        change_bins: bins(change),
                    }
                })
                .collect(),
            blocks: BlockLayout::all(l),
            sensitivity: l.sensitivity().patient,
            therapist_sensitivity: l.sensitivity().therapist,
        }
    }

    /// The domain `id`.
    pub fn domain(&self, id: &str) -> Option<&DomainLayout> {
        self.domains.iter().find(|d| d.id == id)
    }

    /// Decoded entries of block `name` of `values` (`None` when the block is unknown or the
    /// vector too short).
    pub fn decode(&self, values: &[i64], name: &str) -> Option<Vec<f64>> {
        BlockLayout::decode(&self.blocks, values, name)
    }
}

impl BlockLayout {
    /// Decoded entries of the block `name` of `blocks` in `values` (`None` when the block is
    /// unknown or the vector too short).
    pub fn decode(blocks: &[Self], values: &[i64], name: &str) -> Option<Vec<f64>> {
        let b = blocks.iter().find(|b| b.name == name)?;
        let len = b.groups.checked_mul(b.width)?;
        let entries = values.get(b.offset..b.offset.checked_add(len)?)?;
        Some(entries.iter().map(|v| *v as f64 / b.scale).collect())
    }
}

/// One domain's post-processed figures in a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainRelease {
    /// Domain id.
    pub domain: String,
    /// Episodes with pre and post (noisy, ≥ 0).
    #[serde(deserialize_with = "number_or_nan")]
    pub episodes: f64,
    /// Finished courses.
    #[serde(deserialize_with = "number_or_nan")]
    pub finished: f64,
    /// Finished courses at caseness at the start.
    #[serde(deserialize_with = "number_or_nan")]
    pub finished_at_caseness: f64,
    /// Reliable improvement / finished (`None`: suppressed).
    pub reliable_improvement_rate: Option<f64>,
    /// Reliable deterioration / finished.
    pub reliable_deterioration_rate: Option<f64>,
    /// Recovered / finished at caseness.
    pub recovery_rate: Option<f64>,
    /// Reliably recovered / finished at caseness.
    pub reliable_recovery_rate: Option<f64>,
    /// Intake score distribution.
    #[serde(default)]
    pub intake: Option<DistributionRelease>,
    /// Change (post − pre) distribution.
    #[serde(default)]
    pub change: Option<DistributionRelease>,
    /// Risk model coefficients by feature name.
    #[serde(default)]
    pub risk_model: Option<BTreeMap<String, f64>>,
    /// The coefficients refitted with the release's noise added again, in feature order.
    #[serde(default)]
    pub risk_model_replicates: Vec<Vec<f64>>,
    /// The SD release noise gives each coefficient, by feature name.
    #[serde(default)]
    pub risk_model_noise_sd: Option<BTreeMap<String, f64>>,
    /// Therapist variance components.
    #[serde(default)]
    pub therapist_variance: Option<VarianceRelease>,
    /// The SD the release noise gives τ².
    #[serde(default)]
    pub tau2_noise_sd: Option<f64>,
    /// Expected mean score per severity band (rows) and session (columns).
    #[serde(default)]
    pub expected_curves: Vec<Vec<Option<f64>>>,
    /// Figures withheld because noise dominates them.
    #[serde(default)]
    pub suppressed: Vec<String>,
}

/// Mean and quartiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DistributionRelease {
    /// Mean.
    pub mean: f64,
    /// 25th, 50th and 75th percentiles.
    pub quartiles: [f64; 3],
}

/// Therapist variance components of a release.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VarianceRelease {
    /// Therapists in the sums.
    pub therapists: u64,
    /// Between-therapist variance τ².
    pub tau2: f64,
    /// Within-therapist variance σ².
    pub sigma2: f64,
    /// τ² / (τ² + σ²).
    #[serde(deserialize_with = "number_or_nan")]
    pub icc: f64,
    /// Effective caseload n₀.
    #[serde(deserialize_with = "number_or_nan")]
    pub n0: f64,
    /// Mean residual.
    #[serde(deserialize_with = "number_or_nan")]
    pub mean_residual: f64,
}

impl DomainRelease {
    /// The risk model's coefficients in [`FEATURES`] order, when it has all of them.
    pub fn risk_coefficients(&self) -> Option<Vec<f64>> {
        let m = self.risk_model.as_ref()?;
        FEATURES.iter().map(|f| m.get(*f).copied()).collect()
    }
}

fn by_feature(values: &[f64]) -> BTreeMap<String, f64> {
    FEATURES
        .iter()
        .zip(values)
        .map(|(f, v)| (f.to_string(), *v))
        .collect()
}

impl From<&DomainSummary> for DomainRelease {
    fn from(s: &DomainSummary) -> Self {
        let distribution = |d: &super::Distribution| DistributionRelease {
            mean: d.mean,
            quartiles: d.quartiles,
        };
        let variance = |v: &VarianceComponents| VarianceRelease {
            therapists: v.therapists,
            tau2: v.tau2,
            sigma2: v.sigma2,
            icc: v.icc,
            n0: v.n0,
            mean_residual: v.mean,
        };
        Self {
            domain: s.id.clone(),
            episodes: s.episodes,
            finished: s.finished,
            finished_at_caseness: s.at_caseness,
            reliable_improvement_rate: s.rates.reliable_improvement,
            reliable_deterioration_rate: s.rates.reliable_deterioration,
            recovery_rate: s.rates.recovery,
            reliable_recovery_rate: s.rates.reliable_recovery,
            intake: s.intake.as_ref().map(distribution),
            change: s.change.as_ref().map(distribution),
            risk_model: s.risk.as_deref().map(by_feature),
            risk_model_replicates: s.risk_replicates.clone(),
            risk_model_noise_sd: s.risk_sd.as_deref().map(by_feature),
            therapist_variance: s.variance.as_ref().map(variance),
            tau2_noise_sd: s.tau2_sd,
            expected_curves: s.curves.clone(),
            suppressed: s.suppressed.clone(),
        }
    }
}

/// A number, or NaN where a writer put `null` (JSON has no NaN: serde writes it as `null`).
fn number_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
