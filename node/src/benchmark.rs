//! Signed network releases (DESIGN.md §10), of three kinds: the cross-site benchmark, the
//! trajectories (`benchmark/trajectories.rs`) and the dropout model (`benchmark/dropout.rs`). The aggregator writes the document
//! (`aggregate/document.rs`), every node verifies and keeps it ([`accept`]), people read it
//! (`mbc-node benchmark list | show | export`), local track records use the latest benchmark as
//! their reference ([`reference()`]) and clinical support the latest trajectories
//! ([`trajectories::latest`]).
//!
//! A release is a JSON document signed by the coordinator over its exact bytes; nodes keep and
//! forward those bytes unchanged. Its provenance: network, release and round ids, issue time,
//! budget period, clinics contributing, ρ (and ε at δ), σ, threshold, software version.

pub mod dropout;
mod html;
pub mod site;
pub mod trajectories;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use protocol::benchmark::document::{
    DomainRelease, LayoutDescription, NETWORK_FORMAT, NetworkDocument, NetworkRelease,
};
use protocol::dropout::document::{
    DropoutLayoutDescription, DropoutModel, DropoutRelease, FORMAT as DROPOUT_FORMAT,
};
use protocol::keys::NodeKey;
use protocol::round::SignedRelease;
use protocol::trajectories::DomainTrajectories;
use protocol::trajectories::document::{
    FORMAT as TRAJECTORIES_FORMAT, TrajectoriesLayoutDescription, TrajectoriesRelease,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::membership;

pub use html::render as html;

/// A release as kept on a node: a benchmark release unless said otherwise.
#[derive(Debug, Clone)]
pub struct Stored<L = LayoutDescription, S = DomainRelease> {
    /// The signed release.
    pub release: SignedRelease,
    /// Its document, parsed.
    pub document: NetworkDocument<L, S>,
}

/// A kept trajectories release.
pub type Trajectories = Stored<TrajectoriesLayoutDescription, DomainTrajectories>;

/// A kept dropout-model release.
pub type Dropout = Stored<DropoutLayoutDescription, DropoutModel>;

impl<L, S> Stored<L, S> {
    /// The release id.
    pub fn id(&self) -> &str {
        &self.document.release_id
    }
}

/// A kind of network release a node keeps: its document type and format name.
pub trait Kind: DeserializeOwned {
    /// The document's `format`.
    const FORMAT: &'static str;
    /// What people call it.
    const NAME: &'static str;
}

impl Kind for NetworkRelease {
    const FORMAT: &'static str = NETWORK_FORMAT;
    const NAME: &'static str = "benchmark";
}

impl Kind for TrajectoriesRelease {
    const FORMAT: &'static str = TRAJECTORIES_FORMAT;
    const NAME: &'static str = "trajectories";
}

impl Kind for DropoutRelease {
    const FORMAT: &'static str = DROPOUT_FORMAT;
    const NAME: &'static str = "dropout-model";
}

/// A kept release of any kind.
#[derive(Debug, Clone)]
pub enum Any {
    /// A benchmark release.
    Benchmark(Stored),
    /// A trajectories release.
    Trajectories(Trajectories),
    /// A dropout-model release.
    Dropout(Dropout),
}

impl Any {
    /// Its HTML report, by kind.
    pub fn html(&self) -> String {
        match self {
            Any::Benchmark(s) => html(s),
            Any::Trajectories(s) => trajectories::html(s),
            Any::Dropout(s) => dropout::html(s),
        }
    }

    /// The signed release.
    pub fn release(&self) -> &SignedRelease {
        match self {
            Any::Benchmark(s) => &s.release,
            Any::Trajectories(s) => &s.release,
            Any::Dropout(s) => &s.release,
        }
    }

    /// The release id.
    pub fn id(&self) -> &str {
        match self {
            Any::Benchmark(s) => s.id(),
            Any::Trajectories(s) => s.id(),
            Any::Dropout(s) => s.id(),
        }
    }
}

/// What every release document says about itself, whatever its kind.
#[derive(Debug, Deserialize)]
struct Header {
    #[serde(default)]
    format: String,
    #[serde(default)]
    release_id: String,
    #[serde(default)]
    round_id: String,
    #[serde(default)]
    network_id: String,
    #[serde(default)]
    issued_at: String,
}

fn header(bytes: &[u8]) -> Result<Header> {
    serde_json::from_slice(bytes).context("the release is not a JSON object")
}

/// The document of `bytes`, when it is a release of kind `D`.
fn document<D: Kind>(bytes: &[u8]) -> Result<D> {
    if header(bytes)?.format != D::FORMAT {
        bail!("the release is not a {} document", D::FORMAT);
    }
    serde_json::from_slice::<D>(bytes)
        .with_context(|| format!("the release is not a well-formed {} document", D::FORMAT))
}

/// Verifies a release (signed by this network's pinned coordinator, for this network, a
/// well-formed document of a kind this node knows) and keeps it. Returns its id if it was
/// new, `None` if already kept.
pub fn accept(conn: &mut Connection, release: &SignedRelease, now: &str) -> Result<Option<String>> {
    let m = membership::load(conn)?.context("this node is not in a network")?;
    release
        .verify(&m.coordinator)
        .map_err(|_| anyhow::anyhow!("the release is not signed by this network's coordinator"))?;
    let bytes = &release.document.0;
    let head = header(bytes)?;
    match head.format.as_str() {
        NETWORK_FORMAT => drop(document::<NetworkRelease>(bytes)?),
        TRAJECTORIES_FORMAT => drop(document::<TrajectoriesRelease>(bytes)?),
        DROPOUT_FORMAT => drop(document::<DropoutRelease>(bytes)?),
        other => bail!(
            "the release is a {other:?} document; this node keeps {NETWORK_FORMAT}, \
             {TRAJECTORIES_FORMAT} and {DROPOUT_FORMAT}"
        ),
    }
    if head.network_id != m.network_id {
        bail!("the release is for network {:?}", head.network_id);
    }
    let (id, round, issued) = (head.release_id, head.round_id, head.issued_at);
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

fn signed(r: &rusqlite::Row<'_>) -> rusqlite::Result<SignedRelease> {
    let document: Vec<u8> = r.get(0)?;
    let signature: String = r.get(1)?;
    let signature = protocol::keys::Signature::from_hex(&signature).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            "a stored signature is not 64 bytes of hex".into(),
        )
    })?;
    Ok(SignedRelease {
        document: protocol::keys::Bytes(document),
        signature,
    })
}

fn parse<L, S>(release: SignedRelease) -> Result<Stored<L, S>>
where
    NetworkDocument<L, S>: Kind,
{
    Ok(Stored {
        document: document::<NetworkDocument<L, S>>(&release.document.0)?,
        release,
    })
}

/// Kept releases whose id starts with ?1 (every release when NULL), newest first.
const NEWEST_FIRST: &str = "SELECT document, signature FROM benchmark_release
     WHERE ?1 IS NULL OR release_id LIKE ?1 || '%' ORDER BY issued_at DESC, rowid DESC";

/// Kept releases whose id starts with `id` (every release when `None`), newest first.
fn rows(conn: &Connection, id: Option<&str>) -> Result<Vec<SignedRelease>> {
    let mut stmt = conn.prepare(NEWEST_FIRST)?;
    let rows = stmt.query_map([id], signed)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn is<D: Kind>(release: &SignedRelease) -> bool {
    header(&release.document.0).is_ok_and(|h| h.format == D::FORMAT)
}

/// Every kept benchmark release, oldest first.
pub fn all(conn: &Connection) -> Result<Vec<Stored>> {
    let mut out: Vec<Stored> = rows(conn, None)?
        .into_iter()
        .filter(is::<NetworkRelease>)
        .map(parse)
        .collect::<Result<_>>()?;
    out.reverse();
    Ok(out)
}

/// The benchmark release whose id starts with `id`, or the latest when `id` is `None`.
pub fn get(conn: &Connection, id: Option<&str>) -> Result<Option<Stored>> {
    get_of(conn, id)
}

/// The release of one kind whose id starts with `id`, or the latest of that kind.
pub fn get_of<L, S>(conn: &Connection, id: Option<&str>) -> Result<Option<Stored<L, S>>>
where
    NetworkDocument<L, S>: Kind,
{
    let Some(id) = id else {
        // The latest: newest first, read until the first of this kind (support and the
        // import's alert check ask for it; older releases need not be read).
        let mut stmt = conn.prepare(NEWEST_FIRST)?;
        for release in stmt.query_map([None::<&str>], signed)? {
            let release = release?;
            if is::<NetworkDocument<L, S>>(&release) {
                return parse(release).map(Some);
            }
        }
        return Ok(None);
    };
    let matching: Vec<SignedRelease> = rows(conn, Some(id))?
        .into_iter()
        .filter(is::<NetworkDocument<L, S>>)
        .collect();
    if matching.len() > 1 {
        bail!(
            "{} releases start with {id:?}; give more of the id",
            matching.len()
        );
    }
    matching.into_iter().next().map(parse).transpose()
}

/// The release of any kind whose id starts with `id`, or the latest.
pub fn get_any(conn: &Connection, id: Option<&str>) -> Result<Option<Any>> {
    let matching = rows(conn, id)?;
    if let Some(id) = id
        && matching.len() > 1
    {
        bail!(
            "{} releases start with {id:?}; give more of the id",
            matching.len()
        );
    }
    let Some(release) = matching.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(if is::<TrajectoriesRelease>(&release) {
        Any::Trajectories(parse(release)?)
    } else if is::<DropoutRelease>(&release) {
        Any::Dropout(parse(release)?)
    } else {
        Any::Benchmark(parse(release)?)
    }))
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
    for row in stmt.query_map([after], signed)? {
        let release = row?;
        bytes += release.document.0.len() + 128;
        if out.len() == max || bytes > max_bytes {
            break;
        }
        out.push(release);
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
    /// `benchmark`, `trajectories` or `dropout-model`.
    pub kind: String,
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

/// The list of kept releases of every kind, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<Listing>> {
    #[derive(Deserialize)]
    struct Clinics {
        contributing: u64,
    }
    #[derive(Deserialize)]
    struct Privacy {
        rho: f64,
    }
    #[derive(Deserialize)]
    struct Domain {
        domain: String,
    }
    #[derive(Deserialize)]
    struct Line {
        format: String,
        release_id: String,
        round_id: String,
        issued_at: String,
        clinics: Clinics,
        privacy: Privacy,
        summary: Vec<Domain>,
    }
    let mut out = Vec::new();
    for release in rows(conn, None)?.into_iter().rev() {
        let l: Line = serde_json::from_slice(&release.document.0)
            .context("a kept release is not a well-formed document")?;
        out.push(Listing {
            kind: match l.format.as_str() {
                TRAJECTORIES_FORMAT => TrajectoriesRelease::NAME,
                DROPOUT_FORMAT => DropoutRelease::NAME,
                _ => NetworkRelease::NAME,
            }
            .into(),
            release_id: l.release_id,
            round_id: l.round_id,
            issued_at: l.issued_at,
            clinics: l.clinics.contributing,
            rho: l.privacy.rho,
            domains: l.summary.into_iter().map(|d| d.domain).collect(),
        });
    }
    Ok(out)
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
pub fn export_json(release: &SignedRelease) -> Result<Value> {
    let mut doc: Value = serde_json::from_slice(&release.document.0)?;
    doc["signature"] = json!({
        "algorithm": "Ed25519",
        "signed": "the transcript \"mbc-node/v1 release\" ‖ SHA-256 of the document as gossiped",
        "document_sha256": release.sha256(),
        "value": hex::encode(release.signature.0),
        "signer": "the document's aggregator key",
        "document_base64": base64::engine::general_purpose::STANDARD.encode(&release.document.0),
        "verify": "mbc-node benchmark verify FILE [--coordinator KEY]",
    });
    Ok(doc)
}

/// What an exported release proved to be ([`verify_export`]).
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Its id.
    pub release_id: String,
    /// Its network.
    pub network_id: String,
    /// When it was issued.
    pub issued_at: String,
    /// The key that signed it (hex): the document's aggregator, the network's coordinator.
    pub signer: String,
    /// SHA-256 of the signed bytes.
    pub document_sha256: String,
}

/// Checks an exported release (`export_json`) offline: its signed bytes verify under the key
/// the document names as its aggregator (and `coordinator`, when given, is that key), the
/// digest matches, and every figure in the file is the signed document's. Any difference is an
/// error saying what.
pub fn verify_export(bytes: &[u8], coordinator: Option<&NodeKey>) -> Result<Verified> {
    let mut file: Value = serde_json::from_slice(bytes).context("not a JSON document")?;
    let Some(signature) = file.as_object_mut().and_then(|o| o.remove("signature")) else {
        bail!("no signature: not a release exported by `mbc-node benchmark export`");
    };
    if signature["algorithm"] != "Ed25519" {
        bail!(
            "signature algorithm {} is not Ed25519",
            signature["algorithm"]
        );
    }
    let signed = signature["document_base64"]
        .as_str()
        .context("the file holds no copy of the signed bytes (signature.document_base64): export it again with this version")?;
    let signed = base64::engine::general_purpose::STANDARD
        .decode(signed)
        .context("signature.document_base64 is not base64")?;
    let value = signature["value"]
        .as_str()
        .and_then(protocol::keys::Signature::from_hex)
        .context("signature.value is not 64 bytes of hex")?;
    let document: Value =
        serde_json::from_slice(&signed).context("the signed bytes are not a JSON document")?;
    let signer = document["aggregator"]
        .as_str()
        .and_then(NodeKey::from_hex)
        .context("the signed document names no aggregator key")?;
    if let Some(pinned) = coordinator
        && *pinned != signer
    {
        bail!(
            "signed by {}, not by the coordinator {} given",
            hex::encode(signer.0),
            hex::encode(pinned.0)
        );
    }
    let release = SignedRelease {
        document: protocol::keys::Bytes(signed),
        signature: value,
    };
    release.verify(&signer).map_err(|_| {
        anyhow::anyhow!("the signature does not verify: the signed bytes were changed, or not signed by the key they name")
    })?;
    if signature["document_sha256"] != release.sha256().as_str() {
        bail!("signature.document_sha256 is not the SHA-256 of the signed bytes");
    }
    if file != document {
        let differs: Vec<String> = match (file.as_object(), document.as_object()) {
            (Some(a), Some(b)) => a
                .keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .map(String::clone)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            _ => vec!["(the whole document)".into()],
        };
        bail!(
            "the file's figures differ from what was signed: {}",
            differs.join(", ")
        );
    }
    let text = |k: &str| document[k].as_str().unwrap_or_default().to_owned();
    Ok(Verified {
        release_id: text("release_id"),
        network_id: text("network_id"),
        issued_at: text("issued_at"),
        signer: hex::encode(signer.0),
        document_sha256: release.sha256(),
    })
}

/// A share as people read it ("48.2 %"), "—" when there is none.
pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{:.1} %", 100.0 * x))
}

/// A figure to `digits` decimals, "—" when there is none (or it is not finite).
pub fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

/// ρ as people read it: at most four decimals (calibration gives 0.24999999999999992 for
/// 0.25).
pub fn rho_text(rho: f64) -> String {
    let s = format!("{rho:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The first lines of `benchmark show` for a release of any kind (`kind`: "Benchmark",
/// "Trajectories"): its provenance and privacy.
fn provenance<L, S>(kind: &str, s: &Stored<L, S>) -> String {
    let d = &s.document;
    let p = &d.privacy;
    format!(
        "{kind} release {}\n  network {}, round {}, issued {} (period {}), {}\n  \
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
        rho_text(p.rho),
        p.epsilon,
        p.delta,
        p.sigma,
        p.threshold.map_or_else(|| "—".into(), |t| t.to_string()),
        p.noise,
        d.aggregator.get(..12).unwrap_or_default(),
        &s.release.sha256()[..12],
    )
}

/// The human summary of `benchmark show`.
pub fn describe(s: &Stored) -> String {
    let d = &s.document;
    let mut out = provenance("Benchmark", s);
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
    parse(release).expect("a well-formed release")
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
        let read = |doc: &Value| document::<NetworkRelease>(&serde_json::to_vec(doc).unwrap());
        assert!(read(&doc).is_ok());
        doc["privacy"].as_object_mut().unwrap().remove("rho");
        let err = read(&doc).unwrap_err();
        assert!(
            format!("{err:#}").contains("not a well-formed") && format!("{err:#}").contains("rho"),
            "{err:#}"
        );
        doc["format"] = json!("mbc-node/release");
        let err = read(&doc).unwrap_err();
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
