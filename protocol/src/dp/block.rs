//! Blocks of a release vector: what each holds and how far one episode can move it.

use super::layout::to_units;
use super::{BOUND_RANGE, Error};

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
    /// per-episode change bound; set once with [`super::Encoder::set_aggregate`].
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
    pub(super) name: String,
    pub(super) kind: BlockKind,
    pub(super) groups: usize,
    /// Per-entry clipping bounds of one episode's contribution (one group).
    pub(super) lo: Vec<f64>,
    pub(super) hi: Vec<f64>,
    /// Feature and target bounds of a sum-of-products block.
    pub(super) products: Option<(Vec<Interval>, Interval)>,
    /// Per-entry bound of how far one therapist's caseload can move each entry (P3).
    pub(super) therapist: Option<Vec<f64>>,
    pub(super) weight: f64,
    // Set by Layout::new.
    pub(super) offset: usize,
    pub(super) scale: f64,
    /// Per-entry integer bound of one episode's encoded contribution.
    pub(super) episode_bound: Vec<u64>,
    /// L2 bound of one patient's encoded contribution to this block.
    pub(super) patient_bound: f64,
}

impl Block {
    pub(super) fn new(
        name: &str,
        kind: BlockKind,
        groups: usize,
        lo: Vec<f64>,
        hi: Vec<f64>,
    ) -> Self {
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

    /// Whether the block has no entries (never, for a block in a [`super::Layout`]).
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

    pub(super) fn error(&self, reason: impl Into<String>) -> Error {
        Error::Block {
            block: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The largest |value| of each entry of one episode's contribution.
    pub(super) fn magnitudes(&self) -> impl Iterator<Item = f64> + '_ {
        self.bounds().map(|(lo, hi)| lo.abs().max(hi.abs()))
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
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
pub(super) fn interval_product(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (
        c.iter().copied().fold(f64::INFINITY, f64::min),
        c.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}
