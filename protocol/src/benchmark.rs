//! The `benchmark` release vector, layout version [`LAYOUT_VERSION`] (DESIGN.md §10).
//!
//! Per domain, eight blocks (names prefixed `<domain>.`):
//!
//! | block | kind | entries |
//! |---|---|---|
//! | `outcomes` | counts | episodes, finished, finished at caseness, reliable improvement, reliable deterioration, recovered, reliable recovery |
//! | `intake` | histogram | intake score (unit bins for ranges of 10–40 points, else 41 equal bins) |
//! | `change` | histogram | post − pre over ±range |
//! | `risk` | sums of products | XᵀX (upper triangle), Xᵀy, yᵀy of the risk model's features and post score, each scaled to [−1, 1] |
//! | `curves` | clipped sums by intake-severity band | score sum and count at sessions 1..[`SESSIONS`] |
//! | `anova_counts` | aggregate | N, J (episodes and therapists in the therapist-variance sums) |
//! | `anova_sums` | aggregate | Σr, Σr², Σⱼ Sⱼ²/nⱼ over elevated episodes' residuals |
//! | `anova_caseload` | aggregate | Σⱼ nⱼ² |
//!
//! The ANOVA sums are three blocks so that each gets its own fixed-point scale and budget share:
//! in one block the counts would carry noise on the scale of Σⱼ Sⱼ²/nⱼ's bound (4R²).
//!
//! Every block is bounded per episode; a patient contributes at most `max_episodes` episodes per
//! domain (the first ones in the caller's order), so [`crate::dp::Layout`] derives the
//! per-patient sensitivity. Residuals are clipped to ±(score range)/2. For the ANOVA blocks each
//! therapist contributes at most `caseload_cap` episodes (the first in order); one new episode
//! may then displace another, which the declared bounds cover (2r, 4r²; see [`anova_bounds`]),
//! and the cap bounds how far one therapist's outcomes can move the block (P3).
//!
//! [`BenchmarkLayout::summarise`] post-processes a released (noisy) vector: counts clamped at 0,
//! rates, histogram means and quartiles, the risk model solved with a noise-scaled ridge,
//! τ² and σ² by one-way ANOVA (with the SD the noise gives τ²), expected curves per band, and
//! suppression where noise dominates. Blocks share the budget by [`WEIGHTS`].
//! Post-processing costs no privacy budget.

use crate::analysis::{FEATURES, domain_score};
use crate::dp::{self, Block, Layout};
use crate::instrument::{Direction, Domain, Instrument};
use crate::risk::SuffStats;
use crate::therapist::{AnovaSums, Group, VarianceComponents, variance_from_sums};

/// Version of the vector layout below; bump it on any change to blocks, bins or bounds.
pub const LAYOUT_VERSION: u32 = 2;

/// Sessions covered by the expected-curve block.
pub const SESSIONS: usize = 12;

/// Histogram bins when unit bins do not fit.
const MAX_BINS: usize = 40;

/// Narrowest and widest score range of a domain (domain units).
pub const DOMAIN_RANGE: (f64, f64) = (1e-3, 1e6);

/// Most intake-severity bands of a domain.
pub const MAX_BANDS: usize = 16;

/// Largest `max_episodes` and `caseload_cap` a layout accepts.
pub const MAX_PARAMS: Params = Params {
    max_episodes: 100,
    caseload_cap: 100_000,
};

/// Relative noise (SD / value) beyond which a derived figure is suppressed.
const SUPPRESS_RELATIVE_SD: f64 = 0.1;

/// Relative noise of τ² beyond which the variance components are suppressed.
const SUPPRESS_TAU2_RELATIVE_SD: f64 = 1.0;

/// Contribution bounding parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Episodes one patient may contribute per domain.
    pub max_episodes: u32,
    /// Episodes one therapist may contribute per domain to the `anova` block.
    pub caseload_cap: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            max_episodes: 1,
            caseload_cap: 200,
        }
    }
}

/// A domain as the benchmark sees it: score range and severity bands in domain units.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// Domain id.
    pub id: String,
    /// Lowest domain score.
    pub lo: f64,
    /// Highest domain score.
    pub hi: f64,
    /// Lower bounds of the intake severity bands (least to most severe), domain units.
    pub bands: Vec<f64>,
    /// Which way is better.
    pub direction: Direction,
}

impl DomainSpec {
    /// The spec of `domain`, measured by `inst`: its range and severity bands transformed to
    /// domain units; four equal bands when the instrument declares none.
    pub fn new(domain: &Domain, inst: &Instrument) -> Self {
        let t = |x| domain_score(domain, inst, x);
        let (lo, hi) = (t(inst.min).min(t(inst.max)), t(inst.min).max(t(inst.max)));
        let mut bands: Vec<f64> = if inst.bands.is_empty() {
            (0..4)
                .map(|i| lo + (hi - lo) * f64::from(i) / 4.0)
                .collect()
        } else {
            inst.bands.iter().map(|(b, _)| t(*b)).collect()
        };
        bands.sort_by(f64::total_cmp);
        Self {
            id: domain.id.clone(),
            lo,
            hi,
            bands,
            direction: inst.direction,
        }
    }

    fn range(&self) -> f64 {
        self.hi - self.lo
    }

    /// Checks that the domain gives a layout: a short id, a finite score range within
    /// [`DOMAIN_RANGE`], and 1 to [`MAX_BANDS`] strictly increasing band bounds inside it.
    pub fn validate(&self) -> Result<(), dp::Error> {
        let bad = |why: &str| Err(dp::Error::Parameter(format!("domain {:?} {why}", self.id)));
        if self.id.is_empty() || self.id.len() > 64 {
            return bad("needs an id of 1 to 64 bytes");
        }
        let range = self.range();
        if !(self.lo.is_finite()
            && self.hi.is_finite()
            && (DOMAIN_RANGE.0..=DOMAIN_RANGE.1).contains(&range))
        {
            return bad(&format!(
                "has score range {}..{}; its width must be between {:e} and {:e}",
                self.lo, self.hi, DOMAIN_RANGE.0, DOMAIN_RANGE.1
            ));
        }
        let inside = self.bands.iter().all(|b| (self.lo..=self.hi).contains(b));
        let increasing = self.bands.windows(2).all(|w| w[0] < w[1]);
        if self.bands.is_empty() || self.bands.len() > MAX_BANDS || !inside || !increasing {
            return bad(&format!(
                "needs 1 to {MAX_BANDS} increasing severity bands inside its score range"
            ));
        }
        Ok(())
    }

    /// Residuals entering the variance sums are clipped to ± this: half the score range
    /// (risk-model residual SDs are about a quarter of the range, so few are clipped, and the
    /// sums' sensitivity is a quarter of that at the full range).
    pub fn residual_clip(&self) -> f64 {
        self.range() / 2.0
    }

    /// Index of the severity band of intake score `pre`.
    pub fn band(&self, pre: f64) -> usize {
        self.bands.iter().rposition(|b| pre >= *b).unwrap_or(0)
    }
}

/// Equal-width bins: bin i covers [start + i·width, start + (i+1)·width).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bins {
    /// Left edge of the first bin.
    pub start: f64,
    /// Bin width.
    pub width: f64,
    /// Number of bins.
    pub n: usize,
}

impl Bins {
    /// Unit bins centred on the integers of [lo, hi] when the range is 10 to `max − 1` points,
    /// else `max` equal bins.
    fn over(lo: f64, hi: f64, max: usize) -> Self {
        let range = hi - lo;
        if range.fract() == 0.0 && lo.fract() == 0.0 && (10.0..=(max - 1) as f64).contains(&range) {
            Self {
                start: lo - 0.5,
                width: 1.0,
                n: range as usize + 1,
            }
        } else {
            Self {
                start: lo,
                width: range / max as f64,
                n: max,
            }
        }
    }

    /// The bin of `x` (values outside the range go to the end bins).
    pub fn index(&self, x: f64) -> usize {
        let i = ((x - self.start) / self.width).floor();
        (i.max(0.0) as usize).min(self.n - 1)
    }

    /// Centre of bin `i`.
    pub fn centre(&self, i: usize) -> f64 {
        self.start + (i as f64 + 0.5) * self.width
    }
}

/// One episode's contribution to one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The patient (any stable local key; never leaves the node).
    pub patient: u64,
    /// The primary therapist (any stable local key; never leaves the node).
    pub therapist: u64,
    /// Index into the layout's domains.
    pub domain: usize,
    /// First valid score, domain units.
    pub pre: f64,
    /// Last valid score, domain units.
    pub post: f64,
    /// Finished course (≥ 2 attended treatment sessions).
    pub finished: bool,
    /// At caseness at the start / the end (`None`: the instrument has no cut-off).
    pub caseness: Option<(bool, bool)>,
    /// Reliable improvement / deterioration (`None`: no reliable-change threshold).
    pub reliable: Option<(bool, bool)>,
    /// The risk model's features ([`FEATURES`]).
    pub features: Vec<f64>,
    /// Residual against the local risk model, for episodes elevated at intake (the ones that
    /// enter therapist variance).
    pub residual: Option<f64>,
    /// (session sequence number, score in domain units), first score per session.
    pub sessions: Vec<(u32, f64)>,
}

/// Bounds of the risk model's features, in [`FEATURES`] order, for a domain scored in [lo, hi].
fn feature_bounds(lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let bounds: [(f64, f64); FEATURES.len()] = [
        (1.0, 1.0),  // intercept
        (lo, hi),    // intake
        (-2.5, 5.0), // age per decade from 40: ages 15–90
        (0.0, 1.0),  // female
        (0.0, 1.0),  // prior treatment
        (0.0, 1.0),  // psychotropic medication
        (0.0, 1.0),  // long-term condition
        (0.0, 1.0),  // disability
        (0.0, 10.0), // comorbidity count
        (0.0, 1.0),  // unemployed
        (-2.0, 2.0), // WSAS per 10 from 20: WSAS 0–40
        (0.0, 1.0),  // case mix missing
    ];
    bounds.to_vec()
}

/// Centre and half-width of a bound; a constant (the intercept) stays as it is.
fn centre_half((lo, hi): (f64, f64)) -> (f64, f64) {
    if lo == hi {
        (0.0, 1.0)
    } else {
        ((lo + hi) / 2.0, (hi - lo) / 2.0)
    }
}

/// The risk block sums products of features and target scaled to [−1, 1] (the intercept stays
/// 1): every entry of XᵀX is then on the scale of the episode count, so the block's noise,
/// the same on every entry, drowns none of them (the raw intercept and binary entries would
/// sit far below the intake² entries' noise).
fn standardise(x: f64, bound: (f64, f64)) -> f64 {
    if bound.0 == bound.1 {
        return x;
    }
    let (c, h) = centre_half(bound);
    ((x - c) / h).clamp(-1.0, 1.0)
}

/// Coefficients on the raw features from those on standardised features and target:
/// y = c_y + h_y Σ β'ₖ (xₖ − cₖ)/hₖ.
fn unstandardise(beta: &[f64], features: &[(f64, f64)], target: (f64, f64)) -> Vec<f64> {
    let (cy, hy) = centre_half(target);
    let mut out: Vec<f64> = beta
        .iter()
        .zip(features)
        .map(|(b, f)| hy * b / centre_half(*f).1)
        .collect();
    let shift: f64 = out
        .iter()
        .zip(features)
        .map(|(b, f)| b * centre_half(*f).0)
        .sum();
    out[0] += cy - shift;
    out
}

fn unit_bounds(bounds: &[(f64, f64)]) -> Vec<(f64, f64)> {
    bounds
        .iter()
        .map(|b| if b.0 == b.1 { *b } else { (-1.0, 1.0) })
        .collect()
}

/// Per-episode change bounds and one therapist's whole-caseload bounds of the `anova` block
/// [N, Σr, Σr², Σⱼ Sⱼ²/nⱼ, J, Σⱼ nⱼ²] for residuals clipped to ±r and caseloads capped at c.
///
/// One added episode either joins a therapist below the cap (N +1, Σr ±r, Σr² +r²,
/// Sⱼ²/nⱼ changes by at most 3r², J +1, nⱼ² by 2c − 1) or displaces the last of a capped
/// therapist's episodes (Σr by ≤ 2r, Σr² by ≤ r², Sⱼ²/c by ≤ (2r)(2cr)/c = 4r²); the bounds are
/// the larger of the two.
///
/// Therapist level (P3): the protected quantity is a therapist's effect, so neighbouring data
/// sets differ in every outcome (residual) of one therapist's capped caseload, while caseload
/// sizes stay: Σr moves by ≤ 2cr, Σr² and Sⱼ²/nⱼ by ≤ cr², N, J and Σnⱼ² not at all.
pub fn anova_bounds(r: f64, c: u32) -> (Vec<f64>, Vec<f64>) {
    let c = f64::from(c);
    (
        vec![1.0, 2.0 * r, r * r, 4.0 * r * r, 1.0, 2.0 * c - 1.0],
        vec![0.0, 2.0 * c * r, c * r * r, c * r * r, 0.0, 0.0],
    )
}

/// The benchmark layout for a list of domains.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkLayout {
    domains: Vec<DomainSpec>,
    params: Params,
    layout: Layout,
    bins: Vec<(Bins, Bins)>,
}

/// Block names of one domain, in vector order.
pub const BLOCKS: [&str; 8] = [
    "outcomes",
    "intake",
    "change",
    "risk",
    "curves",
    "anova_counts",
    "anova_sums",
    "anova_caseload",
];

/// Budget weights of the blocks, in [`BLOCKS`] order (a block's share of ρ is its weight over
/// the total). The variance sums get the most: their per-episode bounds are the largest
/// relative to their signal (one episode can move Σⱼ Sⱼ²/nⱼ by 4r², r the residual clip).
pub const WEIGHTS: [f64; 8] = [1.0, 0.5, 0.5, 4.0, 1.0, 2.0, 4.0, 0.5];

/// Entries of [`AnovaSums::to_array`] in each of the three ANOVA blocks.
const ANOVA_SPLIT: [&[usize]; 3] = [&[0, 4], &[1, 2, 3], &[5]];

impl BenchmarkLayout {
    /// Builds the layout (and so its sensitivity) for `domains`.
    pub fn new(domains: Vec<DomainSpec>, params: Params) -> Result<Self, dp::Error> {
        if !(1..=MAX_PARAMS.caseload_cap).contains(&params.caseload_cap)
            || !(1..=MAX_PARAMS.max_episodes).contains(&params.max_episodes)
        {
            return Err(dp::Error::Parameter(format!(
                "max_episodes must be 1 to {} and caseload_cap 1 to {}",
                MAX_PARAMS.max_episodes, MAX_PARAMS.caseload_cap
            )));
        }
        let mut blocks = Vec::new();
        let mut bins = Vec::new();
        for d in &domains {
            d.validate()?;
            let intake = Bins::over(d.lo, d.hi, MAX_BINS + 1);
            let change = Bins::over(-d.range(), d.range(), 2 * MAX_BINS + 1);
            bins.push((intake, change));
            let name = |b: &str| format!("{}.{b}", d.id);
            let (slo, shi) = (d.lo.min(0.0), d.hi.max(0.0));
            let mut curve_lo = vec![slo; SESSIONS];
            curve_lo.extend([0.0; SESSIONS]);
            let mut curve_hi = vec![shi; SESSIONS];
            curve_hi.extend([1.0; SESSIONS]);
            let (episode, therapist) = anova_bounds(d.residual_clip(), params.caseload_cap);
            blocks.extend([
                Block::counts(&name("outcomes"), 7).weighted(WEIGHTS[0]),
                Block::histogram(&name("intake"), intake.n).weighted(WEIGHTS[1]),
                Block::histogram(&name("change"), change.n).weighted(WEIGHTS[2]),
                Block::sum_of_products(
                    &name("risk"),
                    unit_bounds(&feature_bounds(d.lo, d.hi)),
                    (-1.0, 1.0),
                )
                .weighted(WEIGHTS[3]),
                Block::clipped_sums(&name("curves"), d.bands.len(), curve_lo, curve_hi)
                    .weighted(WEIGHTS[4]),
            ]);
            for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
                let pick = |v: &[f64]| entries.iter().map(|e| v[*e]).collect::<Vec<_>>();
                blocks.push(
                    Block::aggregate(&name(BLOCKS[5 + i]), pick(&episode), Some(pick(&therapist)))
                        .weighted(WEIGHTS[5 + i]),
                );
            }
        }
        let layout = Layout::new(blocks, params.max_episodes)?;
        Ok(Self {
            domains,
            params,
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

    /// The contribution-bounding parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// (intake, change) histogram bins of domain `d`.
    pub fn bins(&self, d: usize) -> (Bins, Bins) {
        self.bins[d]
    }

    fn block_index(&self, d: usize, block: usize) -> usize {
        d * BLOCKS.len() + block
    }

    /// Encodes contributions (in the caller's order: a patient's first `max_episodes` episodes
    /// per domain count, and a therapist's first `caseload_cap` elevated episodes per domain
    /// enter the `anova` block).
    pub fn encode(&self, contributions: &[Contribution]) -> Result<Vec<i64>, dp::Error> {
        let mut enc = self.layout.encoder();
        let mut admitted: std::collections::HashMap<(u64, usize), u32> = Default::default();
        let mut groups: Vec<std::collections::BTreeMap<u64, Group>> =
            vec![Default::default(); self.domains.len()];
        for c in contributions {
            let Some(d) = self.domains.get(c.domain) else {
                return Err(dp::Error::Parameter(format!("no domain {}", c.domain)));
            };
            let n = admitted.entry((c.patient, c.domain)).or_insert(0);
            if *n >= self.params.max_episodes {
                continue;
            }
            *n += 1;
            let (intake, change) = self.bins[c.domain];
            let b = |i| self.block_index(c.domain, i);
            let flag = |x: bool| f64::from(u8::from(x));
            let (case_pre, case_post) = c.caseness.unwrap_or((false, false));
            let (ri, rd) = c.reliable.unwrap_or((false, false));
            let counted = c.finished;
            let recovered = counted && case_pre && !case_post;
            enc.add(
                c.patient,
                b(0),
                0,
                &[
                    1.0,
                    flag(counted),
                    flag(counted && case_pre),
                    flag(counted && ri),
                    flag(counted && rd),
                    flag(recovered),
                    flag(recovered && ri),
                ],
            )?;
            enc.add_bin(c.patient, b(1), intake.index(c.pre))?;
            enc.add_bin(c.patient, b(2), change.index(c.post - c.pre))?;
            let bounds = feature_bounds(d.lo, d.hi);
            let z: Vec<f64> = c
                .features
                .iter()
                .zip(&bounds)
                .map(|(x, b)| standardise(*x, *b))
                .collect();
            enc.add_products(c.patient, b(3), &z, standardise(c.post, (d.lo, d.hi)))?;
            let mut curve = vec![0.0; 2 * SESSIONS];
            for (seq, score) in &c.sessions {
                let s = *seq as usize;
                if (1..=SESSIONS).contains(&s) && curve[SESSIONS + s - 1] == 0.0 {
                    curve[s - 1] = *score;
                    curve[SESSIONS + s - 1] = 1.0;
                }
            }
            enc.add(c.patient, b(4), d.band(c.pre), &curve)?;
            if let Some(r) = c.residual {
                let g = groups[c.domain].entry(c.therapist).or_default();
                if g.n < u64::from(self.params.caseload_cap) {
                    g.add(r.clamp(-d.residual_clip(), d.residual_clip()));
                }
            }
        }
        for (d, groups) in groups.iter().enumerate() {
            let sums = AnovaSums::of(groups.values()).to_array();
            for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
                let values: Vec<f64> = entries.iter().map(|e| sums[*e]).collect();
                enc.set_aggregate(self.block_index(d, 5 + i), &values)?;
            }
        }
        Ok(enc.finish())
    }

    /// Post-processes a released vector whose noise has standard deviation `sigma` (encoded
    /// units; 0 for an exact sum).
    pub fn summarise(&self, values: &[i64], sigma: f64) -> Result<Vec<DomainSummary>, dp::Error> {
        let decoded = self.layout.decode(values)?;
        Ok((0..self.domains.len())
            .map(|d| self.summarise_domain(d, &decoded, sigma))
            .collect())
    }

    fn summarise_domain(&self, d: usize, decoded: &[f64], sigma: f64) -> DomainSummary {
        let spec = &self.domains[d];
        let block = |i: usize| {
            let b = &self.layout.blocks()[self.block_index(d, i)];
            (
                &decoded[b.offset()..b.offset() + b.len()],
                sigma / b.scale(),
            )
        };
        let mut suppressed = Vec::new();
        // Outcomes.
        let (o, o_sd) = block(0);
        let count = |i: usize| o[i].max(0.0);
        let mut rate = |name: &str, num: usize, den: usize| {
            let den_v = count(den);
            if den_v <= 0.0 || o_sd / den_v > SUPPRESS_RELATIVE_SD {
                suppressed.push(name.to_owned());
                None
            } else {
                Some((count(num) / den_v).clamp(0.0, 1.0))
            }
        };
        let rates = Rates {
            reliable_improvement: rate("reliable_improvement", 3, 1),
            reliable_deterioration: rate("reliable_deterioration", 4, 1),
            recovery: rate("recovery", 5, 2),
            reliable_recovery: rate("reliable_recovery", 6, 2),
        };
        let (intake_bins, change_bins) = self.bins[d];
        let (ih, ih_sd) = block(1);
        let (ch, ch_sd) = block(2);
        let intake = Distribution::from_histogram(ih, intake_bins, ih_sd);
        let change = Distribution::from_histogram(ch, change_bins, ch_sd);
        if intake.is_none() {
            suppressed.push("intake".into());
        }
        if change.is_none() {
            suppressed.push("change".into());
        }
        // Risk model from the noisy sums, with a ridge on the scale of the noise, and the
        // spread the noise gives its coefficients and its predictions.
        let (r, r_sd) = block(3);
        let n = count(0).round() as u64;
        let bounds = feature_bounds(spec.lo, spec.hi);
        let ridge = (RIDGE_NOISE_SDS * r_sd).max(1e-6);
        let estimate = fit_risk(r, n, ridge);
        let risk = estimate
            .as_ref()
            .map(|b| unstandardise(b, &bounds, (spec.lo, spec.hi)));
        // Replicates of the raw coefficients under the release's noise added again: their
        // spread is the coefficients' noise SD, and a clinic measures on its own episodes how
        // far they move predictions (`analysis`, when it takes this model as its reference).
        let unstd = |b: &[f64]| unstandardise(b, &bounds, (spec.lo, spec.hi));
        let risk_replicates = estimate
            .as_ref()
            .map(|_| replicates(r, r_sd, &|sums| fit_risk(sums, n, ridge).map(|b| unstd(&b))))
            .unwrap_or_default();
        let risk_sd = risk
            .as_ref()
            .map(|beta| robust_spread(beta, &risk_replicates));
        if risk.is_none() {
            suppressed.push("risk".into());
        }
        // Expected curves per band.
        let (cv, cv_sd) = block(4);
        let curves = (0..spec.bands.len())
            .map(|band| {
                let g = &cv[band * 2 * SESSIONS..(band + 1) * 2 * SESSIONS];
                (0..SESSIONS)
                    .map(|s| {
                        let n = g[SESSIONS + s];
                        (n > 0.0 && cv_sd / n <= SUPPRESS_RELATIVE_SD)
                            .then(|| (g[s] / n).clamp(spec.lo, spec.hi))
                    })
                    .collect()
            })
            .collect();
        let mut a = [0.0; 6];
        let mut a_sd = [0.0; 6];
        for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
            let (v, sd) = block(5 + i);
            for (e, x) in entries.iter().zip(v) {
                a[*e] = *x;
                a_sd[*e] = sd;
            }
        }
        let (variance, tau2_sd) = noisy_variance(a, a_sd);
        if variance.is_none() {
            suppressed.push("variance".into());
        }
        DomainSummary {
            id: spec.id.clone(),
            episodes: count(0),
            finished: count(1),
            at_caseness: count(2),
            rates,
            intake,
            change,
            risk,
            risk_sd,
            risk_replicates,
            variance,
            tau2_sd,
            curves,
            suppressed,
        }
    }
}

/// Ridge of the released risk model, in noise SDs of the sums: the noise matrix's spectral norm
/// is about 2√p noise SDs, so a smaller ridge can leave the noisy XᵀX indefinite.
const RIDGE_NOISE_SDS: f64 = 3.0;

/// Bootstrap replicates behind [`DomainSummary::risk_sd`].
pub const BOOTSTRAP: usize = 64;

/// A released risk model replaces a clinic's own only when release noise moves its predicted
/// end scores by at most this many points (RMS over the clinic's episodes, typical replicate).
pub const REFERENCE_MAX_PREDICTION_SD: f64 = 1.0;

/// A released τ² replaces a clinic's own only when its noise SD is at most this fraction of
/// max(τ², σ²/10) (half the release's own suppression threshold).
pub const REFERENCE_MAX_TAU2_RELATIVE_SD: f64 = 0.5;

/// Whether a released τ² (noise SD `sd`) is precise enough to replace a clinic's own
/// ([`REFERENCE_MAX_TAU2_RELATIVE_SD`]).
pub fn tau2_usable(tau2: f64, sigma2: f64, sd: f64) -> bool {
    sd <= REFERENCE_MAX_TAU2_RELATIVE_SD * tau2.max(sigma2 / 10.0)
}

/// The risk model's standardised coefficients from the risk block's (decoded) sums.
fn fit_risk(sums: &[f64], n: u64, ridge: f64) -> Option<Vec<f64>> {
    let p = FEATURES.len();
    let tri = p * (p + 1) / 2;
    SuffStats::from_sums(p, n, &sums[..tri], &sums[tri..tri + p], sums[tri + p])
        .ok()?
        .fit(ridge)
        .ok()
        .map(|m| m.beta)
}

/// `fit` of `sums` with noise of SD `sd` added to every entry again, [`BOOTSTRAP`] times
/// (post-processing of the released sums only; the draws are seeded by the sums, so the
/// replicates are reproducible). Failed fits are left out.
fn replicates(sums: &[f64], sd: f64, fit: &dyn Fn(&[f64]) -> Option<Vec<f64>>) -> Vec<Vec<f64>> {
    use rand_core::{RngCore, SeedableRng};
    let seed = sums
        .iter()
        .fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits());
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut gauss = || {
        // Box–Muller from two uniforms in (0, 1].
        let u = |r: &mut rand_chacha::ChaCha20Rng| {
            ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        };
        let (a, b) = (u(&mut rng), u(&mut rng));
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    };
    (0..BOOTSTRAP)
        .filter_map(|_| {
            let noisy: Vec<f64> = sums.iter().map(|x| x + sd * gauss()).collect();
            fit(&noisy)
        })
        .collect()
}

/// 1.4826 × the median absolute deviation of the replicates from `estimate`, per entry: a
/// robust SD (an unlucky replicate near a singular XᵀX must not dominate it).
pub fn robust_spread(estimate: &[f64], replicates: &[Vec<f64>]) -> Vec<f64> {
    (0..estimate.len())
        .map(|k| {
            let mut d: Vec<f64> = replicates
                .iter()
                .map(|r| (r[k] - estimate[k]).abs())
                .collect();
            if d.is_empty() {
                return f64::INFINITY;
            }
            d.sort_by(f64::total_cmp);
            1.4826 * d[d.len() / 2]
        })
        .collect()
}

/// Variance components from noisy ANOVA sums `a` ([`AnovaSums::to_array`] order) whose
/// entries carry noise of SD `sd`, and the SD that noise gives τ² (finite differences, one SD
/// per entry, combined in quadrature). Suppressed (`None`) when τ² cannot be estimated or its
/// noise SD exceeds it (or σ²/10 when τ² is near 0): a shown τ² is at least one noise SD.
fn noisy_variance(a: [f64; 6], sd: [f64; 6]) -> (Option<VarianceComponents>, Option<f64>) {
    let Some(vc) = variance_from_sums(AnovaSums::from_array(a)) else {
        return (None, None);
    };
    let mut sq = 0.0;
    for e in 0..6 {
        let mut up = a;
        up[e] += sd[e];
        let mut down = a;
        down[e] -= sd[e];
        let tau2 = |x: [f64; 6]| variance_from_sums(AnovaSums::from_array(x)).map(|v| v.tau2);
        let d = match (tau2(up), tau2(down)) {
            (Some(u), Some(l)) => (u - l) / 2.0,
            _ => return (None, None),
        };
        sq += d * d;
    }
    let tau2_sd = sq.sqrt();
    let scale = vc.tau2.max(vc.sigma2 / 10.0);
    if tau2_sd > SUPPRESS_TAU2_RELATIVE_SD * scale {
        (None, Some(tau2_sd))
    } else {
        (Some(vc), Some(tau2_sd))
    }
}

/// NHS TT-style rates among finished courses (`None`: suppressed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Reliable improvement / finished.
    pub reliable_improvement: Option<f64>,
    /// Reliable deterioration / finished.
    pub reliable_deterioration: Option<f64>,
    /// Recovered / finished at caseness.
    pub recovery: Option<f64>,
    /// Reliably recovered / finished at caseness.
    pub reliable_recovery: Option<f64>,
}

/// Mean and quartiles of a histogram (bin centres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distribution {
    /// Mean.
    pub mean: f64,
    /// 25th, 50th and 75th percentiles.
    pub quartiles: [f64; 3],
}

impl Distribution {
    fn from_histogram(counts: &[f64], bins: Bins, sd: f64) -> Option<Self> {
        let counts: Vec<f64> = counts.iter().map(|c| c.max(0.0)).collect();
        let total: f64 = counts.iter().sum();
        // Noise over all bins has SD sd·√bins; suppress when it is large against the total.
        if total <= 0.0 || sd * (counts.len() as f64).sqrt() / total > SUPPRESS_RELATIVE_SD {
            return None;
        }
        let mean = counts
            .iter()
            .enumerate()
            .map(|(i, c)| c * bins.centre(i))
            .sum::<f64>()
            / total;
        let quantile = |q: f64| {
            let mut acc = 0.0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= q * total {
                    return bins.centre(i);
                }
            }
            bins.centre(bins.n - 1)
        };
        Some(Self {
            mean,
            quartiles: [quantile(0.25), quantile(0.5), quantile(0.75)],
        })
    }
}

/// Post-processed benchmark figures for one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainSummary {
    /// Domain id.
    pub id: String,
    /// Episodes with pre and post (noisy, ≥ 0).
    pub episodes: f64,
    /// Finished courses.
    pub finished: f64,
    /// Finished courses at caseness at the start.
    pub at_caseness: f64,
    /// Rates.
    pub rates: Rates,
    /// Intake score distribution.
    pub intake: Option<Distribution>,
    /// Change (post − pre) distribution.
    pub change: Option<Distribution>,
    /// Risk model coefficients in [`FEATURES`] order.
    pub risk: Option<Vec<f64>>,
    /// The standard deviation release noise gives each coefficient (parametric bootstrap).
    pub risk_sd: Option<Vec<f64>>,
    /// The coefficients refitted with the release's noise added again ([`BOOTSTRAP`]
    /// replicates): a clinic measures on its own episodes how far noise moves the model's
    /// predictions before taking it as its reference ([`REFERENCE_MAX_PREDICTION_SD`]).
    pub risk_replicates: Vec<Vec<f64>>,
    /// Therapist variance components.
    pub variance: Option<VarianceComponents>,
    /// Standard deviation the release noise gives τ² (first-order propagation).
    pub tau2_sd: Option<f64>,
    /// Expected mean score per severity band (rows) and session 1..[`SESSIONS`] (columns).
    pub curves: Vec<Vec<Option<f64>>>,
    /// Figures withheld because noise dominates them.
    pub suppressed: Vec<String>,
}

#[cfg(test)]
mod tests;
