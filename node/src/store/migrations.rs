//! Schema migrations, tracked by index in `PRAGMA user_version` (cargo's pattern).
//!
//! **Never remove, edit or reorder an entry.** A migration's index is its version: version N
//! means migrations `0..N` have run. Append a new entry, with a comment saying why, to change
//! the schema.
//!
//! The store is two files: the clinical data (`main`) and the privacy ledger with the node's
//! network records (`ledger`, attached; see `store.rs`). Migration 8 moved the ledger's tables
//! out of `main` ([`LEDGER_SPLIT`]): their rows are first copied into `ledger` in a transaction
//! of the ledger alone, and only then dropped from `main` by migration 8, so a crash between
//! the two leaves `main` as it was and the copy is made again. Later migrations that change a
//! ledger table name it `ledger.<table>`; a transaction over both files is atomic in each file
//! but not across them (WAL), so such a migration must be safe to run again on either half.

use rusqlite::{Connection, TransactionBehavior};

/// One schema step.
pub(crate) type Migration = fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>;

/// Every migration, in order. Be sure not to change the order or the entries.
pub(crate) fn migrations() -> Vec<Migration> {
    vec![
        // 1: the initial schema (issue 2).
        |tx| tx.execute_batch(include_str!("schema_v1.sql")),
        // 2: derived tables of the effectiveness engine (issue 3).
        |tx| tx.execute_batch(include_str!("schema_v2.sql")),
        // 3: the privacy ledger (issue 4).
        |tx| tx.execute_batch(include_str!("schema_v3.sql")),
        // 4: network membership: the pinned network and every accepted roster (issue 5).
        |tx| tx.execute_batch(include_str!("schema_v4.sql")),
        // 5: rounds run as aggregator and verified benchmark releases (issue 6).
        |tx| tx.execute_batch(include_str!("schema_v5.sql")),
        // 6: a clinic's round contributions: the spec each charge is bound to, refund expiry,
        // contributors (issue 12).
        |tx| tx.execute_batch(include_str!("schema_v6.sql")),
        // 7: where a release was written (issue 13).
        |tx| tx.execute_batch(include_str!("schema_v7.sql")),
        // 8: the ledger and the network records leave the clinical data's file, so that an
        // import's write lock never holds up a round's charge (issue 13); their rows were
        // copied by `copy_into_ledger` before this runs.
        |tx| tx.execute_batch(include_str!("schema_v8.sql")),
        // 9: episodes derived from dated scores, marked so later exports continue them
        // (issue 14).
        |tx| tx.execute_batch(include_str!("schema_v9.sql")),
        // 10: corrections and erasure (issue 14).
        |tx| tx.execute_batch(include_str!("schema_v10.sql")),
        // 11: clinical-support alerts, checks and validation cards (issue 15).
        |tx| tx.execute_batch(include_str!("schema_v11.sql")),
        // 12: the features clinical support reads of every episode, cached (issue 15).
        |tx| tx.execute_batch(include_str!("schema_v12.sql")),
        // 13: the training a round contribution is an iteration of (issue 16), so that the
        // ledger weighs a training once. A ledger table: safe to run again.
        training_of_contributions,
        // 14: therapist delivery, hours and weekly cap, and the matching audit (issue 17).
        |tx| tx.execute_batch(include_str!("schema_v14.sql")),
        // 15: the referral directory's entries, in the ledger's file (issue 17). Safe to run
        // again.
        |tx| tx.execute_batch(include_str!("schema_v15.sql")),
        // 16: the dashboard's accounts and its audit of patient views (issue 18).
        |tx| tx.execute_batch(include_str!("schema_v16.sql")),
    ]
}

fn training_of_contributions(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let has: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('round_contribution', 'ledger')
         WHERE name = 'training_id'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        tx.execute_batch(include_str!("schema_v13.sql"))?;
    }
    Ok(())
}

/// The version at which the ledger's tables live in the `ledger` file.
pub(crate) const LEDGER_SPLIT: usize = 8;

/// The schema version of the `ledger` file (its own `user_version`).
pub(crate) const LEDGER_VERSION: usize = 1;

fn user_version(conn: &Connection, schema: &str) -> rusqlite::Result<usize> {
    conn.query_row(&format!("PRAGMA {schema}.user_version"), [], |row| {
        row.get(0)
    })
}

/// Brings the schema up to date. Returns the new version. A store that is already current is
/// only read (no lock is taken), so that opening it never waits for a writer such as a running
/// import.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let n = migrations().len();
    let current = user_version(conn, "main")?;
    if current >= n {
        return Ok(current);
    }
    if current < LEDGER_SPLIT {
        run(conn, LEDGER_SPLIT - 1)?;
        copy_into_ledger(conn)?;
    }
    run(conn, n)
}

/// Copies the ledger's tables, with their rows, triggers and indexes, from `main` into
/// `ledger`, in a transaction of the ledger alone. Any half-made copy is replaced: until
/// migration 8 commits, `main` holds the ledger. Does nothing once another process has moved
/// it.
fn copy_into_ledger(conn: &mut Connection) -> rusqlite::Result<()> {
    // The ledger's write lock before any read, so that a busy ledger is waited for.
    let tx = super::ledger_transaction(conn)?;
    if user_version(&tx, "main")? < LEDGER_SPLIT {
        tx.execute_batch(include_str!("ledger_v1.sql"))?;
    }
    tx.commit()
}

/// Runs the migrations up to version `to` in one exclusive transaction.
fn run(conn: &mut Connection, to: usize) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version = user_version(&tx, "main")?;
    if version < to {
        for migration in &migrations()[version..to] {
            migration(&tx)?;
        }
        tx.pragma_update(None, "user_version", to)?;
    }
    tx.commit()?;
    Ok(to.max(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ledger() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        // As the store opens it.
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        conn.execute("ATTACH DATABASE ':memory:' AS ledger", [])
            .unwrap();
        conn
    }

    #[test]
    fn upgrades_a_version_1_store() {
        let mut conn = with_ledger();
        let tx = conn.transaction().unwrap();
        migrations()[0](&tx).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.execute("INSERT INTO therapist (pseudonym) VALUES ('t')", [])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len());
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM therapist", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
        conn.execute("SELECT count(*) FROM therapist_domain_stat", [])
            .ok();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'therapist_domain_stat'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }

    /// Issue 13, fix 4: a version 7 store's ledger, network and rounds move to the `ledger`
    /// file with every row, an upgrade interrupted after the copy is made again, the moved
    /// tables keep their guards, and `main` no longer holds them.
    #[test]
    fn a_version_7_store_moves_its_ledger_into_the_ledger_file() {
        let mut conn = with_ledger();
        run(&mut conn, LEDGER_SPLIT - 1).unwrap();
        conn.execute_batch(
            "INSERT INTO release (release_id, kind, counterpart, period, rho, epsilon, delta,
                 sigma, share_sigma, threshold, sensitivity, layout, payload, payload_sha256,
                 status, charged_at, sent_at, sent_to)
             VALUES ('r1', 'local-benchmark', 'a.json', '2026', 0.1, 1.0, 1e-6, 2.0, 2.0, 1,
                 1.0, '{}', x'00', 'aa', 'sent', 't0', 't1', 'b.json'),
                    ('r2', 'round:benchmark', 'round 0123 to p', '2026', 0.25, 2.0, 1e-6, 3.0,
                 1.5, 4, 1.0, '{}', x'01', 'bb', 'charged', 't2', NULL, NULL);
             INSERT INTO round_contribution (round_id, spec_sha256, release_id, expires_at_ms)
             VALUES ('0123', 'cc', 'r2', 99);
             INSERT INTO network (network_id, coordinator_key, is_coordinator, joined_at, one_row)
             VALUES ('net', 'k', 0, 't0', 1);
             INSERT INTO roster (version, signed_json, received_at) VALUES (1, '{}', 't0');",
        )
        .unwrap();
        // Interrupted after the copy: the next open copies again, then drops from `main`.
        copy_into_ledger(&mut conn).unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len());
        let count = |table: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM ledger.{table}"), [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(
            [
                count("release"),
                count("round_contribution"),
                count("network"),
                count("roster")
            ],
            [2, 1, 1, 1]
        );
        let sent_to: String = conn
            .query_row(
                "SELECT sent_to FROM release WHERE release_id = 'r1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sent_to, "b.json");
        let in_main: i64 = conn
            .query_row(
                "SELECT count(*) FROM main.sqlite_schema WHERE name IN ('release',
                 'round_contribution', 'round', 'benchmark_release', 'network', 'roster')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(in_main, 0);
        let refused = conn.execute("DELETE FROM release", []).unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
        assert_eq!(count("release"), 2);
    }

    /// Issue 15: a version 9 store's episode summaries get the scores at sessions 2 and 3
    /// from its assessments.
    #[test]
    fn a_version_9_store_fills_the_scores_at_sessions_2_and_3() {
        let mut conn = with_ledger();
        run(&mut conn, LEDGER_SPLIT - 1).unwrap();
        copy_into_ledger(&mut conn).unwrap();
        run(&mut conn, 9).unwrap();
        // The registry's rows are the store's business, not the migrations'.
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF;
             INSERT INTO therapist (therapist_id, pseudonym) VALUES (1, 't');
             INSERT INTO patient (patient_id, pseudonym) VALUES (1, 'p');
             INSERT INTO episode (episode_id, pseudonym, patient_id, therapist_id)
                 VALUES (1, 'e', 1, 1);
             INSERT INTO session (session_id, episode_id, seq, date, attended, kind) VALUES
                 (1, 1, 1, '2024-01-01', 1, 'treatment'), (2, 1, 2, '2024-01-08', 1, 'treatment'),
                 (3, 1, 3, '2024-01-15', 1, 'treatment');
             INSERT INTO assessment (episode_id, session_id, session_seq, instrument_id, score)
                 VALUES (1, 1, 1, 'PHQ-9', 20), (1, 2, 2, 'PHQ-9', 17), (1, 3, 3, 'PHQ-9', 12),
                        (1, 1, 1, 'GAD-7', 15), (1, 3, 3, 'GAD-7', 9);
             INSERT INTO episode_scores VALUES (1, 'PHQ-9', 1, 20, 3, 12, 3),
                                               (1, 'GAD-7', 1, 15, 3, 9, 2);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len());
        let early: Vec<(String, Option<f64>, Option<f64>)> = conn
            .prepare("SELECT instrument_id, score_s2, score_s3 FROM episode_scores ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            early,
            [
                ("GAD-7".to_string(), None, Some(9.0)),
                ("PHQ-9".to_string(), Some(17.0), Some(12.0))
            ]
        );
    }

    #[test]
    fn migrate_twice() {
        let mut conn = with_ledger();
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len());
        assert_eq!(migrate(&mut conn).unwrap(), migrations().len());
        let version: usize = conn
            .query_row("SELECT user_version FROM pragma_user_version", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, migrations().len());
    }
}
