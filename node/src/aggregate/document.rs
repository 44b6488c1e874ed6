//! The release document of a finished round over clinic data, which the coordinator signs:
//! the decoded sum, its post-processing and its provenance (DESIGN.md §10), as a
//! [`NetworkDocument`]: a benchmark's [`protocol::benchmark::document::NetworkRelease`], a
//! trajectories release, or (after a training's last iteration) a dropout-model release.

use anyhow::{Context, Result, bail};
use protocol::benchmark::document::{
    Clinics, DomainRelease, LayoutDescription, NETWORK_FORMAT, NetworkDocument, Privacy,
};
use protocol::dp::{self, Mechanism};
use protocol::dropout::document::{
    DropoutLayoutDescription, DropoutModel, FORMAT as DROPOUT_FORMAT,
};
use protocol::round::{DataLayout, SignedRoundSpec};
use protocol::trajectories::document::{
    FORMAT as TRAJECTORIES_FORMAT, TrajectoriesLayoutDescription,
};
use serde::Serialize;

use crate::config::Config;
use crate::ledger::Policy;
use crate::{clock, hooks, ledger};

/// The mechanism of a round over clinic data (each clinic's share calibrated to its ρ and t).
fn mechanism(signed: &SignedRoundSpec) -> Result<(DataLayout, Mechanism)> {
    let spec = &signed.spec;
    let layout = spec
        .kind
        .data_layout()?
        .context("not a round over clinic data")?;
    let sensitivity = layout.layout().sensitivity();
    let mechanism = Mechanism::distributed(sensitivity.patient, spec.rho, spec.threshold)?;
    Ok((layout, mechanism))
}

/// The noise SD (encoded units) in the sum of `contributing` clinics' shares of round
/// `signed`: k ≥ t survivors each added σ²/(t − 1); 0 when a test build switched noise off.
pub(super) fn sum_sigma(signed: &SignedRoundSpec, contributing: usize) -> Result<f64> {
    let (_, mechanism) = mechanism(signed)?;
    Ok(if hooks::no_noise() {
        0.0
    } else {
        mechanism.sigma_of_sum(contributing)
    })
}

/// Builds the release document of a finished round over clinic data: `values` is the decoded
/// sum of the contributions of the clinics `names`.
pub(super) fn release_document(
    config: &Config,
    signed: &SignedRoundSpec,
    values: &[i64],
    names: &[String],
) -> Result<Vec<u8>> {
    let (layout, _) = mechanism(signed)?;
    let sigma = sum_sigma(signed, names.len())?;
    let document = |format: &str| provenance(config, signed, format, values, names);
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
        DataLayout::Dropout(_) => {
            bail!("a dropout-model round is an iteration: its training releases the model")
        }
    }
}

/// The release of a finished dropout-model training: `model` fitted over its iterations,
/// with the provenance, vector and layout of the last one (`signed`, `values`, `names`). Its
/// ρ is the training's: every iteration run, composed (zCDP adds), for a clinic in all.
pub(super) fn dropout_document(
    config: &Config,
    signed: &SignedRoundSpec,
    values: &[i64],
    names: &[String],
    model: DropoutModel,
) -> Result<Vec<u8>> {
    let (layout, mechanism) = mechanism(signed)?;
    let DataLayout::Dropout(layout) = layout else {
        bail!("not a dropout-model round");
    };
    let mut d = provenance(config, signed, DROPOUT_FORMAT, values, names)?;
    let run = model.iterations.len() as f64;
    d.privacy.rho = mechanism.rho * run;
    d.privacy.epsilon = dp::epsilon(d.privacy.rho, d.privacy.delta)?;
    d.privacy.mechanism = format!(
        "{} {} iteration(s) of ρ = {}, composed (zCDP adds up); the vector is the last \
         iteration's",
        d.privacy.mechanism,
        model.iterations.len(),
        mechanism.rho
    );
    to_json(d, DropoutLayoutDescription::of(&layout), vec![model])
}

/// A network document of `format` for round `signed`: provenance, privacy and the vector
/// `values` of the clinics `names`, without layout or summary.
fn provenance(
    config: &Config,
    signed: &SignedRoundSpec,
    format: &str,
    values: &[i64],
    names: &[String],
) -> Result<NetworkDocument<(), ()>> {
    let spec = &signed.spec;
    let policy = Policy::from_config(&config.privacy)?;
    let (layout, mechanism) = mechanism(signed)?;
    let sensitivity = layout.layout().sensitivity();
    let now = clock::now_utc();
    let privacy = Privacy {
        sigma_in_sum: Some(mechanism.sigma_of_sum(names.len())),
        share_sigma: Some(mechanism.sigma),
        threshold: Some(spec.threshold),
        ..Privacy::new(
            &mechanism,
            policy.delta,
            sensitivity,
            "distributed discrete Gaussian (each clinic adds σ²/(t − 1) with OpenDP's sampler, \
             so the other contributions alone carry σ² for any one clinic or the coordinator) \
             under secure aggregation; ρ-zCDP",
            !hooks::no_noise(),
        )?
    };
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
        privacy,
        layout: (),
        values: values.to_vec(),
        summary: Vec::new(),
    })
}

fn to_json<L: Serialize, S: Serialize>(
    d: NetworkDocument<(), ()>,
    layout: L,
    summary: Vec<S>,
) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&d.with(layout, summary))?)
}
