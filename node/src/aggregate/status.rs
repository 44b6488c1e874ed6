//! What the coordinator's local API says about rounds, written by the aggregator and read by
//! `mbc-node round` and the demo: one shape for both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a round is, as the aggregator drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundStep {
    /// Announced: each clinic checks its policy, charges its ledger and sends its key advert.
    Announce,
    /// A plain bench round: vectors sent unmasked in one request (the baseline).
    Plain,
    /// Key adverts sent out, encrypted shares coming back.
    Keys,
    /// Shares routed, masked inputs coming back.
    Shares,
    /// The survivor list sent out, signed confirmations coming back.
    Confirm,
    /// Confirmations sent out, reveals coming back.
    Unmask,
    /// Finished: the sum was decoded (and, for a benchmark round, released).
    Done,
    /// Ended with nothing released.
    Aborted,
}

impl RoundStep {
    /// The step's name, as in the API and table `round`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Announce => "announce",
            Self::Plain => "plain",
            Self::Keys => "keys",
            Self::Shares => "shares",
            Self::Confirm => "confirm",
            Self::Unmask => "unmask",
            Self::Done => "done",
            Self::Aborted => "aborted",
        }
    }

    /// Whether the round has ended.
    pub fn finished(self) -> bool {
        matches!(self, Self::Done | Self::Aborted)
    }

    /// What a participant that answered this step has reached.
    pub fn reached(self) -> Reached {
        match self {
            Self::Announce => Reached::Keys,
            Self::Keys => Reached::Shares,
            Self::Shares => Reached::Masked,
            Self::Confirm => Reached::Confirmed,
            Self::Plain | Self::Unmask | Self::Done | Self::Aborted => Reached::Revealed,
        }
    }
}

impl std::fmt::Display for RoundStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last step a participant completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reached {
    /// Invited, nothing answered yet.
    Invited,
    /// Sent its key advert.
    Keys,
    /// Sent its encrypted shares.
    Shares,
    /// Sent its masked input.
    Masked,
    /// Signed the survivor list.
    Confirmed,
    /// Revealed its shares (or, in a plain round, sent its vector).
    Revealed,
}

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Invited => "invited",
            Self::Keys => "keys",
            Self::Shares => "shares",
            Self::Masked => "masked",
            Self::Confirmed => "confirmed",
            Self::Revealed => "revealed",
        };
        f.write_str(name)
    }
}

/// What `mbc-node round start` asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// "benchmark" or "bench".
    pub kind: String,
    /// ρ of the release (benchmark).
    #[serde(default)]
    pub rho: f64,
    /// Threshold t (default ⌈2n/3⌉).
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Per-step deadline, seconds.
    #[serde(default)]
    pub deadline_s: Option<f64>,
    /// Bench rounds: vector length.
    #[serde(default)]
    pub dim: Option<u32>,
    /// Bench rounds: the unmasked baseline.
    #[serde(default)]
    pub plain: bool,
    /// Benchmark rounds: only these domains (default: every domain of the coordinator's
    /// registry). Fewer domains leave more of ρ to each.
    #[serde(default)]
    pub domains: Vec<String>,
}

/// One participant as the aggregator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantStatus {
    /// SecAgg index.
    pub index: u32,
    /// Clinic name from the roster.
    pub name: String,
    /// PeerId.
    pub peer_id: String,
    /// Last step completed.
    pub reached: Reached,
    /// Why it left the round, if it did.
    pub dropped: Option<String>,
    /// Bytes of its answers (round messages, before the envelope).
    pub bytes_sent: u64,
}

/// A round as the aggregator tracks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStatus {
    /// Round id, hex.
    pub round_id: String,
    /// Kind.
    pub kind: String,
    /// Current step.
    pub step: RoundStep,
    /// ρ of the release.
    pub rho: f64,
    /// Threshold t.
    pub threshold: u32,
    /// Vector length.
    pub dim: usize,
    /// Per participant.
    pub participants: Vec<ParticipantStatus>,
    /// Milliseconds spent in each finished step.
    pub step_ms: BTreeMap<String, u64>,
    /// Total milliseconds, when finished.
    pub elapsed_ms: Option<u64>,
    /// Why it aborted.
    pub error: Option<String>,
    /// The release, for a benchmark round that finished.
    pub release_id: Option<String>,
    /// Bench rounds: whether the decoded sum equals the sum of the survivors' vectors.
    pub exact: Option<bool>,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl RoundStatus {
    /// Whether the round has ended (done or aborted).
    pub fn finished(&self) -> bool {
        self.step.finished()
    }
}
