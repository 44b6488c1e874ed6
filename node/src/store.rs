//! The node's local SQLite store: the only place raw (pseudonymised) outcome data lives.
//!
//! `Store` owns the connection. Opening it turns on WAL and foreign keys and runs the
//! append-only migrations in `store/migrations.rs`. Writers take one transaction per call, so a
//! failure or a kill leaves the store as it was before the call.
//!
//! The database is encrypted (SQLCipher: every page AES-256 with an HMAC-SHA512, under a raw
//! 256-bit [`StoreKey`] whose file is kept apart from the data directory), so a copy of the
//! data directory or of a backup of it reveals nothing without the key. The database file is
//! also created with mode 0600 (SQLite gives its WAL and shared-memory files the same mode),
//! and a store that other users can read is refused with the command that fixes it: it holds
//! pseudonymised health records and the privacy ledger. Stores created before encryption
//! (no key configured) are opened as they are.
//!
//! The store is two SQLite files under one key: the clinical data (`local.db`, schema `main`)
//! and the privacy ledger with the node's network records (`local.ledger.db`, attached as
//! schema `ledger`: releases, round contributions, rounds, benchmark releases, membership). An
//! import holds the clinical data's write lock for its whole transaction; everything the
//! daemon writes is in the ledger's file and goes through [`ledger_transaction`], which takes
//! only the ledger's lock, so a round's charge or a release never waits for an import. Queries
//! name tables without a schema (SQLite finds each in the file that has it) and may join the
//! two. A store whose ledger file is missing is refused: opening it with an empty ledger would
//! forget the privacy budget already spent.

pub(crate) mod migrations;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::registry::Registry;

/// The clinic a node belongs to (one row).
#[derive(Debug, Clone, PartialEq)]
pub struct Clinic {
    /// Display name.
    pub name: String,
    /// ISO country code, if given.
    pub country: Option<String>,
    /// Kind of service (e.g. "NHS Talking Therapies"), if given.
    pub service_type: Option<String>,
}

/// The raw key of an encrypted store. Never printed.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// A key from its 32 bytes (the store key file).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key as SQLCipher reads a raw key: `x'…'` (for `PRAGMA key` and `ATTACH … KEY`).
    pub(crate) fn sql_literal(&self) -> String {
        format!("x'{}'", hex::encode(self.0))
    }

    /// Applies the key to a freshly opened connection (before any other statement).
    pub fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.pragma_update(None, "key", self.sql_literal())
    }
}

/// How long a statement waits for another connection's write lock before it fails.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `e` is SQLite failing to write: a full disk, or an I/O error writing a file (a file
/// size limit, the write-ahead log's shared memory).
pub fn cannot_write(e: &anyhow::Error) -> bool {
    sqlite_code(e, |c| {
        matches!(
            c,
            rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure
        )
    })
}

/// Whether `e` is SQLite's "the database is busy / locked" (another writer holds the lock).
pub fn is_busy(e: &anyhow::Error) -> bool {
    sqlite_code(e, |c| {
        matches!(
            c,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        )
    })
}

/// Whether an SQLite error anywhere in `e`'s chain has a code `is` accepts.
fn sqlite_code(e: &anyhow::Error, is: impl Fn(rusqlite::ErrorCode) -> bool) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .and_then(rusqlite::Error::sqlite_error_code)
            .is_some_and(&is)
    })
}

/// A file SQLite keeps beside the database `db`: `local.db` + `-wal` → `local.db-wal`.
pub(crate) fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    db.with_file_name(format!(
        "{}{suffix}",
        db.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// The ledger's file beside the clinical data at `store`: `local.db` → `local.ledger.db`.
pub fn ledger_path(store: &Path) -> PathBuf {
    let stem = store.file_stem().unwrap_or_default().to_string_lossy();
    match store.extension() {
        Some(ext) => store.with_file_name(format!("{stem}.ledger.{}", ext.to_string_lossy())),
        None => store.with_file_name(format!("{stem}.ledger")),
    }
}

/// A transaction that writes the ledger's file (the privacy ledger and the network records)
/// and not the clinical data: it takes the ledger's write lock at once, waiting its turn behind
/// another ledger writer ([`BUSY_TIMEOUT`]), and never the clinical data's, which an import may
/// hold for minutes. (`BEGIN IMMEDIATE` would take the write locks of both files.)
pub fn ledger_transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    // A write to the ledger's header before any read: the lock is taken, or waited for, here
    // (a transaction that read first could not wait to upgrade).
    tx.execute_batch(&format!(
        "PRAGMA ledger.user_version = {}",
        migrations::LEDGER_VERSION
    ))?;
    Ok(tx)
}

/// Attaches the ledger's file `ledger` (a path or a `file:` URI) to `conn` as schema `ledger`,
/// under the store's key, or none for a plaintext store. The key is always named: SQLCipher
/// passes the main file's key *with its salt* to an attachment that names none, which does not
/// open a file written under the same key with a salt of its own ("hmac check failed").
pub fn attach_ledger(
    conn: &Connection,
    ledger: &str,
    key: Option<&StoreKey>,
) -> rusqlite::Result<()> {
    let key = key.map_or_else(String::new, StoreKey::sql_literal);
    conn.execute("ATTACH DATABASE ?1 AS ledger KEY ?2", params![ledger, key])?;
    Ok(())
}

/// A store whose ledger file is missing.
#[derive(Debug)]
struct MissingLedger {
    store: PathBuf,
    ledger: PathBuf,
}

impl std::fmt::Display for MissingLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the privacy ledger {} of the store {} is missing: restore it from the same backup \
             as the store (the node will not run without it: an empty ledger would forget the \
             privacy budget already spent)",
            self.ledger.display(),
            self.store.display()
        )
    }
}

impl std::error::Error for MissingLedger {}

pub(crate) fn create_owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("couldn't create {}", path.display()))?;
    Ok(())
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreKey").finish_non_exhaustive()
    }
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    /// The clinical data, with the ledger attached.
    conn: Connection,
    /// The clinical data's file; `None` for in-memory stores.
    path: Option<PathBuf>,
    /// The key, for an encrypted store.
    key: Option<StoreKey>,
}

impl Store {
    /// Opens an existing store (it must exist: use [`Store::create`] for a new node), with its
    /// key if it is encrypted.
    pub fn open(path: &Path, key: Option<&StoreKey>) -> Result<Self> {
        if !path.exists() {
            anyhow::bail!("no store at {} (run `mbc-node init` first)", path.display());
        }
        Self::open_or_create(path, key)
    }

    /// Opens an existing store for reading only. When the usual open fails because nothing can
    /// be written (a full disk: SQLite cannot create the shared-memory index of the write-ahead
    /// log) and no write-ahead log holds uncheckpointed pages, the database file is read as it
    /// stands (`immutable`), so that `status`, `budget` and `audit` still answer. Writes through
    /// such a store fail.
    pub fn open_read_only(path: &Path, key: Option<&StoreKey>) -> Result<Self> {
        let opened = Self::open(path, key);
        let Err(e) = opened else {
            return opened;
        };
        let ledger = ledger_path(path);
        let wal_empty =
            |db: &Path| std::fs::metadata(sidecar(db, "-wal")).map_or(true, |m| m.len() == 0);
        if !(cannot_write(&e) && wal_empty(path) && wal_empty(&ledger) && ledger.exists()) {
            return Err(e);
        }
        let uri = |db: &Path| -> Result<String> {
            Ok(format!(
                "file:{}?immutable=1",
                std::path::absolute(db)?.to_string_lossy()
            ))
        };
        let conn = Connection::open_with_flags(
            uri(path)?,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .with_context(|| format!("couldn't open store at {}", path.display()))?;
        if let Some(key) = key {
            key.apply(&conn)?;
        }
        attach_ledger(&conn, &uri(&ledger)?, key)
            .with_context(|| format!("couldn't open the ledger at {}", ledger.display()))?;
        let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != migrations::migrations().len() {
            return Err(e.context("the store needs an upgrade, which needs space to write"));
        }
        Ok(Self {
            conn,
            path: Some(path.to_path_buf()),
            key: key.cloned(),
        })
    }

    /// Creates a new store for `clinic`, with the built-in instruments and domains, encrypted
    /// under `key` if given.
    pub fn create(path: &Path, clinic: &Clinic, now: &str, key: Option<&StoreKey>) -> Result<Self> {
        for existing in [path.to_path_buf(), ledger_path(path)] {
            if existing.exists() {
                bail!("a store already exists at {}", existing.display());
            }
        }
        let mut store = Self::open_or_create(path, key)?;
        let tx = store.conn.transaction()?;
        tx.execute(
            "INSERT INTO clinic (clinic_id, name, country, service_type, created_at)
             VALUES (1, ?1, ?2, ?3, ?4)",
            params![clinic.name, clinic.country, clinic.service_type, now],
        )?;
        Registry::builtin().insert_all(&tx)?;
        tx.commit()?;
        Ok(store)
    }

    /// An in-memory store for unit tests, with the built-in registry.
    pub fn open_in_memory() -> Result<Self> {
        let mut conn = Connection::open_in_memory()?;
        Self::configure(&mut conn, None, None)?;
        let mut store = Self {
            conn,
            path: None,
            key: None,
        };
        let tx = store.conn.transaction()?;
        Registry::builtin().insert_all(&tx)?;
        tx.commit()?;
        Ok(store)
    }

    /// A second, read-only connection for work that can run beside this one (WAL lets readers
    /// proceed concurrently). `None` for in-memory stores.
    pub(crate) fn reader(&self) -> Result<Option<Connection>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("couldn't open store at {}", path.display()))?;
        if let Some(key) = &self.key {
            key.apply(&conn)?;
        }
        // Attached read-only, like the connection, under the same key.
        attach_ledger(
            &conn,
            &ledger_path(path).to_string_lossy(),
            self.key.as_ref(),
        )?;
        Ok(Some(conn))
    }

    /// Whether the store is encrypted.
    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    fn open_or_create(path: &Path, key: Option<&StoreKey>) -> Result<Self> {
        if path.exists() {
            crate::keystore::check_owner_only(
                path,
                "the store (pseudonymised health records)",
                0o600,
            )?;
        } else {
            create_owner_only(path)?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("couldn't open store at {}", path.display()))?;
        if let Some(key) = key {
            key.apply(&conn)
                .with_context(|| format!("couldn't key store at {}", path.display()))?;
        }
        Self::configure(&mut conn, Some(path), key).map_err(|e| {
            let not_a_database = e
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code)
                == Some(rusqlite::ErrorCode::NotADatabase);
            match (not_a_database, key.is_some()) {
                (true, true) => anyhow::anyhow!(
                    "couldn't open the store at {}: its key does not open it (is [keys] \
                     store_key_file this node's key?)",
                    path.display()
                ),
                (true, false) => anyhow::anyhow!(
                    "couldn't open the store at {}: it is encrypted and [keys] store_key_file \
                     is not set",
                    path.display()
                ),
                _ if cannot_write(&e) => e.context(format!(
                    "couldn't prepare store at {}: nothing can be written there (is the disk \
                     full?)",
                    path.display()
                )),
                _ if e.is::<MissingLedger>() => e,
                _ => e.context(format!("couldn't prepare store at {}", path.display())),
            }
        })?;
        Ok(Self {
            conn,
            path: Some(path.to_path_buf()),
            key: key.cloned(),
        })
    }

    /// Sets up a connection to the clinical data at `path` (`None`: in memory): WAL, foreign
    /// keys, the busy timeout, the ledger attached beside it, the migrations.
    fn configure(conn: &mut Connection, path: Option<&Path>, key: Option<&StoreKey>) -> Result<()> {
        // WAL lets readers (status, reports) run while an import writes; NORMAL is durable
        // across application crashes in WAL mode and loses at most the last commit on power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let ledger = match path {
            None => ":memory:".to_owned(),
            Some(path) => {
                let ledger = ledger_path(path);
                if ledger.exists() {
                    crate::keystore::check_owner_only(
                        &ledger,
                        "the privacy ledger and network records",
                        0o600,
                    )?;
                } else {
                    let version: usize =
                        conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
                    if version >= migrations::LEDGER_SPLIT {
                        bail!(MissingLedger {
                            store: path.to_path_buf(),
                            ledger,
                        });
                    }
                    create_owner_only(&ledger)?;
                }
                ledger.to_string_lossy().into_owned()
            }
        };
        attach_ledger(conn, &ledger, key)?;
        conn.pragma_update(Some("ledger"), "journal_mode", "WAL")?;
        // The ledger is written rarely and must survive a power loss once a release has left.
        conn.pragma_update(Some("ledger"), "synchronous", "FULL")?;
        migrations::migrate(conn)?;
        Ok(())
    }

    /// The connection, for modules that own a table family (import, registry, status).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, mutably, to open transactions.
    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The clinic row.
    pub fn clinic(&self) -> Result<Option<Clinic>> {
        Ok(self
            .conn
            .query_row("SELECT name, country, service_type FROM clinic", [], |r| {
                Ok(Clinic {
                    name: r.get(0)?,
                    country: r.get(1)?,
                    service_type: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// Loads the instrument and domain registry.
    pub fn registry(&self) -> Result<Registry> {
        Registry::load(&self.conn)
    }
}
