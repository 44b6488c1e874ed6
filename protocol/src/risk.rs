//! The risk model: expected post score from the intake score and case mix, fitted by ridge
//! least squares from sufficient statistics (XᵀX, Xᵀy, yᵀy, n).
//!
//! Sufficient statistics add up, so the same [`SuffStats::fit`] fits one clinic's model from its
//! own episodes and, later, the network's model from securely aggregated sums.

use nalgebra::{DMatrix, DVector};
use thiserror::Error;

/// Why a model could not be fitted.
#[derive(Debug, Error, PartialEq)]
pub enum Error {
    /// Fewer observations than parameters.
    #[error("risk model needs at least {needed} episodes, has {have}")]
    TooFewObservations {
        /// Observations required (the number of features plus one).
        needed: u64,
        /// Observations available.
        have: u64,
    },
    /// The normal equations are singular even with the ridge.
    #[error("risk model normal equations are singular")]
    Singular,
    /// Statistics of different shapes were combined.
    #[error("sufficient statistics have {expected} features, got {got}")]
    Shape {
        /// Features expected.
        expected: usize,
        /// Features given.
        got: usize,
    },
}

/// Sufficient statistics of a linear regression with `p` features (the first is usually the
/// intercept, a constant 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SuffStats {
    p: usize,
    n: u64,
    /// Row-major p × p, upper triangle (j ≥ i) only.
    xtx: Vec<f64>,
    xty: Vec<f64>,
    yty: f64,
}

impl SuffStats {
    /// Empty statistics for `p` features.
    pub fn new(p: usize) -> Self {
        Self {
            p,
            n: 0,
            xtx: vec![0.0; p * p],
            xty: vec![0.0; p],
            yty: 0.0,
        }
    }

    /// Statistics from sums computed elsewhere (e.g. a DP release): `xtx_upper` is the upper
    /// triangle of XᵀX, row-major, p(p+1)/2 entries; `n` the number of observations.
    pub fn from_sums(
        p: usize,
        n: u64,
        xtx_upper: &[f64],
        xty: &[f64],
        yty: f64,
    ) -> Result<Self, Error> {
        if xtx_upper.len() != p * (p + 1) / 2 || xty.len() != p {
            return Err(Error::Shape {
                expected: p * (p + 1) / 2,
                got: xtx_upper.len(),
            });
        }
        let mut s = Self::new(p);
        let mut k = 0;
        for i in 0..p {
            for j in i..p {
                s.xtx[i * p + j] = xtx_upper[k];
                k += 1;
            }
        }
        s.xty.copy_from_slice(xty);
        s.yty = yty;
        s.n = n;
        Ok(s)
    }

    /// Adds one observation.
    pub fn add(&mut self, x: &[f64], y: f64) -> Result<(), Error> {
        if x.len() != self.p {
            return Err(Error::Shape {
                expected: self.p,
                got: x.len(),
            });
        }
        // Only the upper triangle is accumulated; `fit` mirrors it.
        for i in 0..self.p {
            self.xty[i] += x[i] * y;
            for j in i..self.p {
                self.xtx[i * self.p + j] += x[i] * x[j];
            }
        }
        self.yty += y * y;
        self.n += 1;
        Ok(())
    }

    /// Adds another set of statistics (e.g. another clinic's).
    pub fn merge(&mut self, other: &SuffStats) -> Result<(), Error> {
        if other.p != self.p {
            return Err(Error::Shape {
                expected: self.p,
                got: other.p,
            });
        }
        self.xtx
            .iter_mut()
            .zip(&other.xtx)
            .for_each(|(a, b)| *a += b);
        self.xty
            .iter_mut()
            .zip(&other.xty)
            .for_each(|(a, b)| *a += b);
        self.yty += other.yty;
        self.n += other.n;
        Ok(())
    }

    /// Observations added.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Fits β minimising ‖y − Xβ‖² + ridge·‖β₁..‖² (the first coefficient, the intercept, is
    /// not penalised). Cholesky on the normal equations, LU if that fails.
    pub fn fit(&self, ridge: f64) -> Result<RiskModel, Error> {
        let p = self.p;
        if self.n < p as u64 + 1 {
            return Err(Error::TooFewObservations {
                needed: p as u64 + 1,
                have: self.n,
            });
        }
        let xtx = DMatrix::from_fn(p, p, |i, j| self.xtx[i.min(j) * p + i.max(j)]);
        let mut a = xtx.clone();
        for i in 1..p {
            a[(i, i)] += ridge;
        }
        let b = DVector::from_column_slice(&self.xty);
        let beta = match a.clone().cholesky() {
            Some(c) => c.solve(&b),
            None => a.lu().solve(&b).ok_or(Error::Singular)?,
        };
        if beta.iter().any(|v| !v.is_finite()) {
            return Err(Error::Singular);
        }
        // RSS = yᵀy − 2βᵀXᵀy + βᵀXᵀXβ.
        let rss = (self.yty - 2.0 * beta.dot(&b) + beta.dot(&(&xtx * &beta))).max(0.0);
        let df = (self.n - p as u64).max(1) as f64;
        Ok(RiskModel {
            beta: beta.iter().copied().collect(),
            n: self.n,
            residual_sd: (rss / df).sqrt(),
        })
    }
}

/// The full symmetric p × p matrix, row-major, of a packed upper triangle (row-major,
/// p(p + 1)/2 entries, as sum-of-products blocks hold XᵀX).
pub(crate) fn symmetric(p: usize, upper: &[f64]) -> Vec<f64> {
    let mut s = vec![0.0; p * p];
    let mut k = 0;
    for i in 0..p {
        for j in i..p {
            s[i * p + j] = upper[k];
            s[j * p + i] = upper[k];
            k += 1;
        }
    }
    s
}

/// A fitted risk model.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskModel {
    /// Coefficients, one per feature.
    pub beta: Vec<f64>,
    /// Observations it was fitted on.
    pub n: u64,
    /// Residual standard deviation (RSS / (n − p)).
    pub residual_sd: f64,
}

impl RiskModel {
    /// The expected outcome for features `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.beta.iter().zip(x).map(|(b, x)| b * x).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random design (no RNG dependency in `protocol`).
    fn design(n: usize, p: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let xs: Vec<Vec<f64>> = (0..n)
            .map(|_| {
                std::iter::once(1.0)
                    .chain((1..p).map(|j| 10.0 * next() + j as f64))
                    .collect()
            })
            .collect();
        let ys = xs
            .iter()
            .map(|x| 3.0 + 0.6 * x[1] - 0.2 * x[2] + 2.0 * next())
            .collect();
        (xs, ys)
    }

    #[test]
    fn sufficient_statistics_equal_a_direct_least_squares_fit() {
        let (xs, ys) = design(500, 5);
        let mut s = SuffStats::new(5);
        for (x, y) in xs.iter().zip(&ys) {
            s.add(x, *y).unwrap();
        }
        let model = s.fit(0.0).unwrap();
        // Direct: SVD of the design matrix itself (no normal equations).
        let x = DMatrix::from_fn(xs.len(), 5, |i, j| xs[i][j]);
        let y = DVector::from_column_slice(&ys);
        let direct = x.clone().svd(true, true).solve(&y, 1e-14).unwrap();
        for (a, b) in model.beta.iter().zip(direct.iter()) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
        let resid = &y - &x * &direct;
        let sd = (resid.dot(&resid) / (500.0 - 5.0)).sqrt();
        assert!((model.residual_sd - sd).abs() < 1e-9);
    }

    #[test]
    fn merged_statistics_fit_the_pooled_data() {
        let (xs, ys) = design(300, 3);
        let (mut a, mut b, mut all) = (SuffStats::new(3), SuffStats::new(3), SuffStats::new(3));
        for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
            if i % 3 == 0 {
                a.add(x, *y).unwrap()
            } else {
                b.add(x, *y).unwrap()
            }
            all.add(x, *y).unwrap();
        }
        a.merge(&b).unwrap();
        assert_eq!(a.n(), 300);
        let (m1, m2) = (a.fit(1e-6).unwrap(), all.fit(1e-6).unwrap());
        for (x, y) in m1.beta.iter().zip(&m2.beta) {
            assert!((x - y).abs() < 1e-9);
        }
    }

    #[test]
    fn ridge_rescues_a_constant_covariate_and_errors_are_clear() {
        let mut s = SuffStats::new(3);
        for i in 0..20 {
            s.add(&[1.0, i as f64, 0.0], 2.0 * i as f64).unwrap();
        }
        assert!(s.fit(0.0).is_err() || s.fit(0.0).unwrap().beta[2].abs() < 1e-6);
        let m = s.fit(1e-6).unwrap();
        assert!((m.beta[1] - 2.0).abs() < 1e-6 && m.beta[2].abs() < 1e-9);
        assert_eq!(
            SuffStats::new(3).fit(0.0),
            Err(Error::TooFewObservations { needed: 4, have: 0 })
        );
        assert_eq!(
            s.add(&[1.0], 0.0),
            Err(Error::Shape {
                expected: 3,
                got: 1
            })
        );
    }
}
