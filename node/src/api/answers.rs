//! The local API's answers: each one type, written by the daemon's handlers and read by the
//! CLI (and the demo) through [`super::get`] and [`super::post`], so writer and reader share
//! one shape.

use serde::{Deserialize, Serialize};

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
    pub store: crate::status::Summary,
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

/// `POST /v1/roster/publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The roster version the node adopted.
    pub version: u64,
    /// Whether it was gossiped.
    pub published: bool,
    /// Why not, when it was not.
    pub note: Option<String>,
}

/// `POST /v1/echo`: latency of signed round trips.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoStats {
    /// Round trips made.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
}

/// `POST /v1/echo`'s request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoRequest {
    /// The peer to echo with (PeerId).
    pub peer: String,
    /// Round trips.
    pub count: u32,
    /// Payload bytes.
    pub size: usize,
}

/// Any refusal: the HTTP status says which kind, this says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// The reason.
    pub error: String,
}
