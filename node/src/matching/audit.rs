//! The matching audit: every shortlist as shown (`match_request`, `match_offer`) and what
//! happened after it (`match_outcome`). Append-only (triggers; only an erasure of the
//! patient removes their rows).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use protocol::matching::{Request, Settings, Shortlist};
use protocol::pseudonym::IdKind;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

use super::Groups;
use crate::clock;
use crate::node::Node;
use crate::store::Store;

/// What one shortlist logs.
pub(super) struct Entry<'a> {
    pub(super) created_at: &'a str,
    pub(super) by: Option<&'a str>,
    pub(super) patient_id: Option<i64>,
    pub(super) request: &'a Request,
    pub(super) settings: &'a Settings,
    pub(super) groups: &'a Groups,
    pub(super) shortlist: &'a Shortlist,
    pub(super) reference: &'a str,
    /// Therapist rowid by the id the shortlist shows.
    pub(super) therapist_ids: &'a HashMap<&'a str, i64>,
}

/// Logs a shortlist in one transaction; returns its request id.
pub(super) fn log(store: &mut Store, e: &Entry) -> Result<i64> {
    let tx = store.conn_mut().transaction()?;
    tx.execute(
        "INSERT INTO match_request (created_at, by_whom, patient_id, urgent, request, groups,
             shortlist, reference)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            e.created_at,
            e.by,
            e.patient_id,
            e.shortlist.urgent,
            json!({"request": e.request, "settings": e.settings}).to_string(),
            serde_json::to_string(e.groups)?,
            serde_json::to_string(e.shortlist)?,
            e.reference,
        ],
    )?;
    let request_id = tx.last_insert_rowid();
    for (rank, offer) in e.shortlist.offers.iter().enumerate() {
        let therapist = e
            .therapist_ids
            .get(offer.therapist.as_str())
            .with_context(|| {
                format!(
                    "therapist {} of the shortlist is not stored",
                    offer.therapist
                )
            })?;
        tx.execute(
            "INSERT INTO match_offer (request_id, rank, therapist_id, level)
             VALUES (?1, ?2, ?3, ?4)",
            params![request_id, rank + 1, therapist, offer.level.number()],
        )?;
    }
    tx.commit().context("couldn't log the shortlist")?;
    Ok(request_id)
}

/// What happened after a shortlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The patient chose this therapist (as the shortlist shows them, or the staff id).
    Chosen(String),
    /// The patient declined this therapist, or (`None`) the whole shortlist.
    Declined(Option<String>),
}

/// One recorded outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// The shortlist.
    pub request_id: i64,
    /// `chosen` or `declined`.
    pub kind: &'static str,
    /// The therapist, as the shortlist showed them or by the staff id given (none: the whole
    /// list declined).
    pub therapist: Option<String>,
    /// Their level on that shortlist.
    pub level: Option<u8>,
    /// When.
    pub at: String,
    /// Who recorded it.
    pub by: String,
}

/// A therapist offered on a logged shortlist.
struct Offered {
    therapist_id: i64,
    pseudonym: String,
    shown: String,
    level: u8,
}

/// Records what happened after shortlist `request_id` (module doc). A therapist must be one
/// the shortlist offered; a request takes one choice.
pub fn record(
    node: &Node,
    request_id: i64,
    choice: &Choice,
    reason: Option<&str>,
    by: &str,
) -> Result<Recorded> {
    if by.trim().is_empty() {
        bail!("say who records this (--by NAME)");
    }
    let mut store = node.store();
    let tx = store.conn_mut().transaction()?;
    let shortlist: Option<String> = tx
        .query_row(
            "SELECT shortlist FROM match_request WHERE request_id = ?1",
            [request_id],
            |r| r.get(0),
        )
        .optional()?;
    let shortlist = shortlist.with_context(|| {
        format!("no shortlist {request_id} in this store (see the id `match` printed)")
    })?;
    let shown: serde_json::Value = serde_json::from_str(&shortlist)?;
    let mut stmt = tx.prepare(
        "SELECT f.rank, f.therapist_id, t.pseudonym, f.level FROM match_offer f
         JOIN therapist t USING (therapist_id) WHERE f.request_id = ?1 ORDER BY f.rank",
    )?;
    let offered: Vec<Offered> = stmt
        .query_map([request_id], |r| {
            let rank: usize = r.get(0)?;
            Ok(Offered {
                therapist_id: r.get(1)?,
                pseudonym: r.get(2)?,
                shown: shown["offers"][rank - 1]["therapist"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                level: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(stmt);
    let (kind, who) = match choice {
        Choice::Chosen(t) => ("chosen", Some(t.as_str())),
        Choice::Declined(t) => ("declined", t.as_deref()),
    };
    let found = who
        .map(|t| find(node, &offered, t, request_id))
        .transpose()?;
    let offer = found.as_ref().map(|(o, _)| *o);
    if kind == "chosen" {
        let before: Option<(String, String)> = tx
            .query_row(
                "SELECT at, by_whom FROM match_outcome WHERE request_id = ?1 AND kind = 'chosen'",
                [request_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((at, whom)) = before {
            bail!(
                "shortlist {request_id} already has a choice, recorded {at} by {whom}; run \
                 `match` again for a new allocation"
            );
        }
    }
    let at = clock::now();
    tx.execute(
        "INSERT INTO match_outcome (request_id, kind, therapist_id, level, reason, by_whom, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            request_id,
            kind,
            offer.map(|o| o.therapist_id),
            offer.map(|o| o.level),
            reason,
            by.trim(),
            at
        ],
    )?;
    tx.commit()?;
    Ok(Recorded {
        request_id,
        kind,
        therapist: found.map(|(_, named)| named),
        level: offer.map(|o| o.level),
        at,
        by: by.trim().to_string(),
    })
}

/// The offered therapist `who` means: as shown, by staff id, or by pseudonym prefix.
/// Also how to name them in the answer: the staff id when `who` was one (the audit shows
/// pseudonyms only), else as the shortlist showed them.
fn find<'o>(
    node: &Node,
    offered: &'o [Offered],
    who: &str,
    request: i64,
) -> Result<(&'o Offered, String)> {
    let who = who.trim();
    let own = node.pseudonymiser().pseudonym(IdKind::Therapist, who);
    let prefix = who.to_ascii_lowercase();
    let hex = prefix.len() >= 6 && prefix.chars().all(|c| c.is_ascii_hexdigit());
    if let Some(o) = offered.iter().find(|o| o.pseudonym == own) {
        return Ok((o, who.to_string()));
    }
    offered
        .iter()
        .find(|o| o.shown.eq_ignore_ascii_case(who) || (hex && o.pseudonym.starts_with(&prefix)))
        .map(|o| (o, o.shown.clone()))
        .with_context(|| {
            let names: Vec<&str> = offered.iter().map(|o| o.shown.as_str()).collect();
            format!(
                "{who} was not offered on shortlist {request} (offered: {})",
                names.join(", ")
            )
        })
}
