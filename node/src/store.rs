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

pub(crate) mod migrations;

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

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
    conn: Connection,
    /// The database file; `None` for in-memory stores.
    path: Option<std::path::PathBuf>,
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
        let wal = path.with_file_name(format!(
            "{}-wal",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let wal_empty = std::fs::metadata(&wal).map_or(true, |m| m.len() == 0);
        if !(cannot_write(&e) && wal_empty) {
            return Err(e);
        }
        let uri = format!(
            "file:{}?immutable=1",
            std::path::absolute(path)?.to_string_lossy()
        );
        let conn = Connection::open_with_flags(
            uri,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .with_context(|| format!("couldn't open store at {}", path.display()))?;
        if let Some(key) = key {
            key.apply(&conn)?;
        }
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
        if path.exists() {
            anyhow::bail!("a store already exists at {}", path.display());
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
        Self::configure(&mut conn)?;
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
        Self::configure(&mut conn).map_err(|e| {
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
                _ => e.context(format!("couldn't prepare store at {}", path.display())),
            }
        })?;
        Ok(Self {
            conn,
            path: Some(path.to_path_buf()),
            key: key.cloned(),
        })
    }

    fn configure(conn: &mut Connection) -> Result<()> {
        // WAL lets readers (status, reports) run while an import writes; NORMAL is durable
        // across application crashes in WAL mode and loses at most the last commit on power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
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
