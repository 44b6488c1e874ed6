//! A directory entry's badges: clinic-level figures per domain from one differentially private
//! release, never a therapist's (DESIGN.md P3).
//!
//! The release vector is one counts block per domain, `<domain>.badge`: finished courses and
//! reliable improvement among them (the NHS Talking Therapies definitions the benchmark's
//! `outcomes` block uses). An episode adds 0 or 1 to each entry; each patient's first
//! `max_episodes` finished courses per domain count; the L2 sensitivity is derived by
//! [`crate::dp::Layout::new`] from those bounds, as for every release. The badge (rate and its
//! noise SD) is post-processing; a domain whose noised count of finished courses is below
//! [`MIN_FINISHED`] gets no badge (the count is already noised: withholding costs nothing).

use serde::Serialize;

use super::Badge;
use crate::benchmark::document::BlockLayout;
use crate::benchmark::{Contribution, DomainSpec};
use crate::dp::{self, Block, Layout};

/// The badges layout's kind, as the ledger records it.
pub const KIND: &str = "directory-badges";
/// Version of the layout below.
pub const LAYOUT_VERSION: u32 = 1;
/// Fewest (noised) finished courses a badge is shown for.
pub const MIN_FINISHED: f64 = 20.0;

/// Entries of each domain's block.
const FINISHED: usize = 0;
const IMPROVED: usize = 1;

/// The badges' release vector over the clinic's domains.
#[derive(Debug, Clone)]
pub struct BadgeLayout {
    domains: Vec<DomainSpec>,
    layout: Layout,
}

impl BadgeLayout {
    /// One counts block of two per domain; each patient's first `max_episodes` finished
    /// courses per domain count.
    pub fn new(domains: Vec<DomainSpec>, max_episodes: u32) -> Result<Self, dp::Error> {
        if domains.is_empty() {
            return Err(dp::Error::Parameter("no domain to badge".into()));
        }
        let blocks = domains
            .iter()
            .map(|d| Block::counts(&format!("{}.badge", d.id), 2))
            .collect();
        let layout = Layout::new(blocks, max_episodes)?;
        Ok(Self { domains, layout })
    }

    /// The DP layout (blocks, scales, sensitivity).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The domains, in vector order.
    pub fn domains(&self) -> &[DomainSpec] {
        &self.domains
    }

    /// The clinic's vector: `contributions` (their `domain` indexes [`Self::domains`]) in
    /// order; unfinished courses count nowhere.
    pub fn encode(&self, contributions: &[Contribution]) -> Result<Vec<i64>, dp::Error> {
        let mut enc = self.layout.encoder();
        for c in contributions.iter().filter(|c| c.finished) {
            if c.domain >= self.domains.len() {
                return Err(dp::Error::Parameter(format!("no domain {}", c.domain)));
            }
            let improved = c.reliable.is_some_and(|(ri, _)| ri);
            enc.add(
                c.patient,
                c.domain,
                0,
                &[1.0, f64::from(u8::from(improved))],
            )?;
        }
        Ok(enc.finish())
    }

    /// The badges of a noised vector whose noise SD is `sigma` (encoded units): per domain
    /// with at least [`MIN_FINISHED`] noised finished courses, the rate clamped to 0–1 and its
    /// noise SD (delta method: √(σ² + r²σ²) / F), citing `release_id`.
    pub fn badges(
        &self,
        values: &[i64],
        sigma: f64,
        release_id: &str,
    ) -> Result<Vec<Badge>, dp::Error> {
        let decoded = self.layout.decode(values)?;
        let mut out = Vec::new();
        for (d, block) in self.domains.iter().zip(self.layout.blocks()) {
            let at = |i: usize| decoded[block.offset() + i];
            let (finished, improved) = (at(FINISHED), at(IMPROVED));
            if finished < MIN_FINISHED {
                continue;
            }
            let rate = (improved / finished).clamp(0.0, 1.0);
            let sd = sigma / block.scale();
            out.push(Badge {
                domain: d.id.clone(),
                finished: finished.round(),
                reliable_improvement: rate,
                noise_sd: sd * (1.0 + rate * rate).sqrt() / finished,
                release_id: release_id.into(),
            });
        }
        Ok(out)
    }
}

/// The badges layout as the ledger records it with the charge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadgeLayoutDescription {
    /// [`KIND`].
    pub kind: String,
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Finished courses one patient may contribute per domain.
    pub max_episodes_per_patient: u32,
    /// The domains, in vector order.
    pub domains: Vec<String>,
    /// The blocks, in vector order.
    pub blocks: Vec<BlockLayout>,
    /// Patient-level L2 sensitivity.
    pub sensitivity: f64,
}

impl BadgeLayoutDescription {
    /// The description of `layout`.
    pub fn of(layout: &BadgeLayout) -> Self {
        Self {
            kind: KIND.into(),
            version: LAYOUT_VERSION,
            max_episodes_per_patient: layout.layout.max_episodes(),
            domains: layout.domains.iter().map(|d| d.id.clone()).collect(),
            blocks: BlockLayout::all(&layout.layout),
            sensitivity: layout.layout.sensitivity().patient,
        }
    }
}
