//! The release document of a finished benchmark round, which the coordinator signs: the
//! decoded sum, its post-processing and its provenance (DESIGN.md §10).

use anyhow::{Context, Result};
use protocol::dp::Mechanism;
use protocol::round::SignedRoundSpec;
use serde_json::json;

use crate::config::Config;
use crate::ledger::Policy;
use crate::{benchmark, clock, release};

/// Builds the release document of a finished benchmark round: `values` is the decoded sum of
/// the contributions of the clinics `names`.
pub(super) fn release_document(
    config: &Config,
    signed: &SignedRoundSpec,
    values: &[i64],
    names: &[String],
) -> Result<Vec<u8>> {
    let spec = &signed.spec;
    let policy = Policy::from_config(&config.privacy)?;
    let layout = spec.kind.layout()?.context("not a benchmark round")?;
    let sensitivity = layout.layout().sensitivity();
    let mechanism = Mechanism::distributed(sensitivity.patient, spec.rho, spec.threshold)?;
    // k ≥ t survivors each added variance σ²/(t − 1).
    let sigma_in_sum = mechanism.sigma_of_sum(names.len());
    let noise_off = crate::hooks::no_noise();
    let summary = layout.summarise(values, if noise_off { 0.0 } else { sigma_in_sum })?;
    let now = clock::now_utc();
    let mut privacy = release::privacy_json(
        &mechanism,
        policy.delta,
        sensitivity,
        "distributed discrete Gaussian (each clinic adds σ²/(t − 1) with OpenDP's sampler, so \
         the other contributions alone carry σ² for any one clinic or the coordinator) under \
         secure aggregation; ρ-zCDP",
    )?;
    privacy["sigma_in_sum"] = json!(sigma_in_sum);
    privacy["share_sigma"] = json!(mechanism.sigma);
    privacy["threshold"] = json!(spec.threshold);
    let document = json!({
        "format": benchmark::FORMAT,
        "version": 1,
        "release_id": crate::ledger::new_id()?,
        "network_id": spec.network_id,
        "round_id": spec.id_hex(),
        "issued_at": clock::rfc3339(now),
        "period": policy.period.label(now),
        "software": concat!("mbc-node ", env!("CARGO_PKG_VERSION")),
        "aggregator": hex::encode(spec.aggregator.0),
        "clinics": {
            "invited": spec.participants.len(),
            "contributing": names.len(),
            "names": names,
        },
        "privacy": privacy,
        "layout": release::layout_json(&layout),
        "values": values,
        "summary": summary.iter().map(release::summary_json).collect::<Vec<_>>(),
    });
    Ok(serde_json::to_vec(&document)?)
}
