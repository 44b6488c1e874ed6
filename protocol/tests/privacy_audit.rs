//! Empirical privacy audit of the discrete Gaussian mechanism as `protocol::dp` calibrates it.
//!
//! Two neighbouring datasets whose encoded values differ by exactly the sensitivity Δ (the worst
//! case) are released many times each. For a family of threshold events S = {output ≥ c}, the
//! Clopper–Pearson bounds on P[M(D′) ∈ S] (lower) and P[M(D) ∈ S] (upper) give a lower bound on
//! the privacy loss, ε ≥ ln((p − δ)/q), that holds with 99 % confidence over all thresholds
//! (Bonferroni). It must not exceed the ε the ledger claims for that release. The same audit on a
//! mechanism with a quarter of the noise must exceed the claim: the audit has the power to catch
//! a miscalibration.

use protocol::dp::{self, DEFAULT_DELTA, Mechanism};
use statrs::distribution::{Beta, ContinuousCDF};

/// Δ in encoded units; large enough that the discrete Gaussian is close to the continuous one.
const SENSITIVITY: f64 = 10.0;
const RHO: f64 = 0.5;

/// Draws `n` releases of a one-entry vector holding `value` with noise of scale `sigma`.
fn releases(value: i64, sigma: f64, n: usize) -> Vec<i64> {
    let m = Mechanism {
        sigma,
        total_sigma: sigma,
        rho: dp::rho(SENSITIVITY, sigma).unwrap(),
        sensitivity: SENSITIVITY,
    };
    let mut noise = m.noise(n).unwrap();
    for z in &mut noise {
        *z += value;
    }
    noise
}

/// Clopper–Pearson two-sided interval for `x` successes in `n` at confidence 1 − alpha.
fn clopper_pearson(x: usize, n: usize, alpha: f64) -> (f64, f64) {
    let (x, n) = (x as f64, n as f64);
    let lo = if x == 0.0 {
        0.0
    } else {
        Beta::new(x, n - x + 1.0).unwrap().inverse_cdf(alpha / 2.0)
    };
    let hi = if x == n {
        1.0
    } else {
        Beta::new(x + 1.0, n - x)
            .unwrap()
            .inverse_cdf(1.0 - alpha / 2.0)
    };
    (lo, hi)
}

/// The largest ε lower bound over thresholds c = 0, Δ/2, …, 4Δ, in both directions.
fn empirical_epsilon(sigma: f64, n: usize) -> f64 {
    let d = releases(0, sigma, n);
    let d_prime = releases(SENSITIVITY as i64, sigma, n);
    let thresholds: Vec<i64> = (0..=8).map(|i| i * SENSITIVITY as i64 / 2).collect();
    let alpha = 0.01 / (2 * thresholds.len()) as f64;
    let mut best = f64::NEG_INFINITY;
    for &c in &thresholds {
        // S = {y ≥ c} favours D′; S = {y < c − Δ}... by symmetry use {y ≤ Δ − c} for D.
        for (a, b, event) in [
            (
                &d_prime,
                &d,
                Box::new(move |y: i64| y >= c) as Box<dyn Fn(i64) -> bool>,
            ),
            (
                &d,
                &d_prime,
                Box::new(move |y: i64| y <= SENSITIVITY as i64 - c),
            ),
        ] {
            let p = a.iter().filter(|y| event(**y)).count();
            let q = b.iter().filter(|y| event(**y)).count();
            let (p_lo, _) = clopper_pearson(p, n, alpha);
            let (_, q_hi) = clopper_pearson(q, n, alpha);
            if p_lo > DEFAULT_DELTA {
                best = best.max(((p_lo - DEFAULT_DELTA) / q_hi).ln());
            }
        }
    }
    best
}

#[test]
fn empirical_privacy_loss_stays_below_the_claimed_epsilon() {
    let mechanism = Mechanism::central(SENSITIVITY, RHO).unwrap();
    let claimed = dp::epsilon(mechanism.rho, DEFAULT_DELTA).unwrap();
    let measured = empirical_epsilon(mechanism.sigma, 60_000);
    eprintln!("audit: claimed ε {claimed:.3}, empirical lower bound {measured:.3}");
    assert!(
        measured > 1.0,
        "the audit should find real leakage at ρ = {RHO} (lower bound {measured})"
    );
    assert!(
        measured <= claimed,
        "empirical ε lower bound {measured} exceeds the claimed ε {claimed}"
    );
}

#[test]
fn the_audit_catches_a_mechanism_with_too_little_noise() {
    let mechanism = Mechanism::central(SENSITIVITY, RHO).unwrap();
    let claimed = dp::epsilon(mechanism.rho, DEFAULT_DELTA).unwrap();
    let measured = empirical_epsilon(mechanism.sigma / 4.0, 40_000);
    eprintln!("audit at σ/4: claimed ε {claimed:.3}, empirical lower bound {measured:.3}");
    assert!(
        measured > claimed,
        "a quarter of the noise should be caught: lower bound {measured}, claim {claimed}"
    );
}
