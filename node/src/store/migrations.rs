//! Schema migrations, tracked by index in `PRAGMA user_version` (cargo's pattern).
//!
//! **Never remove, edit or reorder an entry.** A migration's index is its version: version N
//! means migrations `0..N` have run. Append a new entry, with a comment saying why, to change
//! the schema.

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
    ]
}

/// Brings the schema up to date in one exclusive transaction. Returns the new version. A store
/// that is already current is only read (no lock is taken), so that opening it never waits for
/// a writer such as a running import.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let migrations = migrations();
    let current: usize =
        conn.query_row("SELECT user_version FROM pragma_user_version", [], |row| {
            row.get(0)
        })?;
    if current >= migrations.len() {
        return Ok(current);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: usize =
        tx.query_row("SELECT user_version FROM pragma_user_version", [], |row| {
            row.get(0)
        })?;
    if version < migrations.len() {
        for migration in &migrations[version..] {
            migration(&tx)?;
        }
        tx.pragma_update(None, "user_version", migrations.len())?;
    }
    tx.commit()?;
    Ok(migrations.len().max(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_a_version_1_store() {
        let mut conn = Connection::open_in_memory().unwrap();
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

    #[test]
    fn migrate_twice() {
        let mut conn = Connection::open_in_memory().unwrap();
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
