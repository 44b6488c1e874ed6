//! Commands of a clinic's own data: `init`, `import`, `synth`, `status`, `instruments`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::DataDir;
use crate::api::{self, NodeStatus};
use crate::import::{self, Format};
use crate::node::{self, Node};
use crate::store::Clinic;
use crate::{erasure, registry, status, synth};

#[derive(Debug, Args)]
pub(super) struct InitArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The clinic's display name
    #[arg(long)]
    name: String,
    /// ISO 3166 country code, e.g. GB
    #[arg(long)]
    country: Option<String>,
    /// Kind of service, e.g. "NHS Talking Therapies"
    #[arg(long)]
    service_type: Option<String>,
    /// Address the daemon listens on (repeatable; default /ip4/0.0.0.0/tcp/7400)
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Local API port on 127.0.0.1 (default 0: any free port)
    #[arg(long)]
    api_port: Option<u16>,
    /// Address of the web dashboard `run` serves: a loopback address, or "off" (default
    /// 127.0.0.1:7480)
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<String>,
    /// Directory for the key that encrypts the store, kept apart from the data directory
    /// (default: DIR.keys beside it)
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ImportArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Files to import, in order; each is imported whole or not at all
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Read every file as this format instead of detecting it from the content
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Validate only: report what would be imported, change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary instead of text
    #[arg(long)]
    json: bool,
    /// CSV: the text encoding when it is not UTF-8 (Excel's "CSV" on Windows is windows-1252)
    #[arg(long, value_enum, value_name = "ENCODING")]
    encoding: Option<import::TextEncoding>,
    /// CSV: the field separator, instead of detecting ',' ';' or tab from the header
    #[arg(long, value_name = "CHAR", value_parser = import::delimiter)]
    delimiter: Option<u8>,
    /// CSV: dates written day first or month first instead of YYYY-MM-DD (never guessed)
    #[arg(long, value_enum, value_name = "LAYOUT")]
    date_format: Option<import::DateFormat>,
    /// Your system's own column names, coded values and instrument codes, and the CSV settings
    /// it always needs, in a TOML file (README.md, "Mapping a clinic's export"); the flags
    /// above override its [csv] settings
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// The files correct what is stored: a score or a session's date, attendance or kind that
    /// differs from the store replaces it (each replacement is recorded, see `store query`),
    /// instead of the file being refused
    #[arg(long)]
    corrections: bool,
}

#[derive(Debug, Args)]
pub(super) struct SynthArgs {
    /// Directory to write (one folder per clinic plus truth.json); must not exist or be empty
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    params: synth::Params,
    /// Print a JSON summary instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct EraseArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The patient as the clinic's exports name them (CSV patient_id, FHIR Patient id)
    #[arg(long, value_name = "ID")]
    patient: String,
    /// Erase for good; without it nothing is changed
    #[arg(long)]
    yes: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum InstrumentsCommand {
    /// Add instruments and domains defined in a TOML file (see README, "Defining instruments")
    ///
    /// Example: mbc-node instruments add --data-dir /srv/mbc wsas.toml
    Add {
        #[command(flatten)]
        dir: DataDir,
        /// The TOML definitions file
        file: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List instruments and domains
    ///
    /// Example: mbc-node instruments list --data-dir /srv/mbc
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// `init`.
pub(super) fn init(a: InitArgs) -> Result<()> {
    let dir = &a.dir.data_dir;
    let clinic = Clinic {
        name: a.name,
        country: a.country,
        service_type: a.service_type,
    };
    let mut network = crate::config::NetworkConfig::default();
    if !a.listen.is_empty() {
        for l in &a.listen {
            l.parse::<libp2p::Multiaddr>()
                .with_context(|| format!("--listen {l:?} is not a multiaddress"))?;
        }
        network.listen = a.listen;
    }
    network.api_port = a.api_port.unwrap_or(0);
    let key_dir = a.key_dir.unwrap_or_else(|| node::default_key_dir(dir));
    let mut dashboard = crate::config::DashboardConfig::default();
    if let Some(bind) = a.dashboard {
        dashboard.bind = bind;
        dashboard.address().context("--dashboard")?;
    }
    let peer_id = Node::init(dir, &clinic, network, dashboard, &key_dir)?;
    if a.json {
        let out = serde_json::json!({"data_dir": dir, "clinic": clinic.name, "peer_id": peer_id});
        println!("{out}");
    } else {
        println!("created node for {:?} in {}", clinic.name, dir.display());
        println!("peer id: {peer_id}");
        println!(
            "store key: {} (keep it apart from the data and back it up separately: without \
             it the store cannot be opened)",
            key_dir.join(node::STORE_KEY_FILE).display()
        );
        println!("next: mbc-node import --data-dir {} FILE...", dir.display());
    }
    Ok(())
}

/// `import`.
pub(super) fn import(a: ImportArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let mapping = match &a.mapping {
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("couldn't read the mapping file {file}"))?;
            let registry = node.store().registry()?;
            Some(import::read_mapping(&file, &text, &registry)?)
        }
        None => None,
    };
    let options = import::Options {
        format: a.format,
        dry_run: a.dry_run,
        progress: !a.json,
        episode_gap_weeks: node.config().import.episode_gap_weeks,
        encoding: a.encoding,
        delimiter: a.delimiter,
        date_format: a.date_format,
        mapping,
        corrections: a.corrections,
    };
    let outcomes = node.import_files(&a.files, options)?;
    let alerts = if a.dry_run || outcomes.iter().all(|o| o.status != "imported") {
        None
    } else {
        Some(node.raise_alerts()?)
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "files": outcomes, "alerts": alerts })
            )?
        );
        return Ok(());
    }
    for o in &outcomes {
        let c = &o.counts;
        match o.status {
            "already_imported" => println!(
                "{}: already imported on {} (same content); nothing to do",
                o.file,
                o.previously_imported_at.as_deref().unwrap_or("?")
            ),
            status => {
                let parts: Vec<String> = [
                    (c.assessments, "assessments"),
                    (c.sessions, "sessions"),
                    (c.episodes, "episodes"),
                    (c.patients, "patients"),
                    (c.therapists, "therapists"),
                ]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
                let new = if parts.is_empty() {
                    "no new records".into()
                } else {
                    format!("new: {}", parts.join(", "))
                };
                let unchanged = match c.assessments_unchanged {
                    0 => String::new(),
                    n => format!("; {n} assessments were already stored"),
                };
                let corrected = match c.corrected {
                    0 => String::new(),
                    n => format!("; {n} stored values corrected"),
                };
                let what = if o.kind == "fhir" {
                    "resources"
                } else {
                    "rows"
                };
                println!(
                    "{}: {status} ({}, {} {what}): {new}{unchanged}{corrected}",
                    o.file, o.kind, o.rows
                );
                for line in &o.corrections {
                    println!("  corrected: {line}");
                }
                for (why, n) in &o.skipped {
                    println!("  {n} {why}");
                }
            }
        }
    }
    if a.dry_run {
        println!("dry run: nothing was changed");
    }
    if let Some(r) = alerts {
        print_raised(&r);
    }
    Ok(())
}

/// What an import's alert check did, in a line or two.
fn print_raised(r: &crate::alerts::Raised) {
    if r.assessed == 0 {
        return;
    }
    println!(
        "clinical support: {} open episodes with new scores assessed; alerts raised: {} safety, \
         {} not on track ({} marked persistent)",
        r.assessed, r.safety, r.not_on_track, r.persistent
    );
    for s in r.switch.iter().filter(|s| !s.on) {
        println!("  not-on-track alerts for {} are {}", s.instrument, s.why);
    }
    if r.red_while_off > 0 {
        println!(
            "  {} red signals raised no alert (alerts off); `mbc-node alerts` shows them",
            r.red_while_off
        );
    }
}

/// `erase`.
pub(super) fn erase(a: EraseArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let erased = erasure::erase_patient(
        &mut node.store(),
        node.pseudonymiser(),
        &a.patient,
        a.yes,
        &crate::clock::now(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&erased)?);
        return Ok(());
    }
    let what = format!(
        "{} episodes, {} sessions, {} assessments, {} recorded corrections",
        erased.episodes, erased.sessions, erased.assessments, erased.corrections
    );
    if a.yes {
        println!(
            "erased patient {}: {what}. Later imports skip their records; track records are \
             recomputed at the next stats or report. Releases already made are not changed \
             (README.md, \"Correcting and erasing data\").",
            a.patient
        );
    } else {
        println!(
            "would erase patient {}: {what}. Nothing was changed: run again with --yes to \
             erase (it cannot be undone).",
            a.patient
        );
    }
    Ok(())
}

/// `synth`.
pub(super) fn synth(a: SynthArgs) -> Result<()> {
    let summary = synth::generate_to_dir(&a.params, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// `status`: the store summary, and the node's network state (live when it runs).
pub(super) fn status(a: StatusArgs) -> Result<()> {
    let dir = &a.dir.data_dir;
    let node = Node::open_read_only(dir)?;
    // The running node adds its live state; a stopped one gives what the store knows, in the
    // same shape.
    let status = match api::get::<NodeStatus>(dir, "/v1/status") {
        Ok(live) => live,
        Err(_) => status::node_status(&node)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", status.store);
    let network = status.network.as_ref();
    match (status.uptime_secs, network) {
        (Some(uptime), _) => {
            println!("node: running {uptime} s, peer id {}", status.peer_id);
            println!(
                "network: {} · roster version {} · {} of {} peers connected{}",
                network.map_or("-", |n| n.network_id.as_str()),
                network.map_or(0, |n| n.roster_version),
                status.peers_connected.unwrap_or(0),
                status.peers_total.unwrap_or(0),
                if network.is_some_and(|n| n.is_coordinator) {
                    " · coordinator"
                } else {
                    ""
                }
            );
        }
        (None, Some(n)) => println!(
            "node: not running · network {} · roster version {}",
            n.network_id, n.roster_version
        ),
        (None, None) => println!("node: not running · not in a network"),
    }
    Ok(())
}

fn instruments_add(dir: &Path, file: &Path, json: bool) -> Result<()> {
    let node = Node::open(dir)?;
    let mut store = node.store();
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("couldn't read {}", file.display()))?;
    let outcome = registry::add_from_toml(store.conn_mut(), &file.display().to_string(), &text)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        println!(
            "instruments added: {}; domains added: {}; unchanged: {}",
            list_or_none(&outcome.instruments_added),
            list_or_none(&outcome.domains_added),
            list_or_none(&outcome.unchanged)
        );
    }
    Ok(())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn instruments_list(dir: &Path, json: bool) -> Result<()> {
    let node = Node::open_read_only(dir)?;
    let store = node.store();
    let reg = store.registry()?;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
    if json {
        let instruments: Vec<_> = reg
            .instruments()
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i.id, "name": i.name, "min": i.min, "max": i.max,
                    "direction": i.direction.as_str(), "caseness_cutoff": i.caseness_cutoff,
                    "reliable_change": i.reliable_change(), "reliability": i.reliability,
                    "loinc_total": i.loinc_total, "items": i.items.len(), "builtin": i.builtin,
                })
            })
            .collect();
        let domains: Vec<_> = reg
            .domains()
            .iter()
            .map(|d| {
                serde_json::json!({"id": d.id, "name": d.name, "instrument": d.instrument_id,
                "transform": d.transform.as_str(), "elevated_threshold": d.elevated_threshold})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"instruments": instruments, "domains": domains})
            )?
        );
        return Ok(());
    }
    println!(
        "{:<10} {:<9} {:>8} {:>8} {:>6} {:<10} name",
        "instrument", "range", "caseness", "reliable", "items", "loinc"
    );
    for i in reg.instruments() {
        println!(
            "{:<10} {:<9} {:>8} {:>8} {:>6} {:<10} {}{}",
            i.id,
            format!("{}-{}", i.min, i.max),
            opt(i.caseness_cutoff),
            opt(i.reliable_change()),
            i.items.len(),
            i.loinc_total.as_deref().unwrap_or("-"),
            i.name,
            if i.builtin { "" } else { " (clinic-defined)" }
        );
    }
    println!();
    println!(
        "{:<14} {:<10} {:<9} name",
        "domain", "instrument", "elevated"
    );
    for d in reg.domains() {
        println!(
            "{:<14} {:<10} {:<9} {}",
            d.id,
            d.instrument_id,
            opt(d.elevated_threshold),
            d.name
        );
    }
    Ok(())
}

/// `instruments add | list`.
pub(super) fn instruments(c: InstrumentsCommand) -> Result<()> {
    match c {
        InstrumentsCommand::Add { dir, file, json } => instruments_add(&dir.data_dir, &file, json),
        InstrumentsCommand::List { dir, json } => instruments_list(&dir.data_dir, json),
    }
}
