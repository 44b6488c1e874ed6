//! Differential privacy: release vectors with declared bounds, their sensitivity, calibration
//! and discrete Gaussian noise (DESIGN.md §2 P2–P5, §7).
//!
//! This is the only module that imports opendp, and the only source of noise in the codebase.
//!
//! A release is a [`Layout`]: named [`Block`]s (counts, histograms, clipped sums, sums of
//! products, aggregates). Each block declares how far one *episode* can move each of its entries
//! (its clipping bounds); a patient contributes at most `max_episodes` episodes to each block, so
//! the per-patient bound of a block is `max_episodes` times the per-episode one. The vector's L2
//! sensitivity is derived from those bounds in one function, [`Layout::new`], exactly, in integer
//! units: every block is encoded as fixed-point integers with its own scale, chosen so that the
//! block's share of the total sensitivity follows its weight. The [`Encoder`] clips, rounds and
//! counts contributions per patient, so a caller cannot exceed the declared bounds.
//!
//! Calibration is zero-concentrated DP: σ = Δ₂/√(2ρ) ([`sigma`]); ρ for a σ comes from opendp's
//! privacy map of the discrete Gaussian ([`rho`]); a node's share under secure aggregation with
//! threshold t is σ/√(t − 1) ([`share_sigma`]), so that the t − 1 *other* contributions of any
//! release alone carry σ²: a participant who subtracts its own contribution (the aggregator
//! included, when it contributes) still faces the full noise. ρ converts to (ε, δ) by opendp's
//! conversion ([`epsilon`]). ρ is accepted only within [`RHO_RANGE`]. [`Mechanism::noise`] draws discrete Gaussian noise with opendp's exact sampler,
//! before any data-dependent work (timing).

mod block;
mod layout;
mod mechanism;

pub use block::{Block, BlockKind};
pub use layout::{Encoder, Layout, Sensitivity};
pub use mechanism::{Mechanism, check_release_rho, epsilon, rho, share_sigma, sigma};

/// The δ at which ρ is shown as (ε, δ) unless configured otherwise.
pub const DEFAULT_DELTA: f64 = 1e-6;

/// Every layout is scaled so that its L2 sensitivity is close to this many integer units (2^24):
/// fine enough that rounding adds far below 1 % to the noise variance, coarse enough that sums
/// over 2^32 patients stay far from wrap-around (see [`Layout::check_capacity`]).
pub const TARGET_SENSITIVITY: f64 = 16_777_216.0;

/// Values must stay below this magnitude, noise included, so that a sum of encoded vectors never
/// wraps modulo 2^64 (one bit of headroom for the sign and one for the sum of clinics).
pub const MAX_MAGNITUDE: f64 = 4_611_686_018_427_387_904.0; // 2^62

/// Noise tail kept clear of [`MAX_MAGNITUDE`]: P(|Z| > 8σ) < 2^-40 for the Gaussian.
const TAIL_SIGMAS: f64 = 8.0;

/// The ρ a mechanism may be calibrated for: below 10^-6 the noise swamps any count a network
/// could hold; above 10 (ε ≈ 30 at δ = 10^-6) nothing is protected, and far above it the
/// calibration itself stops being meaningful in floating point.
pub const RHO_RANGE: (f64, f64) = (1e-6, 10.0);

/// Most ulp nudges of σ while certifying ρ (a handful are ever needed; see
/// [`Mechanism::distributed`]).
const MAX_NUDGES: usize = 64;

/// Largest magnitude a block bound may declare, and smallest non-zero one: beyond these the
/// fixed-point scale of the block cannot be represented.
const BOUND_RANGE: (f64, f64) = (1e-12, 1e12);

/// Errors of the privacy layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A privacy parameter is out of range.
    #[error("invalid privacy parameter: {0}")]
    Parameter(String),
    /// A block is ill-formed or was fed values it cannot take.
    #[error("block {block:?}: {reason}")]
    Block {
        /// The block's name.
        block: String,
        /// What is wrong.
        reason: String,
    },
    /// The encoded vector could wrap around.
    #[error("the release vector could overflow: {0}")]
    Overflow(String),
    /// opendp refused (a bug or an out-of-range parameter).
    #[error("opendp: {0}")]
    OpenDp(String),
}

#[cfg(test)]
mod tests;
