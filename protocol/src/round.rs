//! Round specifications and signed releases (DESIGN.md §9–10).
//!
//! The aggregator (the network's coordinator) signs a [`RoundSpec`]: which kind of vector is
//! summed (its layout travels in the spec, so every node encodes the same vector), ρ of the
//! release, the threshold t, the invited participants, the per-step deadline. Its digest
//! ([`SignedRoundSpec::digest`]) is the round's identity inside SecAgg: every key, share and
//! mask is bound to it. The result of a round is a [`SignedRelease`]: a JSON document signed
//! by the aggregator, gossiped to every node.

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::benchmark::document::LayoutDescription;
use crate::benchmark::{BenchmarkLayout, Contribution, DomainSpec, LAYOUT_VERSION, Params};
use crate::dropout::document::DropoutLayoutDescription;
use crate::dropout::{self, DropoutLayout};
use crate::keys::{BadSignature, Bytes, NodeKey, Signature, Signer};
use crate::secagg::{MAX_PARTICIPANTS, Session};
use crate::trajectories::document::TrajectoriesLayoutDescription;
use crate::trajectories::{self, TrajectoriesLayout};
use crate::transcript::Transcript;

/// Largest vector a round may sum (the masked input must fit a 1 MiB message).
pub const MAX_DIM: u32 = 100_000;
/// Largest number of domains in a benchmark round.
pub const MAX_DOMAINS: usize = 64;
/// Shortest and longest per-step deadline.
pub const DEADLINE_MS: (u64, u64) = (100, 600_000);
/// Largest release document.
pub const MAX_RELEASE: usize = 900 << 10;
/// Steps of a secure round, each under the spec's deadline: announce, keys, shares, confirm,
/// unmask.
pub const STEPS: u64 = 5;

/// What a round sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoundKind {
    /// The cross-site benchmark vector ([`crate::benchmark`]) of the listed domains.
    Benchmark {
        /// [`LAYOUT_VERSION`] of the layout.
        layout_version: u32,
        /// Domains, in vector order.
        domains: Vec<DomainSpec>,
        /// Episodes one patient may contribute per domain.
        max_episodes: u32,
        /// Episodes one therapist may contribute per domain to the variance sums.
        caseload_cap: u32,
    },
    /// The network's trajectories vector ([`crate::trajectories`]) of the listed domains.
    Trajectories {
        /// [`crate::trajectories::LAYOUT_VERSION`] of the layout.
        layout_version: u32,
        /// Domains, in vector order.
        domains: Vec<DomainSpec>,
        /// Episodes one patient may contribute per domain.
        max_episodes: u32,
    },
    /// One iteration of a dropout-model training ([`crate::dropout`]): the sums of the
    /// episodes' gradient and Hessian terms at the current coefficients. A training is several
    /// such rounds under one `training_id`, its total ρ declared in each.
    DropoutModel {
        /// [`crate::dropout::LAYOUT_VERSION`] of the layout.
        layout_version: u32,
        /// The domain whose intake the features take.
        domain: DomainSpec,
        /// Episodes one patient may contribute.
        max_episodes: u32,
        /// The coefficients the clinics evaluate their episodes at.
        model: Vec<f64>,
        /// The training this round is an iteration of (random).
        training_id: u64,
        /// This iteration, 1 to `iterations`.
        iteration: u32,
        /// Most iterations of the training (its round cap).
        iterations: u32,
        /// ρ of the whole training: `iterations` rounds of the spec's ρ each.
        total_rho: f64,
    },
    /// A synthetic public vector of length `dim`, derived from the round and the node's key
    /// (no clinic data, no privacy cost): for measuring the protocol itself.
    Bench {
        /// Vector length.
        dim: u32,
        /// Send the vector unmasked in one request (the baseline of `scripts/bench-round.sh`).
        plain: bool,
    },
}

impl RoundKind {
    /// A benchmark round over `layout` (the aggregator's domains and bounds).
    pub fn benchmark(layout: &BenchmarkLayout) -> Self {
        RoundKind::Benchmark {
            layout_version: LAYOUT_VERSION,
            domains: layout.domains().to_vec(),
            max_episodes: layout.params().max_episodes,
            caseload_cap: layout.params().caseload_cap,
        }
    }

    /// A trajectories round over `layout`.
    pub fn trajectories(layout: &TrajectoriesLayout) -> Self {
        RoundKind::Trajectories {
            layout_version: trajectories::LAYOUT_VERSION,
            domains: layout.domains().to_vec(),
            max_episodes: layout.max_episodes(),
        }
    }

    /// Iteration `iteration` of `iterations` of training `training_id` over `layout` (whose
    /// coefficients the clinics evaluate at), the whole training declared at `total_rho`.
    pub fn dropout_model(
        layout: &DropoutLayout,
        training_id: u64,
        iteration: u32,
        iterations: u32,
        total_rho: f64,
    ) -> Self {
        RoundKind::DropoutModel {
            layout_version: dropout::LAYOUT_VERSION,
            domain: layout.domain().clone(),
            max_episodes: layout.max_episodes(),
            model: layout.model().to_vec(),
            training_id,
            iteration,
            iterations,
            total_rho,
        }
    }

    /// Short name: `benchmark`, `trajectories`, `dropout-model` or `bench`.
    pub fn name(&self) -> &'static str {
        match self {
            RoundKind::Benchmark { .. } => "benchmark",
            RoundKind::Trajectories { .. } => "trajectories",
            RoundKind::DropoutModel { .. } => "dropout-model",
            RoundKind::Bench { .. } => "bench",
        }
    }

    /// The training a round is an iteration of: (training id as 16 hex digits, iteration,
    /// iterations, total ρ); `None` for a round that is a release by itself.
    pub fn training(&self) -> Option<Training> {
        match self {
            RoundKind::DropoutModel {
                training_id,
                iteration,
                iterations,
                total_rho,
                ..
            } => Some(Training {
                id: format!("{training_id:016x}"),
                iteration: *iteration,
                iterations: *iterations,
                total_rho: *total_rho,
            }),
            _ => None,
        }
    }

    /// The layout of a round that sums clinic data (`None` for a bench round).
    pub fn data_layout(&self) -> Result<Option<DataLayout>, RoundError> {
        match self {
            RoundKind::Trajectories {
                domains,
                max_episodes,
                ..
            } => TrajectoriesLayout::new(domains.clone(), *max_episodes)
                .map(|l| Some(DataLayout::Trajectories(l)))
                .map_err(|e| RoundError(format!("trajectories layout: {e}"))),
            RoundKind::DropoutModel {
                domain,
                max_episodes,
                model,
                ..
            } => DropoutLayout::new(domain.clone(), *max_episodes, model.clone())
                .map(|l| Some(DataLayout::Dropout(l)))
                .map_err(|e| RoundError(format!("dropout-model layout: {e}"))),
            _ => Ok(self.layout()?.map(DataLayout::Benchmark)),
        }
    }

    /// The benchmark layout, for a benchmark round.
    pub fn layout(&self) -> Result<Option<BenchmarkLayout>, RoundError> {
        match self {
            RoundKind::Benchmark {
                domains,
                max_episodes,
                caseload_cap,
                ..
            } => BenchmarkLayout::new(
                domains.clone(),
                Params {
                    max_episodes: *max_episodes,
                    caseload_cap: *caseload_cap,
                },
            )
            .map(Some)
            .map_err(|e| RoundError(format!("benchmark layout: {e}"))),
            RoundKind::Trajectories { .. }
            | RoundKind::DropoutModel { .. }
            | RoundKind::Bench { .. } => Ok(None),
        }
    }

    fn absorb(&self, t: Transcript) -> Transcript {
        match self {
            RoundKind::Benchmark {
                layout_version,
                domains,
                max_episodes,
                caseload_cap,
            } => absorb_domains(t.tag(1).u64(u64::from(*layout_version)), domains)
                .u64(u64::from(*max_episodes))
                .u64(u64::from(*caseload_cap)),
            RoundKind::Trajectories {
                layout_version,
                domains,
                max_episodes,
            } => absorb_domains(t.tag(3).u64(u64::from(*layout_version)), domains)
                .u64(u64::from(*max_episodes)),
            RoundKind::DropoutModel {
                layout_version,
                domain,
                max_episodes,
                model,
                training_id,
                iteration,
                iterations,
                total_rho,
            } => {
                let mut t = absorb_domains(
                    t.tag(4).u64(u64::from(*layout_version)),
                    std::slice::from_ref(domain),
                )
                .u64(u64::from(*max_episodes))
                .u64(model.len() as u64);
                for b in model {
                    t = t.u64(b.to_bits());
                }
                t.u64(*training_id)
                    .u64(u64::from(*iteration))
                    .u64(u64::from(*iterations))
                    .u64(total_rho.to_bits())
            }
            RoundKind::Bench { dim, plain } => t.tag(2).u64(u64::from(*dim)).tag(u8::from(*plain)),
        }
    }
}

fn absorb_domains(mut t: Transcript, domains: &[DomainSpec]) -> Transcript {
    t = t.u64(domains.len() as u64);
    for d in domains {
        t = t
            .str(&d.id)
            .u64(d.lo.to_bits())
            .u64(d.hi.to_bits())
            .u64(d.bands.len() as u64);
        for b in &d.bands {
            t = t.u64(b.to_bits());
        }
        t = t.str(d.direction.as_str());
    }
    t
}

/// The layout of a round that sums clinic data: what a clinic encodes its contributions with
/// and the aggregator post-processes the sum with.
#[derive(Debug, Clone, PartialEq)]
pub enum DataLayout {
    /// A `benchmark` round's.
    Benchmark(BenchmarkLayout),
    /// A `trajectories` round's.
    Trajectories(TrajectoriesLayout),
    /// A `dropout-model` iteration's.
    Dropout(DropoutLayout),
}

/// Where a round stands in a training of several rounds ([`RoundKind::training`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Training {
    /// The training id (16 hex digits).
    pub id: String,
    /// This round's iteration, from 1.
    pub iteration: u32,
    /// Most iterations.
    pub iterations: u32,
    /// ρ of the whole training, as declared.
    pub total_rho: f64,
}

/// The description of a [`DataLayout`] kept with a charge in the ledger and in releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LayoutRecord {
    /// A benchmark layout.
    Benchmark(LayoutDescription),
    /// A trajectories layout.
    Trajectories(TrajectoriesLayoutDescription),
    /// A dropout-model layout.
    Dropout(DropoutLayoutDescription),
    /// A directory entry's badges (a clinic's own release, never a round's).
    Badges(crate::directory::badges::BadgeLayoutDescription),
}

impl DataLayout {
    /// The release layout (blocks, scales, sensitivity).
    pub fn layout(&self) -> &crate::dp::Layout {
        match self {
            DataLayout::Benchmark(l) => l.layout(),
            DataLayout::Trajectories(l) => l.layout(),
            DataLayout::Dropout(l) => l.layout(),
        }
    }

    /// The domains, in vector order.
    pub fn domains(&self) -> &[DomainSpec] {
        match self {
            DataLayout::Benchmark(l) => l.domains(),
            DataLayout::Trajectories(l) => l.domains(),
            DataLayout::Dropout(l) => std::slice::from_ref(l.domain()),
        }
    }

    /// Encodes a clinic's contributions.
    pub fn encode(&self, contributions: &[Contribution]) -> Result<Vec<i64>, crate::dp::Error> {
        match self {
            DataLayout::Benchmark(l) => l.encode(contributions),
            DataLayout::Trajectories(l) => l.encode(contributions),
            DataLayout::Dropout(l) => l.encode(contributions),
        }
    }

    /// The layout's description.
    pub fn record(&self) -> LayoutRecord {
        match self {
            DataLayout::Benchmark(l) => LayoutRecord::Benchmark(LayoutDescription::of(l)),
            DataLayout::Trajectories(l) => {
                LayoutRecord::Trajectories(TrajectoriesLayoutDescription::of(l))
            }
            DataLayout::Dropout(l) => LayoutRecord::Dropout(DropoutLayoutDescription::of(l)),
        }
    }
}

/// A malformed round specification or release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RoundError(pub String);

/// What the aggregator asks the network to sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSpec {
    /// The network.
    pub network_id: String,
    /// Random round id (shown as 16 hex digits).
    pub round_id: u64,
    /// What is summed.
    pub kind: RoundKind,
    /// ρ (zCDP) of the released sum, patient level; 0 for a bench round.
    pub rho: f64,
    /// Reconstruction threshold t: fewer survivors abort the round.
    pub threshold: u32,
    /// Invited participants (SecAgg indices are positions in this list).
    pub participants: Vec<NodeKey>,
    /// The aggregator (signs this spec and the release).
    pub aggregator: NodeKey,
    /// When the round was announced (ms since the Unix epoch).
    pub issued_at_ms: u64,
    /// Deadline of each step, from the start of the step (ms).
    pub step_deadline_ms: u64,
}

/// The least threshold any round may have (checked by [`RoundSpec::validate`]): 2t > n + a,
/// where a = 1 when the aggregator is itself one of the n participants.
///
/// Why: an aggregator that tells some survivors "u survived" and others "u dropped out" gets
/// shares of u's self-mask seed from the first group and of u's mask key from the second, and
/// with t of each it unmasks u's vector. Honest participants reveal only for the one survivor
/// list they signed, with at least t signatures on it (the consistency check,
/// [`crate::secagg`]); two lists each signed by t parties need 2t − a honest signers, so
/// 2t > n + a leaves too few. An aggregator that contributes holds one share of everything and
/// signs both lists, hence a.
pub fn min_threshold(n: usize, aggregator_contributes: bool) -> u32 {
    ((n + usize::from(aggregator_contributes)) / 2 + 1) as u32
}

/// The default threshold for `n` participants: ⌈2n/3⌉, raised to [`min_threshold`] if needed.
pub fn default_threshold(n: usize, aggregator_contributes: bool) -> u32 {
    ((2 * n).div_ceil(3) as u32).max(min_threshold(n, aggregator_contributes))
}

/// What a clinic requires of a round before it contributes and again before it reveals shares
/// (its `[privacy]` policy; DESIGN.md §9 safety rules). Pure: the node supplies the policy and
/// the round, this says yes or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Safety {
    /// Fewest participants besides this clinic, in the invitation and among the survivors.
    pub min_others: u32,
    /// The least threshold as a fraction num/den of the participants: t ≥ ⌈num·n/den⌉
    /// (never below [`min_threshold`]).
    pub threshold_fraction: (u32, u32),
}

impl Safety {
    /// The threshold this policy requires of a round of `n` participants.
    pub fn required_threshold(&self, n: usize, aggregator_contributes: bool) -> u32 {
        let (num, den) = self.threshold_fraction;
        let by_fraction = (n as u64 * u64::from(num)).div_ceil(u64::from(den.max(1)));
        (by_fraction as u32).max(min_threshold(n, aggregator_contributes))
    }

    /// Checks an invitation: enough other participants and a high enough threshold.
    pub fn check_spec(&self, spec: &RoundSpec) -> Result<(), RoundError> {
        let n = spec.participants.len();
        let others = n.saturating_sub(1);
        if others < self.min_others as usize {
            return Err(RoundError(format!(
                "the round has {others} other participant(s); this clinic joins only rounds \
                 with at least {} ([privacy] min_participants)",
                self.min_others
            )));
        }
        let need = self.required_threshold(n, spec.aggregator_contributes());
        if spec.threshold < need {
            let (num, den) = self.threshold_fraction;
            return Err(RoundError(format!(
                "the round's threshold is {} of {n}; this clinic requires at least {need} \
                 ([privacy] min_threshold = \"{num}/{den}\", and more than half)",
                spec.threshold
            )));
        }
        Ok(())
    }

    /// Checks the survivor set before this clinic reveals anything: at least t survivors and
    /// enough others (that this clinic is among them, the SecAgg participant checks).
    pub fn check_survivors(&self, spec: &RoundSpec, survivors: usize) -> Result<(), RoundError> {
        if survivors < spec.threshold as usize {
            return Err(RoundError(format!(
                "{survivors} survivors, fewer than the round's threshold {}",
                spec.threshold
            )));
        }
        if survivors.saturating_sub(1) < self.min_others as usize {
            return Err(RoundError(format!(
                "only {} other clinic(s) survived; this clinic reveals nothing unless at least \
                 {} others contribute ([privacy] min_participants)",
                survivors.saturating_sub(1),
                self.min_others
            )));
        }
        Ok(())
    }
}

impl RoundSpec {
    /// The bytes the aggregator signs.
    pub fn transcript(&self) -> Vec<u8> {
        let mut t = Transcript::new("round spec")
            .str(&self.network_id)
            .u64(self.round_id);
        t = self.kind.absorb(t);
        t = t
            .u64(self.rho.to_bits())
            .u64(u64::from(self.threshold))
            .u64(self.participants.len() as u64);
        for p in &self.participants {
            t = t.bytes(&p.0);
        }
        t.bytes(&self.aggregator.0)
            .u64(self.issued_at_ms)
            .u64(self.step_deadline_ms)
            .finish()
    }

    /// Checks bounds and consistency (not the signature).
    pub fn validate(&self) -> Result<(), RoundError> {
        let err = |m: String| Err(RoundError(m));
        let n = self.participants.len();
        if n == 0 || n > MAX_PARTICIPANTS {
            return err(format!("{n} participants; 1 to {MAX_PARTICIPANTS} allowed"));
        }
        let floor = min_threshold(n, self.aggregator_contributes());
        let counting = if self.aggregator_contributes() {
            ", counting the contributing aggregator twice"
        } else {
            ""
        };
        if floor as usize > n {
            return err(format!(
                "{n} participant(s) are too few for a round (its threshold must be more than \
                 half of them{counting}, and at most all)"
            ));
        }
        if self.threshold < floor || self.threshold as usize > n {
            return err(format!(
                "threshold {} with {n} participants (it must be {floor} to {n}: more than \
                 half{counting})",
                self.threshold
            ));
        }
        if !(DEADLINE_MS.0..=DEADLINE_MS.1).contains(&self.step_deadline_ms) {
            return err(format!(
                "step deadline {} ms outside {}..={} ms",
                self.step_deadline_ms, DEADLINE_MS.0, DEADLINE_MS.1
            ));
        }
        match &self.kind {
            RoundKind::Benchmark {
                layout_version,
                domains,
                ..
            } => self.check_data(*layout_version, LAYOUT_VERSION, domains)?,
            RoundKind::Trajectories {
                layout_version,
                domains,
                ..
            } => self.check_data(*layout_version, trajectories::LAYOUT_VERSION, domains)?,
            RoundKind::DropoutModel {
                layout_version,
                domain,
                iteration,
                iterations,
                total_rho,
                ..
            } => {
                self.check_data(
                    *layout_version,
                    dropout::LAYOUT_VERSION,
                    std::slice::from_ref(domain),
                )?;
                if !(1..=dropout::MAX_ITERATIONS).contains(iterations) {
                    return err(format!(
                        "a training of {iterations} iterations; 1 to {} allowed",
                        dropout::MAX_ITERATIONS
                    ));
                }
                if !(1..=*iterations).contains(iteration) {
                    return err(format!(
                        "iteration {iteration} of a training of {iterations}"
                    ));
                }
                // The declared total is what the clinics agree to: exactly the iterations'
                // cost (to rounding), never less.
                let cost = self.rho * f64::from(*iterations);
                if !(total_rho.is_finite() && (total_rho - cost).abs() <= 1e-9 * cost) {
                    return err(format!(
                        "the training declares ρ = {total_rho} in all, but {iterations} \
                         iterations of ρ = {} cost {cost}",
                        self.rho
                    ));
                }
            }
            RoundKind::Bench { dim, .. } => {
                if *dim == 0 || *dim > MAX_DIM {
                    return err(format!("bench dimension {dim} outside 1..={MAX_DIM}"));
                }
                if self.rho != 0.0 {
                    return err("a bench round carries no data and no ρ".into());
                }
            }
        }
        let dim = self.dim()?;
        if dim == 0 || dim > MAX_DIM as usize {
            return err(format!("vector length {dim} outside 1..={MAX_DIM}"));
        }
        self.session_unchecked(dim)
            .validate()
            .map_err(|e| RoundError(e.to_string()))
    }

    /// The checks of a round over clinic data: the layout version this node speaks, 1 to
    /// [`MAX_DOMAINS`] valid domains, and ρ in range (before any layout is built, and so
    /// before any calibration).
    fn check_data(
        &self,
        version: u32,
        speaks: u32,
        domains: &[DomainSpec],
    ) -> Result<(), RoundError> {
        let kind = self.kind.name();
        if version != speaks {
            return Err(RoundError(format!(
                "{kind} layout version {version}; this node speaks {speaks}"
            )));
        }
        if domains.is_empty() || domains.len() > MAX_DOMAINS {
            return Err(RoundError(format!("{} domains", domains.len())));
        }
        crate::dp::check_release_rho(self.rho).map_err(|e| RoundError(e.to_string()))?;
        for d in domains {
            d.validate().map_err(|e| RoundError(e.to_string()))?;
        }
        Ok(())
    }

    /// When the round is over for every participant, whatever happened (ms since the Unix
    /// epoch): all [`STEPS`] deadlines after its issue time, and one more for slack. A
    /// contribution whose masked vector has not left by then never will.
    pub fn expires_at_ms(&self) -> u64 {
        self.issued_at_ms
            .saturating_add((STEPS + 1).saturating_mul(self.step_deadline_ms))
    }

    /// Whether the aggregator is itself one of the participants (it then holds one share of
    /// every secret; see [`min_threshold`]).
    pub fn aggregator_contributes(&self) -> bool {
        self.participants.contains(&self.aggregator)
    }

    /// Length of the summed vector.
    pub fn dim(&self) -> Result<usize, RoundError> {
        Ok(match &self.kind {
            RoundKind::Bench { dim, .. } => *dim as usize,
            RoundKind::Benchmark { .. }
            | RoundKind::Trajectories { .. }
            | RoundKind::DropoutModel { .. } => {
                self.kind.data_layout()?.map_or(0, |l| l.layout().len())
            }
        })
    }

    fn session_unchecked(&self, dim: usize) -> Session {
        Session {
            round: digest32(&self.transcript()),
            participants: self.participants.clone(),
            threshold: self.threshold as usize,
            dim,
        }
    }

    /// The SecAgg session of this round.
    pub fn session(&self) -> Result<Session, RoundError> {
        Ok(self.session_unchecked(self.dim()?))
    }

    /// The round id as shown to people.
    pub fn id_hex(&self) -> String {
        format!("{:016x}", self.round_id)
    }

    /// Signs the spec.
    pub fn sign(self, signer: &Signer) -> SignedRoundSpec {
        let signature = signer.sign(&self.transcript());
        SignedRoundSpec {
            spec: self,
            signature,
        }
    }
}

fn digest32(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A round specification signed by its aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRoundSpec {
    /// The specification.
    pub spec: RoundSpec,
    /// The aggregator's signature over [`RoundSpec::transcript`].
    pub signature: Signature,
}

impl SignedRoundSpec {
    /// Checks the aggregator's signature.
    pub fn verify(&self) -> Result<(), BadSignature> {
        self.spec
            .aggregator
            .verify(&self.spec.transcript(), &self.signature)
    }

    /// The round digest (SecAgg's round binding).
    pub fn digest(&self) -> [u8; 32] {
        digest32(&self.spec.transcript())
    }
}

/// A release document (JSON bytes, kept and forwarded byte for byte) signed by the aggregator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRelease {
    /// The JSON document.
    pub document: Bytes,
    /// The aggregator's signature over [`SignedRelease::transcript`].
    pub signature: Signature,
}

impl SignedRelease {
    /// The signed bytes: the document's SHA-256 under the `release` label.
    pub fn transcript(document: &[u8]) -> Vec<u8> {
        Transcript::new("release")
            .bytes(&digest32(document))
            .finish()
    }

    /// Signs `document`.
    pub fn sign(signer: &Signer, document: Vec<u8>) -> Self {
        let signature = signer.sign(&Self::transcript(&document));
        Self {
            document: Bytes(document),
            signature,
        }
    }

    /// Checks the signature under `signer`.
    pub fn verify(&self, signer: &NodeKey) -> Result<(), BadSignature> {
        signer.verify(&Self::transcript(&self.document.0), &self.signature)
    }

    /// SHA-256 of the document, hex.
    pub fn sha256(&self) -> String {
        hex::encode(digest32(&self.document.0))
    }
}

/// The public synthetic vector participant `key` sums in bench round `round` (a digest):
/// full-range 64-bit entries (like encoded release values, so plain and masked vectors cost the
/// same on the wire) from a ChaCha20 stream keyed by SHA-256(round ‖ key), so the aggregator
/// can check the decoded sum (mod 2^64) exactly.
pub fn bench_vector(round: &[u8; 32], key: &NodeKey, dim: usize) -> Vec<u64> {
    use rand_core::{RngCore, SeedableRng};
    let seed = digest32(
        &Transcript::new("bench vector")
            .bytes(round)
            .bytes(&key.0)
            .finish(),
    );
    let mut prg = rand_chacha::ChaCha20Rng::from_seed(seed);
    (0..dim).map(|_| prg.next_u64()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::Direction;

    type Mutation = Box<dyn Fn(&mut RoundSpec)>;

    fn spec(signers: &[Signer]) -> RoundSpec {
        RoundSpec {
            network_id: "net-1".into(),
            round_id: 42,
            kind: RoundKind::Benchmark {
                layout_version: LAYOUT_VERSION,
                domains: vec![DomainSpec {
                    id: "depression".into(),
                    lo: 0.0,
                    hi: 27.0,
                    bands: vec![0.0, 5.0, 10.0, 15.0, 20.0],
                    direction: Direction::LowerIsBetter,
                }],
                max_episodes: 1,
                caseload_cap: 200,
            },
            rho: 0.5,
            threshold: 3,
            participants: signers.iter().map(Signer::key).collect(),
            aggregator: signers[0].key(),
            issued_at_ms: 1_700_000_000_000,
            step_deadline_ms: 30_000,
        }
    }

    #[test]
    fn signed_spec_verifies_and_binds_every_field() {
        let signers: Vec<Signer> = (1..=3).map(|i| Signer::from_seed(&[i; 32])).collect();
        let s = spec(&signers);
        s.validate().unwrap();
        let signed = s.clone().sign(&signers[0]);
        signed.verify().unwrap();
        let session = s.session().unwrap();
        assert_eq!(session.round, signed.digest());
        assert!(session.dim > 300, "{}", session.dim);
        let mutations: Vec<Mutation> = vec![
            Box::new(|s| s.round_id += 1),
            Box::new(|s| s.rho *= 2.0),
            Box::new(|s| s.threshold = 2),
            Box::new(|s| s.participants.pop().map(|_| ()).unwrap_or(())),
            Box::new(|s| s.step_deadline_ms += 1),
            Box::new(|s| s.network_id.push('x')),
            Box::new(|s| {
                if let RoundKind::Benchmark { domains, .. } = &mut s.kind {
                    domains[0].bands[1] = 6.0;
                }
            }),
            Box::new(|s| {
                if let RoundKind::Benchmark { caseload_cap, .. } = &mut s.kind {
                    *caseload_cap = 100;
                }
            }),
        ];
        for m in mutations {
            let mut t = signed.clone();
            m(&mut t.spec);
            assert!(t.verify().is_err());
            assert_ne!(t.digest(), signed.digest());
        }
        // Signed by a participant rather than the aggregator.
        let forged = s.clone().sign(&signers[1]);
        assert!(forged.verify().is_err());
    }

    #[test]
    fn bounds_are_checked() {
        let signers: Vec<Signer> = (1..=3).map(|i| Signer::from_seed(&[i; 32])).collect();
        let base = spec(&signers);
        let bad: Vec<Mutation> = vec![
            Box::new(|s| s.threshold = 0),
            Box::new(|s| s.threshold = 4),
            // 2 of 3 with the aggregator among them: 2t ≤ n + 1.
            Box::new(|s| s.threshold = 2),
            Box::new(|s| s.rho = 1e308),
            Box::new(|s| s.rho = 11.0),
            Box::new(|s| {
                if let RoundKind::Benchmark { domains, .. } = &mut s.kind {
                    domains[0].hi = 1e-300;
                    domains[0].lo = 0.0;
                }
            }),
            Box::new(|s| {
                if let RoundKind::Benchmark { domains, .. } = &mut s.kind {
                    domains[0].bands = vec![5.0, 0.0];
                }
            }),
            Box::new(|s| {
                if let RoundKind::Benchmark { max_episodes, .. } = &mut s.kind {
                    *max_episodes = u32::MAX;
                }
            }),
            Box::new(|s| s.participants.clear()),
            Box::new(|s| s.participants[1] = s.participants[0]),
            Box::new(|s| s.rho = 0.0),
            Box::new(|s| s.rho = f64::NAN),
            Box::new(|s| s.step_deadline_ms = 1),
            Box::new(|s| {
                s.kind = RoundKind::Bench {
                    dim: MAX_DIM + 1,
                    plain: false,
                }
            }),
            Box::new(|s| {
                if let RoundKind::Benchmark { layout_version, .. } = &mut s.kind {
                    *layout_version += 1;
                }
            }),
        ];
        for (i, m) in bad.iter().enumerate() {
            let mut s = base.clone();
            m(&mut s);
            assert!(s.validate().is_err(), "mutation {i} accepted");
        }
        assert_eq!(default_threshold(5, true), 4);
        assert_eq!(default_threshold(10, false), 7);
        assert_eq!(default_threshold(3, false), 2);
        // The aggregator's own contribution raises the floor: 2t > n + 1.
        assert_eq!(default_threshold(3, true), 3);
        assert_eq!(default_threshold(6, true), 4);
        assert_eq!(min_threshold(4, false), 3);
        assert_eq!(min_threshold(5, true), 4);
    }

    /// A dropout-model iteration: its coefficients, training, iteration and declared total
    /// are signed; an iteration outside the training, a total that is not the iterations'
    /// cost and coefficients a layout refuses are invalid.
    #[test]
    fn dropout_iterations_bind_the_model_and_the_declared_total() {
        let signers: Vec<Signer> = (1..=3).map(|i| Signer::from_seed(&[i; 32])).collect();
        let mut base = spec(&signers);
        let RoundKind::Benchmark { domains, .. } = &base.kind else {
            unreachable!()
        };
        let layout = DropoutLayout::new(
            domains[0].clone(),
            1,
            vec![0.1; crate::analysis::FEATURES.len()],
        )
        .unwrap();
        base.rho = 0.05;
        base.kind = RoundKind::dropout_model(&layout, 7, 2, 5, 0.25);
        base.validate().unwrap();
        assert_eq!(base.dim().unwrap(), layout.layout().len());
        assert_eq!(base.kind.name(), "dropout-model");
        let training = base.kind.training().unwrap();
        assert_eq!(
            (
                training.id.as_str(),
                training.iteration,
                training.iterations
            ),
            ("0000000000000007", 2, 5)
        );
        let signed = base.clone().sign(&signers[0]);
        let field = |f: fn(&mut RoundKind)| -> Mutation {
            Box::new(move |s: &mut RoundSpec| f(&mut s.kind))
        };
        let signed_fields: Vec<Mutation> = vec![
            field(|k| {
                if let RoundKind::DropoutModel { model, .. } = k {
                    model[3] += 1e-9;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { training_id, .. } = k {
                    *training_id += 1;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { iteration, .. } = k {
                    *iteration = 3;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { total_rho, .. } = k {
                    *total_rho = 0.3;
                }
            }),
        ];
        for m in &signed_fields {
            let mut t = signed.clone();
            m(&mut t.spec);
            assert!(t.verify().is_err());
        }
        let bad: Vec<Mutation> = vec![
            field(|k| {
                if let RoundKind::DropoutModel { iteration, .. } = k {
                    *iteration = 6;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { iteration, .. } = k {
                    *iteration = 0;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { iterations, .. } = k {
                    *iterations = dropout::MAX_ITERATIONS + 1;
                }
            }),
            // Declared below (or above) what the iterations cost.
            field(|k| {
                if let RoundKind::DropoutModel { total_rho, .. } = k {
                    *total_rho = 0.2;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { total_rho, .. } = k {
                    *total_rho = f64::NAN;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { model, .. } = k {
                    model[0] = f64::INFINITY;
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { model, .. } = k {
                    model.pop();
                }
            }),
            field(|k| {
                if let RoundKind::DropoutModel { layout_version, .. } = k {
                    *layout_version += 1;
                }
            }),
        ];
        for (i, m) in bad.iter().enumerate() {
            let mut s = base.clone();
            m(&mut s);
            assert!(s.validate().is_err(), "mutation {i} accepted");
        }
    }

    /// A clinic's policy against the invitation and the survivors (issue 12, finding 2): with
    /// the defaults (3 other clinics, t ≥ ⌈2n/3⌉ and more than half) README's two-node network
    /// and a threshold of 1 are refused, and so is a survivor set that shrank too far.
    #[test]
    fn safety_policy_refuses_small_rounds_low_thresholds_and_few_survivors() {
        let policy = Safety {
            min_others: 3,
            threshold_fraction: (2, 3),
        };
        let signers: Vec<Signer> = (1..=8).map(|i| Signer::from_seed(&[i; 32])).collect();
        #[track_caller]
        fn check(policy: &Safety, s: &RoundSpec, ok: bool) {
            let r = policy.check_spec(s);
            assert_eq!(
                r.is_ok(),
                ok,
                "n = {}, t = {}: {r:?}",
                s.participants.len(),
                s.threshold
            );
        }
        let with = |n: usize, t: u32, aggregator_in: bool| {
            let mut s = spec(&signers[..n]);
            s.threshold = t;
            if !aggregator_in {
                s.aggregator = signers[7].key();
            }
            s
        };
        check(&policy, &with(2, 2, true), false); // coordinator + one clinic
        check(&policy, &with(3, 3, true), false); // two others only
        check(&policy, &with(4, 3, true), true); // three others, t = ⌈8/3⌉ = 3
        check(&policy, &with(4, 2, false), false); // t below 2n/3
        check(&policy, &with(5, 3, true), false); // t ≤ (n + 1)/2 with the aggregator in
        check(&policy, &with(5, 4, true), true);
        check(&policy, &with(7, 5, false), true);
        check(&policy, &with(7, 4, false), false); // ⌈14/3⌉ = 5
        let lenient = Safety {
            min_others: 0,
            threshold_fraction: (1, 2),
        };
        check(&lenient, &with(4, 3, false), true);
        assert_eq!(
            lenient.required_threshold(4, false),
            3,
            "more than half, whatever the fraction"
        );
        assert_eq!(lenient.required_threshold(4, true), 3);
        assert_eq!(lenient.required_threshold(5, true), 4);
        let s = with(5, 4, true);
        assert!(policy.check_survivors(&s, 5).is_ok());
        assert!(policy.check_survivors(&s, 4).is_ok());
        assert!(policy.check_survivors(&s, 3).is_err(), "fewer than t");
        let loose_t = with(5, 4, true);
        let strict = Safety {
            min_others: 4,
            threshold_fraction: (2, 3),
        };
        assert!(strict.check_survivors(&loose_t, 4).is_err(), "3 others < 4");
    }

    #[test]
    fn release_signature_covers_the_document() {
        let s = Signer::from_seed(&[1; 32]);
        let r = SignedRelease::sign(&s, br#"{"a":1}"#.to_vec());
        r.verify(&s.key()).unwrap();
        let mut t = r.clone();
        t.document.0[5] = b'2';
        assert!(t.verify(&s.key()).is_err());
        assert!(r.verify(&Signer::from_seed(&[2; 32]).key()).is_err());
    }
}
