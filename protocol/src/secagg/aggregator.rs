//! The aggregator's side of a round: collects each step, routes shares, unmasks the sum.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use x25519_dalek::StaticSecret;

use super::shamir::{self, Share};
use super::{
    Advert, Confirmation, EncryptedShare, Graph, Revealed, SHARE_CIPHERTEXT, SecAggError, Secret,
    Session, Step, at_least, crypto, pair_seed, pair_sign, seed_commitment, self_seed_stream,
    survivors_transcript,
};
use crate::keys::NodeKey;

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
    graph: Graph,
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
            graph: Graph::of(&session),
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

    /// Step 2: accepts `sender`'s encrypted shares, exactly one for each other member of U1 in
    /// its neighbourhood.
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
            .filter(|v| *v != index && self.graph.linked(index, *v))
            .collect();
        if recipients != expected || shares.len() != expected.len() {
            return Err(SecAggError::Malformed(format!(
                "participant {index} sent shares for {recipients:?}, not for the other key \
                 holders of its neighbourhood"
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
                || !self.graph.linked(index, r.owner)
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
        at_least(Step::Unmask, self.reveals.len(), self.session.threshold)?;
        let t = self.session.neighbourhood_threshold();
        let round = self.session.round;
        let mut shares: BTreeMap<(u32, Secret), Vec<Share>> = BTreeMap::new();
        for r in self.reveals.values().flatten() {
            shares.entry((r.owner, r.secret)).or_default().push(r.share);
        }
        let rebuild = |owner: u32, secret: Secret| {
            let got = shares.get(&(owner, secret)).map_or(&[][..], Vec::as_slice);
            // Too few of the owner's neighbourhood revealed: the round cannot end.
            at_least(Step::Unmask, got.len(), t)?;
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
                for w in self.masked.keys().filter(|w| self.graph.linked(*v, **w)) {
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
