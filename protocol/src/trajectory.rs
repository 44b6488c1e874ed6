//! Nearest-neighbour expected trajectories and on-track signals (DOMAIN.md §4.3, §5): what
//! similar past patients of this clinic scored session by session, and where this patient
//! stands against them. Pure: the node loads the pool and the patient, this computes.
//!
//! **Method** (parameters in [`Settings`]):
//! 1. *Features.* Each pool episode and the patient carry the same list of [`Feature`]s
//!    (intake on the target instrument with weight 2, other domains' intakes, case mix), each
//!    possibly missing. The distance uses the features the patient has **and** at least half
//!    the pool has; the others are left out and listed in [`Expectation::left_out`]. A pool
//!    episode missing a used feature is given the pool mean (z = 0) for it, and counted in
//!    [`Expectation::imputed`]. Missing is never read as zero on the raw scale.
//! 2. *Standardisation and metric.* Each used feature is z-standardised on the pool (mean and
//!    SD of the pool's present values; a feature without spread is left out). With more than
//!    three features the distance is Mahalanobis with the ridge-regularised covariance of the
//!    z-scores, d² = Δᵀ W (S + λI)⁻¹ W Δ, W the diagonal of feature weights (the weight counts
//!    after whitening: Mahalanobis distance alone is blind to rescaling); with three or fewer,
//!    Euclidean on the weighted z-scores. Both are computed as Euclidean distance after one
//!    linear map of every row (the Cholesky factor), so the search is exact.
//! 3. *Neighbours.* Exact k nearest, k = clamp(round(5 % of the pool), 50, 300), never more
//!    than the pool; ties broken by pool order. Each weighs 1/(1 + d).
//! 4. *Expected curve.* At each session t = 1 … 20 with at least 30 neighbours scored there:
//!    the weighted P25, P50, P75 and P90 of their scores (type-1 weighted quantiles: the
//!    smallest score whose cumulative weight share reaches q), on the instrument's "worse"
//!    orientation (P90 is the worse tail: the 10th percentile for higher-is-better
//!    instruments). The median is smoothed by a weighted least-squares fit y = a + b·ln t over
//!    the supported sessions (weights: neighbours scored there), kept inside [P25, P75]. After
//!    the last supported session the curve stays at its last values (a plateau), never
//!    extrapolated.
//! 5. *Signals* ([`signal`]), per observed session t ≥ 2: **red** when reliably deteriorated
//!    since intake or beyond P90; else **grey** without an expectation at t; **white** when no
//!    longer at caseness; **yellow** between P75 and P90; **green** within P75. Safety
//!    ([`safety`]) is separate and immediate.
//! 6. *Atypical.* The patient's distance to the pool centre (the origin after standardisation)
//!    beyond the 97.5th percentile of the pool's own distances to it.
//!
//! The dynamic variant ([`Query::early`]) adds the patient's scores at sessions 2–3 as features
//! once they exist; pool episodes without those sessions are then not candidates (a
//! within-treatment score is not imputed).

pub mod validation;

use nalgebra::{DMatrix, DVector};

use crate::instrument::{Direction, Instrument};

/// Parameters of the method (defaults as in the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// k as a share of the pool.
    pub k_share: f64,
    /// Fewest neighbours.
    pub k_min: usize,
    /// Most neighbours.
    pub k_max: usize,
    /// Neighbours with a score at a session needed for an expectation there.
    pub min_at_session: usize,
    /// Last session with an expectation of its own (later ones plateau).
    pub max_session: u32,
    /// Ridge λ added to the covariance of the z-scores.
    pub ridge: f64,
    /// Most features for which the Euclidean metric is used instead of Mahalanobis.
    pub euclidean_max_features: usize,
    /// Share of the pool that must have a feature for it to be used.
    pub min_feature_share: f64,
    /// Pool percentile of the distance to the centre beyond which a patient is atypical.
    pub atypical_percentile: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            k_share: 0.05,
            k_min: 50,
            k_max: 300,
            min_at_session: 30,
            max_session: 20,
            ridge: 0.01,
            euclidean_max_features: 3,
            min_feature_share: 0.5,
            atypical_percentile: 0.975,
        }
    }
}

/// One feature of the distance.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Its name in outputs ("intake", "age", …).
    pub name: String,
    /// Its weight (2 for the intake on the target instrument, 1 otherwise).
    pub weight: f64,
}

/// A closed past episode of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEpisode {
    /// Values of the pool's features, in order; `None` when missing.
    pub features: Vec<Option<f64>>,
    /// Its scores on the target instrument as (session, score), sessions from 1.
    pub scores: Vec<(u32, f64)>,
}

impl PoolEpisode {
    fn score_at(&self, t: u32) -> Option<f64> {
        self.scores.iter().find(|(s, _)| *s == t).map(|(_, y)| *y)
    }
}

/// The patient whose expectation is wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Values of the pool's features, in order.
    pub features: Vec<Option<f64>>,
    /// Dynamic variant: the patient's scores at sessions 2–3, as (session, score).
    pub early: Vec<(u32, f64)>,
}

/// The expected scores at one session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Session number.
    pub session: u32,
    /// Neighbours with a score there (0 on the plateau).
    pub n: usize,
    /// Weighted quartiles and 90th percentile, in the worse direction (P90 the worse tail).
    pub p25: f64,
    /// Median of the neighbours' scores.
    pub p50: f64,
    /// The smoothed median (y = a + b·ln t, within [P25, P75]): the expected score.
    pub expected: f64,
    /// Upper quartile (worse side).
    pub p75: f64,
    /// The failure boundary (worse side).
    pub p90: f64,
}

/// Which metric the distance used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Ridge-regularised Mahalanobis on z-scores.
    Mahalanobis,
    /// Euclidean on weighted z-scores (three features or fewer).
    Euclidean,
}

/// The expectation for one patient on one instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Sessions 1 … last supported, each with its band.
    pub bands: Vec<Band>,
    /// The log-linear fit of the median: (a, b).
    pub fit: Option<(f64, f64)>,
    /// Pool episodes that were candidates.
    pub candidates: usize,
    /// The neighbours as (index into the pool, distance), nearest first.
    pub nearest: Vec<(usize, f64)>,
    /// Neighbours used (k).
    pub neighbours: usize,
    /// Names of the features the distance used.
    pub used: Vec<String>,
    /// Features left out, with why.
    pub left_out: Vec<(String, &'static str)>,
    /// Neighbours' values that were missing and given the pool mean.
    pub imputed: usize,
    /// The metric.
    pub metric: Metric,
    /// The patient is further from the pool centre than the pool's 97.5th percentile.
    pub atypical: bool,
}

impl Expectation {
    /// The band that applies at session `t`: its own, or the plateau after the last one.
    pub fn at(&self, t: u32) -> Option<Band> {
        if t == 0 {
            return None;
        }
        self.bands
            .iter()
            .find(|b| b.session == t)
            .or_else(|| self.bands.last().filter(|b| t > b.session))
            .map(|b| Band {
                session: t,
                n: if b.session == t { b.n } else { 0 },
                ..*b
            })
    }
}

/// Why no expectation could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Too few candidates for the minimum number of neighbours at a session.
    #[error("{candidates} similar past episodes; at least {needed} are needed")]
    TooFew {
        /// Candidates in the pool.
        candidates: usize,
        /// The minimum.
        needed: usize,
    },
    /// The patient's features do not match the pool's.
    #[error("the patient has {given} features, the pool {expected}")]
    Features {
        /// Given.
        given: usize,
        /// Expected.
        expected: usize,
    },
}

/// Score on the "worse is higher" scale of `direction` (and back: the map is its own inverse).
pub fn worse_up(direction: Direction, y: f64) -> f64 {
    match direction {
        Direction::LowerIsBetter => y,
        Direction::HigherIsBetter => -y,
    }
}

/// k for a pool of `n` candidates.
pub fn k_for(n: usize, s: &Settings) -> usize {
    let k = (s.k_share * n as f64).round() as usize;
    k.clamp(s.k_min, s.k_max).min(n)
}

/// The type-1 weighted quantile: the smallest value whose cumulative weight share reaches `q`.
/// `points` are (value, weight > 0); `None` when empty.
pub fn weighted_quantile(points: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(v, w)| v.is_finite() && *w > 0.0)
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = sorted.iter().map(|(_, w)| w).sum();
    let mut cumulative = 0.0;
    for (v, w) in &sorted {
        cumulative += w;
        // A relative tolerance so that q = 0.5 of two equal weights lands on the first.
        if cumulative >= q * total * (1.0 - 1e-12) {
            return Some(*v);
        }
    }
    sorted.last().map(|(v, _)| *v)
}

/// Weighted least squares of y = a + b·ln t over (t, y, weight); `None` with fewer than two
/// distinct sessions.
pub fn log_linear_fit(points: &[(u32, f64, f64)]) -> Option<(f64, f64)> {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (t, y, w) in points {
        let x = f64::from(*t).ln();
        sw += w;
        sx += w * x;
        sy += w * y;
        sxx += w * x * x;
        sxy += w * x * y;
    }
    let denominator = sw * sxx - sx * sx;
    if sw <= 0.0 || denominator.abs() < 1e-12 * sw * sw.max(1.0) {
        return None;
    }
    let b = (sw * sxy - sx * sy) / denominator;
    Some(((sy - b * sx) / sw, b))
}

/// The nearest neighbours of a patient among pool episodes, by features alone: the first
/// half of [`expect`], for callers that fetch only the neighbours' scores afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbourhood {
    /// Pool episodes that were candidates.
    pub candidates: usize,
    /// The neighbours as (index into the pool, distance), nearest first.
    pub nearest: Vec<(usize, f64)>,
    /// Names of the features the distance used.
    pub used: Vec<String>,
    /// Features left out, with why.
    pub left_out: Vec<(String, &'static str)>,
    /// Neighbours' values that were missing and given the pool mean.
    pub imputed: usize,
    /// The metric.
    pub metric: Metric,
    /// The patient is further from the pool centre than the pool's 97.5th percentile.
    pub atypical: bool,
}

/// The pool's feature values: episode `row`'s value of feature `feature`, `None` when missing.
/// Rows as slices (`[Vec<Option<f64>>]`) are one; a caller whose values live in columns
/// implements it over them rather than copying them into rows.
pub trait Table {
    /// Pool episodes.
    fn rows(&self) -> usize;
    /// Episode `row`'s value of feature `feature`.
    fn value(&self, row: usize, feature: usize) -> Option<f64>;
}

impl<R: AsRef<[Option<f64>]>> Table for [R] {
    fn rows(&self) -> usize {
        self.len()
    }

    fn value(&self, row: usize, feature: usize) -> Option<f64> {
        self[row].as_ref().get(feature).copied().flatten()
    }
}

impl<R: AsRef<[Option<f64>]>> Table for Vec<R> {
    fn rows(&self) -> usize {
        self.len()
    }

    fn value(&self, row: usize, feature: usize) -> Option<f64> {
        self.as_slice().value(row, feature)
    }
}

/// The k nearest of `pool` (rows of `features`' values) to `query`: features chosen,
/// standardised, weighted and whitened as the module documentation says. [`Space`] does the
/// same in two steps, for many patients against one pool.
pub fn neighbourhood<T: Table + ?Sized>(
    features: &[Feature],
    pool: &T,
    query: &[Option<f64>],
    settings: &Settings,
) -> Result<Neighbourhood, Error> {
    if query.len() != features.len() {
        return Err(Error::Features {
            given: query.len(),
            expected: features.len(),
        });
    }
    let present: Vec<bool> = query.iter().map(Option::is_some).collect();
    Ok(Space::new(features, pool, &present, settings)?.search(query, settings))
}

/// A pool made ready for the patients who have the features `present` marks: the features
/// chosen, the pool standardised, weighted and whitened into one flat buffer, and the atypical
/// cut. Built once; [`Space::search`] is then one pass over the buffer per patient.
#[derive(Debug, Clone)]
pub struct Space {
    keep: Vec<usize>,
    mean: Vec<f64>,
    sd: Vec<f64>,
    /// The linear map (dims × dims, row by row) after which the distance is Euclidean.
    map: Vec<f64>,
    /// The pool's mapped rows, row-major (pool × dims).
    mapped: Vec<f64>,
    /// Pool episodes.
    rows: usize,
    /// Each mapped row's squared norm (its squared distance to the centre).
    centre2: Vec<f64>,
    /// The pool's distance to its centre at the atypical percentile.
    centre_cut: f64,
    used: Vec<String>,
    left_out: Vec<(String, &'static str)>,
    imputed: usize,
    metric: Metric,
}

impl Space {
    /// The space of `pool` for patients with the features `present` marks (one flag per
    /// feature).
    pub fn new<T: Table + ?Sized>(
        features: &[Feature],
        pool: &T,
        present: &[bool],
        settings: &Settings,
    ) -> Result<Self, Error> {
        if present.len() != features.len() {
            return Err(Error::Features {
                given: present.len(),
                expected: features.len(),
            });
        }
        let needed = settings.min_at_session.max(1);
        if pool.rows() < needed {
            return Err(Error::TooFew {
                candidates: pool.rows(),
                needed,
            });
        }
        // The pool's values of the features the patient has, column by column (one pass over
        // the rows), missing as NaN.
        let wanted: Vec<usize> = (0..features.len()).filter(|i| present[*i]).collect();
        let rows = pool.rows();
        let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(rows); wanted.len()];
        for row in 0..rows {
            for (column, i) in columns.iter_mut().zip(&wanted) {
                column.push(pool.value(row, *i).unwrap_or(f64::NAN));
            }
        }
        // The features the patient has and the pool mostly has, with enough spread.
        let mut left_out = Vec::new();
        let mut keep = Vec::new();
        let mut kept = Vec::new();
        let (mut mean, mut sd) = (Vec::new(), Vec::new());
        let mut next = columns.into_iter();
        for (i, f) in features.iter().enumerate() {
            if !present[i] {
                left_out.push((f.name.clone(), "not recorded for this patient"));
                continue;
            }
            let column = next.next().expect("one column per present feature");
            let (mut count, mut sum) = (0usize, 0.0);
            for v in column.iter().filter(|v| !v.is_nan()) {
                count += 1;
                sum += v;
            }
            if (count as f64) < settings.min_feature_share * rows as f64 {
                left_out.push((f.name.clone(), "missing for most past patients"));
                continue;
            }
            let m = sum / count.max(1) as f64;
            let var = column
                .iter()
                .filter(|v| !v.is_nan())
                .map(|v| (v - m).powi(2))
                .sum::<f64>()
                / (count.saturating_sub(1)).max(1) as f64;
            if var.sqrt() <= 1e-9 {
                left_out.push((f.name.clone(), "the same for every past patient"));
                continue;
            }
            keep.push(i);
            kept.push(column);
            mean.push(m);
            sd.push(var.sqrt());
        }
        let used: Vec<String> = keep.iter().map(|i| features[*i].name.clone()).collect();
        let weights: Vec<f64> = keep.iter().map(|i| features[*i].weight).collect();
        let dims = keep.len();
        // z-scores, with the pool mean (z = 0) where missing, and how many that took.
        let mut imputed = 0;
        let mut z = vec![0.0; rows * dims];
        for (c, column) in kept.iter().enumerate() {
            for (out, v) in z.chunks_exact_mut(dims).zip(column) {
                if v.is_nan() {
                    imputed += 1;
                } else {
                    out[c] = (v - mean[c]) / sd[c];
                }
            }
        }
        drop(kept);
        // One linear map after which the distance is Euclidean: u = L⁻¹ W z for Mahalanobis
        // (d² = Δᵀ W (L Lᵀ)⁻¹ W Δ = ‖L⁻¹ W Δ‖², L the Cholesky factor of S + λI), W z
        // otherwise.
        let w = DMatrix::from_diagonal(&DVector::from_vec(weights));
        let (map, metric) = if dims > settings.euclidean_max_features {
            // The lower triangle of zᵀz, row by row into a flat buffer.
            let mut lower = vec![0.0; dims * dims];
            for r in z.chunks_exact(dims) {
                for (a, acc) in lower.chunks_exact_mut(dims).enumerate() {
                    let ra = r[a];
                    for (c, rb) in acc[..=a].iter_mut().zip(&r[..=a]) {
                        *c += ra * rb;
                    }
                }
            }
            let mut cov =
                DMatrix::<f64>::from_fn(dims, dims, |a, b| lower[a.max(b) * dims + a.min(b)]);
            cov /= (rows as f64 - 1.0).max(1.0);
            cov += DMatrix::identity(dims, dims) * settings.ridge;
            match cov.cholesky().and_then(|ch| ch.l().try_inverse()) {
                Some(l_inv) => (l_inv * &w, Metric::Mahalanobis),
                None => (w, Metric::Euclidean),
            }
        } else {
            (w, Metric::Euclidean)
        };
        let mut mapped = vec![0.0; rows * dims];
        let mut centre = Vec::with_capacity(rows);
        // Row by row, as `project` reads it.
        let map = map.transpose().as_slice().to_vec();
        if dims > 0 {
            for (r, out) in z.chunks_exact(dims).zip(mapped.chunks_exact_mut(dims)) {
                project(&map, r, out);
                centre.push(out.iter().map(|a| a * a).sum::<f64>());
            }
        } else {
            centre.resize(rows, 0.0);
        }
        // Atypical: distance to the centre (the origin of the standardised space).
        let centre2 = centre.clone();
        let rank = ((settings.atypical_percentile * centre.len() as f64).ceil() as usize)
            .clamp(1, centre.len())
            - 1;
        let (_, cut, _) = centre.select_nth_unstable_by(rank, f64::total_cmp);
        let centre_cut = cut.sqrt();
        Ok(Self {
            keep,
            mean,
            sd,
            map,
            mapped,
            rows,
            centre2,
            centre_cut,
            used,
            left_out,
            imputed,
            metric,
        })
    }

    /// Pool episodes in the space.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the space holds no episode.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The largest row sum of the mapped pool: one streaming pass over the matrix the search
    /// reads, row by row as the search does (without the distance and the heap), the baseline
    /// of `examples/knn_bench.rs`.
    pub fn stream_sum(&self) -> f64 {
        let dims = self.keep.len().max(1);
        self.mapped
            .chunks_exact(dims)
            .map(|u| u.iter().sum::<f64>())
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The k nearest pool episodes to `query` (the values of every feature, in order; only
    /// those the space uses are read, a missing one read as the pool mean).
    pub fn search(&self, query: &[Option<f64>], settings: &Settings) -> Neighbourhood {
        let dims = self.keep.len();
        let zq: Vec<f64> = self
            .keep
            .iter()
            .enumerate()
            .map(|(c, i)| {
                (query.get(*i).copied().flatten().unwrap_or(self.mean[c]) - self.mean[c])
                    / self.sd[c]
            })
            .collect();
        let mut q = vec![0.0; dims];
        project(&self.map, &zq, &mut q);
        let n = self.rows;
        // One pass: each row's squared distance, kept while among the k smallest so far (a
        // max-heap on (distance, index): the same order as [`nearest`], ties by pool order).
        let k = k_for(n, settings);
        let mut heap: std::collections::BinaryHeap<Key> = std::collections::BinaryHeap::new();
        // The heap's largest distance once full: rows arrive in index order, so a later row
        // enters only when strictly nearer (a tie keeps the earlier row).
        let mut worst = f64::INFINITY;
        let mut offer = |key: Key| {
            if k == 0 {
                return;
            }
            if heap.len() < k {
                heap.push(key);
                if heap.len() == k {
                    worst = heap.peek().map_or(f64::INFINITY, |t| t.0);
                }
            } else if key.0 < worst {
                if let Some(mut top) = heap.peek_mut() {
                    *top = key;
                }
                worst = heap.peek().map_or(f64::INFINITY, |t| t.0);
            }
        };
        let qq: f64 = q.iter().map(|a| a * a).sum();
        if dims == 0 {
            (0..n).for_each(|i| offer(Key(0.0, i)));
        } else {
            // ‖u − q‖² = ‖u‖² + ‖q‖² − 2 u·q: one multiply-add per entry (the rows' squared
            // norms are kept from building the space).
            for (i, (u, uu)) in self
                .mapped
                .chunks_exact(dims)
                .zip(&self.centre2)
                .enumerate()
            {
                let dot = dot(u, &q);
                offer(Key(uu + qq - 2.0 * dot, i));
            }
        }
        let atypical = qq.sqrt() > self.centre_cut;
        // The distances of the k found, computed directly.
        let exact = |i: usize| -> f64 {
            let u = &self.mapped[i * dims..(i + 1) * dims];
            u.iter()
                .zip(&q)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt()
        };
        Neighbourhood {
            candidates: n,
            nearest: heap
                .into_sorted_vec()
                .into_iter()
                .map(|Key(_, i)| (i, exact(i)))
                .collect(),
            used: self.used.clone(),
            left_out: self.left_out.clone(),
            imputed: self.imputed,
            metric: self.metric,
            atypical,
        }
    }
}

/// A squared distance and a pool index, ordered by distance then index.
#[derive(Debug, Clone, Copy)]
struct Key(f64, usize);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// u·q in four independent sums (no chain of dependent additions through the row).
fn dot(u: &[f64], q: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (head, tail) = u.split_at(u.len() - u.len() % 4);
    for (a, b) in head.chunks_exact(4).zip(q.chunks_exact(4)) {
        for j in 0..4 {
            acc[j] += a[j] * b[j];
        }
    }
    let rest: f64 = tail.iter().zip(&q[head.len()..]).map(|(a, b)| a * b).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + rest
}

/// `out = map · z`, `map` row by row.
fn project(map: &[f64], z: &[f64], out: &mut [f64]) {
    for (o, row) in out.iter_mut().zip(map.chunks_exact(z.len())) {
        *o = row.iter().zip(z).map(|(m, v)| m * v).sum();
    }
}

/// The expected curve from a neighbourhood and its neighbours' scores (`scores[j]` those of
/// `n.nearest[j]`, as (session, score)) on an instrument of `direction`.
pub fn bands(
    n: Neighbourhood,
    scores: &[&[(u32, f64)]],
    direction: Direction,
    settings: &Settings,
) -> Expectation {
    let needed = settings.min_at_session.max(1);
    let mut raw = Vec::new();
    for t in 1..=settings.max_session {
        let points: Vec<(f64, f64)> = n
            .nearest
            .iter()
            .zip(scores)
            .filter_map(|((_, d), s)| {
                let y = s.iter().find(|(u, _)| *u == t)?.1;
                Some((worse_up(direction, y), 1.0 / (1.0 + d)))
            })
            .collect();
        if points.len() < needed {
            continue;
        }
        let quantile = |p: f64| weighted_quantile(&points, p).unwrap_or(f64::NAN);
        raw.push((
            t,
            points.len(),
            [quantile(0.25), quantile(0.5), quantile(0.75), quantile(0.9)],
        ));
    }
    let fit_points: Vec<(u32, f64, f64)> =
        raw.iter().map(|(t, c, q)| (*t, q[1], *c as f64)).collect();
    let fit = log_linear_fit(&fit_points);
    let bands = raw
        .iter()
        .map(|(t, c, [p25, p50, p75, p90])| {
            let smooth = fit.map_or(*p50, |(a, b)| a + b * f64::from(*t).ln());
            let expected = smooth.clamp(*p25, *p75);
            let back = |v: f64| worse_up(direction, v);
            Band {
                session: *t,
                n: *c,
                p25: back(*p25),
                p50: back(*p50),
                expected: back(expected),
                p75: back(*p75),
                p90: back(*p90),
            }
        })
        .collect();
    Expectation {
        bands,
        fit: fit.map(|(a, b)| (worse_up(direction, a), worse_up(direction, b))),
        candidates: n.candidates,
        neighbours: n.nearest.len(),
        nearest: n.nearest,
        used: n.used,
        left_out: n.left_out,
        imputed: n.imputed,
        metric: n.metric,
        atypical: n.atypical,
    }
}

/// The dynamic variant's inputs ([`with_early`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WithEarly {
    /// The features, then one "score at session t" per early session the patient has.
    pub features: Vec<Feature>,
    /// How many of them come before the early scores (the features given).
    pub base: usize,
    /// The pool indexes of the candidates: those scored at every such session.
    pub ids: Vec<usize>,
    /// The candidates' scores at those sessions, candidate by candidate.
    pub early: Vec<Option<f64>>,
    /// The patient's row, extended likewise.
    pub query: Vec<Option<f64>>,
}

impl WithEarly {
    /// The candidates' rows of `pool` (the rows [`with_early`] was given the features of),
    /// extended with their early scores.
    pub fn table<'a, T: Table + ?Sized>(&'a self, pool: &'a T) -> EarlyTable<'a, T> {
        EarlyTable { pool, with: self }
    }
}

/// [`WithEarly::table`]: the dynamic variant's candidates as a [`Table`], without copying
/// their rows.
pub struct EarlyTable<'a, T: ?Sized> {
    pool: &'a T,
    with: &'a WithEarly,
}

impl<T: Table + ?Sized> Table for EarlyTable<'_, T> {
    fn rows(&self) -> usize {
        self.with.ids.len()
    }

    fn value(&self, row: usize, feature: usize) -> Option<f64> {
        let base = self.with.base;
        if feature < base {
            self.pool.value(self.with.ids[row], feature)
        } else {
            let sessions = self.with.features.len() - base;
            self.with.early[row * sessions + feature - base]
        }
    }
}

/// The patient's scores at sessions 2–3 (`early`; other sessions are ignored) as features
/// too, for the `n` pool episodes whose score at a session `score_at` gives; only episodes
/// scored at those sessions are candidates (a within-treatment score is not imputed).
pub fn with_early(
    features: &[Feature],
    n: usize,
    score_at: impl Fn(usize, u32) -> Option<f64>,
    query: &[Option<f64>],
    early: &[(u32, f64)],
) -> WithEarly {
    let early: Vec<(u32, f64)> = early
        .iter()
        .copied()
        .filter(|(t, _)| (2..=3).contains(t))
        .collect();
    let ids: Vec<usize> = (0..n)
        .filter(|i| early.iter().all(|(t, _)| score_at(*i, *t).is_some()))
        .collect();
    let mut all = features.to_vec();
    all.extend(early.iter().map(|(t, _)| Feature {
        name: format!("score at session {t}"),
        weight: 2.0,
    }));
    let scores = ids
        .iter()
        .flat_map(|i| early.iter().map(|(t, _)| score_at(*i, *t)))
        .collect();
    let mut q = query.to_vec();
    q.extend(early.iter().map(|(_, y)| Some(*y)));
    WithEarly {
        features: all,
        base: features.len(),
        ids,
        early: scores,
        query: q,
    }
}

/// The expectation for `query` from `pool` on an instrument of `direction`: [`neighbourhood`]
/// then [`bands`]. With [`Query::early`], the patient's scores at sessions 2–3 are features
/// too, and only pool episodes scored there are candidates.
pub fn expect(
    features: &[Feature],
    pool: &[PoolEpisode],
    query: &Query,
    direction: Direction,
    settings: &Settings,
) -> Result<Expectation, Error> {
    if query.features.len() != features.len() {
        return Err(Error::Features {
            given: query.features.len(),
            expected: features.len(),
        });
    }
    let d = with_early(
        features,
        pool.len(),
        |i, t| pool[i].score_at(t),
        &query.features,
        &query.early,
    );
    let rows: Vec<&[Option<f64>]> = pool.iter().map(|p| p.features.as_slice()).collect();
    let mut n = neighbourhood(&d.features, &d.table(rows.as_slice()), &d.query, settings)?;
    for (i, _) in &mut n.nearest {
        *i = d.ids[*i];
    }
    let scores: Vec<&[(u32, f64)]> = n
        .nearest
        .iter()
        .map(|(i, _)| pool[*i].scores.as_slice())
        .collect();
    Ok(bands(n, &scores, direction, settings))
}

/// The indexes of the `k` smallest `distances` (ties by index), nearest first.
pub fn nearest(distances: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    let by = |a: &usize, b: &usize| distances[*a].total_cmp(&distances[*b]).then(a.cmp(b));
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by);
        order.truncate(k);
    }
    order.sort_by(by);
    order
}

/// The on-track signal of one observed score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    /// No expectation at this session (too few similar past patients scored there).
    Grey,
    /// No longer at caseness: consider ending or stepping down.
    White,
    /// Within the expected range (no worse than the neighbours' upper quartile).
    Green,
    /// Less progress than expected (between P75 and P90).
    Yellow,
    /// Not on track: beyond the failure boundary (P90), or reliably deteriorated since intake.
    Red,
}

/// The signal of `score` at session `t` (≥ 2) of a patient whose intake was `intake`.
pub fn signal(
    instrument: &Instrument,
    expectation: Option<&Expectation>,
    t: u32,
    intake: f64,
    score: f64,
) -> Signal {
    let band = expectation.and_then(|e| e.at(t)).filter(|_| t >= 2);
    signal_in(instrument, band.as_ref(), intake, score)
}

/// The signal of `score` against the `band` of its session (none: no expectation there) for
/// a patient whose intake was `intake`: [`signal`] once the band is known, for callers with
/// bands of their own (the validation card's baselines).
pub fn signal_in(instrument: &Instrument, band: Option<&Band>, intake: f64, score: f64) -> Signal {
    let worse = |v: f64| worse_up(instrument.direction, v);
    if let Some(rc) = instrument.reliable_change()
        && worse(score) - worse(intake) >= rc
    {
        return Signal::Red;
    }
    let Some(band) = band else {
        return Signal::Grey;
    };
    if instrument.is_case(score) == Some(false) {
        return Signal::White;
    }
    let y = worse(score);
    if y > worse(band.p90) {
        Signal::Red
    } else if y > worse(band.p75) {
        Signal::Yellow
    } else {
        Signal::Green
    }
}

/// A safety signal: an answer that needs attention now, whatever the trajectory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Safety {
    /// The item (1-based) and its code.
    pub item: usize,
    /// Its code (e.g. LOINC 44260-8 for PHQ-9 item 9).
    pub code: String,
    /// The answer given.
    pub value: f64,
    /// What it means.
    pub reason: String,
}

/// Safety signals of one administration: PHQ-9 item 9 (thoughts that you would be better off
/// dead or of hurting yourself) answered 1 or more, and any item an instrument declares
/// critical at or above its threshold. `items` are (item number from 1, value).
pub fn safety(instrument: &Instrument, items: &[(usize, f64)]) -> Vec<Safety> {
    let mut out = Vec::new();
    for (no, value) in items {
        let Some(item) = no.checked_sub(1).and_then(|i| instrument.items.get(i)) else {
            continue;
        };
        let critical = item
            .critical
            .or_else(|| (instrument.id == "PHQ-9" && *no == 9).then_some(1.0));
        if let Some(threshold) = critical
            && *value >= threshold
        {
            out.push(Safety {
                item: *no,
                code: item.code.clone(),
                value: *value,
                reason: format!(
                    "item {no} ({}) answered {value} (critical at {threshold} or more): assess \
                     risk today",
                    item.code
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
