//! t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2^61 − 1).
//!
//! A secret is cut into five limbs of at most 7 bytes (56 bits < p), and each limb is shared
//! with its own random polynomial of degree t − 1; a share is the five evaluations at a
//! participant's x (its index + 1, never 0). Any t shares with distinct x give the secret back
//! by Lagrange interpolation at 0; fewer reveal nothing about it (information-theoretically).
//! Coefficients come from the caller's CSPRNG. Field arithmetic is on u128 with the Mersenne
//! reduction; inverses by Fermat's little theorem.

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

/// The field modulus, the Mersenne prime 2^61 − 1.
pub const P: u64 = (1 << 61) - 1;

/// Limbs per 32-byte secret.
pub const LIMBS: usize = 5;
const LIMB_BYTES: usize = 7;

/// One participant's share of one secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The evaluation point (participant index + 1).
    pub x: u32,
    /// The polynomial values at `x`, one per limb, each < [`P`].
    pub y: [u64; LIMBS],
}

/// Why shares could not be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// Fewer shares than the threshold.
    #[error("{have} shares, {need} needed")]
    TooFew {
        /// Shares given.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// Two shares at the same point, a point 0, or a value outside the field.
    #[error("malformed share set")]
    Malformed,
    /// The interpolated limbs do not form a 32-byte secret (the shares are inconsistent).
    #[error("the shares do not interpolate to a secret")]
    Inconsistent,
}

fn reduce(x: u128) -> u64 {
    // x < 2^122: fold twice.
    let folded = (x & u128::from(P)) + (x >> 61);
    let folded = (folded & u128::from(P)) + (folded >> 61);
    let r = folded as u64;
    if r >= P { r - P } else { r }
}

fn mul(a: u64, b: u64) -> u64 {
    reduce(u128::from(a) * u128::from(b))
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}

fn pow(mut base: u64, mut exp: u64) -> u64 {
    let mut acc = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = mul(acc, base);
        }
        base = mul(base, base);
        exp >>= 1;
    }
    acc
}

fn inv(a: u64) -> u64 {
    pow(a, P - 2)
}

fn limbs(secret: &[u8; 32]) -> [u64; LIMBS] {
    let mut out = [0; LIMBS];
    for (i, chunk) in secret.chunks(LIMB_BYTES).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        out[i] = u64::from_le_bytes(b);
    }
    out
}

fn unlimbs(limbs: &[u64; LIMBS]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(LIMB_BYTES).enumerate() {
        let b = limbs[i].to_le_bytes();
        if b[chunk.len()..].iter().any(|x| *x != 0) {
            return None;
        }
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Some(out)
}

fn random_element(rng: &mut impl CryptoRngCore) -> u64 {
    loop {
        let v = rng.next_u64() >> 3; // 61 bits
        if v < P {
            return v;
        }
    }
}

/// Shares `secret` among the points `xs` (distinct, non-zero) so that any `threshold` of
/// them recover it.
///
/// # Panics
/// If `threshold` is 0 or a point is 0: callers pass participant indices + 1 and validated
/// thresholds.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u32],
    rng: &mut impl CryptoRngCore,
) -> Vec<Share> {
    assert!(threshold >= 1, "threshold must be at least 1");
    assert!(xs.iter().all(|x| *x != 0), "share points must be non-zero");
    let secret = limbs(secret);
    // coefficients[limb][k]: coefficient of x^k; k = 0 is the secret limb.
    let coefficients: Vec<Vec<u64>> = secret
        .iter()
        .map(|s| {
            std::iter::once(*s)
                .chain((1..threshold).map(|_| random_element(rng)))
                .collect()
        })
        .collect();
    xs.iter()
        .map(|&x| {
            let mut y = [0; LIMBS];
            for (l, c) in coefficients.iter().enumerate() {
                // Horner's rule.
                y[l] = c
                    .iter()
                    .rev()
                    .fold(0, |acc, k| add(mul(acc, u64::from(x)), *k));
            }
            Share { x, y }
        })
        .collect()
}

/// Recovers the secret from at least `threshold` shares (the first `threshold` are used).
pub fn combine(shares: &[Share], threshold: usize) -> Result<[u8; 32], ShamirError> {
    if shares.len() < threshold || threshold == 0 {
        return Err(ShamirError::TooFew {
            have: shares.len(),
            need: threshold,
        });
    }
    let shares = &shares[..threshold];
    for (i, s) in shares.iter().enumerate() {
        if s.x == 0
            || u64::from(s.x) >= P
            || s.y.iter().any(|v| *v >= P)
            || shares[..i].iter().any(|o| o.x == s.x)
        {
            return Err(ShamirError::Malformed);
        }
    }
    // Lagrange basis at 0: λ_i = Π_{j≠i} x_j / (x_j − x_i).
    let lambdas: Vec<u64> = shares
        .iter()
        .map(|si| {
            let xi = u64::from(si.x);
            let (num, den) =
                shares
                    .iter()
                    .filter(|sj| sj.x != si.x)
                    .fold((1, 1), |(num, den), sj| {
                        let xj = u64::from(sj.x);
                        (mul(num, xj), mul(den, sub(xj, xi)))
                    });
            mul(num, inv(den))
        })
        .collect();
    let mut out = [0; LIMBS];
    for (l, limb) in out.iter_mut().enumerate() {
        *limb = shares
            .iter()
            .zip(&lambdas)
            .fold(0, |acc, (s, lambda)| add(acc, mul(s.y[l], *lambda)));
    }
    unlimbs(&out).ok_or(ShamirError::Inconsistent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(P - 1, P - 1), 1); // (−1)² = 1
        assert_eq!(add(P - 1, 1), 0);
        assert_eq!(sub(0, 1), P - 1);
        for a in [1, 2, 3, 12_345, P - 2] {
            assert_eq!(mul(a, inv(a)), 1);
        }
    }

    #[test]
    fn hand_computed_line() {
        // Threshold 2: f(x) = s + a·x. Two points give s back; one does not suffice.
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let secret = [7u8; 32];
        let shares = split(&secret, 2, &[1, 2, 3], &mut rng);
        for l in 0..LIMBS {
            // Points on a line: f(3) − f(2) = f(2) − f(1).
            assert_eq!(
                sub(shares[2].y[l], shares[1].y[l]),
                sub(shares[1].y[l], shares[0].y[l])
            );
        }
        assert_eq!(combine(&shares[1..], 2), Ok(secret));
        assert_eq!(
            combine(&shares[..1], 2),
            Err(ShamirError::TooFew { have: 1, need: 2 })
        );
    }

    #[test]
    fn malformed_sets_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let shares = split(&[1; 32], 2, &[1, 2], &mut rng);
        assert_eq!(
            combine(&[shares[0], shares[0]], 2),
            Err(ShamirError::Malformed)
        );
        let mut bad = shares[1];
        bad.y[0] = P;
        assert_eq!(combine(&[shares[0], bad], 2), Err(ShamirError::Malformed));
    }

    proptest! {
        #[test]
        fn any_threshold_subset_recovers(
            secret in any::<[u8; 32]>(),
            n in 1usize..12,
            t_frac in 0.0f64..1.0,
            seed in any::<u64>(),
            pick in any::<u64>(),
        ) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let xs: Vec<u32> = (1..=n as u32).collect();
            let mut shares = split(&secret, t, &xs, &mut rng);
            // A pseudo-random subset order.
            let mut r = ChaCha20Rng::seed_from_u64(pick);
            for i in (1..shares.len()).rev() {
                shares.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(combine(&shares[..t], t), Ok(secret));
            if t > 1 {
                // t − 1 shares interpolated as if the threshold were t − 1 give a wrong value
                // (with overwhelming probability).
                prop_assert_ne!(combine(&shares[..t - 1], t - 1), Ok(secret));
            }
        }
    }
}
