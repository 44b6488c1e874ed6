//! Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning", semi-honest server, authenticated participants) as two
//! sans-IO state machines: a [`Participant`] per contributing node and the [`Aggregator`].
//!
//! The aggregator learns Σ xᵤ mod 2^64 over the survivors and nothing else about any xᵤ:
//!
//! 1. **Keys.** Each participant u makes two fresh X25519 key pairs (cᵤ for encrypting shares,
//!    sᵤ for masks) and a self-mask seed bᵤ, and sends an [`Advert`] signed with its node key:
//!    both public keys and a commitment to bᵤ. The aggregator keeps valid adverts (U1) and
//!    sends them all to all.
//! 2. **Shares.** u Shamir-shares sᵤ's secret and bᵤ t-of-|U1| and sends each v ∈ U1 its two
//!    shares, ChaCha20-Poly1305-encrypted under HKDF(X25519(cᵤ, cᵥ), round, u → v) (an
//!    [`EncryptedShare`]); the aggregator routes them. Senders form U2.
//! 3. **Masked input.** u sends yᵤ = xᵤ + PRG(bᵤ) + Σ_{v∈U2, v≠u} ±PRG(HKDF(X25519(sᵤ, sᵥ),
//!    round)) mod 2^64 (+ if u < v). Senders form U3, the survivors.
//! 4. **Consistency check** (Bonawitz et al.'s active-adversary round). The aggregator sends U3
//!    to each survivor; each signs (round, U3) with its node key and returns a
//!    [`Confirmation`]. Signers form U4.
//! 5. **Unmask.** Given U3 again and at least t confirmations of that same list by distinct
//!    members of it, each survivor reveals its share of bᵥ for v ∈ U3 and of sᵥ's secret for
//!    v ∈ U2 \ U3, never both for one v. A survivor that signed one list reveals for no other,
//!    so an aggregator that told some survivors "v survived" and others "v dropped out" cannot
//!    collect t shares of both of v's secrets as long as 2t > n (+1 when the aggregator itself
//!    participates; [`crate::round::min_threshold`]). From ≥ t reveals the aggregator rebuilds
//!    every bᵥ (checked against its commitment) and every dropped sᵥ (checked against its public
//!    key), and removes the masks: the pair masks between survivors cancel in the sum.
//!
//! **Sparse graph (SecAgg+, Bell et al. 2020).** Above [`COMPLETE_UP_TO`] participants each
//! one masks with, and shares its secrets among, only its neighbours in a random k-regular
//! graph ([`Graph`], k = [`degree`]: about 4·log₂ n, drawn from the round digest so every
//! party derives the same one): O(k) keys, shares and mask streams per participant instead of
//! O(n). Thresholds then hold per neighbourhood N\[v\] (v and its k neighbours): v's secrets are
//! shared t_N-of-|N\[v\]|, t_N = [`Session::neighbourhood_threshold`] (the round's fraction t/n of
//! the neighbourhood, and more than half of it plus one, as the consistency check needs: an
//! aggregator that shows two survivor lists collects v's two secrets only from 2·t_N reveals of
//! N\[v\]'s members, each of whom reveals for one list). Up to [`COMPLETE_UP_TO`] participants the
//! graph is complete and everything is as above.
//!
//! Every key and stream is bound to the round digest (the hash of the signed round
//! specification): nothing from one round opens or unmasks in another. Fewer than t parties at
//! any step is [`SecAggError::TooFew`], and nothing is output. The caller adds DP noise to xᵤ
//! before step 3 (P5); this module sees only integers mod 2^64.

mod aggregator;
mod crypto;
mod participant;
pub mod shamir;

use std::collections::BTreeSet;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::keys::{Bytes, NodeKey, Signature};
use crate::transcript::Transcript;
use shamir::Share;

pub use aggregator::{Aggregator, Progress};
pub use participant::Participant;

/// Largest number of participants in one round.
pub const MAX_PARTICIPANTS: usize = 1000;

/// Up to this many participants every pair masks (the complete graph); above it, the sparse
/// graph of [`degree`].
pub const COMPLETE_UP_TO: usize = 32;

/// Neighbours of each participant among `n`: n − 1 up to [`COMPLETE_UP_TO`], else the even
/// number at or above 4·log₂ n (n = 40: 22; 100: 28; 1,000: 40).
pub fn degree(n: usize) -> usize {
    if n <= COMPLETE_UP_TO {
        return n.saturating_sub(1);
    }
    let k = (4.0 * (n as f64).log2()).ceil() as usize;
    (k + k % 2).min(n - 1)
}

/// Who masks with whom: participant u's neighbourhood N\[u\] is u and its [`degree`] neighbours.
/// A circulant graph (each participant joined to the k/2 on either side) over a random order
/// of the participants drawn from the round digest: symmetric, k-regular, the same for every
/// party, different in every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    neighbourhoods: Vec<BTreeSet<u32>>,
}

impl Graph {
    /// The graph of `session`.
    pub fn of(session: &Session) -> Self {
        use rand_core::{RngCore, SeedableRng};
        let n = session.participants.len();
        let k = degree(n);
        if k + 1 >= n {
            let all: BTreeSet<u32> = (0..n as u32).collect();
            return Self {
                neighbourhoods: vec![all; n],
            };
        }
        let seed = crypto::derive(&session.round, &[0; 32], &[b"mbc-node secagg graph"]);
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
        let mut order: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut neighbourhoods = vec![BTreeSet::new(); n];
        for (p, u) in order.iter().enumerate() {
            let set = &mut neighbourhoods[*u as usize];
            set.insert(*u);
            for d in 1..=k / 2 {
                set.insert(order[(p + d) % n]);
                set.insert(order[(p + n - d) % n]);
            }
        }
        Self { neighbourhoods }
    }

    /// N\[u\]: u and its neighbours (empty for an index outside the round).
    pub fn neighbourhood(&self, u: u32) -> &BTreeSet<u32> {
        static EMPTY: BTreeSet<u32> = BTreeSet::new();
        self.neighbourhoods.get(u as usize).unwrap_or(&EMPTY)
    }

    /// Whether u and v are neighbours (or the same).
    pub fn linked(&self, u: u32, v: u32) -> bool {
        self.neighbourhood(u).contains(&v)
    }
}

/// Bytes of an encrypted share: two shares (x: 4 bytes, 5 limbs of 8 bytes) + the AEAD tag.
const SHARE_PLAINTEXT: usize = 2 * (4 + 8 * shamir::LIMBS);
/// Length of an [`EncryptedShare`] ciphertext.
pub const SHARE_CIPHERTEXT: usize = SHARE_PLAINTEXT + 16;

/// The public parameters of one aggregation, which every party derives from the signed round
/// specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Digest of the signed round specification: binds every key, share and mask to the round.
    pub round: [u8; 32],
    /// Invited participants; a participant's index is its position.
    pub participants: Vec<NodeKey>,
    /// Reconstruction threshold t.
    pub threshold: usize,
    /// Vector length.
    pub dim: usize,
}

impl Session {
    /// Checks the parameters: 1 ≤ t ≤ n ≤ [`MAX_PARTICIPANTS`], distinct participants.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let n = self.participants.len();
        let distinct = self.participants.iter().collect::<BTreeSet<_>>().len() == n;
        if n == 0 || n > MAX_PARTICIPANTS || !distinct {
            return Err(SecAggError::Malformed(format!(
                "{n} participants (distinct: {distinct}); 1 to {MAX_PARTICIPANTS} distinct needed"
            )));
        }
        if self.threshold == 0 || self.threshold > n {
            return Err(SecAggError::Malformed(format!(
                "threshold {} with {n} participants",
                self.threshold
            )));
        }
        Ok(())
    }

    /// The threshold t_N of every neighbourhood of [`Graph::of`] this session: t itself on the
    /// complete graph; on a sparse one the same fraction t/n of the neighbourhood (k + 1),
    /// rounded up, and more than half of it plus one (the aggregator's own share).
    pub fn neighbourhood_threshold(&self) -> usize {
        let n = self.participants.len();
        let size = degree(n) + 1;
        if size >= n {
            return self.threshold;
        }
        (self.threshold * size)
            .div_ceil(n)
            .max(size.div_ceil(2) + 1)
            .min(size)
    }

    /// Index of `key` among the participants.
    pub fn index_of(&self, key: &NodeKey) -> Option<u32> {
        self.participants
            .iter()
            .position(|k| k == key)
            .map(|i| i as u32)
    }

    fn key(&self, index: u32) -> Result<&NodeKey, SecAggError> {
        self.participants
            .get(index as usize)
            .ok_or(SecAggError::Unknown(index))
    }
}

/// A protocol step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Collecting key adverts.
    Keys,
    /// Collecting encrypted shares.
    Shares,
    /// Collecting masked inputs.
    Masked,
    /// Collecting signatures on the survivor list (the consistency check).
    Confirm,
    /// Collecting revealed shares.
    Unmask,
    /// The sum is out.
    Done,
}

impl Step {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Keys => "keys",
            Step::Shares => "shares",
            Step::Masked => "masked",
            Step::Confirm => "confirm",
            Step::Unmask => "unmask",
            Step::Done => "done",
        }
    }
}

/// Why a message or step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecAggError {
    /// Fewer parties than the threshold at a step: the round aborts, nothing is output.
    #[error("{have} of the needed {need} participants at the {} step", step.as_str())]
    TooFew {
        /// The step.
        step: Step,
        /// Parties that completed it.
        have: usize,
        /// Threshold.
        need: usize,
    },
    /// An index that is not a participant's.
    #[error("participant {0} is not in this round")]
    Unknown(u32),
    /// The sender is not the participant the message claims to come from.
    #[error("the message from participant {0} was sent by someone else")]
    WrongSender(u32),
    /// A bad signature on an advert.
    #[error("the key advert of participant {0} is not signed by it for this round")]
    BadSignature(u32),
    /// A second message from one participant at one step.
    #[error("participant {0} already sent this step's message")]
    Duplicate(u32),
    /// A message for another step.
    #[error("message for another step (the round is at {})", .0.as_str())]
    WrongStep(Step),
    /// An encrypted share that does not open (wrong round, sender, recipient or bytes).
    #[error("the share from participant {0} does not open for this round and recipient")]
    BadShare(u32),
    /// Shares that do not rebuild a committed secret.
    #[error("the revealed shares of participant {0} do not rebuild its committed secret")]
    Inconsistent(u32),
    /// A confirmation that is not participant's signature on this round's survivor list.
    #[error("participant {0}'s confirmation is not its signature on this survivor list")]
    BadConfirmation(u32),
    /// Anything else malformed.
    #[error("{0}")]
    Malformed(String),
}

/// A participant's signed, fresh public keys for one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advert {
    /// Participant index.
    pub index: u32,
    /// X25519 public key for share encryption.
    pub cipher_key: [u8; 32],
    /// X25519 public key for pair masks.
    pub mask_key: [u8; 32],
    /// SHA-256 commitment to the self-mask seed.
    pub seed_commitment: [u8; 32],
    /// Ed25519 signature by the participant's node key over [`Advert::transcript`].
    pub signature: Signature,
}

impl Advert {
    /// The signed bytes.
    pub fn transcript(&self, round: &[u8; 32]) -> Vec<u8> {
        Transcript::new("secagg advert")
            .bytes(round)
            .u64(u64::from(self.index))
            .bytes(&self.cipher_key)
            .bytes(&self.mask_key)
            .bytes(&self.seed_commitment)
            .finish()
    }

    /// Checks index and signature.
    pub fn verify(&self, session: &Session) -> Result<(), SecAggError> {
        session
            .key(self.index)?
            .verify(&self.transcript(&session.round), &self.signature)
            .map_err(|_| SecAggError::BadSignature(self.index))
    }
}

/// Participant `from`'s two shares for participant `to`, encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShare {
    /// Sender index.
    pub from: u32,
    /// Recipient index.
    pub to: u32,
    /// ChaCha20-Poly1305 ciphertext of the two shares.
    pub ciphertext: Bytes,
}

/// A survivor's signature on the survivor list U3 (the consistency check).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The signer's index.
    pub index: u32,
    /// Ed25519 signature by the signer's node key over [`survivors_transcript`].
    pub signature: Signature,
}

/// The bytes a survivor signs to confirm the survivor list: round and the sorted indices.
pub fn survivors_transcript(round: &[u8; 32], survivors: &BTreeSet<u32>) -> Vec<u8> {
    let mut t = Transcript::new("secagg survivors")
        .bytes(round)
        .u64(survivors.len() as u64);
    for v in survivors {
        t = t.u64(u64::from(*v));
    }
    t.finish()
}

/// The distinct indices of a survivor list, or an error if one is listed twice.
fn survivor_set(survivors: &[u32]) -> Result<BTreeSet<u32>, SecAggError> {
    let set: BTreeSet<u32> = survivors.iter().copied().collect();
    if set.len() != survivors.len() {
        return Err(SecAggError::Malformed("survivor listed twice".into()));
    }
    Ok(set)
}

/// Checks that `confirmations` hold at least t valid signatures on `survivors` by distinct
/// members of it.
fn check_confirmations(
    session: &Session,
    survivors: &BTreeSet<u32>,
    confirmations: &[Confirmation],
) -> Result<(), SecAggError> {
    let transcript = survivors_transcript(&session.round, survivors);
    let mut signers = BTreeSet::new();
    for c in confirmations {
        if !survivors.contains(&c.index) {
            return Err(SecAggError::BadConfirmation(c.index));
        }
        session
            .key(c.index)?
            .verify(&transcript, &c.signature)
            .map_err(|_| SecAggError::BadConfirmation(c.index))?;
        if !signers.insert(c.index) {
            return Err(SecAggError::Duplicate(c.index));
        }
    }
    at_least(Step::Confirm, signers.len(), session.threshold)
}

/// Which secret a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Secret {
    /// The self-mask seed of a survivor.
    SelfSeed,
    /// The mask key of a participant that dropped out.
    MaskKey,
}

/// A share revealed to the aggregator in the unmask step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revealed {
    /// Whose secret.
    pub owner: u32,
    /// Which secret.
    pub secret: Secret,
    /// The share.
    pub share: Share,
}

fn seed_commitment(round: &[u8; 32], index: u32, seed: &[u8; 32]) -> [u8; 32] {
    let t = Transcript::new("secagg self seed")
        .bytes(round)
        .u64(u64::from(index))
        .bytes(seed)
        .finish();
    digest(&SHA256, &t)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn share_key(round: &[u8; 32], shared: &[u8; 32], from: u32, to: u32) -> [u8; 32] {
    crypto::derive(
        round,
        shared,
        &[
            b"mbc-node secagg share",
            &from.to_be_bytes(),
            &to.to_be_bytes(),
        ],
    )
}

fn share_aad(round: &[u8; 32], from: u32, to: u32) -> Vec<u8> {
    Transcript::new("secagg share")
        .bytes(round)
        .u64(u64::from(from))
        .u64(u64::from(to))
        .finish()
}

fn pair_seed(round: &[u8; 32], shared: &[u8; 32]) -> [u8; 32] {
    crypto::derive(round, shared, &[b"mbc-node secagg pair mask"])
}

fn self_seed_stream(round: &[u8; 32], seed: &[u8; 32]) -> [u8; 32] {
    crypto::derive(round, seed, &[b"mbc-node secagg self mask"])
}

fn encode_shares(a: &Share, b: &Share) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHARE_PLAINTEXT);
    for s in [a, b] {
        out.extend_from_slice(&s.x.to_be_bytes());
        for y in s.y {
            out.extend_from_slice(&y.to_be_bytes());
        }
    }
    out
}

fn decode_shares(bytes: &[u8]) -> Option<(Share, Share)> {
    if bytes.len() != SHARE_PLAINTEXT {
        return None;
    }
    let one = |b: &[u8]| {
        let x = u32::from_be_bytes(b[..4].try_into().ok()?);
        let mut y = [0; shamir::LIMBS];
        for (i, v) in y.iter_mut().enumerate() {
            *v = u64::from_be_bytes(b[4 + 8 * i..12 + 8 * i].try_into().ok()?);
        }
        Some(Share { x, y })
    };
    let half = SHARE_PLAINTEXT / 2;
    Some((one(&bytes[..half])?, one(&bytes[half..])?))
}

/// The sign of u's mask for the pair (u, v): + when u < v.
fn pair_sign(u: u32, v: u32) -> i8 {
    if u < v { 1 } else { -1 }
}

fn at_least(step: Step, have: usize, need: usize) -> Result<(), SecAggError> {
    if have < need {
        Err(SecAggError::TooFew { step, have, need })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
