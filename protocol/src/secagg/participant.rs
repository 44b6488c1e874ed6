//! A participant's side of a round: keys, shares, masked input, confirmation, reveal.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::CryptoRngCore;
use x25519_dalek::StaticSecret;

use super::shamir::{self, Share};
use super::{
    Advert, Confirmation, EncryptedShare, Graph, Revealed, SecAggError, Secret, Session, Step,
    at_least, check_confirmations, crypto, decode_shares, encode_shares, pair_seed, pair_sign,
    seed_commitment, self_seed_stream, share_aad, share_key, survivor_set, survivors_transcript,
};
use crate::keys::{Bytes, Signature, Signer};

/// One node's side of a round.
pub struct Participant {
    session: Session,
    /// This participant's neighbourhood N\[me\] in the round's graph.
    neighbourhood: BTreeSet<u32>,
    /// The neighbourhood threshold t_N.
    threshold: usize,
    me: u32,
    cipher: StaticSecret,
    mask: StaticSecret,
    seed: [u8; 32],
    input: Vec<u64>,
    step: Step,
    /// Valid adverts of U1, by index.
    adverts: BTreeMap<u32, Advert>,
    /// Shares held of each U2 member's (mask key, self seed), including our own.
    pub(super) held: BTreeMap<u32, (Share, Share)>,
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
        let neighbourhood = Graph::of(&session).neighbourhood(me).clone();
        let threshold = session.neighbourhood_threshold();
        Ok((
            Self {
                session,
                neighbourhood,
                threshold,
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

    /// Step 2: given U1's adverts, shares both secrets among U1's members of this
    /// participant's neighbourhood (all of U1 on the complete graph) and encrypts each share to
    /// its recipient.
    pub fn on_keys(
        &mut self,
        adverts: &[Advert],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<EncryptedShare>, SecAggError> {
        self.expect(Step::Keys)?;
        let mut u1 = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for a in adverts {
            if !seen.insert(a.index) {
                return Err(SecAggError::Duplicate(a.index));
            }
            // Only the neighbourhood's adverts are used (and so checked).
            if self.neighbourhood.contains(&a.index) {
                a.verify(&self.session)?;
                u1.insert(a.index, a.clone());
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
        at_least(Step::Keys, u1.len(), self.threshold)?;
        let xs: Vec<u32> = u1.keys().map(|i| i + 1).collect();
        let t = self.threshold;
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
        at_least(Step::Shares, held.len(), self.threshold)?;
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
        if let Some(v) = u3
            .iter()
            .find(|v| self.neighbourhood.contains(v) && !self.held.contains_key(v))
        {
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
