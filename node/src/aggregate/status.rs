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
    /// registry). Fewer domains leave more of ρ to each. A dropout-model training: the one
    /// domain whose intake the features take (default: depression, else the first).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Dropout-model training: most iterations (rounds); `rho` is then the whole training's,
    /// split evenly over them.
    #[serde(default)]
    pub iterations: Option<u32>,
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
    /// The training this round is an iteration of (dropout-model), as it stood when this
    /// round last changed.
    #[serde(default)]
    pub training: Option<TrainingStatus>,
}

impl RoundStatus {
    /// Whether the round has ended (done or aborted) and, for an iteration of a training, the
    /// training too.
    pub fn finished(&self) -> bool {
        self.step.finished() && self.training.as_ref().is_none_or(|t| t.finished)
    }
}

/// A training of several rounds (a dropout-model fit) as the aggregator drives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingStatus {
    /// Training id (16 hex digits); `round status ID` takes it too.
    pub training_id: String,
    /// The iteration now running (or the last one run).
    pub iteration: u32,
    /// Its round.
    pub round_id: String,
    /// Most iterations.
    pub iterations: u32,
    /// ρ of the whole training, declared to every clinic.
    pub total_rho: f64,
    /// Every finished iteration.
    pub history: Vec<IterationStatus>,
    /// Whether the fit converged (the step below its tolerance or its own noise).
    pub converged: bool,
    /// Whether training has ended.
    pub finished: bool,
    /// Why it stopped before converging or reaching its cap, if it did.
    pub stopped: Option<String>,
    /// Milliseconds from its first announcement to its release, when finished.
    #[serde(default)]
    pub elapsed_ms: Option<u64>,
}

impl TrainingStatus {
    /// A training about to run iteration `t.iteration` in round `round_id`.
    pub fn new(t: protocol::round::Training, round_id: String) -> Self {
        Self {
            training_id: t.id,
            iteration: t.iteration,
            round_id,
            iterations: t.iterations,
            total_rho: t.total_rho,
            history: Vec::new(),
            converged: false,
            finished: false,
            stopped: None,
            elapsed_ms: None,
        }
    }
}

/// One finished iteration of a training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationStatus {
    /// 1, 2, …
    pub iteration: u32,
    /// Its round.
    pub round_id: String,
    /// Clinics whose sums it holds (0 when it aborted).
    pub contributing: usize,
    /// How far its step moved the predictions (RMS change of the logit).
    pub shift: Option<f64>,
    /// How far the step's noise alone would.
    pub shift_noise: Option<f64>,
    /// Mean Brier score at the coefficients it evaluated (noisy).
    pub brier: Option<f64>,
    /// Why it aborted, if it did.
    pub error: Option<String>,
}
