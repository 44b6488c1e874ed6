//! Layouts (blocks at fixed offsets, fixed-point scales, the derived sensitivity) and the
//! Encoder that enforces their bounds.

use std::collections::HashMap;

use super::{Block, BlockKind, Error, MAX_MAGNITUDE, TAIL_SIGMAS, TARGET_SENSITIVITY};

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
pub(super) fn sqrt_up(x: u128) -> f64 {
    // Sums of squares are checked below 2^100 (see `sum_of_squares`), so one ulp covers the
    // f64 rounding.
    (x as f64).sqrt().next_up()
}

/// ⌈x⌉ as integer units, or `None` when x is not a finite number in [0, 2^53] (where every
/// integer is exact in f64).
pub(super) fn to_units(x: f64) -> Option<u64> {
    let c = x.ceil();
    (c.is_finite() && (0.0..=9_007_199_254_740_992.0).contains(&c)).then_some(c as u64)
}

/// Σ eᵢ², exactly, refused beyond 2^100.
pub(super) fn sum_of_squares(bounds: &[u64]) -> Option<u128> {
    let mut sum: u128 = 0;
    for e in bounds {
        sum = sum.checked_add(u128::from(*e).checked_mul(u128::from(*e))?)?;
    }
    (sum < 1u128 << 100).then_some(sum)
}

/// The L2 norm of non-negative magnitudes without overflow or underflow of the squares.
pub(super) fn norm(magnitudes: &[f64]) -> f64 {
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
