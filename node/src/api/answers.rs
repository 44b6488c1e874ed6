//! The local API's answers: each one type, written by the daemon's handlers and read by the
//! CLI (and the demo) through [`super::get`] and [`super::post`], so writer and reader share
//! one shape. The status answer is [`crate::status::NodeStatus`], which `status` also prints
//! when the node is not running.

use serde::{Deserialize, Serialize};

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

/// `POST /v1/directory/publish`: this clinic's directory entry gossiped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gossiped {
    /// The entry's id.
    pub id: String,
    /// Whether it was gossiped now (else peers pull it).
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
