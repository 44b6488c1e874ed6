//! The release document of a finished round over clinic data, which the coordinator signs:
//! the decoded sum, its post-processing and its provenance (DESIGN.md §10), as a
//! [`NetworkDocument`]: a benchmark's [`protocol::benchmark::document::NetworkRelease`] or a
//! trajectories release.

use anyhow::{Context, Result};
use protocol::benchmark::document::{
    Clinics, DomainRelease, LayoutDescription, NETWORK_FORMAT, NetworkDocument, Privacy,
};
use protocol::dp::Mechanism;
use protocol::round::{DataLayout, SignedRoundSpec};
use protocol::trajectories::document::{
    FORMAT as TRAJECTORIES_FORMAT, TrajectoriesLayoutDescription,
};
use serde::Serialize;

use crate::config::Config;
use crate::ledger::Policy;
use crate::{clock, hooks, ledger};

/// Builds the release document of a finished round over clinic data: `values` is the decoded
/// sum of the contributions of the clinics `names`.
pub(super) fn release_document(
    config: &Config,
    signed: &SignedRoundSpec,
    values: &[i64],
    names: &[String],
) -> Result<Vec<u8>> {
    let spec = &signed.spec;
    let policy = Policy::from_config(&config.privacy)?;
    let layout = spec
        .kind
        .data_layout()?
        .context("not a round over clinic data")?;
    let sensitivity = layout.layout().sensitivity();
    let mechanism = Mechanism::distributed(sensitivity.patient, spec.rho, spec.threshold)?;
    // k ≥ t survivors each added variance σ²/(t − 1).
    let sigma_in_sum = mechanism.sigma_of_sum(names.len());
    let noise_on = !hooks::no_noise();
    let sigma = if noise_on { sigma_in_sum } else { 0.0 };
    let now = clock::now_utc();
    let privacy = Privacy {
        sigma_in_sum: Some(sigma_in_sum),
        share_sigma: Some(mechanism.sigma),
        threshold: Some(spec.threshold),
        ..Privacy::new(
            &mechanism,
            policy.delta,
            sensitivity,
            "distributed discrete Gaussian (each clinic adds σ²/(t − 1) with OpenDP's sampler, \
             so the other contributions alone carry σ² for any one clinic or the coordinator) \
             under secure aggregation; ρ-zCDP",
            noise_on,
        )?
    };
    let document = |format: &str| -> Result<NetworkDocument<(), ()>> {
        Ok(NetworkDocument {
            format: format.into(),
            version: 1,
            release_id: ledger::new_id()?,
            network_id: spec.network_id.clone(),
            round_id: spec.id_hex(),
            issued_at: clock::rfc3339(now),
            period: policy.period.label(now),
            software: concat!("mbc-node ", env!("CARGO_PKG_VERSION")).into(),
            aggregator: hex::encode(spec.aggregator.0),
            clinics: Clinics {
                invited: spec.participants.len(),
                contributing: names.len(),
                names: names.to_vec(),
            },
            privacy: privacy.clone(),
            layout: (),
            values: values.to_vec(),
            summary: Vec::new(),
        })
    };
    match layout {
        DataLayout::Benchmark(l) => {
            let summary = l.summarise(values, sigma)?;
            let summary = summary.iter().map(DomainRelease::from).collect();
            to_json(
                document(NETWORK_FORMAT)?,
                LayoutDescription::of(&l),
                summary,
            )
        }
        DataLayout::Trajectories(l) => to_json(
            document(TRAJECTORIES_FORMAT)?,
            TrajectoriesLayoutDescription::of(&l),
            l.summarise(values, sigma)?,
        ),
    }
}

fn to_json<L: Serialize, S: Serialize>(
    d: NetworkDocument<(), ()>,
    layout: L,
    summary: Vec<S>,
) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&d.with(layout, summary))?)
}
