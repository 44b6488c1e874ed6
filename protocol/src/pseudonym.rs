//! Pseudonyms for local identifiers (privacy invariant P6).
//!
//! At import every patient, therapist and episode identifier is replaced by
//! HMAC-SHA256(node secret, label ‖ kind ‖ raw id), hex-encoded. The secret never leaves the
//! node, so pseudonyms cannot be linked across nodes or reversed without it; the raw identifier
//! is never stored. The input is domain-separated and length-prefixed so that no two
//! (kind, id) pairs share an HMAC input.

use std::fmt;

use ring::hmac;

/// Length of the node's pseudonymisation secret in bytes.
pub const SECRET_LEN: usize = 32;

const LABEL: &[u8] = b"mbc-node/v1 pseudonym";

/// What kind of identifier is being pseudonymised; part of the HMAC input, so the same raw
/// string used as a patient id and as a therapist id gives unrelated pseudonyms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A patient (medical record number or similar).
    Patient,
    /// A therapist (staff number or similar).
    Therapist,
    /// A referral or episode of care.
    Episode,
}

impl IdKind {
    fn label(self) -> &'static [u8] {
        match self {
            IdKind::Patient => b"patient",
            IdKind::Therapist => b"therapist",
            IdKind::Episode => b"episode",
        }
    }
}

/// Computes pseudonyms under one node's secret.
pub struct Pseudonymiser {
    key: hmac::Key,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pseudonymiser").finish_non_exhaustive()
    }
}

impl Pseudonymiser {
    /// A pseudonymiser keyed by the node's secret.
    pub fn new(secret: &[u8; SECRET_LEN]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The pseudonym of `raw` (leading and trailing whitespace ignored): 64 hex digits.
    pub fn pseudonym(&self, kind: IdKind, raw: &str) -> String {
        let raw = raw.trim().as_bytes();
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [LABEL, kind.label(), raw] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        hex::encode(ctx.sign().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // Computed independently with Python:
        //   import hmac, hashlib, struct
        //   p = lambda b: struct.pack(">Q", len(b)) + b
        //   msg = p(b"mbc-node/v1 pseudonym") + p(b"patient") + p(b"MRN-0001")
        //   hmac.new(bytes(range(32)), msg, hashlib.sha256).hexdigest()
        let p = Pseudonymiser::new(&std::array::from_fn(|i| i as u8));
        assert_eq!(
            p.pseudonym(IdKind::Patient, " MRN-0001 "),
            "8505d0b5ec9b325f5aa1062d84844e1f701ce6b925b7d975682415f4fdd8c6f4"
        );
    }

    #[test]
    fn kind_and_key_separate_pseudonyms() {
        let a = Pseudonymiser::new(&[1; 32]);
        let b = Pseudonymiser::new(&[2; 32]);
        let id = "12345";
        assert_ne!(
            a.pseudonym(IdKind::Patient, id),
            a.pseudonym(IdKind::Therapist, id)
        );
        assert_ne!(
            a.pseudonym(IdKind::Patient, id),
            b.pseudonym(IdKind::Patient, id)
        );
        assert_eq!(
            a.pseudonym(IdKind::Patient, id),
            a.pseudonym(IdKind::Patient, id)
        );
        // Length prefixes: moving bytes between kind and id cannot collide.
        assert_eq!(a.pseudonym(IdKind::Episode, id).len(), 64);
        assert!(!a.pseudonym(IdKind::Patient, id).contains(id));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", Pseudonymiser::new(&[7; 32])),
            "Pseudonymiser(..)"
        );
    }
}
