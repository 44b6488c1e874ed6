//! The aggregator's record of its rounds in the store (table `round`, schema v5): the signed
//! specification and who reached which step, never a participant's vector.

use anyhow::Result;
use protocol::round::SignedRoundSpec;
use rusqlite::{Connection, params};

use super::RoundStatus;

/// Records a round as it starts.
pub(super) fn insert(
    conn: &Connection,
    status: &RoundStatus,
    signed: &SignedRoundSpec,
) -> Result<()> {
    conn.execute(
        "INSERT INTO round (round_id, kind, spec_json, step, progress, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            status.round_id,
            status.kind,
            serde_json::to_string(signed)?,
            status.step.as_str(),
            serde_json::to_string(&status.participants)?,
            status.started_at
        ],
    )?;
    Ok(())
}

/// Records a round's progress (its finish time `now` when it has ended).
pub(super) fn progress(conn: &Connection, status: &RoundStatus, now: &str) -> Result<()> {
    conn.execute(
        "UPDATE round SET step = ?2, progress = ?3, error = ?4, release_id = ?5,
            finished_at = CASE WHEN ?6 THEN ?7 ELSE NULL END
         WHERE round_id = ?1",
        params![
            status.round_id,
            status.step.as_str(),
            serde_json::to_string(&status.participants)?,
            status.error,
            status.release_id,
            status.finished(),
            now
        ],
    )?;
    Ok(())
}

/// When the latest round of `kind` that finished started (RFC 3339), if any.
pub(super) fn last_done(conn: &Connection, kind: &str) -> Result<Option<String>> {
    Ok(conn.query_row(
        "SELECT max(started_at) FROM round WHERE kind = ?1 AND step = 'done'",
        [kind],
        |r| r.get(0),
    )?)
}
