//! The `benchmark` release vector, layout version [`LAYOUT_VERSION`] (DESIGN.md §10).
//!
//! Per domain, nine blocks (names prefixed `<domain>.`):
//!
//! | block | kind | entries |
//! |---|---|---|
//! | `outcomes` | counts | episodes, finished, finished at caseness, reliable improvement, reliable deterioration, recovered, reliable recovery |
//! | `intake` | histogram | intake score (unit bins for ranges of 10–40 points, else 41 equal bins) |
//! | `change` | histogram | post − pre over ±range |
//! | `risk` | sums of products | XᵀX (upper triangle), Xᵀy, yᵀy of the risk model's features and post score, each scaled to [−1, 1] |
//! | `curve_sums` | clipped sums by intake-severity band | score sum at sessions 1..[`SESSIONS`] |
//! | `curve_counts` | clipped sums by intake-severity band | patients seen at sessions 1..[`SESSIONS`] |
//! | `anova_counts` | aggregate | N, J (episodes and therapists in the therapist-variance sums) |
//! | `anova_sums` | aggregate | Σr, Σr², Σⱼ Sⱼ²/nⱼ over elevated episodes' residuals |
//! | `anova_caseload` | aggregate | Σⱼ nⱼ² |
//!
//! The ANOVA sums are three blocks so that each gets its own fixed-point scale and budget share:
//! in one block the counts would carry noise on the scale of Σⱼ Sⱼ²/nⱼ's bound (4R²). The curves
//! are two for the same reason (layout version 3): in one block the patient counts carried the
//! noise of the score sums, a whole score range per entry, and at five clinics of 1,500 patients
//! every curve was suppressed.
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
//! Post-processing costs no privacy budget; it lives in `benchmark/summary.rs`. The release
//! documents that carry a vector and its summary are typed in `benchmark/document.rs`.

pub mod document;
mod summary;

pub(crate) use summary::replicates;
pub use summary::{
    BOOTSTRAP, Distribution, DomainSummary, REFERENCE_MAX_TAU2_RELATIVE_SD, Rates, robust_spread,
    tau2_usable,
};

use crate::analysis::{FEATURES, domain_score};
use crate::dp::{self, Block, Layout};
use crate::instrument::{Direction, Domain, Instrument};
use crate::therapist::{AnovaSums, Group};

/// Version of the vector layout below; bump it on any change to blocks, bins or bounds.
pub const LAYOUT_VERSION: u32 = 3;

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

/// Noise SD of an expected-curve point (a mean score), as a fraction of the domain's score
/// range, beyond which the point is suppressed: 1.35 points of the PHQ-9, 1.05 of the GAD-7.
pub const SUPPRESS_CURVE_SD: f64 = 0.05;

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
    /// The primary therapist (any stable local key; never leaves the node); `None` when the
    /// data does not say: no place in the ANOVA blocks.
    pub therapist: Option<u64>,
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
    /// Whether the episode ended in dropout (`None`: not ended, or its end reason unknown):
    /// the outcome of the dropout model ([`crate::dropout`]).
    pub dropout: Option<bool>,
}

/// The first score at each of sessions 1..=`sessions` of an episode's (session sequence
/// number, score) list, in list order.
pub(crate) fn first_scores(list: &[(u32, f64)], sessions: usize) -> Vec<Option<f64>> {
    let mut first = vec![None; sessions];
    for (seq, score) in list {
        let s = *seq as usize;
        if (1..=sessions).contains(&s) && first[s - 1].is_none() {
            first[s - 1] = Some(*score);
        }
    }
    first
}

/// Bounds of the risk model's features, in [`FEATURES`] order, for a domain scored in [lo, hi].
pub(crate) fn feature_bounds(lo: f64, hi: f64) -> Vec<(f64, f64)> {
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
pub(crate) fn centre_half((lo, hi): (f64, f64)) -> (f64, f64) {
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
pub(crate) fn standardise(x: f64, bound: (f64, f64)) -> f64 {
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

pub(crate) fn unit_bounds(bounds: &[(f64, f64)]) -> Vec<(f64, f64)> {
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
pub const BLOCKS: [&str; 9] = [
    "outcomes",
    "intake",
    "change",
    "risk",
    "curve_sums",
    "curve_counts",
    "anova_counts",
    "anova_sums",
    "anova_caseload",
];

/// Budget weights of the blocks, in [`BLOCKS`] order (a block's share of ρ is its weight over
/// the total). The variance sums get the most: their per-episode bounds are the largest
/// relative to their signal (one episode can move Σⱼ Sⱼ²/nⱼ by 4r², r the residual clip).
///
/// The curves' weight of 1 is shared 0.7 : 0.3 between score sums and counts, near the split
/// that minimises the noise of an expected score, sum / count (2 : 1 when the mean score is
/// half the range: the sums' sensitivity is the range, the counts' 1, and a count's noise
/// enters the mean multiplied by the mean).
pub const WEIGHTS: [f64; 9] = [1.0, 0.5, 0.5, 4.0, 0.7, 0.3, 2.0, 4.0, 0.5];

/// Index in [`BLOCKS`] of the first ANOVA block.
const ANOVA_BLOCK: usize = 6;

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
                Block::clipped_sums(
                    &name("curve_sums"),
                    d.bands.len(),
                    vec![slo; SESSIONS],
                    vec![shi; SESSIONS],
                )
                .weighted(WEIGHTS[4]),
                Block::clipped_sums(
                    &name("curve_counts"),
                    d.bands.len(),
                    vec![0.0; SESSIONS],
                    vec![1.0; SESSIONS],
                )
                .weighted(WEIGHTS[5]),
            ]);
            for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
                let pick = |v: &[f64]| entries.iter().map(|e| v[*e]).collect::<Vec<_>>();
                blocks.push(
                    Block::aggregate(
                        &name(BLOCKS[ANOVA_BLOCK + i]),
                        pick(&episode),
                        Some(pick(&therapist)),
                    )
                    .weighted(WEIGHTS[ANOVA_BLOCK + i]),
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
            // The first score at each of sessions 1..SESSIONS, and whether there was one.
            let first = first_scores(&c.sessions, SESSIONS);
            let scores: Vec<f64> = first.iter().map(|s| s.unwrap_or(0.0)).collect();
            let seen: Vec<f64> = first.iter().map(|s| flag(s.is_some())).collect();
            let band = d.band(c.pre);
            enc.add(c.patient, b(4), band, &scores)?;
            enc.add(c.patient, b(5), band, &seen)?;
            if let (Some(r), Some(t)) = (c.residual, c.therapist) {
                let g = groups[c.domain].entry(t).or_default();
                if g.n < u64::from(self.params.caseload_cap) {
                    g.add(r.clamp(-d.residual_clip(), d.residual_clip()));
                }
            }
        }
        for (d, groups) in groups.iter().enumerate() {
            let sums = AnovaSums::of(groups.values()).to_array();
            for (i, entries) in ANOVA_SPLIT.iter().enumerate() {
                let values: Vec<f64> = entries.iter().map(|e| sums[*e]).collect();
                enc.set_aggregate(self.block_index(d, ANOVA_BLOCK + i), &values)?;
            }
        }
        Ok(enc.finish())
    }
}

#[cfg(test)]
pub(crate) mod tests;
