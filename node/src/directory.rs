//! The network's referral directory on this node (issue 17, part 4): this clinic's entry,
//! built from `[directory]` and the store and signed by the node (`directory publish`), with
//! optional badges from a clinic-level DP release charged to the ledger first; and every
//! member's entry that verified, kept in the ledger's file (`directory_entry`), one per
//! clinic, the newest replacing the older (`directory list | search`).
//!
//! What an entry says is clinic level only (protocol::directory): services, languages,
//! delivery modes, eligibility, accepting new, a wait band, a contact route, and the badges'
//! noised figures. Never a therapist (DESIGN.md P3), never a patient (P1). Entries reach other
//! nodes by gossip and by the daemon's pulls ([`for_peer`] answers them); each is checked
//! against the roster in force, its clinic's signature and its age when it arrives and again
//! whenever it is read, so a stale entry or one of a clinic since removed is never shown.

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use protocol::directory::badges::{BadgeLayout, BadgeLayoutDescription, KIND as BADGES};
use protocol::directory::{
    Entry, FORMAT, Hit, Query, Refusal, Service, SignedEntry, WaitBand, check, search, set_digest,
};
use protocol::dp::Mechanism;
use protocol::keys::{Bytes, Signature};
use protocol::matching::Delivery;
use protocol::messages::MAX_ENTRIES;
use protocol::round::LayoutRecord;
use rusqlite::{Connection, OptionalExtension, params};

use crate::ledger::{self, Draft, Policy};
use crate::node::Node;
use crate::release::{self, ClinicData};
use crate::{membership, store};

/// Largest total of entry documents in one answer to a pull (below the 1 MiB response bound).
pub const ENTRIES_BYTES: usize = 900 << 10;

/// An entry as kept, with what reading it again says.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The entry's id (SHA-256 of its document, hex).
    pub id: String,
    /// When this node received it.
    pub received_at: String,
    /// As signed.
    pub signed: SignedEntry,
    /// The entry, or why it is no longer shown (stale, its clinic removed).
    pub verdict: Result<Entry, Refusal>,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, SignedEntry)> {
    let signature: String = r.get(2)?;
    let signature = Signature::from_hex(&signature).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(2, "signature".into(), rusqlite::types::Type::Text)
    })?;
    Ok((
        r.get(0)?,
        r.get(3)?,
        SignedEntry {
            document: Bytes(r.get(1)?),
            signature,
        },
    ))
}

/// Every kept entry, checked again against the roster in force at `now_ms`, by clinic name.
pub fn kept(conn: &Connection, now_ms: u64) -> Result<Vec<Kept>> {
    let Some(m) = membership::load(conn)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare(
        "SELECT sha256, document, signature, received_at FROM directory_entry ORDER BY name, clinic",
    )?;
    let rows = stmt
        .query_map([], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .map(|(id, received_at, signed)| Kept {
            verdict: check(&signed, &m.roster.roster, now_ms),
            id,
            received_at,
            signed,
        })
        .collect())
}

/// The entries shown at `now_ms`: kept and still valid.
pub fn current(conn: &Connection, now_ms: u64) -> Result<Vec<(SignedEntry, Entry)>> {
    Ok(kept(conn, now_ms)?
        .into_iter()
        .filter_map(|k| k.verdict.ok().map(|e| (k.signed, e)))
        .collect())
}

/// The clinic `key`'s entry shown at `now_ms`, if any.
pub fn own(
    conn: &Connection,
    key: &protocol::keys::NodeKey,
    now_ms: u64,
) -> Result<Option<SignedEntry>> {
    Ok(current(conn, now_ms)?
        .into_iter()
        .find(|(_, e)| e.clinic == *key)
        .map(|(s, _)| s))
}

/// The digest of the entries shown at `now_ms` (what a pull sends).
pub fn digest(conn: &Connection, now_ms: u64) -> Result<[u8; 32]> {
    Ok(set_digest(current(conn, now_ms)?.iter().map(|(s, _)| s)))
}

/// The answer to a peer's pull: nothing when its digest is this node's, else the entries
/// shown, newest first, at most [`MAX_ENTRIES`] and [`ENTRIES_BYTES`].
pub fn for_peer(conn: &Connection, theirs: &[u8; 32], now_ms: u64) -> Result<Vec<SignedEntry>> {
    let mut entries = current(conn, now_ms)?;
    if set_digest(entries.iter().map(|(s, _)| s)) == *theirs {
        return Ok(Vec::new());
    }
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.issued_at_ms));
    let mut bytes = 0;
    Ok(entries
        .into_iter()
        .map(|(s, _)| s)
        .take_while(|s| {
            bytes += s.document.0.len() + 64;
            bytes <= ENTRIES_BYTES
        })
        .take(MAX_ENTRIES)
        .collect())
}

/// Keeps `signed` when it verifies against the roster in force at `now_ms` and is newer than
/// the clinic's kept entry; the entry when it was kept, `None` when this node already had it
/// or a newer one. A refused entry changes nothing and is an error saying why.
pub fn accept(conn: &mut Connection, signed: &SignedEntry, now_ms: u64) -> Result<Option<Entry>> {
    let m = membership::load(conn)?.context("this node is not in a network")?;
    let entry = check(signed, &m.roster.roster, now_ms)?;
    let clinic = hex::encode(entry.clinic.0);
    let tx = store::ledger_transaction(conn)?;
    let have: Option<u64> = tx
        .query_row(
            "SELECT issued_at_ms FROM directory_entry WHERE clinic = ?1",
            [&clinic],
            |r| r.get(0),
        )
        .optional()?;
    if have.is_some_and(|h| h >= entry.issued_at_ms) {
        return Ok(None);
    }
    tx.execute(
        "INSERT OR REPLACE INTO directory_entry
             (clinic, name, issued_at_ms, document, signature, sha256, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            clinic,
            entry.name,
            entry.issued_at_ms,
            signed.document.0,
            hex::encode(signed.signature.0),
            signed.sha256(),
            crate::clock::now(),
        ],
    )?;
    tx.commit()?;
    Ok(Some(entry))
}

/// Entries shown at `now_ms` that answer `q`, with reasons.
pub fn find(conn: &Connection, q: &Query, now_ms: u64) -> Result<Vec<Hit>> {
    let entries: Vec<Entry> = current(conn, now_ms)?.into_iter().map(|(_, e)| e).collect();
    Ok(search(&entries, q))
}

/// What `directory publish` did.
#[derive(Debug)]
pub struct Published {
    /// The entry as signed.
    pub entry: Entry,
    /// Its bytes and signature.
    pub signed: SignedEntry,
    /// The badges' ledger entry, when it had badges.
    pub charged: Option<ledger::Entry>,
    /// Whether this finished an earlier publish that was charged but never kept.
    pub resumed: bool,
}

/// Builds, signs and keeps this clinic's entry (issued at `now`); with `badges_rho`, its
/// badges come from a DP release of that ρ, charged to the ledger (with the signed entry as
/// its payload) before the entry is kept, so before it can leave. An earlier publish charged
/// but never kept is finished instead of charging again.
pub fn publish(node: &Node, badges_rho: Option<f64>, now: DateTime<Utc>) -> Result<Published> {
    let config = node.config();
    let mut store = node.store();
    let now_ms = u64::try_from(now.timestamp_millis()).context("the clock is before 1970")?;
    if let Some(pending) = ledger::pending(store.conn(), BADGES)? {
        let signed: SignedEntry = ciborium::from_reader(&pending.payload[..])
            .context("the ledger's pending directory entry is unreadable")?;
        let entry = check(
            &signed,
            &membership::load(store.conn())?
                .context("this node is not in a network")?
                .roster
                .roster,
            now_ms,
        );
        // A pending entry that can no longer be shown (stale) was never seen: refund it.
        let Ok(entry) = entry else {
            ledger::mark_aborted(store.conn(), &pending.entry.release_id)?;
            drop(store);
            return publish(node, badges_rho, now);
        };
        accept(store.conn_mut(), &signed, now_ms)?;
        ledger::mark_sent(store.conn(), &pending.entry.release_id, None, now)?;
        return Ok(Published {
            entry,
            signed,
            charged: Some(pending.entry),
            resumed: true,
        });
    }
    let m = membership::load(store.conn())?.context(
        "this node is not in a network yet: the directory is the network's (run `mbc-node \
         network join` first)",
    )?;
    let mut entry = draft(node, &store, &m.network_id, now_ms)?;
    let Some(rho) = badges_rho else {
        let signed = SignedEntry::sign(node.signer(), &entry);
        accept(store.conn_mut(), &signed, now_ms)?;
        return Ok(Published {
            entry,
            signed,
            charged: None,
            resumed: false,
        });
    };
    let policy = Policy::from_config(&config.privacy)?;
    // Policy before calibration: ρ and the period's budget.
    ledger::precheck(store.conn(), &policy, BADGES, rho, None, now)?;
    let domains = release::benchmark_layout(&store, config)?
        .domains()
        .to_vec();
    let layout = BadgeLayout::new(domains, config.privacy.max_episodes_per_patient)?;
    let sensitivity = layout.layout().sensitivity().patient;
    let mechanism = Mechanism::central(sensitivity, rho)?;
    // Noise before any data-dependent work (timing).
    let noise = if crate::hooks::no_noise() {
        vec![0; layout.layout().len()]
    } else {
        mechanism.noise(layout.layout().len())?
    };
    let settings = stats_settings(node, &store)?;
    let data = ClinicData::read(&mut store, settings, layout.domains(), now)?;
    let mut values = layout.encode(&data.contributions)?;
    layout
        .layout()
        .check_capacity(data.patients as u64, mechanism.total_sigma)?;
    Mechanism::apply(&mut values, &noise)?;
    let id = ledger::new_id()?;
    entry.badges = layout.badges(&values, mechanism.total_sigma, &id)?;
    let signed = SignedEntry::sign(node.signer(), &entry);
    let mut payload = Vec::new();
    ciborium::into_writer(&signed, &mut payload)?;
    let charged = ledger::charge(
        store.conn_mut(),
        &policy,
        Draft {
            id: id.clone(),
            kind: BADGES.into(),
            counterpart: format!("directory:{}", m.network_id),
            mechanism,
            threshold: 1,
            therapist_sensitivity: None,
            layout: LayoutRecord::Badges(BadgeLayoutDescription::of(&layout)),
            payload,
            training: None,
        },
        now,
    )?;
    if crate::hooks::fail_after_charge() {
        std::process::abort();
    }
    accept(store.conn_mut(), &signed, now_ms)?;
    ledger::mark_sent(store.conn(), &id, None, now)?;
    Ok(Published {
        entry,
        signed,
        charged: Some(charged.entry),
        resumed: false,
    })
}

fn stats_settings(node: &Node, store: &store::Store) -> Result<protocol::analysis::Settings> {
    crate::stats::settings(&node.config().stats, store.registry()?.instruments())
}

/// This clinic's entry from `[directory]`, the store's therapists (what `[directory]` leaves
/// unset) and the domains it measures; no badges. Refuses, naming the key, what cannot be
/// published: no contact route, an unknown domain or delivery mode, no wait known.
pub fn draft(node: &Node, store: &store::Store, network_id: &str, now_ms: u64) -> Result<Entry> {
    let config = node.config();
    let d = &config.directory;
    let mut problems = Vec::new();
    let contact = match d.contact.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => {
            problems.push(
                "[directory] contact is not set: say how to refer (a referral address or line of \
                 the service, not a person)"
                    .to_string(),
            );
            String::new()
        }
    };
    let registry = store.registry()?;
    let known: Vec<&str> = registry.domains().iter().map(|d| d.id.as_str()).collect();
    let services = if d.services.is_empty() {
        let measured = measured_domains(store.conn(), &registry)?;
        if measured.is_empty() {
            problems.push(
                "no domain is measured yet (import outcome data) and [directory] services is \
                 empty: nothing to offer"
                    .to_string(),
            );
        }
        vec![Service {
            name: config
                .clinic
                .service_type
                .clone()
                .unwrap_or_else(|| "Psychological therapy".into()),
            domains: measured,
        }]
    } else {
        for s in &d.services {
            for domain in s.domains.iter().filter(|x| !known.contains(&x.as_str())) {
                problems.push(format!(
                    "[directory] services {:?}: unknown domain {domain:?} (known: {})",
                    s.name,
                    known.join(", ")
                ));
            }
        }
        d.services
            .iter()
            .map(|s| Service {
                name: s.name.clone(),
                domains: s.domains.clone(),
            })
            .collect()
    };
    let offered = Offered::read(store.conn())?;
    let delivery = match &d.delivery {
        Some(list) => list
            .iter()
            .filter_map(|x| match x.parse::<Delivery>() {
                Ok(m) => Some(m),
                Err(_) => {
                    problems.push(format!(
                        "[directory] delivery: {x:?} is not a delivery mode (in-person, video)"
                    ));
                    None
                }
            })
            .collect(),
        None => offered.delivery,
    };
    let wait_days = d.wait_days.or(offered.wait_days);
    if wait_days.is_none() {
        problems.push(
            "[directory] wait_days is not set and no therapist taking new patients has a wait \
             recorded (therapists.csv wait_weeks)"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        bail!(
            "can't publish the directory entry:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(Entry {
        format: FORMAT.into(),
        network_id: network_id.into(),
        clinic: node.signer().key(),
        name: config.clinic.name.clone(),
        services,
        languages: d.languages.clone().unwrap_or(offered.languages),
        modalities: d.modalities.clone().unwrap_or(offered.modalities),
        delivery,
        eligibility: d.eligibility.clone(),
        accepting_new: d.accepting_new.unwrap_or(offered.accepting_new),
        wait: WaitBand::of_days(wait_days.unwrap_or(0)),
        contact,
        badges: Vec::new(),
        issued_at_ms: now_ms,
    })
}

/// The domains whose instrument has a score in the store.
fn measured_domains(
    conn: &Connection,
    registry: &crate::registry::Registry,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT 1 FROM assessment WHERE instrument_id = ?1 LIMIT 1")?;
    let mut out = Vec::new();
    for d in registry.domains() {
        if stmt.exists([&d.instrument_id])? {
            out.push(d.id.clone());
        }
    }
    Ok(out)
}

/// What the clinic's therapists offer, as the directory says it: of those taking new
/// patients (all of them when none is), the languages, modalities and delivery modes, and
/// the shortest recorded wait.
#[derive(Debug, Default)]
struct Offered {
    languages: Vec<String>,
    modalities: Vec<String>,
    delivery: Vec<Delivery>,
    accepting_new: bool,
    wait_days: Option<u32>,
}

impl Offered {
    fn read(conn: &Connection) -> Result<Self> {
        let mut stmt = conn.prepare(
            "SELECT languages, modalities, delivery, coalesce(accepting_new, 1), wait_weeks
             FROM therapist WHERE unrecorded = 0",
        )?;
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            bool,
            Option<f64>,
        );
        let rows: Vec<Row> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let accepting_new = rows.iter().any(|r| r.3);
        let mut out = Offered {
            accepting_new,
            ..Default::default()
        };
        for (languages, modalities, delivery, accepting, wait) in rows {
            if accepting_new && !accepting {
                continue;
            }
            union(&mut out.languages, crate::matching::list(languages));
            union(&mut out.modalities, crate::matching::list(modalities));
            for m in crate::matching::list(delivery) {
                if let Ok(m) = m.parse::<Delivery>()
                    && !out.delivery.contains(&m)
                {
                    out.delivery.push(m);
                }
            }
            if let Some(w) = wait.filter(|w| w.is_finite() && *w >= 0.0) {
                let days = (w * 7.0).round() as u32;
                out.wait_days = Some(out.wait_days.map_or(days, |d| d.min(days)));
            }
        }
        out.languages.sort();
        out.modalities.sort();
        Ok(out)
    }
}

fn union(into: &mut Vec<String>, more: Vec<String>) {
    for x in more {
        if !into.contains(&x) {
            into.push(x);
        }
    }
}
