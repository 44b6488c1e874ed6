//! `mbc-node status`: what the store holds and what was imported last, and the node's
//! [`NodeStatus`] as far as it is known without the daemon.

use anyhow::Result;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::membership;
use crate::node::Node;
use crate::store::Store;

/// Assessments stored for one instrument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstrumentCount {
    /// Instrument id.
    pub instrument: String,
    /// Number of assessments.
    pub assessments: u64,
    /// Number of episodes with at least one.
    pub episodes: u64,
}

/// One row of the import audit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRow {
    /// File name (without directories).
    pub file_name: String,
    /// Kind of content.
    pub kind: String,
    /// Rows or resources read.
    pub rows: u64,
    /// Assessments newly stored.
    pub inserted: u64,
    /// When (UTC, RFC 3339).
    pub imported_at: String,
}

/// The store summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Clinic name.
    pub clinic: String,
    /// Schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// Whether the store is encrypted (SQLCipher).
    pub encrypted: bool,
    /// Therapists.
    pub therapists: u64,
    /// Patients.
    pub patients: u64,
    /// Episodes.
    pub episodes: u64,
    /// Sessions.
    pub sessions: u64,
    /// Assessments per instrument.
    pub assessments: Vec<InstrumentCount>,
    /// Earliest session date.
    pub first_session: Option<String>,
    /// Latest session date.
    pub last_session: Option<String>,
    /// The most recent imports, newest first.
    pub recent_imports: Vec<ImportRow>,
}

/// `GET /v1/status`; also `mbc-node status --json`, with the live fields empty when the node is
/// not running (one shape either way).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Whether the daemon is running (the live fields below are set only then).
    pub running: bool,
    /// This node's PeerId.
    pub peer_id: String,
    /// Software version.
    pub software: String,
    /// Seconds since the daemon started (running only).
    pub uptime_secs: Option<u64>,
    /// The network this node is a member of, if any.
    pub network: Option<NetworkStatus>,
    /// Roster members connected now (running only).
    pub peers_connected: Option<u64>,
    /// Roster members other than this node (running only).
    pub peers_total: Option<u64>,
    /// What the store holds.
    pub store: Summary,
}

/// The network part of [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Network id.
    pub network_id: String,
    /// The coordinator's PeerId.
    pub coordinator: String,
    /// Whether this node is the coordinator.
    pub is_coordinator: bool,
    /// Version of the roster this node holds.
    pub roster_version: u64,
    /// Members on that roster.
    pub members: u64,
}

/// How many recent imports `status` lists.
const RECENT_IMPORTS: usize = 5;

/// Summarises the store.
pub fn summary(store: &Store) -> Result<Summary> {
    let conn = store.conn();
    let count = |table: &str| -> Result<u64> {
        Ok(conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?)
    };
    let (first_session, last_session) =
        conn.query_row("SELECT min(date), max(date) FROM session", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(Summary {
        clinic: store.clinic()?.map(|c| c.name).unwrap_or_default(),
        schema_version: conn.query_row(
            "SELECT user_version FROM pragma_user_version",
            [],
            |r| r.get(0),
        )?,
        encrypted: store.encrypted(),
        therapists: count("therapist")?,
        patients: count("patient")?,
        episodes: count("episode")?,
        sessions: count("session")?,
        assessments: assessments(conn)?,
        first_session,
        last_session,
        recent_imports: recent_imports(conn)?,
    })
}

fn assessments(conn: &Connection) -> Result<Vec<InstrumentCount>> {
    let mut stmt = conn.prepare(
        "SELECT instrument_id, count(*), count(DISTINCT episode_id) FROM assessment
         GROUP BY instrument_id ORDER BY instrument_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(InstrumentCount {
            instrument: r.get(0)?,
            assessments: r.get(1)?,
            episodes: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn recent_imports(conn: &Connection) -> Result<Vec<ImportRow>> {
    let mut stmt = conn.prepare(
        "SELECT file_name, kind, rows, inserted, imported_at FROM imports
         ORDER BY import_id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([RECENT_IMPORTS as i64], |r| {
        Ok(ImportRow {
            file_name: r.get(0)?,
            kind: r.get(1)?,
            rows: r.get(2)?,
            inserted: r.get(3)?,
            imported_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "clinic        {}", self.clinic)?;
        if self.encrypted {
            writeln!(f, "store         encrypted (SQLCipher)")?;
        } else {
            writeln!(
                f,
                "store         NOT encrypted (created before mbc-node encrypted stores)"
            )?;
        }
        writeln!(f, "therapists    {}", self.therapists)?;
        writeln!(f, "patients      {}", self.patients)?;
        writeln!(f, "episodes      {}", self.episodes)?;
        writeln!(f, "sessions      {}", self.sessions)?;
        match (&self.first_session, &self.last_session) {
            (Some(a), Some(b)) => writeln!(f, "sessions from {a} to {b}")?,
            _ => writeln!(f, "sessions from (none yet)")?,
        }
        writeln!(f, "assessments")?;
        if self.assessments.is_empty() {
            writeln!(f, "  (none yet: run `mbc-node import`)")?;
        }
        for a in &self.assessments {
            writeln!(
                f,
                "  {:<10} {:>9} in {} episodes",
                a.instrument, a.assessments, a.episodes
            )?;
        }
        writeln!(f, "recent imports")?;
        for i in &self.recent_imports {
            writeln!(
                f,
                "  {}  {:<28} {:<12} {:>9} rows, {} new assessments",
                i.imported_at, i.file_name, i.kind, i.rows, i.inserted
            )?;
        }
        Ok(())
    }
}

/// The node's status without the daemon: identity, network membership and the store summary
/// (the daemon's API adds the live fields).
pub fn node_status(node: &Node) -> Result<NodeStatus> {
    let store = node.store();
    let network = membership::load(store.conn())?.map(|m| NetworkStatus {
        network_id: m.network_id,
        coordinator: membership::peer_id(&m.coordinator).to_string(),
        is_coordinator: m.is_coordinator,
        roster_version: m.roster.roster.version,
        members: m.roster.roster.members.len() as u64,
    });
    Ok(NodeStatus {
        running: false,
        peer_id: membership::peer_id(&node.signer().key()).to_string(),
        software: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: None,
        network,
        peers_connected: None,
        peers_total: None,
        store: summary(&store)?,
    })
}
