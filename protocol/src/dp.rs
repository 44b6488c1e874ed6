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

use std::collections::HashMap;

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

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

fn opendp_error(e: opendp::error::Error) -> Error {
    Error::OpenDp(e.to_string())
}

/// What a block holds; decides how its bounds are read (display and encoder entry points).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Counts: each entry is 0 or 1 per episode.
    Count,
    /// A histogram: each episode adds 1 to exactly one bin.
    Histogram,
    /// Sums of values clipped to per-entry bounds, in one of `groups` groups per episode.
    ClippedSum,
    /// Sums of products xxᵀ (upper triangle), xy and y² of clipped features x and target y.
    SumOfProducts,
    /// A function of the whole dataset (e.g. ANOVA sums) with an analytically declared
    /// per-episode change bound; set once with [`Encoder::set_aggregate`].
    Aggregate,
}

impl BlockKind {
    /// Lower-case name used in release documents and the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Histogram => "histogram",
            Self::ClippedSum => "clipped-sum",
            Self::SumOfProducts => "sum-of-products",
            Self::Aggregate => "aggregate",
        }
    }
}

/// A closed interval [lo, hi].
type Interval = (f64, f64);

/// One named block of a release vector: `groups × width` entries, of which one episode touches
/// one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    name: String,
    kind: BlockKind,
    groups: usize,
    /// Per-entry clipping bounds of one episode's contribution (one group).
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Feature and target bounds of a sum-of-products block.
    products: Option<(Vec<Interval>, Interval)>,
    /// Per-entry bound of how far one therapist's caseload can move each entry (P3).
    therapist: Option<Vec<f64>>,
    weight: f64,
    // Set by Layout::new.
    offset: usize,
    scale: f64,
    /// Per-entry integer bound of one episode's encoded contribution.
    episode_bound: Vec<u64>,
    /// L2 bound of one patient's encoded contribution to this block.
    patient_bound: f64,
}

impl Block {
    fn new(name: &str, kind: BlockKind, groups: usize, lo: Vec<f64>, hi: Vec<f64>) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            groups,
            lo,
            hi,
            products: None,
            therapist: None,
            weight: 1.0,
            offset: 0,
            scale: 0.0,
            episode_bound: Vec::new(),
            patient_bound: 0.0,
        }
    }

    /// `n` counts; an episode adds 0 or 1 to each.
    pub fn counts(name: &str, n: usize) -> Self {
        Self::new(name, BlockKind::Count, 1, vec![0.0; n], vec![1.0; n])
    }

    /// A histogram of `bins` bins; an episode adds 1 to one bin.
    pub fn histogram(name: &str, bins: usize) -> Self {
        Self::new(name, BlockKind::Histogram, bins, vec![0.0], vec![1.0])
    }

    /// Sums of `lo.len()` values, each clipped to `[lo[i], hi[i]]`, in one of `groups` groups.
    pub fn clipped_sums(name: &str, groups: usize, lo: Vec<f64>, hi: Vec<f64>) -> Self {
        Self::new(name, BlockKind::ClippedSum, groups, lo, hi)
    }

    /// Sums of products for a regression of y on x: the upper triangle of xxᵀ (row-major),
    /// then xy, then y². Features are clipped to `features[i]`, the target to `target`.
    pub fn sum_of_products(name: &str, features: Vec<(f64, f64)>, target: (f64, f64)) -> Self {
        let p = features.len();
        let mut bounds = Vec::with_capacity(p * (p + 1) / 2 + p + 1);
        for a in 0..p {
            for b in a..p {
                bounds.push(interval_product(features[a], features[b]));
            }
        }
        for f in &features {
            bounds.push(interval_product(*f, target));
        }
        bounds.push(interval_product(target, target));
        let (lo, hi) = bounds.into_iter().unzip();
        let mut block = Self::new(name, BlockKind::SumOfProducts, 1, lo, hi);
        block.products = Some((features, target));
        block
    }

    /// An aggregate: a function of the whole dataset whose entries one episode can move by at
    /// most `episode_change[i]` (in either direction), and one therapist's whole caseload by
    /// `therapist_change[i]` when given (P3).
    pub fn aggregate(
        name: &str,
        episode_change: Vec<f64>,
        therapist_change: Option<Vec<f64>>,
    ) -> Self {
        let lo = episode_change.iter().map(|b| -b).collect();
        let mut block = Self::new(name, BlockKind::Aggregate, 1, lo, episode_change);
        block.therapist = therapist_change;
        block
    }

    /// Sets the block's share of the sensitivity budget (default 1; shares are relative).
    #[must_use]
    pub fn weighted(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// The block's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The block's kind.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Entries per group.
    pub fn width(&self) -> usize {
        self.lo.len()
    }

    /// Entries in the vector.
    pub fn len(&self) -> usize {
        self.groups * self.width()
    }

    /// Whether the block has no entries (never, for a block in a [`Layout`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of the block's first entry in the vector.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Fixed-point scale: encoded = round(value × scale).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// L2 bound of one patient's encoded contribution to this block (its share of the
    /// layout's sensitivity).
    pub fn patient_bound(&self) -> f64 {
        self.patient_bound
    }

    /// Per-entry bound of one patient's encoded contribution (integer units): k·eᵢ for
    /// per-episode blocks, ⌈scale·k·mᵢ⌉ + 1 for aggregates. Fails (never wraps or saturates)
    /// when a bound does not fit the integer units.
    pub fn patient_entry_bounds(&self, max_episodes: u32) -> Result<Vec<u64>, Error> {
        let k = u64::from(max_episodes);
        let too_big = || self.error("a bound does not fit the fixed-point range");
        match self.kind {
            BlockKind::Aggregate => self
                .magnitudes()
                .map(|m| {
                    to_units(self.scale * k as f64 * m)
                        .and_then(|e| e.checked_add(1))
                        .ok_or_else(too_big)
                })
                .collect(),
            _ => self
                .episode_bound
                .iter()
                .map(|e| k.checked_mul(*e).ok_or_else(too_big))
                .collect(),
        }
    }

    /// Per-entry clipping bounds of one episode's contribution, in real units.
    pub fn bounds(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.lo.iter().copied().zip(self.hi.iter().copied())
    }

    /// Per-entry bound of one therapist's whole contribution, if declared (P3).
    pub fn therapist_bounds(&self) -> Option<&[f64]> {
        self.therapist.as_deref()
    }

    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Block {
            block: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The largest |value| of each entry of one episode's contribution.
    fn magnitudes(&self) -> impl Iterator<Item = f64> + '_ {
        self.bounds().map(|(lo, hi)| lo.abs().max(hi.abs()))
    }

    fn validate(&self) -> Result<(), Error> {
        if self.name.is_empty() {
            return Err(self.error("has no name"));
        }
        if self.groups == 0 || self.lo.is_empty() || self.lo.len() != self.hi.len() {
            return Err(self.error("has no entries or mismatched bounds"));
        }
        if self
            .bounds()
            .any(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo <= hi))
        {
            return Err(self.error("bounds must be finite with lo ≤ hi"));
        }
        if self.magnitudes().all(|m| m == 0.0) {
            return Err(self.error("bounds are all zero"));
        }
        if self
            .magnitudes()
            .any(|m| m != 0.0 && !(BOUND_RANGE.0..=BOUND_RANGE.1).contains(&m))
        {
            return Err(self.error(format!(
                "bounds must be 0 or between {:e} and {:e} in magnitude",
                BOUND_RANGE.0, BOUND_RANGE.1
            )));
        }
        if !self.weight.is_finite() || self.weight <= 0.0 {
            return Err(self.error("weight must be positive"));
        }
        if let Some(t) = &self.therapist
            && (t.len() != self.lo.len() || t.iter().any(|b| !(b.is_finite() && *b >= 0.0)))
        {
            return Err(self.error("therapist bounds must match the entries and be ≥ 0"));
        }
        Ok(())
    }
}

/// [lo, hi] of a·b for a ∈ [a0, a1], b ∈ [b0, b1].
fn interval_product(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (
        c.iter().copied().fold(f64::INFINITY, f64::min),
        c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// L2 sensitivities of a layout, in the encoded integer units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    /// One patient's whole contribution (P2).
    pub patient: f64,
    /// One therapist's whole caseload, over the blocks that aggregate therapist quantities (P3);
    /// `None` when no block does.
    pub therapist: Option<f64>,
}

/// A validated release layout: blocks at fixed offsets, scales, and the derived sensitivity.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    blocks: Vec<Block>,
    max_episodes: u32,
    len: usize,
    sensitivity: Sensitivity,
}

/// √x rounded up, for an exact integer sum of squares: the returned f64 squared is ≥ x.
fn sqrt_up(x: u128) -> f64 {
    // Sums of squares are checked below 2^100 (see `sum_of_squares`), so one ulp covers the
    // f64 rounding.
    (x as f64).sqrt().next_up()
}

/// ⌈x⌉ as integer units, or `None` when x is not a finite number in [0, 2^53] (where every
/// integer is exact in f64).
fn to_units(x: f64) -> Option<u64> {
    let c = x.ceil();
    (c.is_finite() && (0.0..=9_007_199_254_740_992.0).contains(&c)).then_some(c as u64)
}

/// Σ eᵢ², exactly, refused beyond 2^100.
fn sum_of_squares(bounds: &[u64]) -> Option<u128> {
    let mut sum: u128 = 0;
    for e in bounds {
        sum = sum.checked_add(u128::from(*e).checked_mul(u128::from(*e))?)?;
    }
    (sum < 1u128 << 100).then_some(sum)
}

/// The L2 norm of non-negative magnitudes without overflow or underflow of the squares.
fn norm(magnitudes: &[f64]) -> f64 {
    let largest = magnitudes.iter().copied().fold(0.0, f64::max);
    if largest == 0.0 {
        return 0.0;
    }
    largest
        * magnitudes
            .iter()
            .map(|m| (m / largest).powi(2))
            .sum::<f64>()
            .sqrt()
}

impl Layout {
    /// Validates blocks, chooses each block's fixed-point scale, and derives the L2 sensitivity
    /// of the whole vector for one patient who contributes at most `max_episodes` episodes to
    /// each block. This is the one place sensitivity is computed (P2).
    ///
    /// Block b gets the integer sensitivity D_b = [`TARGET_SENSITIVITY`] · √(w_b / Σw), so its
    /// scale is D_b / (k · ‖episode bound‖₂). Encoded per-episode entries are bounded by
    /// e_i = ⌈scale · max|bound_i|⌉ (aggregates, encoded once as a whole, add 1 for rounding);
    /// the patient's bound on the block is k·‖e‖₂ (k episodes, possibly in the same group), and
    /// Δ₂ = √(Σ_b k²‖e_b‖²), computed as an exact integer sum and rounded up.
    pub fn new(mut blocks: Vec<Block>, max_episodes: u32) -> Result<Self, Error> {
        if max_episodes == 0 {
            return Err(Error::Parameter("max_episodes must be at least 1".into()));
        }
        if blocks.is_empty() {
            return Err(Error::Parameter(
                "a release needs at least one block".into(),
            ));
        }
        let total_weight: f64 = blocks.iter().map(|b| b.weight).sum();
        let k = f64::from(max_episodes);
        let mut offset = 0;
        let mut patient_sq: u128 = 0;
        let mut therapist_sq: Option<u128> = None;
        for i in 0..blocks.len() {
            blocks[i].validate()?;
            if blocks[..i].iter().any(|b| b.name == blocks[i].name) {
                return Err(blocks[i].error("name is used twice"));
            }
            let b = &mut blocks[i];
            let share = TARGET_SENSITIVITY * (b.weight / total_weight).sqrt();
            b.offset = offset;
            offset = offset
                .checked_add(b.len())
                .ok_or_else(|| b.error("has too many entries"))?;
            b.scale = share / (k * norm(&b.magnitudes().collect::<Vec<_>>()));
            if !(b.scale.is_finite() && b.scale > 0.0) {
                return Err(b.error("its bounds give no representable fixed-point scale"));
            }
            let scale = b.scale;
            b.episode_bound = b
                .magnitudes()
                .map(|m| to_units(scale * m))
                .collect::<Option<_>>()
                .ok_or_else(|| b.error("a bound does not fit the fixed-point range"))?;
            // Per-episode blocks: k·eᵢ. Aggregates, encoded once as a whole:
            // |round(s·v) − round(s·v')| ≤ ⌈s·k·m⌉ + 1 (see `patient_entry_bounds`).
            let overflow = || Error::Overflow(format!("the sensitivity of block {:?}", b.name));
            let block_sq =
                sum_of_squares(&b.patient_entry_bounds(max_episodes)?).ok_or_else(overflow)?;
            b.patient_bound = sqrt_up(block_sq);
            patient_sq = patient_sq.checked_add(block_sq).ok_or_else(overflow)?;
            if let Some(t) = &b.therapist {
                let units = t
                    .iter()
                    .map(|m| to_units(scale * m).and_then(|e| e.checked_add(1)))
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(overflow)?;
                let sq = sum_of_squares(&units).ok_or_else(overflow)?;
                let total = therapist_sq.get_or_insert(0);
                *total = total.checked_add(sq).ok_or_else(overflow)?;
            }
        }
        if patient_sq >= 1u128 << 100 {
            return Err(Error::Overflow("the layout's sensitivity".into()));
        }
        Ok(Self {
            blocks,
            max_episodes,
            len: offset,
            sensitivity: Sensitivity {
                patient: sqrt_up(patient_sq),
                therapist: therapist_sq.map(sqrt_up),
            },
        })
    }

    /// The blocks, in vector order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// A block by name.
    pub fn block(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Index of a block by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.blocks.iter().position(|b| b.name == name)
    }

    /// Entries in the vector.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the vector is empty (never, for a valid layout).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Episodes one patient may contribute to each block.
    pub fn max_episodes(&self) -> u32 {
        self.max_episodes
    }

    /// The L2 sensitivities, in encoded integer units.
    pub fn sensitivity(&self) -> Sensitivity {
        self.sensitivity
    }

    /// Real values from encoded (and noised) integers: entry / its block's scale.
    pub fn decode(&self, encoded: &[i64]) -> Result<Vec<f64>, Error> {
        if encoded.len() != self.len {
            return Err(Error::Parameter(format!(
                "vector has {} entries, the layout {}",
                encoded.len(),
                self.len
            )));
        }
        let mut out = Vec::with_capacity(self.len);
        for b in &self.blocks {
            out.extend(
                encoded[b.offset..b.offset + b.len()]
                    .iter()
                    .map(|v| *v as f64 / b.scale),
            );
        }
        Ok(out)
    }

    /// Checks that a vector summed over `patients` patients, plus noise of standard deviation
    /// `sigma`, cannot reach [`MAX_MAGNITUDE`] (wrap-around probability below 2^-40).
    pub fn check_capacity(&self, patients: u64, sigma: f64) -> Result<(), Error> {
        let k = f64::from(self.max_episodes);
        let worst = self
            .blocks
            .iter()
            .map(|b| {
                let entry = b.episode_bound.iter().copied().max().unwrap_or(0) as f64;
                match b.kind {
                    // An aggregate's magnitude is bounded by its per-episode change times the
                    // number of episodes plus one rounding unit.
                    BlockKind::Aggregate => entry * k * patients as f64 + 1.0,
                    _ => entry * k * patients as f64,
                }
            })
            .fold(0.0, f64::max);
        let total = worst + TAIL_SIGMAS * sigma;
        if total >= MAX_MAGNITUDE {
            return Err(Error::Overflow(format!(
                "{patients} patients could reach {total:.3e} in one entry (limit 2^62)"
            )));
        }
        Ok(())
    }

    /// A fresh encoder for this layout.
    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            layout: self,
            values: vec![0; self.len],
            used: HashMap::new(),
            aggregates: vec![false; self.blocks.len()],
        }
    }
}

/// Builds an encoded vector from episodes, enforcing the layout's bounds: values are clipped to
/// the block's bounds, rounded to its fixed-point scale and clamped to the declared integer
/// bound; a patient's episodes beyond `max_episodes` per block are dropped.
#[derive(Debug)]
pub struct Encoder<'a> {
    layout: &'a Layout,
    values: Vec<i64>,
    used: HashMap<(u64, usize), u32>,
    aggregates: Vec<bool>,
}

impl<'a> Encoder<'a> {
    fn block(&self, index: usize) -> Result<&'a Block, Error> {
        self.layout
            .blocks
            .get(index)
            .ok_or_else(|| Error::Parameter(format!("no block {index}")))
    }

    /// Counts one more episode of `patient` in block `index`; false when over the cap.
    fn admit(&mut self, patient: u64, index: usize) -> bool {
        let used = self.used.entry((patient, index)).or_insert(0);
        if *used >= self.layout.max_episodes {
            return false;
        }
        *used += 1;
        true
    }

    fn accumulate(&mut self, index: usize, group: usize, values: &[f64]) -> Result<(), Error> {
        let b: &'a Block = &self.layout.blocks[index];
        let base = b.offset + group * b.width();
        for (i, v) in values.iter().enumerate() {
            let (lo, hi) = (b.lo[i], b.hi[i]);
            let e = b.episode_bound[i] as i64;
            let encoded = ((v.clamp(lo, hi) * b.scale).round() as i64).clamp(-e, e);
            let slot = &mut self.values[base + i];
            *slot = slot
                .checked_add(encoded)
                .ok_or_else(|| Error::Overflow(format!("block {:?}", b.name)))?;
        }
        Ok(())
    }

    /// Adds one episode of `patient` to group `group` of a count, histogram or clipped-sum
    /// block. Returns false (and adds nothing) when the patient already has `max_episodes`
    /// episodes in this block.
    pub fn add(
        &mut self,
        patient: u64,
        index: usize,
        group: usize,
        values: &[f64],
    ) -> Result<bool, Error> {
        let b = self.block(index)?;
        if matches!(b.kind, BlockKind::Aggregate | BlockKind::SumOfProducts) {
            return Err(b.error("takes no per-episode values through add"));
        }
        if group >= b.groups || values.len() != b.width() {
            return Err(b.error(format!(
                "group {group} / {} values out of shape {} × {}",
                values.len(),
                b.groups,
                b.width()
            )));
        }
        if values.iter().any(|v| v.is_nan()) {
            return Err(b.error("value is not a number"));
        }
        if !self.admit(patient, index) {
            return Ok(false);
        }
        self.accumulate(index, group, values)?;
        Ok(true)
    }

    /// Adds one episode of `patient` to bin `bin` of a histogram.
    pub fn add_bin(&mut self, patient: u64, index: usize, bin: usize) -> Result<bool, Error> {
        self.add(patient, index, bin, &[1.0])
    }

    /// Adds one episode's features `x` and target `y` to a sum-of-products block.
    pub fn add_products(
        &mut self,
        patient: u64,
        index: usize,
        x: &[f64],
        y: f64,
    ) -> Result<bool, Error> {
        let b = self.block(index)?;
        let Some((features, target)) = &b.products else {
            return Err(b.error("is not a sum-of-products block"));
        };
        if x.len() != features.len() {
            return Err(b.error(format!("{} features, expected {}", x.len(), features.len())));
        }
        if y.is_nan() || x.iter().any(|v| v.is_nan()) {
            return Err(b.error("value is not a number"));
        }
        let x: Vec<f64> = x
            .iter()
            .zip(features)
            .map(|(v, (lo, hi))| v.clamp(*lo, *hi))
            .collect();
        let y = y.clamp(target.0, target.1);
        let p = x.len();
        let mut entries = Vec::with_capacity(b.width());
        for a in 0..p {
            for c in a..p {
                entries.push(x[a] * x[c]);
            }
        }
        entries.extend(x.iter().map(|v| v * y));
        entries.push(y * y);
        if !self.admit(patient, index) {
            return Ok(false);
        }
        self.accumulate(index, 0, &entries)?;
        Ok(true)
    }

    /// Sets an aggregate block's values, computed by the caller from clipped, capped data
    /// according to the block's declared per-episode change bound. Each aggregate is set once.
    pub fn set_aggregate(&mut self, index: usize, values: &[f64]) -> Result<(), Error> {
        let b = self.block(index)?;
        if b.kind != BlockKind::Aggregate {
            return Err(b.error("is not an aggregate block"));
        }
        if values.len() != b.width() || values.iter().any(|v| !v.is_finite()) {
            return Err(b.error("needs one finite value per entry"));
        }
        if self.aggregates[index] {
            return Err(b.error("was already set"));
        }
        self.aggregates[index] = true;
        let (offset, scale) = (b.offset, b.scale);
        for (i, v) in values.iter().enumerate() {
            let encoded = (v * scale).round();
            if encoded.abs() >= MAX_MAGNITUDE {
                return Err(Error::Overflow(format!("block {:?}", b.name)));
            }
            self.values[offset + i] = encoded as i64;
        }
        Ok(())
    }

    /// The encoded vector.
    pub fn finish(self) -> Vec<i64> {
        self.values
    }
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

#[cfg(test)]
mod tests;
