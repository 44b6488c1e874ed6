//! The `trajectories` release vector, layout version [`LAYOUT_VERSION`] (DESIGN.md §10, issue
//! 16): how the network's patients' scores went session by session, so that a clinic too small
//! for a neighbour pool of its own ([`crate::trajectory`]) gets expected curves and failure
//! boundaries from the network without any neighbour leaving any site (DOMAIN.md §4.3 step 6).
//!
//! Per domain, two families of blocks (names prefixed `<domain>.`):
//!
//! | block | kind | entries |
//! |---|---|---|
//! | `scores_s<t>`, t = 1..=[`SESSIONS`] | histogram | intake-severity band × score bin of the episode's first score at session t |
//! | `model_s<t>`, t = [`FIRST_MODEL_SESSION`]..=[`SESSIONS`] | sums of products | z zᵀ (upper triangle), z·y, y² of the model's terms z = (1, s, s²) of the standardised intake score s and the standardised score y at session t |
//!
//! Every session has blocks of its own, so one episode touches each block once: one count in
//! one bin of each session's histogram, one row in each session's sums. [`crate::dp::Layout`]
//! derives the per-patient sensitivity from that as for every other release, with a patient's
//! episodes capped at `max_episodes` per domain (the first ones in the caller's order).
//!
//! [`TrajectoriesLayout::summarise`] post-processes a released (noisy) vector:
//! - **stratum curves**: per domain × intake band × session, the P25/P50/P75/P90 of the
//!   histogram (interpolated within bins; P10 too) with the noise SD of each (parametric bootstrap),
//!   suppressed where the noisy count less two noise SDs is below [`MIN_COUNT`] or noise moves
//!   the median by more than [`SUPPRESS_CURVE_SD`] of the score range;
//! - **the expected-trajectory model** (Finch, Lambert & Schaalje 2001; DOMAIN.md §5: the
//!   intake score predicts the intercept and the slope on ln t): the score at session t
//!   regressed on z = (1, s, s²) of the intake s and on z × ln t, y_t = zᵀa + (zᵀb)·ln t / ln
//!   [`SESSIONS`], fitted from the summed sums of products, and the residual SD at each
//!   session, so that any clinic computes the expected curve and failure boundary of a new
//!   patient from their intake ([`TrajectoryModel::expected`], [`TrajectoryModel::boundary`]).
//!   Layout 1 took the risk model's twelve case-mix features instead: four times the
//!   sensitivity for little gain over the intake, and at ρ = 0.25 noise hid the model on the
//!   demo's network.
//!
//! Post-processing costs no privacy budget.

pub mod document;
#[cfg(test)]
pub(crate) mod tests;

use serde::{Deserialize, Serialize};

use crate::benchmark::{
    Bins, Contribution, DomainSpec, MAX_PARAMS, SUPPRESS_CURVE_SD, centre_half, first_scores,
    replicates, robust_spread, standardise,
};
use crate::dp::{self, Block, Layout};
use crate::instrument::Direction;
use crate::risk::SuffStats;
use crate::trajectory::Band;

/// Version of the vector layout below; bump it on any change to blocks, bins or bounds.
pub const LAYOUT_VERSION: u32 = 2;

/// Sessions covered: 1..=16.
pub const SESSIONS: usize = 16;

/// The first session of the expected-trajectory model (session 1 is the intake itself).
pub const FIRST_MODEL_SESSION: usize = 2;

/// Most score bins of a histogram: fewer, wider bins put less noise under each percentile.
pub const MAX_SCORE_BINS: usize = 14;

/// A stratum's percentiles are released only when its noisy count of patients, less two
/// noise SDs, is at least this; a session's residual SD when its noisy count is.
pub const MIN_COUNT: f64 = 50.0;

/// The released percentiles: P10 too, so that the worse tail of a higher-is-better measure
/// has its P90 counterpart.
pub const PERCENTILES: [f64; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

/// Budget weight of each session's histogram block and of each session's model block.
pub const WEIGHTS: (f64, f64) = (1.0, 0.5);

/// Terms of the expected-trajectory model per time term: 1, s and s² of the standardised
/// intake score s.
pub const MODEL_TERMS: usize = 3;

/// Coefficients of the expected-trajectory model: the terms, then the terms × ln t.
pub const MODEL_FEATURES: usize = 2 * MODEL_TERMS;

/// Bounds of the model's terms (1, s, s²) for s in [−1, 1].
const TERM_BOUNDS: [(f64, f64); MODEL_TERMS] = [(1.0, 1.0), (-1.0, 1.0), (0.0, 1.0)];

/// The model's terms (1, s, s²) of intake score `intake` of a domain scored in [lo, hi].
pub fn model_terms(lo: f64, hi: f64, intake: f64) -> [f64; MODEL_TERMS] {
    let s = standardise(intake, (lo, hi));
    [1.0, s, s * s]
}

/// Ridge of the released model, in noise SDs of its summed normal equations (as the
/// benchmark's risk model).
const RIDGE_NOISE_SDS: f64 = 3.0;

/// Blocks per domain: a histogram per session, then a model block per modelled session.
const BLOCKS_PER_DOMAIN: usize = SESSIONS + SESSIONS + 1 - FIRST_MODEL_SESSION;

/// The model's time term for session t: ln t / ln [`SESSIONS`], in [0, 1].
pub fn time_term(session: usize) -> f64 {
    (session as f64).ln() / (SESSIONS as f64).ln()
}

/// Score bins of a domain scored in [lo, hi]: for integer scores, bins of a whole number of
/// points centred on the integers (at most [`MAX_SCORE_BINS`]); otherwise that many equal
/// bins.
pub fn score_bins(lo: f64, hi: f64) -> Bins {
    let values = hi - lo + 1.0;
    if lo.fract() == 0.0 && hi.fract() == 0.0 && values <= 1e6 {
        let width = (values / MAX_SCORE_BINS as f64).ceil();
        Bins {
            start: lo - 0.5,
            width,
            n: (values / width).ceil() as usize,
        }
    } else {
        Bins {
            start: lo,
            width: (hi - lo) / MAX_SCORE_BINS as f64,
            n: MAX_SCORE_BINS,
        }
    }
}

/// The trajectories layout for a list of domains.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoriesLayout {
    domains: Vec<DomainSpec>,
    max_episodes: u32,
    layout: Layout,
    bins: Vec<Bins>,
}

impl TrajectoriesLayout {
    /// Builds the layout (and so its sensitivity) for `domains`, a patient contributing at
    /// most `max_episodes` episodes per domain.
    pub fn new(domains: Vec<DomainSpec>, max_episodes: u32) -> Result<Self, dp::Error> {
        if !(1..=MAX_PARAMS.max_episodes).contains(&max_episodes) {
            return Err(dp::Error::Parameter(format!(
                "max_episodes must be 1 to {}",
                MAX_PARAMS.max_episodes
            )));
        }
        let mut blocks = Vec::new();
        let mut bins = Vec::new();
        for d in &domains {
            d.validate()?;
            let b = score_bins(d.lo, d.hi);
            bins.push(b);
            for t in 1..=SESSIONS {
                blocks.push(
                    Block::histogram(&format!("{}.scores_s{t}", d.id), d.bands.len() * b.n)
                        .weighted(WEIGHTS.0),
                );
            }
            for t in FIRST_MODEL_SESSION..=SESSIONS {
                blocks.push(
                    Block::sum_of_products(
                        &format!("{}.model_s{t}", d.id),
                        TERM_BOUNDS.to_vec(),
                        (-1.0, 1.0),
                    )
                    .weighted(WEIGHTS.1),
                );
            }
        }
        let layout = Layout::new(blocks, max_episodes)?;
        Ok(Self {
            domains,
            max_episodes,
            layout,
            bins,
        })
    }

    /// The release layout (blocks, scales, sensitivity).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The domains, in vector order.
    pub fn domains(&self) -> &[DomainSpec] {
        &self.domains
    }

    /// Episodes one patient may contribute per domain.
    pub fn max_episodes(&self) -> u32 {
        self.max_episodes
    }

    /// Score bins of domain `d`.
    pub fn bins(&self, d: usize) -> Bins {
        self.bins[d]
    }

    fn histogram_block(&self, d: usize, session: usize) -> usize {
        d * BLOCKS_PER_DOMAIN + session - 1
    }

    fn model_block(&self, d: usize, session: usize) -> usize {
        d * BLOCKS_PER_DOMAIN + SESSIONS + session - FIRST_MODEL_SESSION
    }

    /// Encodes contributions (in the caller's order: a patient's first `max_episodes`
    /// episodes per domain count).
    pub fn encode(&self, contributions: &[Contribution]) -> Result<Vec<i64>, dp::Error> {
        let mut enc = self.layout.encoder();
        let mut admitted: std::collections::HashMap<(u64, usize), u32> = Default::default();
        for c in contributions {
            let Some(d) = self.domains.get(c.domain) else {
                return Err(dp::Error::Parameter(format!("no domain {}", c.domain)));
            };
            let n = admitted.entry((c.patient, c.domain)).or_insert(0);
            if *n >= self.max_episodes {
                continue;
            }
            *n += 1;
            let band = d.band(c.pre);
            let bins = self.bins[c.domain];
            let z = model_terms(d.lo, d.hi, c.pre);
            for (i, score) in first_scores(&c.sessions, SESSIONS).into_iter().enumerate() {
                let Some(score) = score else { continue };
                let t = i + 1;
                let bin = band * bins.n + bins.index(score);
                enc.add_bin(c.patient, self.histogram_block(c.domain, t), bin)?;
                if t >= FIRST_MODEL_SESSION {
                    let y = standardise(score, (d.lo, d.hi));
                    enc.add_products(c.patient, self.model_block(c.domain, t), &z, y)?;
                }
            }
        }
        Ok(enc.finish())
    }

    /// Post-processes a released vector whose noise has standard deviation `sigma` (encoded
    /// units; 0 for an exact sum).
    pub fn summarise(
        &self,
        values: &[i64],
        sigma: f64,
    ) -> Result<Vec<DomainTrajectories>, dp::Error> {
        let decoded = self.layout.decode(values)?;
        Ok((0..self.domains.len())
            .map(|d| self.summarise_domain(d, &decoded, sigma))
            .collect())
    }

    fn summarise_domain(&self, d: usize, decoded: &[f64], sigma: f64) -> DomainTrajectories {
        let spec = &self.domains[d];
        let block = |i: usize| {
            let b = &self.layout.blocks()[i];
            (
                &decoded[b.offset()..b.offset() + b.len()],
                sigma / b.scale(),
            )
        };
        let bins = self.bins[d];
        let mut suppressed = Vec::new();
        let curves: Vec<BandCurve> = (0..spec.bands.len())
            .map(|band| BandCurve {
                band,
                from: spec.bands[band],
                points: (1..=SESSIONS)
                    .map(|t| {
                        let (h, sd) = block(self.histogram_block(d, t));
                        let hist = &h[band * bins.n..(band + 1) * bins.n];
                        CurvePoint::of(t as u32, hist, sd, bins, (spec.lo, spec.hi))
                    })
                    .collect(),
            })
            .collect();
        let (shown, total) = released_points(&curves);
        if shown < total {
            suppressed.push(format!(
                "{} of {total} curve points (fewer than {MIN_COUNT} patients beyond two noise \
                 SDs of the count, or noise moves the median by more than {} points)",
                total - shown,
                SUPPRESS_CURVE_SD * (spec.hi - spec.lo)
            ));
        }
        let sessions: Vec<(&[f64], f64)> = (FIRST_MODEL_SESSION..=SESSIONS)
            .map(|t| block(self.model_block(d, t)))
            .collect();
        let model = TrajectoryModel::fit(spec, &sessions);
        if model.is_none() {
            suppressed.push("model".into());
        }
        DomainTrajectories {
            domain: spec.id.clone(),
            lo: spec.lo,
            hi: spec.hi,
            direction: spec.direction,
            bands: spec.bands.clone(),
            min_count: MIN_COUNT,
            curves,
            model,
            suppressed,
        }
    }
}

/// Of `curves`' band × session points, those released, and all of them.
fn released_points(curves: &[BandCurve]) -> (usize, usize) {
    let points = curves.iter().flat_map(|c| &c.points);
    let shown = points.clone().filter(|p| p.percentiles.is_some()).count();
    (shown, points.count())
}

/// One domain's post-processed trajectories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainTrajectories {
    /// Domain id.
    pub domain: String,
    /// Lowest score (domain units).
    pub lo: f64,
    /// Highest score.
    pub hi: f64,
    /// Which way is better.
    pub direction: Direction,
    /// Lower bounds of the intake-severity bands.
    pub bands: Vec<f64>,
    /// Fewest patients a released percentile or residual SD stands on.
    pub min_count: f64,
    /// Per intake band, the percentiles by session.
    pub curves: Vec<BandCurve>,
    /// The expected-trajectory model.
    #[serde(default)]
    pub model: Option<TrajectoryModel>,
    /// Figures withheld because too few patients (or noise) stand behind them.
    #[serde(default)]
    pub suppressed: Vec<String>,
}

impl DomainTrajectories {
    /// Band × session points released, and all of them.
    pub fn released_points(&self) -> (usize, usize) {
        released_points(&self.curves)
    }

    /// The curve of the band of intake score `pre`.
    pub fn curve_for(&self, pre: f64) -> Option<&BandCurve> {
        let band = self.bands.iter().rposition(|b| pre >= *b).unwrap_or(0);
        self.curves.get(band)
    }
}

/// The curve of one intake-severity band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandCurve {
    /// Band index (0 = least severe).
    pub band: usize,
    /// Its lowest intake score.
    pub from: f64,
    /// Sessions 1..=[`SESSIONS`].
    pub points: Vec<CurvePoint>,
}

impl BandCurve {
    /// The point at `session`, when it is released.
    pub fn at(&self, session: u32) -> Option<&CurvePoint> {
        self.points
            .iter()
            .find(|p| p.session == session && p.percentiles.is_some())
    }
}

/// One session of a band's curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Session.
    pub session: u32,
    /// Patients with a score at this session (noisy, ≥ 0).
    pub count: f64,
    /// [`PERCENTILES`] of their scores, when the count is at least [`MIN_COUNT`].
    #[serde(default)]
    pub percentiles: Option<[f64; 5]>,
    /// The SD release noise gives each percentile ([`crate::benchmark::BOOTSTRAP`] noise
    /// replicates; 0 for an exact sum).
    #[serde(default)]
    pub noise_sd: Option<[f64; 5]>,
}

impl CurvePoint {
    fn of(session: u32, hist: &[f64], sd: f64, bins: Bins, range: (f64, f64)) -> Self {
        // The count from the noisy bins as released (unbiased; bins clamped at 0 first would
        // add the positive half of every bin's noise: an empty stratum would look full).
        let count: f64 = hist.iter().sum::<f64>().max(0.0);
        // At least MIN_COUNT patients even two noise SDs of the count below it.
        let count_sd = sd * (hist.len() as f64).sqrt();
        let percentiles = (count - 2.0 * count_sd >= MIN_COUNT)
            .then(|| histogram_percentiles(hist, bins, range))
            .flatten();
        let noise_sd = percentiles.and_then(|p| {
            if sd == 0.0 {
                return Some([0.0; 5]);
            }
            let reps = replicates(hist, sd, &|h| {
                histogram_percentiles(h, bins, range).map(|p| p.to_vec())
            });
            let spread = robust_spread(&p, &reps);
            spread
                .iter()
                .all(|s| s.is_finite())
                .then(|| [spread[0], spread[1], spread[2], spread[3], spread[4]])
        });
        // Released only where noise leaves the median within SUPPRESS_CURVE_SD of the range
        // (as the benchmark's curves).
        let precise = noise_sd.is_some_and(|s| s[2] <= SUPPRESS_CURVE_SD * (range.1 - range.0));
        Self {
            session,
            count,
            percentiles: percentiles.filter(|_| precise),
            noise_sd: noise_sd.filter(|_| precise),
        }
    }
}

/// [`PERCENTILES`] of a histogram (negative counts read as 0), interpolated linearly within
/// the bin where the cumulative count crosses each, clamped to the score range; `None` for
/// an empty histogram.
pub fn histogram_percentiles(counts: &[f64], bins: Bins, range: (f64, f64)) -> Option<[f64; 5]> {
    let counts: Vec<f64> = counts.iter().map(|c| c.max(0.0)).collect();
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let quantile = |q: f64| {
        let target = q * total;
        let mut below = 0.0;
        for (i, c) in counts.iter().enumerate() {
            if *c > 0.0 && below + c >= target {
                let within = ((target - below) / c).clamp(0.0, 1.0);
                return bins.start + (i as f64 + within) * bins.width;
            }
            below += c;
        }
        bins.start + bins.n as f64 * bins.width
    };
    Some(PERCENTILES.map(|q| quantile(q).clamp(range.0, range.1)))
}

/// Standard normal quantiles at 0.75 and 0.90: a model's bands from its residual SD.
const Z75: f64 = 0.674_489_750_196_081_7;
const Z90: f64 = 1.281_551_565_544_600_4;

impl BandCurve {
    /// The curve as the bands a patient's scores are judged against
    /// ([`crate::trajectory::signal`]): each released session's median as the expected score
    /// and its quartiles and 90th percentile on the worse side of `direction`.
    pub fn bands(&self, direction: Direction) -> Vec<Band> {
        self.points
            .iter()
            .filter_map(|p| {
                let q = p.percentiles?;
                let (p25, p75, p90) = match direction {
                    Direction::LowerIsBetter => (q[1], q[3], q[4]),
                    Direction::HigherIsBetter => (q[3], q[1], q[0]),
                };
                Some(Band {
                    session: p.session,
                    n: p.count.round() as usize,
                    p25,
                    p50: q[2],
                    expected: q[2],
                    p75,
                    p90,
                })
            })
            .collect()
    }
}

/// The network's expected-trajectory model of one domain (Finch et al. 2001 form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryModel {
    /// Lowest score (domain units): with `hi`, how features and scores are standardised.
    pub lo: f64,
    /// Highest score.
    pub hi: f64,
    /// Which way is better (the side of the failure boundary).
    pub direction: Direction,
    /// [`MODEL_FEATURES`] coefficients on the terms z = (1, s, s²) of the standardised intake
    /// s and on z × ln t / ln 16, predicting the standardised score.
    pub coefficients: Vec<f64>,
    /// The SD release noise gives each coefficient (parametric bootstrap; 0 for an exact sum).
    pub noise_sd: Vec<f64>,
    /// Observations (episode × session) it was fitted on (noisy).
    pub observations: f64,
    /// Sessions [`FIRST_MODEL_SESSION`]..=[`SESSIONS`]: patients seen and the residual SD.
    pub sessions: Vec<ModelSession>,
}

/// One session of the expected-trajectory model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelSession {
    /// Session.
    pub session: u32,
    /// Patients with a score at this session (noisy).
    pub count: f64,
    /// SD of the scores around the model at this session (domain units), when at least
    /// [`MIN_COUNT`] patients stand behind it.
    #[serde(default)]
    pub residual_sd: Option<f64>,
}

/// A session block's sums as a full symmetric p × p matrix S, the vector s = Σ z y and Σ y².
fn session_sums(sums: &[f64]) -> (Vec<f64>, &[f64], f64) {
    let p = MODEL_TERMS;
    let tri = p * (p + 1) / 2;
    (
        crate::risk::symmetric(p, &sums[..tri]),
        &sums[tri..tri + p],
        sums[tri + p],
    )
}

/// The model's normal equations from the per-session sums (x_t = [z, z·u_t]): the upper
/// triangle of XᵀX, Xᵀy, yᵀy and the observation count.
fn normal_equations(sessions: &[&[f64]]) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let p = MODEL_TERMS;
    let q = MODEL_FEATURES;
    let mut xtx = vec![0.0; q * (q + 1) / 2];
    let mut xty = vec![0.0; q];
    let (mut yty, mut n) = (0.0, 0.0);
    for (i, sums) in sessions.iter().enumerate() {
        let u = time_term(FIRST_MODEL_SESSION + i);
        let (s, zy, yy) = session_sums(sums);
        let mut k = 0;
        for a in 0..q {
            for b in a..q {
                let power = (a / p + b / p) as i32;
                xtx[k] += u.powi(power) * s[(a % p) * p + b % p];
                k += 1;
            }
            xty[a] += u.powi((a / p) as i32) * zy[a % p];
        }
        yty += yy;
        n += s[0];
    }
    (xtx, xty, yty, n)
}

fn fit_model(sessions: &[&[f64]], ridge: f64) -> Option<Vec<f64>> {
    let (xtx, xty, yty, n) = normal_equations(sessions);
    SuffStats::from_sums(MODEL_FEATURES, n.max(0.0).round() as u64, &xtx, &xty, yty)
        .ok()?
        .fit(ridge)
        .ok()
        .map(|m| m.beta)
}

impl TrajectoryModel {
    /// Fits the model from the decoded model blocks of sessions [`FIRST_MODEL_SESSION`]..,
    /// each with the noise SD of its entries; `None` when it cannot be fitted.
    fn fit(spec: &DomainSpec, sessions: &[(&[f64], f64)]) -> Option<Self> {
        let sums: Vec<&[f64]> = sessions.iter().map(|(s, _)| *s).collect();
        // Every model block has the same bounds and weight, so the same noise SD.
        let sd = sessions.iter().map(|(_, sd)| *sd).fold(0.0, f64::max);
        // The summed normal equations carry the noise of up to one block per session.
        let ridge = (RIDGE_NOISE_SDS * sd * (sessions.len() as f64).sqrt()).max(1e-6);
        let coefficients = fit_model(&sums, ridge)?;
        let noise_sd = if sd == 0.0 {
            vec![0.0; MODEL_FEATURES]
        } else {
            let flat: Vec<f64> = sums.concat();
            let width = sums[0].len();
            let reps = replicates(&flat, sd, &|f| {
                let blocks: Vec<&[f64]> = f.chunks(width).collect();
                fit_model(&blocks, ridge)
            });
            robust_spread(&coefficients, &reps)
                .into_iter()
                .map(|s| if s.is_finite() { s } else { f64::MAX })
                .collect()
        };
        let (_, half) = centre_half((spec.lo, spec.hi));
        let p = MODEL_TERMS;
        let model_sessions = sums
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let t = FIRST_MODEL_SESSION + i;
                let u = time_term(t);
                let (s, zy, yy) = session_sums(block);
                let count = s[0].max(0.0);
                // The coefficients acting at session t: a + u·b on z.
                let c: Vec<f64> = (0..p)
                    .map(|k| coefficients[k] + u * coefficients[p + k])
                    .collect();
                let quad: f64 = (0..p)
                    .map(|a| (0..p).map(|b| c[a] * s[a * p + b] * c[b]).sum::<f64>())
                    .sum();
                let cross: f64 = c.iter().zip(zy).map(|(a, b)| a * b).sum();
                // A residual sum of squares at or below 0 is noise, not a perfect fit.
                let rss = yy - 2.0 * cross + quad;
                // The noise of rss (each entry's noise SD `sd`, independent): y², 2c·(z·y),
                // and c S c with each off-diagonal entry counted twice; through the square
                // root, the SD it gives the residual SD (domain units).
                let quad_var: f64 = (0..p)
                    .flat_map(|a| (a..p).map(move |b| (a, b)))
                    .map(|(a, b)| {
                        let m = if a == b { 1.0 } else { 2.0 };
                        (m * c[a] * c[b]).powi(2)
                    })
                    .sum();
                let rss_sd =
                    sd * (1.0 + 4.0 * c.iter().map(|x| x * x).sum::<f64>() + quad_var).sqrt();
                let residual_sd =
                    (count >= MIN_COUNT && rss > 0.0).then(|| half * (rss / count).sqrt());
                let precise = residual_sd.is_some_and(|r| {
                    let noise = half * half * rss_sd / (2.0 * count * r);
                    noise <= SUPPRESS_CURVE_SD * (spec.hi - spec.lo)
                });
                ModelSession {
                    session: t as u32,
                    count,
                    residual_sd: residual_sd.filter(|_| precise),
                }
            })
            .collect();
        let observations = normal_equations(&sums).3.max(0.0);
        Some(Self {
            lo: spec.lo,
            hi: spec.hi,
            direction: spec.direction,
            coefficients,
            noise_sd,
            observations,
            sessions: model_sessions,
        })
    }

    /// The expected score (domain units, within the score range) at `session` ≥ 1 of a
    /// patient whose intake score is `intake`; `None` for a model of another layout.
    pub fn expected(&self, intake: f64, session: u32) -> Option<f64> {
        let (z, c) = self.at(intake, session)?;
        let y: f64 = z.iter().zip(c).map(|(z, c)| z * c).sum();
        let (centre, half) = centre_half((self.lo, self.hi));
        Some((centre + half * y).clamp(self.lo, self.hi))
    }

    /// The terms of `intake` and the coefficients acting on them at `session` (a + u·b).
    fn at(&self, intake: f64, session: u32) -> Option<([f64; MODEL_TERMS], Vec<f64>)> {
        if self.coefficients.len() != MODEL_FEATURES {
            return None;
        }
        let u = time_term(session.max(1) as usize);
        let p = MODEL_TERMS;
        let c = (0..p)
            .map(|k| self.coefficients[k] + u * self.coefficients[p + k])
            .collect();
        Some((model_terms(self.lo, self.hi, intake), c))
    }

    /// The expected curve of a patient whose intake score is `intake`: at each session whose
    /// residual SD is released, the expected score and, taking the residuals as normal, the
    /// quartiles and the 90th percentile on the worse side (the failure boundary at z = 1.28,
    /// DOMAIN.md §4.3 step 4).
    pub fn bands(&self, intake: f64) -> Vec<Band> {
        let worse = match self.direction {
            Direction::LowerIsBetter => 1.0,
            Direction::HigherIsBetter => -1.0,
        };
        self.sessions
            .iter()
            .filter_map(|s| {
                let sd = s.residual_sd?;
                let e = self.expected(intake, s.session)?;
                if self.prediction_noise_sd(intake, s.session)?
                    > SUPPRESS_CURVE_SD * (self.hi - self.lo)
                {
                    return None;
                }
                let at = |z: f64| (e + worse * z * sd).clamp(self.lo, self.hi);
                Some(Band {
                    session: s.session,
                    n: s.count.round() as usize,
                    p25: at(-Z75),
                    p50: e,
                    expected: e,
                    p75: at(Z75),
                    p90: at(Z90),
                })
            })
            .collect()
    }

    /// The SD release noise gives the expected score at `session` of a patient whose intake
    /// score is `intake` (domain units), from the coefficients' noise SDs taken as
    /// independent; a session where it exceeds [`SUPPRESS_CURVE_SD`] of the range gives no
    /// band (as the benchmark's curves).
    pub fn prediction_noise_sd(&self, intake: f64, session: u32) -> Option<f64> {
        let p = MODEL_TERMS;
        if self.noise_sd.len() != MODEL_FEATURES {
            return None;
        }
        let (z, _) = self.at(intake, session)?;
        let u = time_term(session.max(1) as usize);
        let var: f64 = (0..p)
            .map(|k| (z[k] * self.noise_sd[k]).powi(2) + (z[k] * u * self.noise_sd[p + k]).powi(2))
            .sum();
        Some(centre_half((self.lo, self.hi)).1 * var.sqrt())
    }

    /// The residual SD at `session`, when released.
    pub fn residual_sd(&self, session: u32) -> Option<f64> {
        self.sessions
            .iter()
            .find(|s| s.session == session)
            .and_then(|s| s.residual_sd)
    }

    /// The failure boundary at `session`: the expected score `z` residual SDs towards worse
    /// (DOMAIN.md §4.3 step 4), within the score range.
    pub fn boundary(&self, intake: f64, session: u32, z: f64) -> Option<f64> {
        let e = self.expected(intake, session)?;
        let sd = self.residual_sd(session)?;
        let worse = match self.direction {
            Direction::LowerIsBetter => e + z * sd,
            Direction::HigherIsBetter => e - z * sd,
        };
        Some(worse.clamp(self.lo, self.hi))
    }
}
