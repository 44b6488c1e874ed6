//! The release document of a `trajectories` round: a [`NetworkDocument`] whose layout is a
//! [`TrajectoriesLayoutDescription`] and whose summary is [`DomainTrajectories`] per domain.
//! The coordinator writes it; every node verifies, keeps and reads it with these types.

use serde::{Deserialize, Serialize};

use super::{
    DomainTrajectories, FIRST_MODEL_SESSION, LAYOUT_VERSION, MIN_COUNT, PERCENTILES, SESSIONS,
    TrajectoriesLayout,
};
use crate::analysis::FEATURES;
use crate::benchmark::document::{BinsLayout, BlockLayout, NetworkDocument};

/// Format name of a network trajectories release.
pub const FORMAT: &str = "mbc-node/trajectories-release";

/// A network trajectories release, signed by the coordinator over its exact bytes.
pub type TrajectoriesRelease = NetworkDocument<TrajectoriesLayoutDescription, DomainTrajectories>;

/// What a trajectories vector holds and how each block is bounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoriesLayoutDescription {
    /// "trajectories".
    pub kind: String,
    /// [`LAYOUT_VERSION`] of the writer.
    pub version: u32,
    /// Episodes one patient may contribute per domain.
    pub max_episodes_per_patient: u32,
    /// The model's features (each also × ln t / ln 16), in coefficient order.
    pub features: Vec<String>,
    /// Sessions 1..=this of the histograms.
    pub sessions: usize,
    /// The first session of the model.
    pub first_model_session: usize,
    /// The released percentiles.
    pub percentiles: Vec<f64>,
    /// Fewest patients a released figure stands on.
    pub min_count: f64,
    /// The domains, in vector order.
    pub domains: Vec<TrajectoryDomainLayout>,
    /// The blocks, in vector order.
    pub blocks: Vec<BlockLayout>,
    /// Patient-level L2 sensitivity.
    pub sensitivity: f64,
}

/// One domain of a trajectories layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryDomainLayout {
    /// Domain id.
    pub id: String,
    /// Lowest score (domain units).
    pub lo: f64,
    /// Highest score.
    pub hi: f64,
    /// Lower bounds of the intake-severity bands.
    pub bands: Vec<f64>,
    /// Score bins of every session's histogram (one row of bins per band).
    pub score_bins: BinsLayout,
}

impl TrajectoriesLayoutDescription {
    /// The description of `layout`.
    pub fn of(layout: &TrajectoriesLayout) -> Self {
        let l = layout.layout();
        Self {
            kind: "trajectories".into(),
            version: LAYOUT_VERSION,
            max_episodes_per_patient: layout.max_episodes(),
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            sessions: SESSIONS,
            first_model_session: FIRST_MODEL_SESSION,
            percentiles: PERCENTILES.to_vec(),
            min_count: MIN_COUNT,
            domains: layout
                .domains()
                .iter()
                .enumerate()
                .map(|(d, s)| {
                    let b = layout.bins(d);
                    TrajectoryDomainLayout {
                        id: s.id.clone(),
                        lo: s.lo,
                        hi: s.hi,
                        bands: s.bands.clone(),
                        score_bins: BinsLayout {
                            start: b.start,
                            width: b.width,
                            n: b.n,
                        },
                    }
                })
                .collect(),
            blocks: BlockLayout::all(l),
            sensitivity: l.sensitivity().patient,
        }
    }

    /// Decoded entries of block `name` of `values`.
    pub fn decode(&self, values: &[i64], name: &str) -> Option<Vec<f64>> {
        BlockLayout::decode(&self.blocks, values, name)
    }
}
