//! Signed cross-site benchmark releases (DESIGN.md §10): the aggregator writes the document
//! (`aggregate/document.rs`), every node verifies and keeps it ([`accept`]), people read it
//! (`mbc-node benchmark list | show | export`), and local track records use the latest one as
//! their reference ([`reference()`]).
//!
//! A release is a JSON document signed by the coordinator over its exact bytes; nodes keep and
//! forward those bytes unchanged. Its provenance: network, release and round ids, issue time,
//! budget period, clinics contributing, ρ (and ε at δ), σ, threshold, software version.

mod html;

use anyhow::{Context, Result, bail};
use protocol::benchmark::document::{NETWORK_FORMAT, NetworkRelease};
use protocol::round::SignedRelease;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::membership;

pub use html::render as html;

/// A release as kept on a node.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The signed release.
    pub release: SignedRelease,
    /// Its document, parsed.
    pub document: NetworkRelease,
}

impl Stored {
    /// The release id.
    pub fn id(&self) -> &str {
        &self.document.release_id
    }
}

/// The document of `bytes`, when it is a network benchmark release. Parsed once; a document
/// that does not parse is read again only to say what it is not.
fn document(bytes: &[u8]) -> Result<NetworkRelease> {
    let parsed = serde_json::from_slice::<NetworkRelease>(bytes);
    let format = match &parsed {
        Ok(doc) => doc.format.clone(),
        Err(_) => {
            let doc: Value = serde_json::from_slice(bytes).context("the release is not JSON")?;
            doc["format"].as_str().unwrap_or_default().to_owned()
        }
    };
    if format != NETWORK_FORMAT {
        bail!("the release is not a {NETWORK_FORMAT} document");
    }
    parsed.with_context(|| format!("the release is not a well-formed {NETWORK_FORMAT} document"))
}

/// Verifies a release (signed by this network's pinned coordinator, for this network, a
/// benchmark document) and keeps it. Returns its id if it was new, `None` if already kept.
pub fn accept(conn: &mut Connection, release: &SignedRelease, now: &str) -> Result<Option<String>> {
    let m = membership::load(conn)?.context("this node is not in a network")?;
    release
        .verify(&m.coordinator)
        .map_err(|_| anyhow::anyhow!("the release is not signed by this network's coordinator"))?;
    let doc = document(&release.document.0)?;
    if doc.network_id != m.network_id {
        bail!("the release is for network {:?}", doc.network_id);
    }
    let (id, round, issued) = (doc.release_id, doc.round_id, doc.issued_at);
    let tx = crate::store::ledger_transaction(conn)?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT sha256 FROM benchmark_release WHERE release_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(sha) if sha == release.sha256() => return Ok(None),
        Some(_) => bail!("a different release {id} is already kept"),
        None => {}
    }
    tx.execute(
        "INSERT INTO benchmark_release (release_id, round_id, network_id, issued_at, document,
            signature, sha256, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            id,
            round,
            m.network_id,
            issued,
            release.document.0,
            hex::encode(release.signature.0),
            release.sha256(),
            now
        ],
    )?;
    tx.commit()?;
    Ok(Some(id))
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

fn parse((document, signature): (Vec<u8>, String)) -> Result<Stored> {
    let sig: [u8; 64] = hex::decode(&signature)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored signature is not 64 bytes"))?;
    Ok(Stored {
        document: self::document(&document)?,
        release: SignedRelease {
            document: protocol::keys::Bytes(document),
            signature: protocol::keys::Signature(sig),
        },
    })
}

/// Every kept release, oldest first.
pub fn all(conn: &Connection) -> Result<Vec<Stored>> {
    let mut stmt = conn
        .prepare("SELECT document, signature FROM benchmark_release ORDER BY issued_at, rowid")?;
    let rows = stmt.query_map([], stored)?;
    rows.map(|r| parse(r?)).collect()
}

/// The release whose id starts with `id`, or the latest when `id` is `None`.
pub fn get(conn: &Connection, id: Option<&str>) -> Result<Option<Stored>> {
    let row = match id {
        Some(id) => {
            let matches: Vec<(Vec<u8>, String)> = conn
                .prepare(
                    "SELECT document, signature FROM benchmark_release
                     WHERE release_id LIKE ?1 || '%' ORDER BY issued_at",
                )?
                .query_map([id], stored)?
                .collect::<rusqlite::Result<_>>()?;
            if matches.len() > 1 {
                bail!(
                    "{} releases start with {id:?}; give more of the id",
                    matches.len()
                );
            }
            matches.into_iter().next()
        }
        None => conn
            .query_row(
                "SELECT document, signature FROM benchmark_release
                 ORDER BY issued_at DESC, rowid DESC LIMIT 1",
                [],
                stored,
            )
            .optional()?,
    };
    row.map(parse).transpose()
}

/// Releases issued at or after `after` (RFC 3339; "" for all), oldest first, at most
/// `max` of them and `max_bytes` of documents in all: the answer to a peer catching up.
pub fn since(
    conn: &Connection,
    after: &str,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<SignedRelease>> {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut stmt = conn.prepare(
        "SELECT document, signature FROM benchmark_release WHERE issued_at >= ?1
         ORDER BY issued_at, rowid",
    )?;
    for row in stmt.query_map([after], stored)? {
        let s = parse(row?)?;
        bytes += s.release.document.0.len() + 128;
        if out.len() == max || bytes > max_bytes {
            break;
        }
        out.push(s.release);
    }
    Ok(out)
}

/// Issue time of the newest release kept ("" when none).
pub fn newest(conn: &Connection) -> Result<String> {
    Ok(conn.query_row(
        "SELECT coalesce(max(issued_at), '') FROM benchmark_release",
        [],
        |r| r.get(0),
    )?)
}

/// One line of `benchmark list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// Release id.
    pub release_id: String,
    /// Round id.
    pub round_id: String,
    /// Issue time.
    pub issued_at: String,
    /// Clinics contributing.
    pub clinics: u64,
    /// ρ.
    pub rho: f64,
    /// Domains.
    pub domains: Vec<String>,
}

/// The list of kept releases.
pub fn list(conn: &Connection) -> Result<Vec<Listing>> {
    Ok(all(conn)?
        .iter()
        .map(|s| {
            let d = &s.document;
            Listing {
                release_id: d.release_id.clone(),
                round_id: d.round_id.clone(),
                issued_at: d.issued_at.clone(),
                clinics: d.clinics.contributing as u64,
                rho: d.privacy.rho,
                domains: d.summary.iter().map(|x| x.domain.clone()).collect(),
            }
        })
        .collect())
}

/// The network reference in release `s`: per domain the risk model with its noise replicates
/// (the analysis uses it only if noise moves the clinic's predictions by at most
/// [`protocol::analysis::REFERENCE_MAX_PREDICTION_SD`] points), and τ² (with the interval its
/// noise gives) and σ² when τ² is precise enough ([`protocol::benchmark::tau2_usable`]) and
/// not clamped at 0.
pub fn reference(s: &Stored) -> protocol::analysis::NetworkReference {
    use protocol::analysis::{DomainReference, NetworkReference};
    use protocol::benchmark::tau2_usable;
    let domains = s
        .document
        .summary
        .iter()
        .map(|x| {
            // The model with its replicates: each clinic decides on its own episodes whether
            // noise leaves it precise enough (`analysis`).
            let sd = x.tau2_noise_sd.unwrap_or(f64::INFINITY);
            let (tau2, sigma2) = match x.therapist_variance {
                // A τ² at its bound 0 says only "no more than noise": adopting it would shrink
                // every local effect to nothing, whatever the clinic's own data show.
                Some(v) if v.tau2 > 0.0 && tau2_usable(v.tau2, v.sigma2, sd) => (
                    Some((v.tau2, ((v.tau2 - 1.96 * sd).max(0.0), v.tau2 + 1.96 * sd))),
                    Some(v.sigma2),
                ),
                _ => (None, None),
            };
            (
                x.domain.clone(),
                DomainReference {
                    beta: x.risk_coefficients(),
                    replicates: x.risk_model_replicates.clone(),
                    tau2,
                    sigma2,
                },
            )
        })
        .collect();
    NetworkReference {
        release_id: s.id().to_owned(),
        domains,
    }
}

/// The exported JSON: the document as signed (keys this version does not know included) with
/// the signature that covers its original bytes.
pub fn export_json(s: &Stored) -> Result<Value> {
    let mut doc: Value = serde_json::from_slice(&s.release.document.0)?;
    doc["signature"] = json!({
        "algorithm": "Ed25519",
        "signed": "the transcript \"mbc-node/v1 release\" ‖ SHA-256 of the document as gossiped",
        "document_sha256": s.release.sha256(),
        "value": hex::encode(s.release.signature.0),
    });
    Ok(doc)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{:.1} %", 100.0 * x))
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// The human summary of `benchmark show`.
pub fn describe(s: &Stored) -> String {
    let d = &s.document;
    let p = &d.privacy;
    let mut out = format!(
        "Benchmark release {}\n  network {}, round {}, issued {} (period {}), {}\n  \
         {} of {} clinics contributed: {}\n  privacy: ρ = {} (ε = {:.2} at δ = {}), σ = {:.1}, \
         threshold {}, noise {}\n  signed by the coordinator {}…, document SHA-256 {}…\n\n",
        s.id(),
        d.network_id,
        d.round_id,
        d.issued_at,
        d.period,
        d.software,
        d.clinics.contributing,
        d.clinics.invited,
        d.clinics.names.join(", "),
        p.rho,
        p.epsilon,
        p.delta,
        p.sigma,
        p.threshold.map_or_else(|| "—".into(), |t| t.to_string()),
        p.noise,
        d.aggregator.get(..12).unwrap_or_default(),
        &s.release.sha256()[..12],
    );
    out.push_str(&format!(
        "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}\n",
        "domain", "episodes", "recovery", "rel.impr", "rel.det", "Δ mean", "τ²", "ICC"
    ));
    for x in &d.summary {
        let v = x.therapist_variance;
        out.push_str(&format!(
            "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}\n",
            x.domain,
            num(Some(x.episodes), 0),
            pct(x.recovery_rate),
            pct(x.reliable_improvement_rate),
            pct(x.reliable_deterioration_rate),
            num(x.change.map(|c| c.mean), 2),
            num(v.map(|v| v.tau2), 3),
            num(v.map(|v| v.icc), 3),
        ));
        if !x.suppressed.is_empty() {
            out.push_str(&format!(
                "  {:<12} suppressed (noise dominates): {}\n",
                "",
                x.suppressed.join(", ")
            ));
        }
    }
    out
}

/// A signed release of one domain whose summary is `summary` (and whose layout is empty), read
/// back as a node reads a kept one: the optional figures of older releases may be absent.
#[cfg(test)]
fn test_release(summary: Value) -> Stored {
    let document = json!({
        "format": NETWORK_FORMAT, "version": 1, "release_id": "r1", "network_id": "n",
        "round_id": "00", "issued_at": "2026-12-01T00:00:00Z", "period": "2026",
        "software": "mbc-node", "aggregator": "00",
        "clinics": {"invited": 3, "contributing": 3, "names": []},
        "privacy": {"unit": "patient", "rho": 0.5, "epsilon": 5.0, "delta": 1e-6,
            "sigma": 1.0, "sensitivity": 1.0, "mechanism": "test", "noise": "on"},
        "layout": {"kind": "benchmark", "version": 2, "max_episodes_per_patient": 1,
            "caseload_cap": 1, "features": [], "sessions": 0, "domains": [], "blocks": [],
            "sensitivity": 1.0},
        "values": [],
        "summary": [summary],
    });
    let release = SignedRelease::sign(
        &protocol::keys::Signer::from_seed(&[7; 32]),
        document.to_string().into_bytes(),
    );
    parse((release.document.0.clone(), hex::encode(release.signature.0)))
        .expect("a well-formed release")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A release whose one domain has τ² = `tau2` with noise SD `sd` and σ² = 30.
    fn stored(tau2: f64, sd: f64) -> Stored {
        test_release(json!({
            "domain": "depression", "episodes": 100.0, "finished": 90.0,
            "finished_at_caseness": 80.0, "reliable_improvement_rate": null,
            "reliable_deterioration_rate": null, "recovery_rate": null,
            "reliable_recovery_rate": null,
            "therapist_variance": {"therapists": 10, "tau2": tau2, "sigma2": 30.0,
                "icc": null, "n0": 10.0, "mean_residual": 0.0},
            "tau2_noise_sd": sd,
        }))
    }

    /// Writer and reader share one shape: a document missing a required figure, or of
    /// another format, is refused with what it is not; one without the optional figures of
    /// older releases is read.
    #[test]
    fn documents_are_read_by_their_type() {
        let mut doc =
            serde_json::from_slice::<Value>(&stored(4.0, 1.0).release.document.0).unwrap();
        assert!(document(&serde_json::to_vec(&doc).unwrap()).is_ok());
        doc["privacy"].as_object_mut().unwrap().remove("rho");
        let err = document(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a well-formed") && format!("{err:#}").contains("rho"),
            "{err:#}"
        );
        doc["format"] = json!("mbc-node/release");
        let err = document(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a mbc-node/benchmark-release document")
        );
    }

    /// Issue 13, fix 1: a released τ² of 0 (clamped at its bound) is never adopted, even when
    /// its release says its noise SD is 0 (as releases did before the fix): it would shrink
    /// every local effect to 0 whatever the clinic's data show. A precise τ² above 0 is.
    #[test]
    fn a_released_tau2_at_zero_is_not_adopted() {
        let tau2 = |s: &Stored| reference(s).domains[0].1.tau2;
        assert_eq!(tau2(&stored(0.0, 0.0)), None);
        assert_eq!(tau2(&stored(0.0, 0.1)), None);
        let (t, (lo, hi)) = tau2(&stored(4.0, 1.0)).unwrap();
        assert_eq!(t, 4.0);
        assert!((lo - 2.04).abs() < 1e-9 && (hi - 5.96).abs() < 1e-9);
    }
}
