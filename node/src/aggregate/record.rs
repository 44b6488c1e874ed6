//! The aggregator's record of its rounds in the store (table `round`, schema v5): the signed
//! specification and who reached which step, never a participant's vector.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use protocol::round::SignedRoundSpec;
use rusqlite::{Connection, params};

use super::{RoundStatus, RoundStep};

/// Why a round recorded as running ended when the daemon next started: its state (the SecAgg
/// session, the shares in flight) lived in the process that stopped.
pub const INTERRUPTED: &str = "interrupted: the coordinator stopped before the round ended";

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

/// Ends every round recorded as running, as aborted with [`INTERRUPTED`] at `now`; called when
/// the daemon starts, before it runs any round. Returns how many there were.
pub fn close_interrupted(conn: &Connection, now: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE round SET step = 'aborted', error = ?1, finished_at = ?2
         WHERE step NOT IN ('done', 'aborted')",
        params![INTERRUPTED, now],
    )?)
}

/// The `limit` latest rounds recorded, oldest first, as the aggregator last wrote them (no
/// step times and no training status: those are kept only while the daemon runs).
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<RoundStatus>> {
    let mut all = select(
        conn,
        "ORDER BY started_at DESC, round_id LIMIT ?1",
        [limit as i64],
    )?;
    all.reverse();
    Ok(all)
}

/// Round `id` as recorded (a prefix will do), or the latest when `id` is `None`.
pub fn find(conn: &Connection, id: Option<&str>) -> Result<Option<RoundStatus>> {
    let found = select(
        conn,
        "WHERE ?1 IS NULL OR substr(round_id, 1, length(?1)) = ?1
         ORDER BY started_at DESC, round_id LIMIT 1",
        [id],
    )?;
    Ok(found.into_iter().next())
}

/// The rounds of `SELECT … FROM round {tail}`.
fn select(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RoundStatus>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT round_id, kind, spec_json, step, progress, error, release_id, started_at,
                finished_at
         FROM round {tail}"
    ))?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, String>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut all = Vec::new();
    for row in rows {
        let (round_id, kind, spec, step, progress, error, release_id, started_at, finished_at) =
            row?;
        let spec: SignedRoundSpec = serde_json::from_str(&spec)
            .with_context(|| format!("round {round_id}: its recorded specification"))?;
        let step: RoundStep = serde_json::from_value(serde_json::Value::String(step))
            .with_context(|| format!("round {round_id}: its recorded step"))?;
        let elapsed_ms = finished_at.and_then(|end| {
            let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
            u64::try_from((at(&end)? - at(&started_at)?).num_milliseconds()).ok()
        });
        all.push(RoundStatus {
            step,
            rho: spec.spec.rho,
            threshold: spec.spec.threshold,
            dim: spec.spec.dim().unwrap_or(0),
            participants: serde_json::from_str(&progress)
                .with_context(|| format!("round {round_id}: its recorded participants"))?,
            step_ms: BTreeMap::new(),
            elapsed_ms,
            error,
            release_id,
            exact: None,
            started_at,
            training: None,
            round_id,
            kind,
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use protocol::keys::Signer;
    use protocol::round::{RoundKind, RoundSpec};

    use super::*;
    use crate::aggregate::{ParticipantStatus, Reached};
    use crate::store::Store;

    fn round(round_id: u64, started_at: &str) -> (RoundStatus, SignedRoundSpec) {
        let me = Signer::from_seed(&[7; 32]);
        let others: Vec<Signer> = (1..=2).map(|i| Signer::from_seed(&[i; 32])).collect();
        let spec = RoundSpec {
            network_id: "net".into(),
            round_id,
            kind: RoundKind::Bench {
                dim: 4,
                plain: false,
            },
            rho: 0.0,
            threshold: 2,
            participants: std::iter::once(me.key())
                .chain(others.iter().map(Signer::key))
                .collect(),
            aggregator: me.key(),
            issued_at_ms: 0,
            step_deadline_ms: 1_000,
        };
        let signed = spec.sign(&me);
        let status = RoundStatus {
            round_id: signed.spec.id_hex(),
            kind: "bench".into(),
            step: RoundStep::Announce,
            rho: 0.0,
            threshold: 2,
            dim: 4,
            participants: (0..3)
                .map(|i| ParticipantStatus {
                    index: i,
                    name: format!("clinic {i}"),
                    peer_id: format!("peer{i}"),
                    reached: Reached::Invited,
                    dropped: None,
                    bytes_sent: 0,
                })
                .collect(),
            step_ms: BTreeMap::new(),
            elapsed_ms: None,
            error: None,
            release_id: None,
            exact: None,
            started_at: started_at.into(),
            training: None,
        };
        (status, signed)
    }

    #[test]
    fn rounds_are_read_back_as_written_and_a_stop_ends_the_running_ones() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        let (mut done, signed) = round(0xabcd_0000_0000_0001, "2026-12-01T10:00:00Z");
        insert(conn, &done, &signed).unwrap();
        done.step = RoundStep::Done;
        done.participants[2].dropped = Some("no answer at keys".into());
        done.participants[0].reached = Reached::Revealed;
        done.release_id = Some("ab12".into());
        progress(conn, &done, "2026-12-01T10:00:02.5Z").unwrap();
        let (running, signed) = round(0x1234_0000_0000_0002, "2026-12-01T11:00:00Z");
        insert(conn, &running, &signed).unwrap();

        let all = recent(conn, 10).unwrap();
        assert_eq!(all.len(), 2);
        let read = &all[0];
        assert_eq!(read.round_id, done.round_id);
        assert_eq!(
            (read.step, read.threshold, read.dim, read.rho),
            (RoundStep::Done, 2, 4, 0.0)
        );
        assert_eq!(read.participants, done.participants);
        assert_eq!(read.release_id.as_deref(), Some("ab12"));
        assert_eq!(read.elapsed_ms, Some(2_500));
        assert_eq!(all[1].step, RoundStep::Announce);
        assert_eq!(all[1].elapsed_ms, None);

        // The daemon stopped during round 2: the next start ends it, and only it.
        assert_eq!(close_interrupted(conn, "2026-12-01T12:00:00Z").unwrap(), 1);
        let after = recent(conn, 10).unwrap();
        assert_eq!(after[0], *read);
        assert_eq!(after[1].step, RoundStep::Aborted);
        assert_eq!(after[1].error.as_deref(), Some(INTERRUPTED));
        assert_eq!(after[1].elapsed_ms, Some(3_600_000));
        assert_eq!(close_interrupted(conn, "2026-12-01T13:00:00Z").unwrap(), 0);

        // The latest first within a limit; found by a prefix of the id, or the latest.
        assert_eq!(recent(conn, 1).unwrap()[0].round_id, running.round_id);
        let prefix = &done.round_id[..6];
        assert_eq!(
            find(conn, Some(prefix)).unwrap().unwrap().round_id,
            done.round_id
        );
        assert_eq!(
            find(conn, None).unwrap().unwrap().round_id,
            running.round_id
        );
        assert_eq!(find(conn, Some("ffffffffffffffff0")).unwrap(), None);
        assert_eq!(
            last_done(conn, "bench").unwrap().as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
    }
}
