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
//! Every key and stream is bound to the round digest (the hash of the signed round
//! specification): nothing from one round opens or unmasks in another. Fewer than t parties at
//! any step is [`SecAggError::TooFew`], and nothing is output. The caller adds DP noise to xᵤ
//! before step 3 (P5); this module sees only integers mod 2^64.

mod crypto;
pub mod shamir;

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRngCore;
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;

use crate::keys::{Bytes, NodeKey, Signature, Signer};
use crate::transcript::Transcript;
use shamir::Share;

/// Largest number of participants in one round.
pub const MAX_PARTICIPANTS: usize = 1000;

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

/// One node's side of a round.
pub struct Participant {
    session: Session,
    me: u32,
    cipher: StaticSecret,
    mask: StaticSecret,
    seed: [u8; 32],
    input: Vec<u64>,
    step: Step,
    /// Valid adverts of U1, by index.
    adverts: BTreeMap<u32, Advert>,
    /// Shares held of each U2 member's (mask key, self seed), including our own.
    held: BTreeMap<u32, (Share, Share)>,
    /// The survivor list this participant signed (the only one it will reveal for).
    survivors: BTreeSet<u32>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participant")
            .field("me", &self.me)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Participant {
    /// Joins a round with `input` (already carrying this node's noise share): fresh keys and
    /// seed, and the signed advert to send.
    pub fn new(
        session: Session,
        signer: &Signer,
        input: Vec<u64>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Advert), SecAggError> {
        session.validate()?;
        let me = session
            .index_of(&signer.key())
            .ok_or_else(|| SecAggError::Malformed("this node is not a participant".into()))?;
        if input.len() != session.dim {
            return Err(SecAggError::Malformed(format!(
                "input of length {}, the round sums {}",
                input.len(),
                session.dim
            )));
        }
        let cipher = StaticSecret::random_from_rng(&mut *rng);
        let mask = StaticSecret::random_from_rng(&mut *rng);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut advert = Advert {
            index: me,
            cipher_key: crypto::public(&cipher),
            mask_key: crypto::public(&mask),
            seed_commitment: seed_commitment(&session.round, me, &seed),
            signature: Signature([0; 64]),
        };
        advert.signature = signer.sign(&advert.transcript(&session.round));
        Ok((
            Self {
                session,
                me,
                cipher,
                mask,
                seed,
                input,
                step: Step::Keys,
                adverts: BTreeMap::new(),
                held: BTreeMap::new(),
                survivors: BTreeSet::new(),
            },
            advert,
        ))
    }

    /// This participant's index.
    pub fn index(&self) -> u32 {
        self.me
    }

    /// The step it expects next.
    pub fn step(&self) -> Step {
        self.step
    }

    fn expect(&self, step: Step) -> Result<(), SecAggError> {
        if self.step == step {
            Ok(())
        } else {
            Err(SecAggError::WrongStep(self.step))
        }
    }

    /// Step 2: given U1's adverts, shares both secrets among U1 and encrypts each share to
    /// its recipient.
    pub fn on_keys(
        &mut self,
        adverts: &[Advert],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<EncryptedShare>, SecAggError> {
        self.expect(Step::Keys)?;
        let mut u1 = BTreeMap::new();
        for a in adverts {
            a.verify(&self.session)?;
            if u1.insert(a.index, a.clone()).is_some() {
                return Err(SecAggError::Duplicate(a.index));
            }
        }
        match u1.get(&self.me) {
            Some(mine) if mine.mask_key == crypto::public(&self.mask) => {}
            _ => {
                return Err(SecAggError::Malformed(
                    "our own advert is missing from the key list".into(),
                ));
            }
        }
        at_least(Step::Keys, u1.len(), self.session.threshold)?;
        let xs: Vec<u32> = u1.keys().map(|i| i + 1).collect();
        let t = self.session.threshold;
        let mask_shares = shamir::split(&self.mask.to_bytes(), t, &xs, rng);
        let seed_shares = shamir::split(&self.seed, t, &xs, rng);
        let mut out = Vec::with_capacity(u1.len() - 1);
        for ((v, advert), (ms, ss)) in u1.iter().zip(mask_shares.iter().zip(&seed_shares)) {
            if *v == self.me {
                self.held.insert(self.me, (*ms, *ss));
                continue;
            }
            let shared =
                crypto::agree(&self.cipher, &advert.cipher_key).ok_or(SecAggError::BadShare(*v))?;
            let key = share_key(&self.session.round, &shared, self.me, *v);
            out.push(EncryptedShare {
                from: self.me,
                to: *v,
                ciphertext: Bytes(crypto::seal(
                    &key,
                    &share_aad(&self.session.round, self.me, *v),
                    &encode_shares(ms, ss),
                )),
            });
        }
        self.adverts = u1;
        self.step = Step::Shares;
        Ok(out)
    }

    /// Step 3: given the shares addressed to us by the rest of U2, masks the input.
    pub fn on_shares(&mut self, shares: &[EncryptedShare]) -> Result<Vec<u64>, SecAggError> {
        self.expect(Step::Shares)?;
        let round = self.session.round;
        let mut held = BTreeMap::new();
        held.insert(self.me, self.held[&self.me]);
        for s in shares {
            let advert = self
                .adverts
                .get(&s.from)
                .ok_or(SecAggError::Unknown(s.from))?;
            if s.to != self.me || s.from == self.me {
                return Err(SecAggError::BadShare(s.from));
            }
            let shared = crypto::agree(&self.cipher, &advert.cipher_key)
                .ok_or(SecAggError::BadShare(s.from))?;
            let key = share_key(&round, &shared, s.from, self.me);
            let pair = crypto::open(&key, &share_aad(&round, s.from, self.me), &s.ciphertext.0)
                .and_then(|p| decode_shares(&p))
                .filter(|(a, b)| a.x == self.me + 1 && b.x == self.me + 1)
                .ok_or(SecAggError::BadShare(s.from))?;
            if held.insert(s.from, pair).is_some() {
                return Err(SecAggError::Duplicate(s.from));
            }
        }
        at_least(Step::Shares, held.len(), self.session.threshold)?;
        let mut y = self.input.clone();
        crypto::apply_mask(&mut y, &self_seed_stream(&round, &self.seed), 1);
        for v in held.keys().filter(|v| **v != self.me) {
            let shared = crypto::agree(&self.mask, &self.adverts[v].mask_key)
                .ok_or(SecAggError::BadShare(*v))?;
            crypto::apply_mask(&mut y, &pair_seed(&round, &shared), pair_sign(self.me, *v));
        }
        self.held = held;
        self.step = Step::Confirm;
        Ok(y)
    }

    /// Step 4, the consistency check: given the survivors U3, checks them (no one twice, each
    /// sent us shares, we are among them, at least t) and signs the list. This is the only
    /// list this participant will reveal shares for.
    pub fn on_survivors(
        &mut self,
        survivors: &[u32],
        signer: &Signer,
    ) -> Result<Confirmation, SecAggError> {
        self.expect(Step::Confirm)?;
        if signer.key() != *self.session.key(self.me)? {
            return Err(SecAggError::Malformed(
                "signing key is not this participant's".into(),
            ));
        }
        let u3 = survivor_set(survivors)?;
        if let Some(v) = u3.iter().find(|v| !self.held.contains_key(v)) {
            return Err(SecAggError::Malformed(format!(
                "survivor {v} did not send us shares"
            )));
        }
        if !u3.contains(&self.me) {
            return Err(SecAggError::Malformed(
                "we are not listed among the survivors".into(),
            ));
        }
        at_least(Step::Confirm, u3.len(), self.session.threshold)?;
        let signature = signer.sign(&survivors_transcript(&self.session.round, &u3));
        self.survivors = u3;
        self.step = Step::Unmask;
        Ok(Confirmation {
            index: self.me,
            signature,
        })
    }

    /// Step 5: given the survivor list again and at least t confirmations of it by distinct
    /// survivors, reveals the self-seed shares of survivors and the mask-key shares of the rest
    /// of U2 — never both for one participant. A list other than the one this participant
    /// signed is refused, and so are too few or invalid confirmations.
    pub fn on_unmask(
        &mut self,
        survivors: &[u32],
        confirmations: &[Confirmation],
    ) -> Result<Vec<Revealed>, SecAggError> {
        self.expect(Step::Unmask)?;
        if survivor_set(survivors)? != self.survivors {
            return Err(SecAggError::Malformed(
                "the survivor list differs from the one this participant signed".into(),
            ));
        }
        check_confirmations(&self.session, &self.survivors, confirmations)?;
        self.step = Step::Done;
        let u3 = &self.survivors;
        Ok(self
            .held
            .iter()
            .map(|(owner, (mask, seed))| {
                if u3.contains(owner) {
                    Revealed {
                        owner: *owner,
                        secret: Secret::SelfSeed,
                        share: *seed,
                    }
                } else {
                    Revealed {
                        owner: *owner,
                        secret: Secret::MaskKey,
                        share: *mask,
                    }
                }
            })
            .collect())
    }
}

/// What the aggregator knows about who took part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Progress {
    /// Participants whose adverts were accepted (U1).
    pub keys: Vec<u32>,
    /// Participants that sent shares (U2).
    pub shares: Vec<u32>,
    /// Participants that sent masked input (U3, the survivors).
    pub masked: Vec<u32>,
    /// Survivors that signed the survivor list (U4).
    pub confirmed: Vec<u32>,
    /// Survivors that revealed shares.
    pub revealed: Vec<u32>,
}

/// The aggregator's side of a round.
#[derive(Debug)]
pub struct Aggregator {
    session: Session,
    step: Step,
    adverts: BTreeMap<u32, Advert>,
    shares: BTreeMap<u32, Vec<EncryptedShare>>,
    masked: BTreeMap<u32, Vec<u64>>,
    confirmations: BTreeMap<u32, Confirmation>,
    reveals: BTreeMap<u32, Vec<Revealed>>,
}

impl Aggregator {
    /// Starts a round.
    pub fn new(session: Session) -> Result<Self, SecAggError> {
        session.validate()?;
        Ok(Self {
            session,
            step: Step::Keys,
            adverts: BTreeMap::new(),
            shares: BTreeMap::new(),
            masked: BTreeMap::new(),
            confirmations: BTreeMap::new(),
            reveals: BTreeMap::new(),
        })
    }

    /// The step being collected.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Who has completed which step.
    pub fn progress(&self) -> Progress {
        Progress {
            keys: self.adverts.keys().copied().collect(),
            shares: self.shares.keys().copied().collect(),
            masked: self.masked.keys().copied().collect(),
            confirmed: self.confirmations.keys().copied().collect(),
            revealed: self.reveals.keys().copied().collect(),
        }
    }

    fn sender(&self, sender: &NodeKey, step: Step) -> Result<u32, SecAggError> {
        if self.step != step {
            return Err(SecAggError::WrongStep(self.step));
        }
        self.session
            .index_of(sender)
            .ok_or_else(|| SecAggError::Malformed("the sender is not a participant".into()))
    }

    /// Step 1: accepts a key advert from `sender` (the authenticated peer).
    pub fn add_advert(&mut self, sender: &NodeKey, advert: Advert) -> Result<(), SecAggError> {
        let index = self.sender(sender, Step::Keys)?;
        if advert.index != index {
            return Err(SecAggError::WrongSender(advert.index));
        }
        advert.verify(&self.session)?;
        if self.adverts.contains_key(&index) {
            return Err(SecAggError::Duplicate(index));
        }
        self.adverts.insert(index, advert);
        Ok(())
    }

    /// Ends step 1: the adverts of U1 to send to each member of U1.
    pub fn close_keys(&mut self) -> Result<Vec<Advert>, SecAggError> {
        if self.step != Step::Keys {
            return Err(SecAggError::WrongStep(self.step));
        }
        at_least(Step::Keys, self.adverts.len(), self.session.threshold)?;
        self.step = Step::Shares;
        Ok(self.adverts.values().cloned().collect())
    }

    /// Step 2: accepts `sender`'s encrypted shares, exactly one for each other member of U1.
    pub fn add_shares(
        &mut self,
        sender: &NodeKey,
        shares: Vec<EncryptedShare>,
    ) -> Result<(), SecAggError> {
        let index = self.sender(sender, Step::Shares)?;
        if !self.adverts.contains_key(&index) {
            return Err(SecAggError::Unknown(index));
        }
        if self.shares.contains_key(&index) {
            return Err(SecAggError::Duplicate(index));
        }
        let recipients: BTreeSet<u32> = shares.iter().map(|s| s.to).collect();
        let expected: BTreeSet<u32> = self
            .adverts
            .keys()
            .copied()
            .filter(|v| *v != index)
            .collect();
        if recipients != expected || shares.len() != expected.len() {
            return Err(SecAggError::Malformed(format!(
                "participant {index} sent shares for {recipients:?}, not for the other key holders"
            )));
        }
        if let Some(s) = shares
            .iter()
            .find(|s| s.from != index || s.ciphertext.0.len() != SHARE_CIPHERTEXT)
        {
            return Err(SecAggError::BadShare(s.from));
        }
        self.shares.insert(index, shares);
        Ok(())
    }

    /// Ends step 2: for each member of U2, the shares addressed to it by the rest of U2.
    pub fn close_shares(&mut self) -> Result<BTreeMap<u32, Vec<EncryptedShare>>, SecAggError> {
        if self.step != Step::Shares {
            return Err(SecAggError::WrongStep(self.step));
        }
        at_least(Step::Shares, self.shares.len(), self.session.threshold)?;
        let mut routed: BTreeMap<u32, Vec<EncryptedShare>> =
            self.shares.keys().map(|v| (*v, Vec::new())).collect();
        for s in self.shares.values().flatten() {
            if let Some(inbox) = routed.get_mut(&s.to) {
                inbox.push(s.clone());
            }
        }
        self.step = Step::Masked;
        Ok(routed)
    }

    /// Step 3: accepts `sender`'s masked input.
    pub fn add_masked(&mut self, sender: &NodeKey, y: Vec<u64>) -> Result<(), SecAggError> {
        let index = self.sender(sender, Step::Masked)?;
        if !self.shares.contains_key(&index) {
            return Err(SecAggError::Unknown(index));
        }
        if y.len() != self.session.dim {
            return Err(SecAggError::Malformed(format!(
                "masked input of length {}, not {}",
                y.len(),
                self.session.dim
            )));
        }
        if self.masked.contains_key(&index) {
            return Err(SecAggError::Duplicate(index));
        }
        self.masked.insert(index, y);
        Ok(())
    }

    /// Ends step 3: the survivors U3, to send to each of them.
    pub fn close_masked(&mut self) -> Result<Vec<u32>, SecAggError> {
        if self.step != Step::Masked {
            return Err(SecAggError::WrongStep(self.step));
        }
        at_least(Step::Masked, self.masked.len(), self.session.threshold)?;
        self.step = Step::Confirm;
        Ok(self.masked.keys().copied().collect())
    }

    /// Step 4: accepts `sender`'s signature on the survivor list.
    pub fn add_confirmation(
        &mut self,
        sender: &NodeKey,
        confirmation: Confirmation,
    ) -> Result<(), SecAggError> {
        let index = self.sender(sender, Step::Confirm)?;
        if !self.masked.contains_key(&index) {
            return Err(SecAggError::Unknown(index));
        }
        if confirmation.index != index {
            return Err(SecAggError::WrongSender(confirmation.index));
        }
        let survivors: BTreeSet<u32> = self.masked.keys().copied().collect();
        self.session
            .key(index)?
            .verify(
                &survivors_transcript(&self.session.round, &survivors),
                &confirmation.signature,
            )
            .map_err(|_| SecAggError::BadConfirmation(index))?;
        if self.confirmations.contains_key(&index) {
            return Err(SecAggError::Duplicate(index));
        }
        self.confirmations.insert(index, confirmation);
        Ok(())
    }

    /// Ends step 4: the confirmations to send to each signer with the survivor list.
    pub fn close_confirmations(&mut self) -> Result<Vec<Confirmation>, SecAggError> {
        if self.step != Step::Confirm {
            return Err(SecAggError::WrongStep(self.step));
        }
        at_least(
            Step::Confirm,
            self.confirmations.len(),
            self.session.threshold,
        )?;
        self.step = Step::Unmask;
        Ok(self.confirmations.values().cloned().collect())
    }

    /// The survivors U3 (the senders of masked inputs).
    pub fn survivors(&self) -> Vec<u32> {
        self.masked.keys().copied().collect()
    }

    /// Step 5: accepts `sender`'s revealed shares (a survivor that confirmed the list).
    pub fn add_reveal(
        &mut self,
        sender: &NodeKey,
        revealed: Vec<Revealed>,
    ) -> Result<(), SecAggError> {
        let index = self.sender(sender, Step::Unmask)?;
        if !self.confirmations.contains_key(&index) {
            return Err(SecAggError::Unknown(index));
        }
        if self.reveals.contains_key(&index) {
            return Err(SecAggError::Duplicate(index));
        }
        let mut owners = BTreeSet::new();
        for r in &revealed {
            let expected = if self.masked.contains_key(&r.owner) {
                Secret::SelfSeed
            } else {
                Secret::MaskKey
            };
            if !self.shares.contains_key(&r.owner)
                || r.secret != expected
                || r.share.x != index + 1
                || !owners.insert(r.owner)
            {
                return Err(SecAggError::Malformed(format!(
                    "participant {index} revealed a share it must not ({:?} of {})",
                    r.secret, r.owner
                )));
            }
        }
        self.reveals.insert(index, revealed);
        Ok(())
    }

    /// Ends step 5: rebuilds the secrets, removes every mask and returns Σ xᵤ mod 2^64 over
    /// the survivors, with the survivors' indices.
    pub fn finish(&mut self) -> Result<(Vec<u64>, Vec<u32>), SecAggError> {
        if self.step != Step::Unmask {
            return Err(SecAggError::WrongStep(self.step));
        }
        let t = self.session.threshold;
        at_least(Step::Unmask, self.reveals.len(), t)?;
        let round = self.session.round;
        let mut shares: BTreeMap<(u32, Secret), Vec<Share>> = BTreeMap::new();
        for r in self.reveals.values().flatten() {
            shares.entry((r.owner, r.secret)).or_default().push(r.share);
        }
        let rebuild = |owner: u32, secret: Secret| {
            let got = shares.get(&(owner, secret)).map_or(&[][..], Vec::as_slice);
            shamir::combine(got, t).map_err(|_| SecAggError::Inconsistent(owner))
        };
        let mut sum = vec![0u64; self.session.dim];
        for y in self.masked.values() {
            for (s, v) in sum.iter_mut().zip(y) {
                *s = s.wrapping_add(*v);
            }
        }
        for (v, advert) in &self.adverts {
            if self.masked.contains_key(v) {
                let seed = rebuild(*v, Secret::SelfSeed)?;
                if seed_commitment(&round, *v, &seed) != advert.seed_commitment {
                    return Err(SecAggError::Inconsistent(*v));
                }
                crypto::apply_mask(&mut sum, &self_seed_stream(&round, &seed), -1);
            } else if self.shares.contains_key(v) {
                // Dropped after sending shares: survivors masked with it; remove those masks.
                let secret = StaticSecret::from(rebuild(*v, Secret::MaskKey)?);
                if crypto::public(&secret) != advert.mask_key {
                    return Err(SecAggError::Inconsistent(*v));
                }
                for w in self.masked.keys() {
                    let shared = crypto::agree(&secret, &self.adverts[w].mask_key)
                        .ok_or(SecAggError::Inconsistent(*v))?;
                    // Survivor w added sign(w, v)·PRG; take it away.
                    crypto::apply_mask(&mut sum, &pair_seed(&round, &shared), -pair_sign(*w, *v));
                }
            }
        }
        self.step = Step::Done;
        Ok((sum, self.masked.keys().copied().collect()))
    }
}

#[cfg(test)]
mod tests;
