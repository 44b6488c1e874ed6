//! Network membership: the coordinator-signed roster and a clinic's signed join request.
//!
//! The roster (DESIGN.md §8) lists who may connect: network id, version, the coordinator's key,
//! and every member's key, clinic name, listen addresses and role. The coordinator signs each
//! version over [`Roster::transcript`]. A node pins the network id and coordinator key when it
//! joins and from then on accepts a roster only through [`SignedRoster::check_update`]: same
//! network, same coordinator, valid signature, strictly higher version. Everything here is
//! pure; `node` stores rosters and turns them into the libp2p allow-list.

use serde::{Deserialize, Serialize};

use crate::keys::{BadSignature, NodeKey, Signature, Signer};
use crate::transcript::Transcript;

/// Most members a roster may list (a research network has tens of clinics).
pub const MAX_MEMBERS: usize = 1000;
/// Longest network id, in bytes.
pub const MAX_NETWORK_ID: usize = 64;
/// Longest clinic name, in bytes.
pub const MAX_NAME: usize = 128;
/// Most listen addresses per member.
pub const MAX_ADDRS: usize = 8;
/// Longest listen address, in bytes.
pub const MAX_ADDR: usize = 256;

/// Why a roster or join request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// It belongs to another network.
    #[error("roster is for network {got:?}, this node is in {expected:?}")]
    WrongNetwork {
        /// The pinned network id.
        expected: String,
        /// The id in the roster.
        got: String,
    },
    /// It names a coordinator other than the pinned one.
    #[error("roster is signed by a coordinator other than the one this node joined")]
    WrongCoordinator,
    /// The signature does not verify.
    #[error("roster signature does not verify")]
    BadSignature,
    /// Not newer than the roster already held.
    #[error("roster version {got} is not newer than version {have}")]
    NotNewer {
        /// Version held.
        have: u64,
        /// Version offered.
        got: u64,
    },
    /// A field is out of bounds or inconsistent.
    #[error("invalid roster: {0}")]
    Invalid(String),
}

impl From<BadSignature> for RosterError {
    fn from(_: BadSignature) -> Self {
        RosterError::BadSignature
    }
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Admits clinics, signs rosters, runs rounds.
    Coordinator,
    /// Contributes to rounds.
    Clinic,
}

impl Role {
    fn tag(self) -> u8 {
        match self {
            Role::Coordinator => 1,
            Role::Clinic => 2,
        }
    }
}

/// One member of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Identity key (the node maps it to a PeerId).
    pub key: NodeKey,
    /// Clinic name, for people.
    pub name: String,
    /// libp2p multiaddresses the member listens on.
    pub addrs: Vec<String>,
    /// Role in the network.
    pub role: Role,
}

/// One version of the membership list, before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    /// The network's id.
    pub network_id: String,
    /// Version, from 1, strictly increasing.
    pub version: u64,
    /// The coordinator's key; it signs every version.
    pub coordinator: NodeKey,
    /// When this version was issued (Unix seconds, from the coordinator's clock).
    pub issued_at: i64,
    /// The members, coordinator included.
    pub members: Vec<Member>,
}

/// A roster with the coordinator's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRoster {
    /// The roster.
    pub roster: Roster,
    /// The coordinator's signature over [`Roster::transcript`].
    pub signature: Signature,
}

/// A clinic's request to join, signed with its own key (proof that it holds the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The network the clinic asks to join.
    pub network_id: String,
    /// The clinic as it would appear in the roster (role is always clinic).
    pub key: NodeKey,
    /// Clinic name.
    pub name: String,
    /// Listen addresses.
    pub addrs: Vec<String>,
    /// When the request was made (Unix seconds).
    pub issued_at: i64,
    /// The clinic's signature over [`JoinRequest::transcript`].
    pub signature: Signature,
}

/// Checks a network id: 1–64 bytes of ASCII letters, digits, `.`, `_`, `-`.
pub fn check_network_id(id: &str) -> Result<(), RosterError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NETWORK_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RosterError::Invalid(format!(
            "network id {id:?} must be 1-{MAX_NETWORK_ID} letters, digits, '.', '_' or '-'"
        )))
    }
}

fn check_member_fields(name: &str, addrs: &[String]) -> Result<(), RosterError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(RosterError::Invalid(format!(
            "clinic name {name:?} must be 1-{MAX_NAME} bytes without control characters"
        )));
    }
    if addrs.len() > MAX_ADDRS {
        return Err(RosterError::Invalid(format!(
            "{name}: {} addresses, at most {MAX_ADDRS}",
            addrs.len()
        )));
    }
    for a in addrs {
        if a.is_empty() || a.len() > MAX_ADDR || !a.starts_with('/') || !a.is_ascii() {
            return Err(RosterError::Invalid(format!(
                "{name}: address {a:?} is not a multiaddress"
            )));
        }
    }
    Ok(())
}

impl Member {
    fn absorb(&self, t: Transcript) -> Transcript {
        let mut t = t.bytes(&self.key.0).str(&self.name).tag(self.role.tag());
        t = t.u64(self.addrs.len() as u64);
        for a in &self.addrs {
            t = t.str(a);
        }
        t
    }
}

impl Roster {
    /// The first roster of a new network: the coordinator alone.
    pub fn genesis(
        network_id: &str,
        coordinator: NodeKey,
        name: &str,
        addrs: Vec<String>,
        issued_at: i64,
    ) -> Result<Roster, RosterError> {
        let roster = Roster {
            network_id: network_id.to_owned(),
            version: 1,
            coordinator,
            issued_at,
            members: vec![Member {
                key: coordinator,
                name: name.to_owned(),
                addrs,
                role: Role::Coordinator,
            }],
        };
        roster.validate()?;
        Ok(roster)
    }

    /// The bytes the coordinator signs.
    pub fn transcript(&self) -> Vec<u8> {
        self.absorb(Transcript::new("roster")).finish()
    }

    pub(crate) fn absorb(&self, t: Transcript) -> Transcript {
        let mut t = t
            .str(&self.network_id)
            .u64(self.version)
            .bytes(&self.coordinator.0)
            .i64(self.issued_at)
            .u64(self.members.len() as u64);
        for m in &self.members {
            t = m.absorb(t);
        }
        t
    }

    /// Checks bounds and consistency: valid id and names, unique keys, the coordinator listed
    /// once with the coordinator role and nobody else with it.
    pub fn validate(&self) -> Result<(), RosterError> {
        check_network_id(&self.network_id)?;
        if self.version == 0 {
            return Err(RosterError::Invalid("version must be at least 1".into()));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(RosterError::Invalid(format!(
                "{} members, at most {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        let mut keys: Vec<_> = self.members.iter().map(|m| m.key).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(RosterError::Invalid("a key is listed twice".into()));
        }
        for m in &self.members {
            check_member_fields(&m.name, &m.addrs)?;
            if (m.role == Role::Coordinator) != (m.key == self.coordinator) {
                return Err(RosterError::Invalid(format!(
                    "{}: only the signing coordinator has the coordinator role",
                    m.name
                )));
            }
        }
        if !self.members.iter().any(|m| m.key == self.coordinator) {
            return Err(RosterError::Invalid(
                "the coordinator is not a member".into(),
            ));
        }
        Ok(())
    }

    /// The member with `key`, if listed.
    pub fn member(&self, key: &NodeKey) -> Option<&Member> {
        self.members.iter().find(|m| &m.key == key)
    }

    /// The next version with `request`'s clinic added (or its name and addresses updated if
    /// it is already a member).
    pub fn admit(&self, request: &JoinRequest, issued_at: i64) -> Result<Roster, RosterError> {
        request.verify(&self.network_id)?;
        if request.key == self.coordinator {
            return Err(RosterError::Invalid(
                "the coordinator cannot admit itself as a clinic".into(),
            ));
        }
        let mut next = self.next(issued_at);
        let member = Member {
            key: request.key,
            name: request.name.clone(),
            addrs: request.addrs.clone(),
            role: Role::Clinic,
        };
        match next.members.iter_mut().find(|m| m.key == request.key) {
            Some(m) => *m = member,
            None => next.members.push(member),
        }
        next.validate()?;
        Ok(next)
    }

    /// The next version without `key`.
    pub fn remove(&self, key: &NodeKey, issued_at: i64) -> Result<Roster, RosterError> {
        if *key == self.coordinator {
            return Err(RosterError::Invalid(
                "the coordinator cannot be removed".into(),
            ));
        }
        if self.member(key).is_none() {
            return Err(RosterError::Invalid("no such member".into()));
        }
        let mut next = self.next(issued_at);
        next.members.retain(|m| &m.key != key);
        Ok(next)
    }

    fn next(&self, issued_at: i64) -> Roster {
        Roster {
            version: self.version + 1,
            issued_at,
            ..self.clone()
        }
    }

    /// Signs this roster. Only the coordinator's signer gives a roster others accept.
    pub fn sign(self, signer: &Signer) -> SignedRoster {
        let signature = signer.sign(&self.transcript());
        SignedRoster {
            roster: self,
            signature,
        }
    }
}

impl SignedRoster {
    /// Checks bounds and the coordinator's signature, and that the roster belongs to
    /// `network_id` and `coordinator` when given (a node that has joined pins both).
    pub fn verify(
        &self,
        network_id: Option<&str>,
        coordinator: Option<&NodeKey>,
    ) -> Result<(), RosterError> {
        let r = &self.roster;
        if let Some(expected) = network_id
            && r.network_id != expected
        {
            return Err(RosterError::WrongNetwork {
                expected: expected.to_owned(),
                got: r.network_id.clone(),
            });
        }
        if coordinator.is_some_and(|c| *c != r.coordinator) {
            return Err(RosterError::WrongCoordinator);
        }
        r.validate()?;
        r.coordinator.verify(&r.transcript(), &self.signature)?;
        Ok(())
    }

    /// Checks that `self` may replace `current`: same network and coordinator, valid
    /// signature, strictly higher version.
    pub fn check_update(&self, current: &SignedRoster) -> Result<(), RosterError> {
        self.verify(
            Some(&current.roster.network_id),
            Some(&current.roster.coordinator),
        )?;
        if self.roster.version <= current.roster.version {
            return Err(RosterError::NotNewer {
                have: current.roster.version,
                got: self.roster.version,
            });
        }
        Ok(())
    }
}

impl JoinRequest {
    /// A join request signed by the clinic's own key.
    pub fn new(
        network_id: &str,
        signer: &Signer,
        name: &str,
        addrs: Vec<String>,
        issued_at: i64,
    ) -> Result<JoinRequest, RosterError> {
        check_network_id(network_id)?;
        check_member_fields(name, &addrs)?;
        let mut request = JoinRequest {
            network_id: network_id.to_owned(),
            key: signer.key(),
            name: name.to_owned(),
            addrs,
            issued_at,
            signature: Signature([0; 64]),
        };
        request.signature = signer.sign(&request.transcript());
        Ok(request)
    }

    /// The bytes the clinic signs.
    pub fn transcript(&self) -> Vec<u8> {
        let mut t = Transcript::new("join request")
            .str(&self.network_id)
            .bytes(&self.key.0)
            .str(&self.name)
            .i64(self.issued_at)
            .u64(self.addrs.len() as u64);
        for a in &self.addrs {
            t = t.str(a);
        }
        t.finish()
    }

    /// Checks bounds, the network id and the clinic's signature.
    pub fn verify(&self, network_id: &str) -> Result<(), RosterError> {
        if self.network_id != network_id {
            return Err(RosterError::WrongNetwork {
                expected: network_id.to_owned(),
                got: self.network_id.clone(),
            });
        }
        check_member_fields(&self.name, &self.addrs)?;
        self.key.verify(&self.transcript(), &self.signature)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
