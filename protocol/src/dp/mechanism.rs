//! Calibration and noise: the only file that imports opendp.

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use super::{Error, MAX_NUDGES, RHO_RANGE};

fn opendp_error(e: opendp::error::Error) -> Error {
    Error::OpenDp(e.to_string())
}

/// σ = Δ₂/√(2ρ): the discrete Gaussian scale that gives ρ-zCDP for L2 sensitivity Δ₂.
pub fn sigma(sensitivity: f64, rho: f64) -> Result<f64, Error> {
    check_release_rho(rho)?;
    if !(sensitivity.is_finite() && sensitivity > 0.0) {
        return Err(Error::Parameter(format!(
            "sensitivity must be positive, not {sensitivity}"
        )));
    }
    Ok(sensitivity / (2.0 * rho).sqrt())
}

fn check_rho(rho: f64) -> Result<(), Error> {
    if !(rho.is_finite() && rho > 0.0) {
        return Err(Error::Parameter(format!(
            "ρ must be positive and finite, not {rho}"
        )));
    }
    Ok(())
}

/// Checks that a mechanism may be calibrated for `rho` (within [`RHO_RANGE`]).
pub fn check_release_rho(rho: f64) -> Result<(), Error> {
    let (lo, hi) = RHO_RANGE;
    if !(rho.is_finite() && (lo..=hi).contains(&rho)) {
        return Err(Error::Parameter(format!(
            "ρ = {rho} is outside the range a release may have ({lo:e} to {hi})"
        )));
    }
    Ok(())
}

type Gaussian = Measurement<
    VectorDomain<AtomDomain<i64>>,
    L2Distance<f64>,
    ZeroConcentratedDivergence,
    Vec<i64>,
>;

fn gaussian(sigma: f64) -> Result<Gaussian, Error> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::Parameter(format!(
            "σ must be finite and ≥ 0, not {sigma}"
        )));
    }
    make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<f64>::default(),
        sigma,
        None,
    )
    .map_err(opendp_error)
}

/// ρ of the discrete Gaussian with scale `sigma` on L2 sensitivity `sensitivity`, from opendp's
/// privacy map (Δ²/(2σ²), computed in exact rationals and rounded up).
pub fn rho(sensitivity: f64, sigma: f64) -> Result<f64, Error> {
    gaussian(sigma)?.map(&sensitivity).map_err(opendp_error)
}

/// A node's noise share under secure aggregation with reconstruction threshold `t`:
/// σ/√(t − 1), so that any t − 1 shares carry variance ≥ σ² (P5). A release sums at least t
/// contributions, so whoever knows one of them (its own: a clinic, or the aggregator when it
/// contributes) still sees the others' sum with the full σ². Needs t ≥ 2.
pub fn share_sigma(sigma: f64, threshold: u32) -> Result<f64, Error> {
    if threshold < 2 {
        return Err(Error::Parameter(
            "a distributed release needs a threshold of at least 2".into(),
        ));
    }
    Ok(sigma / f64::from(threshold - 1).sqrt())
}

/// The ε of (ε, δ)-DP implied by ρ-zCDP, by opendp's conversion (Canonne, Kamath & Steinke 2020).
pub fn epsilon(rho: f64, delta: f64) -> Result<f64, Error> {
    if rho == 0.0 {
        return Ok(0.0);
    }
    check_rho(rho)?;
    if !(delta > 0.0 && delta < 1.0) {
        return Err(Error::Parameter(format!(
            "δ must be in (0, 1), not {delta}"
        )));
    }
    // A unit-scale Gaussian on sensitivity √(2ρ) (rounded up) has zCDP ≥ ρ; its profile gives ε.
    let measurement = make_zCDP_to_approxDP(gaussian(1.0)?).map_err(opendp_error)?;
    let profile = measurement
        .map(&(2.0 * rho).sqrt().next_up())
        .map_err(opendp_error)?;
    profile.epsilon(delta).map_err(opendp_error)
}

/// σ = Δ₂/√(2ρ), nudged up by ulps until opendp's map certifies at most `rho`, so the charged
/// cost never exceeds the requested one by rounding; with the certified ρ. Refuses ρ outside
/// [`RHO_RANGE`] before any work, and gives up after [`MAX_NUDGES`] nudges.
fn calibrate(sensitivity: f64, rho: f64) -> Result<(f64, f64), Error> {
    let mut total_sigma = sigma(sensitivity, rho)?;
    for _ in 0..MAX_NUDGES {
        let certified = self::rho(sensitivity, total_sigma)?;
        if certified <= rho {
            return Ok((total_sigma, certified));
        }
        total_sigma = total_sigma.next_up();
    }
    Err(Error::Parameter(format!(
        "σ for ρ = {rho} at sensitivity {sensitivity} could not be certified"
    )))
}

/// The discrete Gaussian mechanism for one release: scale and certified ρ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mechanism {
    /// Scale of the noise this node adds.
    pub sigma: f64,
    /// Scale of the noise in the released sum (equal to `sigma` for a central release).
    pub total_sigma: f64,
    /// ρ of the release, from opendp's privacy map at `total_sigma`.
    pub rho: f64,
    /// L2 sensitivity it was calibrated for.
    pub sensitivity: f64,
}

impl Mechanism {
    /// A central release: this node adds all the noise, σ = Δ₂/√(2ρ).
    pub fn central(sensitivity: f64, rho: f64) -> Result<Self, Error> {
        let (total_sigma, rho) = calibrate(sensitivity, rho)?;
        Ok(Self {
            sigma: total_sigma,
            total_sigma,
            rho,
            sensitivity,
        })
    }

    /// A distributed release (P5): any t − 1 of the nodes' shares carry σ = Δ₂/√(2ρ); this
    /// node adds σ/√(t − 1) ([`share_sigma`]).
    pub fn distributed(sensitivity: f64, rho: f64, threshold: u32) -> Result<Self, Error> {
        let (total_sigma, rho) = calibrate(sensitivity, rho)?;
        Ok(Self {
            sigma: share_sigma(total_sigma, threshold)?,
            total_sigma,
            rho,
            sensitivity,
        })
    }

    /// Noise SD of a sum of `contributions` shares (the release of a round they survived).
    pub fn sigma_of_sum(&self, contributions: usize) -> f64 {
        self.sigma * (contributions as f64).sqrt()
    }

    /// Draws `len` discrete Gaussian samples of scale `self.sigma` with opendp's exact sampler
    /// (the mechanism applied to a zero vector: its output is exactly the noise).
    pub fn noise(&self, len: usize) -> Result<Vec<i64>, Error> {
        gaussian(self.sigma)?
            .invoke(&vec![0; len])
            .map_err(opendp_error)
    }

    /// Adds noise drawn beforehand (see [`Mechanism::noise`]) to an encoded vector.
    pub fn apply(values: &mut [i64], noise: &[i64]) -> Result<(), Error> {
        if values.len() != noise.len() {
            return Err(Error::Parameter("noise and values differ in length".into()));
        }
        for (v, z) in values.iter_mut().zip(noise) {
            *v = v
                .checked_add(*z)
                .ok_or_else(|| Error::Overflow("value plus noise".into()))?;
        }
        Ok(())
    }
}
