//! The wire: every request, response and gossip message between nodes.
//!
//! These are the only serde types that cross the network (STYLE.md house rule 1). Each is
//! carried in an [`Envelope`]: protocol version, network id, sender key, a random nonce, the
//! send time, for a response the nonce of its request, the body, and the sender's Ed25519
//! signature over a hand-built transcript of all of those (never over the CBOR bytes).
//!
//! Receiving is three steps, each with its own error so the node can log why it refused:
//! [`decode`] (size bound first, strict CBOR, no trailing bytes, version, field bounds),
//! [`Envelope::open`] (network id, sender is the authenticated peer, signature) and
//! [`ReplayGuard::check`] (fresh, nonce never seen). Only then does the body reach the node.
//!
//! P1: no body carries patient, therapist or session data. Round traffic carries signed round
//! specifications, fresh public keys, encrypted Shamir shares, masked vectors (uniformly
//! random mod 2^64 to anyone without the masks) and revealed shares; a release is a DP output;
//! a directory entry is clinic level (services, languages, a wait band, a contact route) with
//! badges from a DP release the clinic charged to its ledger.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::cbor::short_error;
use crate::directory::{MAX_ENTRY, SignedEntry};
use crate::keys::{BadSignature, Bytes, NodeKey, Signature, Signer};
use crate::roster::{SignedRoster, check_network_id};
use crate::round::{MAX_DIM, MAX_RELEASE, SignedRelease, SignedRoundSpec};
use crate::secagg::{
    Advert, Confirmation, EncryptedShare, MAX_PARTICIPANTS, Revealed, SHARE_CIPHERTEXT,
};
use crate::transcript::Transcript;

/// Largest encoded request, in bytes.
pub const MAX_REQUEST: usize = 1 << 20;
/// Largest encoded response, in bytes.
pub const MAX_RESPONSE: usize = 1 << 20;
/// Largest encoded gossip message, in bytes.
pub const MAX_GOSSIP: usize = 1 << 20;
/// Largest echo payload, in bytes.
pub const MAX_ECHO: usize = 64 << 10;
/// Longest software-version string, in bytes.
pub const MAX_SOFTWARE: usize = 64;
/// Most releases in one answer to [`Request::Releases`].
pub const MAX_RELEASES: usize = 64;
/// Most directory entries in one answer to [`Request::Directory`].
pub const MAX_ENTRIES: usize = 64;
/// Longest reason in a declined round.
pub const MAX_REASON: usize = 512;
/// How far a message's send time may be from the receiver's clock, in milliseconds.
pub const FRESHNESS_MS: u64 = 5 * 60 * 1000;
/// Nonces remembered per sender within the freshness window; a sender beyond this is refused
/// until older nonces expire (members only, so memory is bounded by roster size × this).
pub const NONCES_PER_SENDER: usize = 65_536;
/// Nesting depth the CBOR decoder accepts.
const MAX_DEPTH: usize = 16;

/// Why bytes were not a valid message. Never echoes payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than the bound for its kind.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Length received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not CBOR of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// Another protocol version.
    #[error("protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version(u16),
    /// A field is out of bounds.
    #[error("invalid field: {0}")]
    Invalid(String),
}

/// Why a well-formed message was refused. Sent back to the peer in [`Response::Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Could not be decoded.
    #[error("malformed")]
    Malformed,
    /// For another network.
    #[error("wrong network")]
    WrongNetwork,
    /// Signed by a key other than the connection's peer.
    #[error("sender is not the connected peer")]
    WrongSender,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Sent too long ago or too far in the future.
    #[error("stale")]
    Stale,
    /// The nonce was seen before.
    #[error("replayed")]
    Replay,
    /// The sender has too many messages in flight.
    #[error("too many messages")]
    Flood,
}

impl Rejection {
    fn tag(self) -> u8 {
        self as u8
    }
}

impl From<BadSignature> for Rejection {
    fn from(_: BadSignature) -> Self {
        Rejection::BadSignature
    }
}

/// A message body: what it signs and how it is bounded.
pub trait Body: Serialize + DeserializeOwned {
    /// Transcript label, distinct per body type.
    const PURPOSE: &'static str;
    /// Largest encoded envelope carrying this body.
    const MAX_LEN: usize;
    /// Appends the body's fields to a transcript.
    fn absorb(&self, t: Transcript) -> Transcript;
    /// Checks field bounds.
    fn validate(&self) -> Result<(), DecodeError>;
}

/// A request from one node to another (request-response).
// Requests are transient, one per exchange: boxing the round variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// "Send me your roster if it is newer than `have`": the pull half of roster propagation.
    Roster {
        /// The version the requester holds.
        have: u64,
    },
    /// "Tell me your roster version and software version."
    Info,
    /// Echo the payload back (liveness and latency measurement).
    Echo(Bytes),
    /// A step of a secure-aggregation round, from its aggregator.
    Round(RoundRequest),
    /// "Send me the releases issued at or after `after`" (RFC 3339; empty for all): how a node
    /// that was offline when a release was gossiped catches up.
    Releases {
        /// Issue time of the newest release the requester holds.
        after: String,
    },
    /// "Send me the directory entries you keep unless your set's digest is `digest`"
    /// ([`crate::directory::set_digest`] of the requester's): the pull half of the referral
    /// directory's propagation, empty once two nodes agree.
    Directory {
        /// The digest of the entries the requester keeps.
        digest: [u8; 32],
    },
}

/// The aggregator's requests in a round (DESIGN.md §9); each names the round by its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoundRequest {
    /// "Join this round": the signed specification.
    Announce(SignedRoundSpec),
    /// Step 2: the key adverts of everyone who joined.
    Keys {
        /// Round digest.
        round: [u8; 32],
        /// U1's adverts.
        adverts: Vec<Advert>,
    },
    /// Step 3: the encrypted shares addressed to the recipient.
    Shares {
        /// Round digest.
        round: [u8; 32],
        /// Shares from the rest of U2.
        shares: Vec<EncryptedShare>,
    },
    /// Step 4, the consistency check: the survivors; sign the list.
    Survivors {
        /// Round digest.
        round: [u8; 32],
        /// U3.
        survivors: Vec<u32>,
    },
    /// Step 5: the survivors again and the signatures on that list; reveal your shares.
    Unmask {
        /// Round digest.
        round: [u8; 32],
        /// U3.
        survivors: Vec<u32>,
        /// At least t survivors' signatures on U3.
        confirmations: Vec<Confirmation>,
    },
    /// Bench rounds with `plain` only: send the synthetic vector unmasked, in one request
    /// (the baseline secure rounds are measured against).
    Plain(SignedRoundSpec),
}

/// A participant's answers in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RoundResponse {
    /// Joined: the signed key advert (ρ was charged to the ledger first).
    Joined(Advert),
    /// Declined by local policy, and why.
    Declined(String),
    /// Encrypted shares for the other key holders.
    Shares(Vec<EncryptedShare>),
    /// The masked input.
    Masked(Vec<u64>),
    /// The participant's signature on the survivor list.
    Confirmed(Confirmation),
    /// Revealed shares.
    Revealed(Vec<Revealed>),
    /// The unmasked synthetic vector of a bench round's baseline.
    Plain(Vec<u64>),
}

/// A node's short description of itself; no clinic data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// The roster version the node holds.
    pub roster_version: u64,
    /// `mbc-node` version.
    pub software: String,
}

/// A response to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// The responder's roster if newer than the requester's, else none.
    Roster(Option<SignedRoster>),
    /// See [`NodeInfo`].
    Info(NodeInfo),
    /// The echoed payload.
    Echo(Bytes),
    /// The responder is at capacity; try again later.
    Busy,
    /// The request was refused, and why.
    Rejected(Rejection),
    /// A participant's answer in a round.
    Round(RoundResponse),
    /// Releases, oldest first (at most [`MAX_RELEASES`], within the response size bound).
    Releases(Vec<SignedRelease>),
    /// Directory entries (at most [`MAX_ENTRIES`], within the response size bound); none when
    /// the requester's digest is the responder's.
    Directory(Vec<SignedEntry>),
}

/// A gossiped announcement (gossipsub).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Gossip {
    /// A new roster version.
    Roster(SignedRoster),
    /// A release signed by the aggregator.
    Release(SignedRelease),
    /// A clinic's referral-directory entry, signed by that clinic (clinic level: P3).
    Directory(SignedEntry),
}

fn absorb_roster(t: Transcript, r: &SignedRoster) -> Transcript {
    r.roster.absorb(t).bytes(&r.signature.0)
}

impl Body for Request {
    const PURPOSE: &'static str = "request";
    const MAX_LEN: usize = MAX_REQUEST;
    fn absorb(&self, t: Transcript) -> Transcript {
        match self {
            Request::Roster { have } => t.tag(1).u64(*have),
            Request::Info => t.tag(2),
            Request::Echo(b) => t.tag(3).bytes(&b.0),
            Request::Round(r) => absorb_round_request(t.tag(4), r),
            Request::Releases { after } => t.tag(5).str(after),
            Request::Directory { digest } => t.tag(6).bytes(digest),
        }
    }
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Request::Echo(b) if b.0.len() > MAX_ECHO => Err(DecodeError::Invalid(format!(
                "echo payload of {} bytes exceeds {MAX_ECHO}",
                b.0.len()
            ))),
            Request::Round(r) => validate_round_request(r),
            Request::Releases { after } => bounded("bytes of time", after.len(), 64),
            _ => Ok(()),
        }
    }
}

impl Body for Response {
    const PURPOSE: &'static str = "response";
    const MAX_LEN: usize = MAX_RESPONSE;
    fn absorb(&self, t: Transcript) -> Transcript {
        match self {
            Response::Roster(None) => t.tag(1).tag(0),
            Response::Roster(Some(r)) => absorb_roster(t.tag(1).tag(1), r),
            Response::Info(i) => t.tag(2).u64(i.roster_version).str(&i.software),
            Response::Echo(b) => t.tag(3).bytes(&b.0),
            Response::Busy => t.tag(4),
            Response::Rejected(r) => t.tag(5).tag(r.tag()),
            Response::Round(r) => absorb_round_response(t.tag(6), r),
            Response::Releases(rs) => {
                let mut t = t.tag(7).u64(rs.len() as u64);
                for r in rs {
                    t = t.bytes(&r.document.0).bytes(&r.signature.0);
                }
                t
            }
            Response::Directory(es) => {
                let mut t = t.tag(8).u64(es.len() as u64);
                for e in es {
                    t = t.bytes(&e.document.0).bytes(&e.signature.0);
                }
                t
            }
        }
    }
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Response::Roster(Some(r)) => validate_roster(r),
            Response::Info(i) if i.software.len() > MAX_SOFTWARE => Err(DecodeError::Invalid(
                format!("software version longer than {MAX_SOFTWARE} bytes"),
            )),
            Response::Echo(b) if b.0.len() > MAX_ECHO => Err(DecodeError::Invalid(format!(
                "echo payload of {} bytes exceeds {MAX_ECHO}",
                b.0.len()
            ))),
            Response::Round(r) => validate_round_response(r),
            Response::Releases(rs) => bounded("releases", rs.len(), MAX_RELEASES),
            Response::Directory(es) => {
                bounded("directory entries", es.len(), MAX_ENTRIES)?;
                es.iter().try_for_each(validate_entry)
            }
            _ => Ok(()),
        }
    }
}

impl Body for Gossip {
    const PURPOSE: &'static str = "gossip";
    const MAX_LEN: usize = MAX_GOSSIP;
    fn absorb(&self, t: Transcript) -> Transcript {
        match self {
            Gossip::Roster(r) => absorb_roster(t.tag(1), r),
            Gossip::Release(r) => t.tag(2).bytes(&r.document.0).bytes(&r.signature.0),
            Gossip::Directory(e) => t.tag(3).bytes(&e.document.0).bytes(&e.signature.0),
        }
    }
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            Gossip::Roster(r) => validate_roster(r),
            Gossip::Release(r) if r.document.0.len() > MAX_RELEASE => Err(invalid(format!(
                "release of {} bytes exceeds {MAX_RELEASE}",
                r.document.0.len()
            ))),
            Gossip::Release(_) => Ok(()),
            Gossip::Directory(e) => validate_entry(e),
        }
    }
}

fn validate_entry(e: &SignedEntry) -> Result<(), DecodeError> {
    bounded("bytes of a directory entry", e.document.0.len(), MAX_ENTRY)
}

fn invalid(m: String) -> DecodeError {
    DecodeError::Invalid(m)
}

fn absorb_advert(t: Transcript, a: &Advert) -> Transcript {
    t.u64(u64::from(a.index))
        .bytes(&a.cipher_key)
        .bytes(&a.mask_key)
        .bytes(&a.seed_commitment)
        .bytes(&a.signature.0)
}

fn absorb_shares(mut t: Transcript, shares: &[EncryptedShare]) -> Transcript {
    t = t.u64(shares.len() as u64);
    for s in shares {
        t = t
            .u64(u64::from(s.from))
            .u64(u64::from(s.to))
            .bytes(&s.ciphertext.0);
    }
    t
}

fn absorb_u64s(mut t: Transcript, values: &[u64]) -> Transcript {
    t = t.u64(values.len() as u64);
    for v in values {
        t = t.u64(*v);
    }
    t
}

fn absorb_round_request(t: Transcript, r: &RoundRequest) -> Transcript {
    match r {
        RoundRequest::Announce(s) => t.tag(1).bytes(&s.spec.transcript()).bytes(&s.signature.0),
        RoundRequest::Keys { round, adverts } => {
            let mut t = t.tag(2).bytes(round).u64(adverts.len() as u64);
            for a in adverts {
                t = absorb_advert(t, a);
            }
            t
        }
        RoundRequest::Shares { round, shares } => absorb_shares(t.tag(3).bytes(round), shares),
        RoundRequest::Unmask {
            round,
            survivors,
            confirmations,
        } => {
            let mut t =
                absorb_indices(t.tag(4).bytes(round), survivors).u64(confirmations.len() as u64);
            for c in confirmations {
                t = absorb_confirmation(t, c);
            }
            t
        }
        RoundRequest::Plain(s) => t.tag(5).bytes(&s.spec.transcript()).bytes(&s.signature.0),
        RoundRequest::Survivors { round, survivors } => {
            absorb_indices(t.tag(6).bytes(round), survivors)
        }
    }
}

fn absorb_indices(t: Transcript, indices: &[u32]) -> Transcript {
    let indices: Vec<u64> = indices.iter().map(|s| u64::from(*s)).collect();
    absorb_u64s(t, &indices)
}

fn absorb_confirmation(t: Transcript, c: &Confirmation) -> Transcript {
    t.u64(u64::from(c.index)).bytes(&c.signature.0)
}

fn absorb_round_response(t: Transcript, r: &RoundResponse) -> Transcript {
    match r {
        RoundResponse::Joined(a) => absorb_advert(t.tag(1), a),
        RoundResponse::Declined(why) => t.tag(2).str(why),
        RoundResponse::Shares(s) => absorb_shares(t.tag(3), s),
        RoundResponse::Masked(y) => absorb_u64s(t.tag(4), y),
        RoundResponse::Revealed(rs) => {
            let mut t = t.tag(5).u64(rs.len() as u64);
            for r in rs {
                t = t
                    .u64(u64::from(r.owner))
                    .tag(r.secret as u8)
                    .u64(u64::from(r.share.x));
                for y in r.share.y {
                    t = t.u64(y);
                }
            }
            t
        }
        RoundResponse::Plain(y) => absorb_u64s(t.tag(6), y),
        RoundResponse::Confirmed(c) => absorb_confirmation(t.tag(7), c),
    }
}

fn bounded(what: &str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        Err(invalid(format!("{len} {what}, at most {max} allowed")))
    } else {
        Ok(())
    }
}

fn validate_shares(shares: &[EncryptedShare]) -> Result<(), DecodeError> {
    bounded("shares", shares.len(), MAX_PARTICIPANTS)?;
    if shares
        .iter()
        .any(|s| s.ciphertext.0.len() != SHARE_CIPHERTEXT)
    {
        return Err(invalid("share ciphertext of the wrong length".into()));
    }
    Ok(())
}

fn validate_round_request(r: &RoundRequest) -> Result<(), DecodeError> {
    match r {
        RoundRequest::Announce(s) | RoundRequest::Plain(s) => {
            s.spec.validate().map_err(|e| invalid(e.to_string()))
        }
        RoundRequest::Keys { adverts, .. } => bounded("adverts", adverts.len(), MAX_PARTICIPANTS),
        RoundRequest::Shares { shares, .. } => validate_shares(shares),
        RoundRequest::Survivors { survivors, .. } => {
            bounded("survivors", survivors.len(), MAX_PARTICIPANTS)
        }
        RoundRequest::Unmask {
            survivors,
            confirmations,
            ..
        } => {
            bounded("survivors", survivors.len(), MAX_PARTICIPANTS)?;
            bounded("confirmations", confirmations.len(), MAX_PARTICIPANTS)
        }
    }
}

fn validate_round_response(r: &RoundResponse) -> Result<(), DecodeError> {
    match r {
        RoundResponse::Joined(_) | RoundResponse::Confirmed(_) => Ok(()),
        RoundResponse::Declined(why) => bounded("bytes of reason", why.len(), MAX_REASON),
        RoundResponse::Shares(s) => validate_shares(s),
        RoundResponse::Masked(y) | RoundResponse::Plain(y) => {
            bounded("vector entries", y.len(), MAX_DIM as usize)
        }
        RoundResponse::Revealed(rs) => bounded("revealed shares", rs.len(), MAX_PARTICIPANTS),
    }
}

fn validate_roster(r: &SignedRoster) -> Result<(), DecodeError> {
    r.roster
        .validate()
        .map_err(|e| DecodeError::Invalid(e.to_string()))
}

/// A signed message: header, body, signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<B> {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The network the message is for.
    pub network_id: String,
    /// The sender's identity key.
    pub sender: NodeKey,
    /// Random, unique per message: replay protection.
    pub nonce: u64,
    /// Sender's clock at sending, Unix milliseconds.
    pub sent_at_ms: u64,
    /// For a response, the nonce of the request it answers.
    pub reply_to: Option<u64>,
    /// The message.
    pub body: B,
    /// The sender's signature over [`Envelope::transcript`].
    pub signature: Signature,
}

/// The header fields of a message to be sealed; time and randomness come from the caller.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    /// The network.
    pub network_id: &'a str,
    /// A fresh random nonce.
    pub nonce: u64,
    /// Now, Unix milliseconds.
    pub sent_at_ms: u64,
    /// For a response, the request's nonce.
    pub reply_to: Option<u64>,
}

impl<B: Body> Envelope<B> {
    /// Signs `body` under `header`.
    pub fn seal(signer: &Signer, header: Header<'_>, body: B) -> Self {
        let mut envelope = Envelope {
            version: PROTOCOL_VERSION,
            network_id: header.network_id.to_owned(),
            sender: signer.key(),
            nonce: header.nonce,
            sent_at_ms: header.sent_at_ms,
            reply_to: header.reply_to,
            body,
            signature: Signature([0; 64]),
        };
        envelope.signature = signer.sign(&envelope.transcript());
        envelope
    }

    /// The bytes the sender signs: every field but the signature, labelled by body type.
    pub fn transcript(&self) -> Vec<u8> {
        let t = Transcript::new(B::PURPOSE)
            .u64(u64::from(self.version))
            .str(&self.network_id)
            .bytes(&self.sender.0)
            .u64(self.nonce)
            .u64(self.sent_at_ms);
        let t = match self.reply_to {
            None => t.tag(0),
            Some(n) => t.tag(1).u64(n),
        };
        self.body.absorb(t).finish()
    }

    /// Checks that the message is for `network_id`, was signed by `peer` (the key the
    /// transport authenticated), and that the signature verifies.
    pub fn open(&self, network_id: &str, peer: &NodeKey) -> Result<&B, Rejection> {
        if self.network_id != network_id {
            return Err(Rejection::WrongNetwork);
        }
        if &self.sender != peer {
            return Err(Rejection::WrongSender);
        }
        self.sender.verify(&self.transcript(), &self.signature)?;
        Ok(&self.body)
    }
}

/// Encodes a message as CBOR.
pub fn encode<B: Body>(envelope: &Envelope<B>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Unwrap safety: writing to a Vec cannot fail and every field is serialisable.
    ciborium::into_writer(envelope, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// Decodes a message strictly: size bound first, then CBOR with a depth limit, no unknown
/// fields, no trailing bytes, this protocol version, bounded fields. Never panics.
pub fn decode<B: Body>(bytes: &[u8]) -> Result<Envelope<B>, DecodeError> {
    if bytes.len() > B::MAX_LEN {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: B::MAX_LEN,
        });
    }
    let mut reader = bytes;
    let envelope: Envelope<B> =
        ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_DEPTH)
            .map_err(|e| DecodeError::Malformed(short_error(&e)))?;
    if !reader.is_empty() {
        return Err(DecodeError::Trailing(reader.len()));
    }
    if envelope.version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(envelope.version));
    }
    check_network_id(&envelope.network_id).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    envelope.body.validate()?;
    Ok(envelope)
}

/// Remembers recent nonces per sender and refuses stale or repeated messages.
///
/// Pure: the caller passes its clock. Memory is bounded by senders × [`NONCES_PER_SENDER`];
/// senders are roster members (non-members cannot connect).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<NodeKey, HashMap<u64, u64>>,
}

impl ReplayGuard {
    /// Accepts the message (and remembers its nonce) or says why not.
    pub fn check(
        &mut self,
        sender: &NodeKey,
        nonce: u64,
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        if sent_at_ms.abs_diff(now_ms) > FRESHNESS_MS {
            return Err(Rejection::Stale);
        }
        let seen = self.seen.entry(*sender).or_default();
        if seen.contains_key(&nonce) {
            return Err(Rejection::Replay);
        }
        if seen.len() >= NONCES_PER_SENDER {
            // A message older than the window is refused above, so its nonce can go.
            seen.retain(|_, at| at.abs_diff(now_ms) <= FRESHNESS_MS);
            if seen.len() >= NONCES_PER_SENDER {
                return Err(Rejection::Flood);
            }
        }
        seen.insert(nonce, sent_at_ms);
        Ok(())
    }

    /// Forgets a sender (removed from the roster).
    pub fn forget(&mut self, sender: &NodeKey) {
        self.seen.remove(sender);
    }
}

#[cfg(test)]
mod tests;
