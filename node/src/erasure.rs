//! `mbc-node erase --patient ID`: withdraws one patient's data from the store on request.
//!
//! In one transaction: every row of the patient (demographics, episodes, sessions,
//! assessments, item answers, case mix, import summaries, corrections, alerts, matching
//! requests with their offers and outcomes, derived outcome rows)
//! is deleted with SQLite's `secure_delete` on (freed pages are zeroed), the derived tables are
//! marked stale, and the patient's pseudonym is kept in `erasure` so that a later export still
//! holding the patient does not bring the data back (the importer skips those records). The
//! WAL is checkpointed afterwards so the old pages do not linger there either.
//!
//! What cannot be undone is said in README.md ("Correcting and erasing data"): releases
//! already made, and benchmarks already published, were computed with the patient's data;
//! differential privacy bounds what they reveal about any one patient, and later releases
//! no longer include them.

use anyhow::{Context, Result, bail};
use protocol::pseudonym::{IdKind, Pseudonymiser};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::store::Store;

/// What an erasure removed (or, unconfirmed, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erased {
    /// `erased`, or `would_erase` when not confirmed.
    pub status: &'static str,
    /// Episodes of the patient.
    pub episodes: u64,
    /// Sessions of those episodes.
    pub sessions: u64,
    /// Assessments of those episodes.
    pub assessments: u64,
    /// Stored corrections of those episodes.
    pub corrections: u64,
}

/// The rows of one patient's episodes, each table once, children before parents (and the
/// features cache, which holds every episode's); assessments
/// through the session's (episode, seq) index (assessment has none by episode).
const DELETES: &[&str] = &[
    "DELETE FROM patient_view WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM correction WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM alert_action WHERE alert_id IN
        (SELECT alert_id FROM alert WHERE episode_id IN (SELECT episode_id FROM mine))",
    "DELETE FROM alert WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM support_check WHERE episode_id IN (SELECT episode_id FROM mine)",
    // Every episode's features in one blob (support/features.rs): the next reader rebuilds it.
    "DELETE FROM support_features",
    "DELETE FROM item_response WHERE assessment_id IN (SELECT assessment_id FROM assessment
        WHERE session_id IN (SELECT session_id FROM session WHERE episode_id IN mine))",
    "DELETE FROM assessment WHERE session_id IN
        (SELECT session_id FROM session WHERE episode_id IN mine)",
    "DELETE FROM session WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode_therapist WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode_scores WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode_attendance WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM casemix WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode_outcome WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode_metrics WHERE episode_id IN (SELECT episode_id FROM mine)",
    "DELETE FROM episode WHERE episode_id IN (SELECT episode_id FROM mine)",
];

/// The patient's matching requests and what followed them (the patient's rowid as ?1).
const MATCH_DELETES: &[&str] = &[
    "DELETE FROM match_outcome WHERE request_id IN
        (SELECT request_id FROM match_request WHERE patient_id = ?1)",
    "DELETE FROM match_offer WHERE request_id IN
        (SELECT request_id FROM match_request WHERE patient_id = ?1)",
    "DELETE FROM match_request WHERE patient_id = ?1",
];

/// Erases the patient the clinic calls `raw`; only counts when `confirm` is false. `now` is
/// recorded as the time of the erasure.
pub fn erase_patient(
    store: &mut Store,
    pseudo: &Pseudonymiser,
    raw: &str,
    confirm: bool,
    now: &str,
) -> Result<Erased> {
    let pseudonym = pseudo.pseudonym(IdKind::Patient, raw.trim());
    let conn = store.conn_mut();
    let before: Option<String> = conn
        .query_row(
            "SELECT erased_at FROM erasure WHERE patient_pseudonym = ?1",
            [&pseudonym],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(at) = before {
        bail!("patient {raw} was already erased on {at}; nothing of theirs is stored");
    }
    let patient: Option<i64> = conn
        .query_row(
            "SELECT patient_id FROM patient WHERE pseudonym = ?1",
            [&pseudonym],
            |r| r.get(0),
        )
        .optional()?;
    let Some(patient) = patient else {
        bail!(
            "no patient {raw} in this store (the id as the clinic's export names it, e.g. the \
             patient_id column or the FHIR Patient id)"
        );
    };
    conn.pragma_update(None, "secure_delete", true)?;
    let tx = conn.transaction()?;
    tx.execute(
        "CREATE TEMP TABLE mine AS SELECT episode_id FROM episode WHERE patient_id = ?1",
        [patient],
    )?;
    let count = |sql: &str| -> rusqlite::Result<u64> { tx.query_row(sql, [], |r| r.get(0)) };
    let erased = Erased {
        status: if confirm { "erased" } else { "would_erase" },
        episodes: count("SELECT count(*) FROM mine")?,
        sessions: count("SELECT count(*) FROM session WHERE episode_id IN mine")?,
        assessments: count(
            "SELECT count(*) FROM assessment
             WHERE session_id IN (SELECT session_id FROM session WHERE episode_id IN mine)",
        )?,
        corrections: count("SELECT count(*) FROM correction WHERE episode_id IN mine")?,
    };
    if !confirm {
        tx.rollback()?;
        return Ok(erased);
    }
    // First, so that the corrections' append-only trigger lets this patient's go.
    tx.execute(
        "INSERT INTO erasure (patient_pseudonym, erased_at, episodes, sessions, assessments)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            pseudonym,
            now,
            erased.episodes,
            erased.sessions,
            erased.assessments
        ],
    )?;
    for sql in DELETES {
        tx.execute(sql, [])
            .with_context(|| format!("couldn't erase: {sql}"))?;
    }
    for sql in MATCH_DELETES {
        tx.execute(sql, [patient])
            .with_context(|| format!("couldn't erase: {sql}"))?;
    }
    tx.execute("DELETE FROM patient WHERE patient_id = ?1", [patient])?;
    tx.execute("DROP TABLE temp.mine", [])?;
    // The track records and rates were computed with the patient: recompute them next time.
    tx.execute("UPDATE derivation SET last_import_id = NULL", [])?;
    tx.commit()?;
    // The deleted pages are zeroed in the WAL; move them into the (encrypted) file and empty
    // the WAL. A reader holding an old snapshot makes this partial, which is harmless.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(erased)
}
