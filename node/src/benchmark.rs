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
use protocol::round::SignedRelease;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::membership;

pub use html::render as html;

/// The document format name.
pub const FORMAT: &str = "mbc-node/benchmark-release";

/// A release as kept on a node.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The signed release.
    pub release: SignedRelease,
    /// Its document, parsed.
    pub document: Value,
}

impl Stored {
    /// The release id.
    pub fn id(&self) -> &str {
        self.document["release_id"].as_str().unwrap_or_default()
    }
}

/// Verifies a release (signed by this network's pinned coordinator, for this network, a
/// benchmark document) and keeps it. Returns its id if it was new, `None` if already kept.
pub fn accept(conn: &mut Connection, release: &SignedRelease, now: &str) -> Result<Option<String>> {
    let m = membership::load(conn)?.context("this node is not in a network")?;
    release
        .verify(&m.coordinator)
        .map_err(|_| anyhow::anyhow!("the release is not signed by this network's coordinator"))?;
    let doc: Value =
        serde_json::from_slice(&release.document.0).context("the release is not JSON")?;
    if doc["format"] != FORMAT {
        bail!("the release is not a {FORMAT} document");
    }
    if doc["network_id"] != m.network_id.as_str() {
        bail!("the release is for network {}", doc["network_id"]);
    }
    let field = |k: &str| {
        doc[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the release has no {k}"))
    };
    let (id, round, issued) = (
        field("release_id")?,
        field("round_id")?,
        field("issued_at")?,
    );
    let tx = conn.transaction()?;
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
        document: serde_json::from_slice(&document)?,
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
                release_id: s.id().into(),
                round_id: d["round_id"].as_str().unwrap_or_default().into(),
                issued_at: d["issued_at"].as_str().unwrap_or_default().into(),
                clinics: d["clinics"]["contributing"].as_u64().unwrap_or(0),
                rho: d["privacy"]["rho"].as_f64().unwrap_or(0.0),
                domains: d["summary"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x["domain"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
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
    use protocol::analysis::{DomainReference, FEATURES, NetworkReference};
    use protocol::benchmark::tau2_usable;
    let domains = s.document["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| {
            let id = x["domain"].as_str()?.to_owned();
            // The model with its replicates: each clinic decides on its own episodes whether
            // noise leaves it precise enough (`analysis`).
            let beta = x["risk_model"].as_object().and_then(|m| {
                FEATURES
                    .iter()
                    .map(|f| m.get(*f).and_then(Value::as_f64))
                    .collect::<Option<Vec<f64>>>()
            });
            let replicates: Vec<Vec<f64>> =
                serde_json::from_value(x["risk_model_replicates"].clone()).unwrap_or_default();
            let v = &x["therapist_variance"];
            let sd = x["tau2_noise_sd"].as_f64().unwrap_or(f64::INFINITY);
            let (tau2, sigma2) = match (v["tau2"].as_f64(), v["sigma2"].as_f64()) {
                // A τ² at its bound 0 says only "no more than noise": adopting it would shrink
                // every local effect to nothing, whatever the clinic's own data show.
                (Some(t), Some(s2)) if t > 0.0 && tau2_usable(t, s2, sd) => (
                    Some((t, ((t - 1.96 * sd).max(0.0), t + 1.96 * sd))),
                    Some(s2),
                ),
                _ => (None, None),
            };
            Some((
                id,
                DomainReference {
                    beta,
                    replicates,
                    tau2,
                    sigma2,
                },
            ))
        })
        .collect();
    NetworkReference {
        release_id: s.id().to_owned(),
        domains,
    }
}

/// The exported JSON: the document with the signature that covers its original bytes.
pub fn export_json(s: &Stored) -> Value {
    let mut doc = s.document.clone();
    doc["signature"] = json!({
        "algorithm": "Ed25519",
        "signed": "the transcript \"mbc-node/v1 release\" ‖ SHA-256 of the document as gossiped",
        "document_sha256": s.release.sha256(),
        "value": hex::encode(s.release.signature.0),
    });
    doc
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{:.1} %", 100.0 * x))
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// The human summary of `benchmark show`.
pub fn describe(s: &Stored) -> String {
    let d = &s.document;
    let p = &d["privacy"];
    let mut out = format!(
        "Benchmark release {}\n  network {}, round {}, issued {} (period {}), {}\n  \
         {} of {} clinics contributed: {}\n  privacy: ρ = {} (ε = {:.2} at δ = {}), σ = {:.1}, \
         threshold {}, noise {}\n  signed by the coordinator {}…, document SHA-256 {}…\n\n",
        s.id(),
        d["network_id"].as_str().unwrap_or_default(),
        d["round_id"].as_str().unwrap_or_default(),
        d["issued_at"].as_str().unwrap_or_default(),
        d["period"].as_str().unwrap_or_default(),
        d["software"].as_str().unwrap_or_default(),
        d["clinics"]["contributing"],
        d["clinics"]["invited"],
        d["clinics"]["names"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        p["rho"],
        p["epsilon"].as_f64().unwrap_or(f64::NAN),
        p["delta"],
        p["sigma"].as_f64().unwrap_or(f64::NAN),
        p["threshold"],
        p["noise"].as_str().unwrap_or("on"),
        &d["aggregator"]
            .as_str()
            .unwrap_or_default()
            .get(..12)
            .unwrap_or_default(),
        &s.release.sha256()[..12],
    );
    out.push_str(&format!(
        "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}\n",
        "domain", "episodes", "recovery", "rel.impr", "rel.det", "Δ mean", "τ²", "ICC"
    ));
    for x in d["summary"].as_array().into_iter().flatten() {
        let v = &x["therapist_variance"];
        out.push_str(&format!(
            "  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}\n",
            x["domain"].as_str().unwrap_or_default(),
            num(&x["episodes"], 0),
            pct(&x["recovery_rate"]),
            pct(&x["reliable_improvement_rate"]),
            pct(&x["reliable_deterioration_rate"]),
            num(&x["change"]["mean"], 2),
            num(&v["tau2"], 3),
            num(&v["icc"], 3),
        ));
        let suppressed: Vec<&str> = x["suppressed"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !suppressed.is_empty() {
            out.push_str(&format!(
                "  {:<12} suppressed (noise dominates): {}\n",
                "",
                suppressed.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use protocol::keys::Signer;

    use super::*;

    fn stored(tau2: f64, sd: f64) -> Stored {
        let document = json!({
            "release_id": "r1",
            "summary": [{
                "domain": "depression",
                "therapist_variance": {"tau2": tau2, "sigma2": 30.0},
                "tau2_noise_sd": sd,
            }],
        });
        let release = SignedRelease::sign(
            &Signer::from_seed(&[7; 32]),
            document.to_string().into_bytes(),
        );
        Stored { release, document }
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
