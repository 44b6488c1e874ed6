//! `mbc-node store …`: the encrypted store for the people who look after it. `query` reads it
//! (the sqlite3 shell cannot open an encrypted store), `encrypt` converts a store created
//! before mbc-node encrypted its stores.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use super::DataDir;
use crate::config::{CONFIG_FILE, Config};
use crate::node::{Node, create_store_key, default_key_dir, store_key_path};
use crate::store::{ledger_path, sidecar};

#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Run one read-only SQL query on the store and print the rows as CSV (with a header)
    ///
    /// The store is encrypted, so the sqlite3 shell cannot read it; this can. Nothing is
    /// changed: the connection is read-only.
    ///
    /// Example: mbc-node store query --data-dir /srv/mbc "SELECT count(*) FROM assessment"
    Query {
        #[command(flatten)]
        dir: DataDir,
        /// The query
        sql: String,
    },
    /// Encrypt a store created before mbc-node encrypted its stores (the node must be stopped)
    ///
    /// Writes an encrypted copy under a new key in the key directory, replaces the store with
    /// it and records the key in config.toml. No plaintext copy is left behind.
    ///
    /// Example: mbc-node store encrypt --data-dir /srv/mbc --key-dir /etc/mbc-node/keys
    Encrypt {
        #[command(flatten)]
        dir: DataDir,
        /// Directory for the new store key (default: DIR.keys beside the data directory)
        #[arg(long, value_name = "DIR")]
        key_dir: Option<PathBuf>,
    },
}

pub(super) fn store_cmd(c: StoreCommand) -> Result<()> {
    match c {
        StoreCommand::Query { dir, sql } => query(&dir.data_dir, &sql),
        StoreCommand::Encrypt { dir, key_dir } => {
            let key_dir = key_dir.unwrap_or_else(|| default_key_dir(&dir.data_dir));
            let key = encrypt(&dir.data_dir, &key_dir)?;
            println!(
                "the store of {} is encrypted; its key is {} (keep it apart from the data and \
                 back it up separately: without it the store cannot be opened)",
                dir.data_dir.display(),
                key.display()
            );
            Ok(())
        }
    }
}

fn query(dir: &Path, sql: &str) -> Result<()> {
    let node = Node::open(dir)?;
    let conn = node
        .store()
        .reader()?
        .context("the store has no file to read")?;
    conn.pragma_update(None, "query_only", true)?;
    let mut stmt = conn
        .prepare(sql)
        .with_context(|| format!("couldn't run the query {sql:?}"))?;
    let names: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    out.write_record(&names)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let fields: Vec<String> = (0..names.len())
            .map(|i| match row.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => String::new(),
                Ok(rusqlite::types::ValueRef::Integer(v)) => v.to_string(),
                Ok(rusqlite::types::ValueRef::Real(v)) => v.to_string(),
                Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                Ok(rusqlite::types::ValueRef::Blob(b)) => hex::encode(b),
            })
            .collect();
        out.write_record(&fields)?;
    }
    out.flush()?;
    Ok(())
}

/// Encrypts the plaintext store of the node in `dir` under a fresh key in `key_dir`. Returns
/// the key file.
pub(crate) fn encrypt(dir: &Path, key_dir: &Path) -> Result<PathBuf> {
    // The daemon's lock, held while the store is replaced: refused while a daemon runs, and no
    // daemon starts half-way. (An `api.addr` left by a daemon that was killed says nothing.)
    let _lock = crate::daemon::lock(dir)
        .context("the node is running: stop it before encrypting its store")?;
    let node = Node::open(dir)?;
    let mut config = node.config().clone();
    let store = node.store();
    if store.encrypted() {
        bail!("the store of {} is already encrypted", dir.display());
    }
    let key_file = store_key_path(dir, key_dir)?;
    let key = create_store_key(&key_file)?;
    let path = config.store_path(dir);
    // Both files of the store, each exported to a staged copy beside it: the clinical data
    // (`main`) and the ledger (`ledger`). The staged pair is named so that it opens as a store.
    let staged = sidecar(&path, ".encrypting");
    let pairs = [
        ("main", path.clone(), staged.clone()),
        ("ledger", ledger_path(&path), ledger_path(&staged)),
    ];
    let remove_staged = || {
        for (_, _, to) in &pairs {
            let _ = std::fs::remove_file(to);
        }
    };
    remove_staged();
    let export = || -> Result<()> {
        let conn = store.conn();
        for (schema, _, to) in &pairs {
            // Owner only from the first byte, like every store.
            crate::store::create_owner_only(to)?;
            conn.query_row(
                &format!("PRAGMA {schema}.wal_checkpoint(TRUNCATE)"),
                [],
                |_| Ok(()),
            )?;
            let version: i64 =
                conn.query_row(&format!("PRAGMA {schema}.user_version"), [], |r| r.get(0))?;
            conn.execute(
                "ATTACH DATABASE ?1 AS encrypted KEY ?2",
                rusqlite::params![to.to_string_lossy(), key.sql_literal()],
            )?;
            conn.query_row("SELECT sqlcipher_export('encrypted', ?1)", [schema], |_| {
                Ok(())
            })?;
            conn.pragma_update(Some("encrypted"), "user_version", version)?;
            conn.execute("DETACH DATABASE encrypted", [])?;
        }
        Ok(())
    };
    if let Err(e) = export() {
        remove_staged();
        let _ = std::fs::remove_file(&key_file);
        return Err(e.context("couldn't write the encrypted copy (nothing was changed)"));
    }
    drop(store);
    drop(node);
    // Check the copy opens under its key before anything is replaced.
    crate::store::Store::open(&staged, Some(&key))
        .context("the encrypted copy does not open (nothing was changed)")?;
    config.keys.store_key_file = Some(key_file.to_string_lossy().into_owned());
    let config_tmp = dir.join(format!("{CONFIG_FILE}.encrypting"));
    std::fs::write(&config_tmp, config.to_toml())?;
    // The renames: the ledger, the clinical data, then the config that names their key. Between
    // them the files are not all encrypted and the config does not say so; `Node::open` then
    // reports a missing key or a key that does not open the store.
    for (_, to, from) in pairs.iter().rev() {
        std::fs::rename(from, to)?;
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(sidecar(to, suffix));
        }
    }
    std::fs::rename(&config_tmp, dir.join(CONFIG_FILE))?;
    Config::load(dir)?;
    Ok(key_file)
}
