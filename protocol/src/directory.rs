//! The network referral directory (issue 17, part 4): one signed entry per clinic, shaped
//! like an Open Referral HSDS service / FHIR HealthcareService, so that a referrer can find
//! another clinic for a patient this one cannot serve. **Clinic level only**: an entry names
//! services, never a therapist (DESIGN.md P3); its optional badges are clinic-level figures
//! from a differentially private release the clinic charged to its ledger. No patient data
//! is in it: a referral is a contact step between people.
//!
//! An entry is accepted ([`check`]) only when it is well formed, for this network, signed by
//! the clinic it names, that clinic is on the roster in force, and it is neither stale
//! ([`STALE_AFTER_MS`], 30 days) nor from the future (beyond [`MAX_SKEW_MS`]). A newer entry
//! of a clinic replaces its older one.

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use crate::keys::{Bytes, NodeKey, Signature, Signer};
use crate::matching::Delivery;
use crate::roster::Roster;
use crate::transcript::Transcript;

/// The entry's format name.
pub const FORMAT: &str = "mbc-node/directory-entry/1";
/// An entry older than this is stale and refused (30 days).
pub const STALE_AFTER_MS: u64 = 30 * 24 * 3600 * 1000;
/// An entry issued more than this after the receiver's clock is refused (5 minutes).
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Largest signed document.
pub const MAX_ENTRY: usize = 32 * 1024;
/// Most services, languages, modalities or badges in an entry, and the longest text field.
const MAX_ITEMS: usize = 32;
const MAX_TEXT: usize = 500;

/// How long a new patient waits, in bands (the exact wait is the clinic's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitBand {
    /// Under two weeks.
    UnderTwoWeeks,
    /// Two to six weeks.
    TwoToSixWeeks,
    /// Over six weeks.
    OverSixWeeks,
}

impl WaitBand {
    /// The band of a wait in days.
    pub fn of_days(days: u32) -> WaitBand {
        match days {
            0..14 => WaitBand::UnderTwoWeeks,
            14..=42 => WaitBand::TwoToSixWeeks,
            _ => WaitBand::OverSixWeeks,
        }
    }

    /// In words.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitBand::UnderTwoWeeks => "under 2 weeks",
            WaitBand::TwoToSixWeeks => "2–6 weeks",
            WaitBand::OverSixWeeks => "over 6 weeks",
        }
    }
}

/// One service of a clinic (HSDS `service`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Its name, e.g. "Step 3 CBT for depression".
    pub name: String,
    /// The problem domains it treats (domain ids, e.g. `depression`).
    pub domains: Vec<String>,
}

/// A clinic-level figure on one domain from a DP release (never a therapist's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Badge {
    /// Domain id.
    pub domain: String,
    /// Finished courses (noised count).
    pub finished: f64,
    /// Reliable improvement among them (noised rate, 0–1).
    pub reliable_improvement: f64,
    /// The noise SD of that rate.
    pub noise_sd: f64,
    /// The ledger's release the figures come from.
    pub release_id: String,
}

/// A clinic's directory entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// [`FORMAT`].
    pub format: String,
    /// The network.
    pub network_id: String,
    /// The clinic's node key: the signer.
    pub clinic: NodeKey,
    /// The clinic's name.
    pub name: String,
    /// Services offered.
    pub services: Vec<Service>,
    /// Languages therapy is offered in (codes).
    pub languages: Vec<String>,
    /// Therapies offered.
    pub modalities: Vec<String>,
    /// Delivery modes.
    pub delivery: Vec<Delivery>,
    /// Who may be referred (age range, area, payer), in words.
    pub eligibility: String,
    /// Taking new referrals.
    pub accepting_new: bool,
    /// How long a new patient waits.
    pub wait: WaitBand,
    /// How to refer: the service's route (a referral address or line), not a person.
    pub contact: String,
    /// Clinic-level DP figures.
    #[serde(default)]
    pub badges: Vec<Badge>,
    /// When the clinic issued it (ms since the Unix epoch).
    pub issued_at_ms: u64,
}

/// An entry with its clinic's signature over the exact document bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEntry {
    /// The entry, CBOR (strict: known fields only, no trailing bytes).
    pub document: Bytes,
    /// The clinic's signature over [`SignedEntry::transcript`].
    pub signature: Signature,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Over [`MAX_ENTRY`] bytes.
    #[error("directory entry of {0} bytes is larger than {MAX_ENTRY}")]
    TooLarge(usize),
    /// Not an entry.
    #[error("directory entry is malformed: {0}")]
    Malformed(String),
    /// For another network.
    #[error("directory entry for network {0:?}, not this one")]
    OtherNetwork(String),
    /// Its clinic is not on the roster in force.
    #[error("directory entry of a clinic that is not on the roster")]
    NotAMember,
    /// The signature is not the clinic's over these bytes.
    #[error("directory entry's signature is not its clinic's")]
    BadSignature,
    /// Older than 30 days.
    #[error("directory entry is stale: issued {0} days ago (at most 30)")]
    Stale(u64),
    /// Issued after the receiver's clock (beyond the skew allowed).
    #[error("directory entry is issued in the future")]
    FromTheFuture,
}

impl SignedEntry {
    /// The signed bytes: the document's SHA-256 under the `directory-entry` label.
    pub fn transcript(document: &[u8]) -> Vec<u8> {
        Transcript::new("directory-entry")
            .bytes(digest(&SHA256, document).as_ref())
            .finish()
    }

    /// Signs an entry (its CBOR) as its clinic.
    pub fn sign(signer: &Signer, entry: &Entry) -> Self {
        let mut document = Vec::new();
        // Unwrap safety: CBOR encoding into a Vec cannot fail.
        ciborium::into_writer(entry, &mut document).expect("CBOR encoding into a Vec cannot fail");
        Self {
            signature: signer.sign(&Self::transcript(&document)),
            document: Bytes(document),
        }
    }

    /// SHA-256 of the document, hex: the entry's id.
    pub fn sha256(&self) -> String {
        hex::encode(digest(&SHA256, &self.document.0))
    }
}

/// The digest of a set of entries: SHA-256 over their [`SignedEntry::sha256`] ids, sorted,
/// under the `directory-set` label. Two nodes that keep the same entries have the same digest
/// whatever order they got them in; [`crate::messages::Request::Directory`] carries it.
pub fn set_digest<'a>(entries: impl IntoIterator<Item = &'a SignedEntry>) -> [u8; 32] {
    let mut ids: Vec<[u8; 32]> = entries
        .into_iter()
        .map(|e| {
            let mut id = [0; 32];
            id.copy_from_slice(digest(&SHA256, &e.document.0).as_ref());
            id
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut t = Transcript::new("directory-set").u64(ids.len() as u64);
    for id in &ids {
        t = t.bytes(id);
    }
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, &t.finish()).as_ref());
    out
}

/// Checks an entry against this network's roster at `now_ms` (module doc); the entry when
/// it is accepted.
pub fn check(signed: &SignedEntry, roster: &Roster, now_ms: u64) -> Result<Entry, Refusal> {
    let bytes = &signed.document.0;
    if bytes.len() > MAX_ENTRY {
        return Err(Refusal::TooLarge(bytes.len()));
    }
    let mut reader = &bytes[..];
    let entry: Entry = ciborium::de::from_reader_with_recursion_limit(&mut reader, 16)
        .map_err(|e| Refusal::Malformed(crate::cbor::short_error(&e)))?;
    if !reader.is_empty() {
        return Err(Refusal::Malformed(format!(
            "{} trailing bytes",
            reader.len()
        )));
    }
    if entry.format != FORMAT {
        return Err(Refusal::Malformed(format!("format {:?}", entry.format)));
    }
    validate(&entry).map_err(Refusal::Malformed)?;
    if entry.network_id != roster.network_id {
        return Err(Refusal::OtherNetwork(entry.network_id));
    }
    if !roster.members.iter().any(|m| m.key == entry.clinic) {
        return Err(Refusal::NotAMember);
    }
    entry
        .clinic
        .verify(&SignedEntry::transcript(bytes), &signed.signature)
        .map_err(|_| Refusal::BadSignature)?;
    if entry.issued_at_ms > now_ms.saturating_add(MAX_SKEW_MS) {
        return Err(Refusal::FromTheFuture);
    }
    let age = now_ms.saturating_sub(entry.issued_at_ms);
    if age > STALE_AFTER_MS {
        return Err(Refusal::Stale(age / (24 * 3600 * 1000)));
    }
    Ok(entry)
}

/// Field bounds: lists and texts short, badge figures in range.
fn validate(e: &Entry) -> Result<(), String> {
    let lists = [
        ("services", e.services.len()),
        ("languages", e.languages.len()),
        ("modalities", e.modalities.len()),
        ("badges", e.badges.len()),
    ];
    if let Some((name, n)) = lists.iter().find(|(_, n)| *n > MAX_ITEMS) {
        return Err(format!("{n} {name} (at most {MAX_ITEMS})"));
    }
    let texts = [&e.name, &e.eligibility, &e.contact];
    if texts.iter().any(|t| t.len() > MAX_TEXT) || e.name.trim().is_empty() {
        return Err(format!(
            "a name, eligibility or contact of 1–{MAX_TEXT} bytes"
        ));
    }
    for b in &e.badges {
        let ok = b.finished.is_finite()
            && b.noise_sd.is_finite()
            && b.noise_sd >= 0.0
            && (0.0..=1.0).contains(&b.reliable_improvement);
        if !ok {
            return Err(format!("badge {:?} out of range", b.domain));
        }
    }
    Ok(())
}

/// What a referrer looks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// A problem domain a service treats.
    pub domain: Option<String>,
    /// A language therapy is offered in.
    pub language: Option<String>,
    /// A delivery mode.
    pub delivery: Option<Delivery>,
    /// Only clinics taking new referrals.
    pub accepting_only: bool,
}

/// A clinic that answers a query, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The clinic's name.
    pub name: String,
    /// Its node key.
    pub clinic: NodeKey,
    /// Why it matches, and what to know (wait, badges), in words.
    pub reasons: Vec<String>,
    /// How to refer.
    pub contact: String,
}

/// The entries that answer `q`, those taking new referrals first, then by wait band.
pub fn search(entries: &[Entry], q: &Query) -> Vec<Hit> {
    let has = |list: &[String], v: &str| list.iter().any(|x| x.eq_ignore_ascii_case(v));
    let mut hits: Vec<(&Entry, Vec<String>)> = Vec::new();
    for e in entries {
        if q.accepting_only && !e.accepting_new {
            continue;
        }
        let mut reasons = Vec::new();
        if let Some(d) = &q.domain {
            let services: Vec<&str> = e
                .services
                .iter()
                .filter(|s| has(&s.domains, d))
                .map(|s| s.name.as_str())
                .collect();
            if services.is_empty() {
                continue;
            }
            reasons.push(format!("treats {d}: {}", services.join(", ")));
        }
        if let Some(l) = &q.language {
            if !has(&e.languages, l) {
                continue;
            }
            reasons.push(format!("therapy in {l}"));
        }
        if let Some(m) = q.delivery {
            if !e.delivery.contains(&m) {
                continue;
            }
            reasons.push(format!("offers {}", m.as_str()));
        }
        reasons.push(format!(
            "{}; wait {}",
            if e.accepting_new {
                "taking new referrals"
            } else {
                "not taking new referrals"
            },
            e.wait.as_str()
        ));
        for b in e.badges.iter().filter(|b| {
            q.domain
                .as_ref()
                .is_none_or(|d| b.domain.eq_ignore_ascii_case(d))
        }) {
            reasons.push(format!(
                "{}: reliable improvement about {:.0} % of about {:.0} finished courses (± {:.1} \
                 percentage points, differentially private)",
                b.domain,
                100.0 * b.reliable_improvement,
                b.finished.max(0.0),
                100.0 * 1.96 * b.noise_sd
            ));
        }
        hits.push((e, reasons));
    }
    hits.sort_by(|(a, _), (b, _)| {
        b.accepting_new
            .cmp(&a.accepting_new)
            .then((a.wait as u8).cmp(&(b.wait as u8)))
            .then(a.name.cmp(&b.name))
    });
    hits.into_iter()
        .map(|(e, reasons)| Hit {
            name: e.name.clone(),
            clinic: e.clinic,
            reasons,
            contact: e.contact.clone(),
        })
        .collect()
}

pub mod badges;

#[cfg(test)]
mod tests;
