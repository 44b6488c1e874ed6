//! The `mbc-node` command line: one binary, subcommands grouped by job (DESIGN.md §11).
//!
//! Every command takes `--data-dir` (or env `MBC_NODE_DIR`), prints for people by default and
//! JSON with `--json`. Exit codes: 0 success, 1 runtime failure (including bad input files),
//! 2 usage error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{CONFIG_FILE, Config};
use crate::import::{self, Format};
use crate::store::{Clinic, Store, StoreKey};
use crate::{api, benchmark, keystore, ledger, registry, release, report, stats, status, synth};

mod demo;
mod network;
mod rounds;
mod storage;

/// A clinic's node in a privacy-preserving measurement-based-care network.
///
/// Raw patient data stays in this node's local store; only differentially private,
/// securely aggregated statistics ever leave it.
#[derive(Debug, Parser)]
#[command(name = "mbc-node", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new node: config, keys and an empty store
    ///
    /// Example: mbc-node init --data-dir /srv/mbc --name "Riverside Talking Therapies"
    Init(InitArgs),
    /// Import outcome data (CSV or FHIR R4 JSON), all or nothing per file
    ///
    /// Example: mbc-node import --data-dir /srv/mbc therapists.csv patients.csv assessments.csv
    Import(ImportArgs),
    /// Generate synthetic clinic data with planted therapist effects (DOMAIN.md §11)
    ///
    /// Example: mbc-node synth --out synth --clinics 3 --seed 1
    Synth(SynthArgs),
    /// Summarise what the node's store holds
    ///
    /// Example: mbc-node status --data-dir /srv/mbc
    Status(StatusArgs),
    /// Therapist × domain track records and NHS Talking Therapies rates
    ///
    /// Example: mbc-node stats --data-dir /srv/mbc --domain depression
    Stats(StatsArgs),
    /// Write a self-contained HTML report (clinic summary, caterpillar plots, report cards)
    ///
    /// Example: mbc-node report --data-dir /srv/mbc --out report.html
    Report(ReportArgs),
    /// Release the clinic's benchmark statistics with differential privacy, charged to the ledger
    ///
    /// The release is refused if it would exceed the clinic's privacy budget ([privacy] in
    /// config.toml). A release charged but not written (a crash) is written by the next
    /// `release` of the same kind, without a second charge.
    ///
    /// Example: mbc-node release --data-dir /srv/mbc --kind local-benchmark --rho 0.1 --out benchmark.json
    Release(ReleaseArgs),
    /// The privacy budget: spent and remaining, per period, in ρ (zCDP) and ε at δ
    ///
    /// Example: mbc-node budget --data-dir /srv/mbc
    Budget(BudgetArgs),
    /// Every release that left this clinic: what, to whom, when, at what privacy cost
    ///
    /// Example: mbc-node audit --data-dir /srv/mbc --json > audit-2026.json
    Audit(AuditArgs),
    /// Network membership: create, join, admit, remove, roster, peers
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Secure-aggregation rounds (coordinator): start, status
    #[command(subcommand)]
    Round(rounds::RoundCommand),
    /// Signed cross-site benchmark releases: list, show, export (JSON or HTML)
    #[command(subcommand)]
    Benchmark(rounds::BenchmarkCommand),
    /// Run the node: join the network, answer peers, serve the local API (until SIGTERM)
    ///
    /// Prints one JSON line ({"event":"ready",...}) on stdout when listening; logs go to stderr.
    ///
    /// Example: mbc-node run --data-dir /srv/mbc
    Run(network::RunArgs),
    /// Manage outcome instruments and problem domains
    #[command(subcommand)]
    Instruments(InstrumentsCommand),
    /// The encrypted store: read-only queries, encrypting a store from before encryption
    #[command(subcommand)]
    Store(storage::StoreCommand),
    /// The whole system on one machine: synthetic data for a coordinator and four clinics, five
    /// nodes on 127.0.0.1, a secure benchmark round, the signed release, its HTML report
    ///
    /// Everything runs in this process and stops when it ends; data stays in --dir.
    ///
    /// Example: mbc-node demo --dir mbc-demo
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DataDir {
    /// The node's data directory
    #[arg(long, env = "MBC_NODE_DIR", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
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
    /// Directory for the key that encrypts the store, kept apart from the data directory
    /// (default: DIR.keys beside it)
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
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
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Directory to write (one folder per clinic plus truth.json); must not exist or be empty
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    params: synth::Params,
    /// Print a JSON summary instead of text
    #[arg(long)]
    json: bool,
}

/// Overrides of `[stats]` in config.toml.
#[derive(Debug, Args)]
struct EngineArgs {
    /// Labelling rule (default from config: eb-interval)
    #[arg(long, value_parser = ["eb-interval", "kraus"])]
    rule: Option<String>,
    /// Patients needed to show a therapist × domain statistic (default from config: 10)
    #[arg(long)]
    min_show: Option<u64>,
    /// Patients needed to label it (default from config: 30)
    #[arg(long)]
    min_classify: Option<u64>,
    /// Turn off the NHS TT "other measure" clause for reliable improvement / deterioration
    #[arg(long)]
    no_other_measure_clause: bool,
}

/// Which benchmark local track records are measured against.
#[derive(Debug, Args)]
struct ReferenceArgs {
    /// Use this network benchmark release as the reference (default: the latest one kept)
    #[arg(long, value_name = "ID", conflicts_with = "local_reference")]
    release: Option<String>,
    /// Use the clinic's own data as the reference even when a network release is kept
    #[arg(long)]
    local_reference: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Only this domain (e.g. depression)
    #[arg(long)]
    domain: Option<String>,
    /// Only this therapist: the clinic's own staff id, or the first digits of the pseudonym
    #[arg(long)]
    therapist: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
    /// Print JSON instead of a table
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (one row per therapist × domain) instead of a table
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The HTML file to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Write only this therapist's own report card (staff id or pseudonym prefix)
    #[arg(long)]
    therapist: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    reference: ReferenceArgs,
}

#[derive(Debug, Args)]
struct ReleaseArgs {
    #[command(flatten)]
    dir: DataDir,
    /// What to release (local-benchmark: the clinic's benchmark vector, stand-alone)
    #[arg(long, value_parser = ["local-benchmark"])]
    kind: String,
    /// Privacy cost ρ (zero-concentrated DP); smaller is more private and noisier
    #[arg(long)]
    rho: f64,
    /// The release document (JSON) to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print the ledger entry as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BudgetArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON (every ledger entry, for an ethics board) instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum InstrumentsCommand {
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init(a),
        Command::Import(a) => import_cmd(a),
        Command::Synth(a) => synth_cmd(a),
        Command::Status(a) => status_cmd(&a.dir.data_dir, a.json),
        Command::Stats(a) => stats_cmd(a),
        Command::Report(a) => report_cmd(a),
        Command::Release(a) => release_cmd(a),
        Command::Budget(a) => budget_cmd(a),
        Command::Audit(a) => audit_cmd(a),
        Command::Instruments(InstrumentsCommand::Add { dir, file, json }) => {
            instruments_add(&dir.data_dir, &file, json)
        }
        Command::Instruments(InstrumentsCommand::List { dir, json }) => {
            instruments_list(&dir.data_dir, json)
        }
        Command::Network(c) => network::network_cmd(c),
        Command::Run(a) => network::run_cmd(a),
        Command::Round(c) => rounds::round_cmd(c),
        Command::Benchmark(c) => rounds::benchmark_cmd(c),
        Command::Store(c) => storage::store_cmd(c),
        Command::Demo(a) => demo::demo(a),
    }
}

/// The current time, UTC, to the second. Time enters the program here.
pub fn now_utc() -> chrono::DateTime<chrono::Utc> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// A time as RFC 3339 to the second, e.g. 2026-11-23T10:00:00Z.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The current time, UTC, RFC 3339 to the second.
pub fn now() -> String {
    rfc3339(now_utc())
}

/// Creates a node in `dir`. Returns its PeerId.
pub fn init_node(dir: &Path, clinic: Clinic) -> Result<String> {
    init_node_with(dir, clinic, crate::config::NetworkConfig::default())
}

/// Creates a node in `dir` with the given `[network]` settings and its store key in the default
/// key directory ([`default_key_dir`]). Returns its PeerId.
pub fn init_node_with(
    dir: &Path,
    clinic: Clinic,
    network: crate::config::NetworkConfig,
) -> Result<String> {
    init_node_keys(dir, clinic, network, &default_key_dir(dir))
}

/// Where `init` keeps the store key of the node in `dir` unless told: `DIR.keys` beside it, so
/// that a copy of the data directory does not carry the key that opens its store.
pub fn default_key_dir(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "mbc-node".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.keys"))
}

/// Name of the store key file in the key directory.
pub const STORE_KEY_FILE: &str = "store.key";

/// The store key file of the node in `dir` in `key_dir`, as an absolute path: refused inside
/// the data directory (the key must be kept apart from the data it opens) or if it exists.
pub(crate) fn store_key_path(dir: &Path, key_dir: &Path) -> Result<PathBuf> {
    let key_dir = std::path::absolute(key_dir)
        .with_context(|| format!("couldn't resolve the key directory {}", key_dir.display()))?;
    if key_dir.starts_with(std::path::absolute(dir)?) {
        bail!(
            "the key directory {} is inside the data directory: the store key must be kept \
             apart from the data it opens",
            key_dir.display()
        );
    }
    let store_key = key_dir.join(STORE_KEY_FILE);
    if store_key.exists() {
        bail!(
            "{} already holds a store key (another node's?); give each node its own --key-dir",
            store_key.display()
        );
    }
    Ok(store_key)
}

/// Creates the directory of `path` (0700) and a fresh store key in `path` (0600).
pub(crate) fn create_store_key(path: &Path) -> Result<StoreKey> {
    let key_dir = path.parent().context("a store key path has a directory")?;
    std::fs::create_dir_all(key_dir)
        .with_context(|| format!("couldn't create key directory {}", key_dir.display()))?;
    std::fs::set_permissions(key_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("couldn't restrict permissions of {}", key_dir.display()))?;
    keystore::create_key_file(path)?;
    Ok(StoreKey::new(keystore::read_key_file(path)?))
}

/// Creates a node in `dir`, its store encrypted under a fresh key in `key_dir` (created 0700
/// if missing). Returns its PeerId.
pub fn init_node_keys(
    dir: &Path,
    clinic: Clinic,
    network: crate::config::NetworkConfig,
    key_dir: &Path,
) -> Result<String> {
    for existing in [CONFIG_FILE, "local.db", "identity.key", "pseudonym.key"] {
        if dir.join(existing).exists() {
            bail!(
                "{} already holds an mbc-node (found {existing}); refusing to overwrite it",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("couldn't create data directory {}", dir.display()))?;
    // The directory holds pseudonymised health data and keys: owner only.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("couldn't restrict permissions of {}", dir.display()))?;
    let mut config = Config::new(
        clinic.name.clone(),
        clinic.country.clone(),
        clinic.service_type.clone(),
    );
    config.network = network;
    let store_key = store_key_path(dir, key_dir)?;
    config.keys.store_key_file = Some(store_key.to_string_lossy().into_owned());
    let created = || -> Result<String> {
        let key = create_store_key(&store_key)?;
        let identity = dir.join(&config.keys.identity_key_file);
        keystore::create_key_file(&identity)?;
        keystore::create_key_file(&dir.join(&config.keys.pseudonym_secret_file))?;
        Store::create(&config.store_path(dir), &clinic, &now(), Some(&key))?;
        // The config is written last: its presence marks a complete node.
        std::fs::write(dir.join(CONFIG_FILE), config.to_toml())
            .with_context(|| format!("couldn't write {}", dir.join(CONFIG_FILE).display()))?;
        Ok(keystore::peer_id(keystore::read_key_file(&identity)?)?.to_string())
    };
    created().inspect_err(|_| {
        for f in [
            CONFIG_FILE,
            "local.db",
            "local.db-wal",
            "local.db-shm",
            "identity.key",
            "pseudonym.key",
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let _ = std::fs::remove_file(&store_key);
    })
}

fn init(a: InitArgs) -> Result<()> {
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
    let key_dir = a.key_dir.unwrap_or_else(|| default_key_dir(dir));
    let peer_id = init_node_keys(dir, clinic.clone(), network, &key_dir)?;
    if a.json {
        let out = serde_json::json!({"data_dir": dir, "clinic": clinic.name, "peer_id": peer_id});
        println!("{out}");
    } else {
        println!("created node for {:?} in {}", clinic.name, dir.display());
        println!("peer id: {peer_id}");
        println!(
            "store key: {} (keep it apart from the data and back it up separately: without \
             it the store cannot be opened)",
            key_dir.join(STORE_KEY_FILE).display()
        );
        println!("next: mbc-node import --data-dir {} FILE...", dir.display());
    }
    Ok(())
}

/// Opens the node in `dir`: its config and store (with its key when it is encrypted). A data
/// directory that other users can enter or read is refused (it holds the store and the keys).
pub fn open_node(dir: &Path) -> Result<(Config, Store)> {
    check_private(dir)?;
    let config = Config::load(dir)?;
    let key =
        config
            .store_key_path(dir)
            .map(|path| {
                keystore::read_key_file(&path).map(StoreKey::new).with_context(|| {
                format!(
                    "the store of {} is encrypted with the key in {} ([keys] store_key_file): \
                     restore that file from its backup",
                    dir.display(),
                    path.display()
                )
            })
            })
            .transpose()?;
    let store = Store::open(&config.store_path(dir), key.as_ref())?;
    Ok((config, store))
}

/// Refuses a data directory whose mode lets other users read or enter it.
fn check_private(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(()); // Missing: Config::load says so, with the hint to run init.
    }
    keystore::check_owner_only(
        dir,
        "the data directory (pseudonymised health records and the node's keys)",
        0o700,
    )
}

/// Imports `files` into the node in `dir`, each in its own transaction, stopping at the first
/// bad file.
pub fn import_files(
    dir: &Path,
    files: &[PathBuf],
    options: import::Options,
) -> Result<Vec<import::FileOutcome>> {
    let (config, mut store) = open_node(dir)?;
    let pseudo = keystore::pseudonymiser(&dir.join(&config.keys.pseudonym_secret_file))?;
    let mut outcomes = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let outcome = import::import_file(&mut store, &pseudo, file, options, &now()).map_err(|e| {
            let note = match (i, files.len() - i - 1) {
                (0, 0) => "nothing was imported".to_string(),
                (done, 0) => format!("nothing of this file was imported; the {done} file(s) before it were"),
                (0, rest) => format!("nothing was imported; the {rest} file(s) after it were not attempted"),
                (done, rest) => format!(
                    "nothing of this file was imported; the {done} file(s) before it were, the {rest} after it were not attempted"
                ),
            };
            e.context(note)
        })?;
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn import_cmd(a: ImportArgs) -> Result<()> {
    let options = import::Options {
        format: a.format,
        dry_run: a.dry_run,
        progress: !a.json,
    };
    let outcomes = import_files(&a.dir.data_dir, &a.files, options)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
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
                println!(
                    "{}: {status} ({}, {} rows): {new}{unchanged}",
                    o.file, o.kind, o.rows
                );
            }
        }
    }
    if a.dry_run {
        println!("dry run: nothing was changed");
    }
    Ok(())
}

fn synth_cmd(a: SynthArgs) -> Result<()> {
    let summary = synth::generate_to_dir(&a.params, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// Runs the engine on the node in `dir` with config `[stats]` plus `overrides`, against the
/// network reference `reference` selects.
fn derive_node(
    dir: &Path,
    overrides: &EngineArgs,
    reference: &ReferenceArgs,
) -> Result<(Config, Store, stats::Derived)> {
    let (config, mut store) = open_node(dir)?;
    let mut settings = engine_settings(&config, &store, overrides)?;
    if !reference.local_reference {
        let release = benchmark::get(store.conn(), reference.release.as_deref())?;
        if release.is_none() && reference.release.is_some() {
            bail!(
                "no benchmark release {:?} on this node (see `mbc-node benchmark list`)",
                reference.release
            );
        }
        settings.reference = release.as_ref().map(benchmark::reference);
    }
    let derived = stats::derive(&mut store, settings, &now())?;
    Ok((config, store, derived))
}

/// The engine settings of `[stats]` with command-line overrides.
fn engine_settings(
    config: &Config,
    store: &Store,
    overrides: &EngineArgs,
) -> Result<protocol::analysis::Settings> {
    let mut sc = config.stats.clone();
    if let Some(rule) = &overrides.rule {
        sc.rule = rule.clone();
    }
    sc.min_n_show = overrides.min_show.unwrap_or(sc.min_n_show);
    sc.min_n_classify = overrides.min_classify.unwrap_or(sc.min_n_classify);
    sc.other_measure_clause &= !overrides.no_other_measure_clause;
    stats::settings(&sc, store.registry()?.instruments())
}

fn release_cmd(a: ReleaseArgs) -> Result<()> {
    release::check_rho_arg(a.rho)?;
    let (config, mut store) = open_node(&a.dir.data_dir)?;
    let settings = engine_settings(&config, &store, &a.engine)?;
    let done = release::local_benchmark(&mut store, &config, settings, a.rho, &a.out, now_utc())?;
    let e = &done.charged.entry;
    if a.json {
        println!("{}", serde_json::to_string_pretty(e)?);
        return Ok(());
    }
    if done.resumed {
        println!(
            "Release {} was charged on {} but not written; wrote it now (no new charge).",
            e.release_id, e.charged_at
        );
    }
    println!(
        "Wrote {} ({}, release {}).\nCharged ρ = {:.6} (ε = {:.3} at δ = {:e}) to the {} budget. \
         Noise σ = {:.4e} on a per-patient sensitivity of {:.4e}.",
        a.out.display(),
        e.kind,
        e.release_id,
        e.rho,
        e.epsilon,
        e.delta,
        e.period,
        e.sigma,
        e.sensitivity
    );
    Ok(())
}

fn budget_cmd(a: BudgetArgs) -> Result<()> {
    let (config, store) = open_node(&a.dir.data_dir)?;
    let policy = ledger::Policy::from_config(&config.privacy)?;
    let b = ledger::budget(store.conn(), &policy, now_utc())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&b)?);
        return Ok(());
    }
    let c = &b.current;
    println!(
        "Privacy budget for {} (ρ-zCDP; ε at δ = {:e}); renews {}",
        c.period, b.delta, b.renews
    );
    println!(
        "  spent      ρ {:>10.6}  (ε {:.3}) in {} release(s)",
        c.rho_spent, c.epsilon_spent, c.releases
    );
    println!("  remaining  ρ {:>10.6}", c.rho_remaining);
    println!(
        "  budget     ρ {:>10.6}  (ε {:.3})",
        c.rho_limit, c.epsilon_limit
    );
    println!("  largest release allowed: ρ {}", b.max_rho_per_release);
    let earlier: Vec<_> = b.periods.iter().filter(|p| p.period != c.period).collect();
    if !earlier.is_empty() {
        println!("Other periods:");
        for p in earlier {
            println!(
                "  {:<8} ρ {:.6} (ε {:.3}) in {} release(s)",
                p.period, p.rho_spent, p.epsilon_spent, p.releases
            );
        }
    }
    Ok(())
}

fn audit_cmd(a: AuditArgs) -> Result<()> {
    let (_, store) = open_node(&a.dir.data_dir)?;
    let entries = ledger::entries(store.conn())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("No release has left this node.");
        return Ok(());
    }
    println!(
        "{:<32}  {:<15}  {:<8}  {:>9}  {:>7}  {:<7}  {:<20}  to",
        "release", "kind", "period", "ρ", "ε", "status", "charged"
    );
    for e in &entries {
        println!(
            "{:<32}  {:<15}  {:<8}  {:>9.6}  {:>7.3}  {:<7}  {:<20}  {}",
            e.release_id, e.kind, e.period, e.rho, e.epsilon, e.status, e.charged_at, e.counterpart
        );
    }
    println!(
        "ε at δ = {:e}; `mbc-node audit --json` has bounds, noise and layout of each.",
        entries[0].delta
    );
    Ok(())
}

/// The pseudonyms `who` may mean: the pseudonym of a local staff id, or stored pseudonyms
/// starting with `who` (at least 6 hex digits).
fn resolve_therapist(
    dir: &Path,
    config: &Config,
    derived: &stats::Derived,
    who: &str,
) -> Result<Vec<String>> {
    let pseudo = keystore::pseudonymiser(&dir.join(&config.keys.pseudonym_secret_file))?;
    let own = pseudo.pseudonym(protocol::pseudonym::IdKind::Therapist, who);
    if derived.therapists.contains(&own) {
        return Ok(vec![own]);
    }
    let prefix = who.trim().to_ascii_lowercase();
    let matches: Vec<String> = if prefix.len() >= 6 && prefix.chars().all(|c| c.is_ascii_hexdigit())
    {
        derived
            .therapists
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    match matches.len() {
        0 => bail!(
            "no therapist {who:?} in this store (give the clinic's staff id or at least 6 digits of the pseudonym)"
        ),
        1 => Ok(matches),
        n => bail!("{n} therapists' pseudonyms start with {prefix:?}; give more digits"),
    }
}

fn stats_cmd(a: StatsArgs) -> Result<()> {
    let dir = &a.dir.data_dir;
    let (config, _, derived) = derive_node(dir, &a.engine, &a.reference)?;
    if let Some(d) = &a.domain
        && !derived.domains.iter().any(|x| x.id == *d)
    {
        let known: Vec<&str> = derived.domains.iter().map(|x| x.id.as_str()).collect();
        bail!("unknown domain {d:?} (known: {})", known.join(", "));
    }
    let therapists = a
        .therapist
        .as_deref()
        .map(|t| resolve_therapist(dir, &config, &derived, t))
        .transpose()?;
    let filter = stats::output::Filter {
        domain: a.domain.clone(),
        therapists,
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&derived.to_json(&filter))?
        );
    } else if a.csv {
        print!("{}", derived.to_csv(&filter)?);
    } else {
        print!("{}", derived.to_text(&filter));
    }
    Ok(())
}

fn report_cmd(a: ReportArgs) -> Result<()> {
    let dir = &a.dir.data_dir;
    let (config, _, derived) = derive_node(dir, &a.engine, &a.reference)?;
    let only = a
        .therapist
        .as_deref()
        .map(|t| resolve_therapist(dir, &config, &derived, t))
        .transpose()?;
    let html = report::html(
        &derived,
        only.as_ref().and_then(|v| v.first()).map(String::as_str),
        &now(),
    );
    std::fs::write(&a.out, html).with_context(|| format!("couldn't write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

fn status_cmd(dir: &Path, json: bool) -> Result<()> {
    let (_, store) = open_node(dir)?;
    // The running node adds its network state; a stopped one gives the store summary alone.
    let live = api::call(dir, "GET", "/v1/status", None);
    if json {
        match live {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
            Err(_) => println!(
                "{}",
                serde_json::to_string_pretty(&status::summary(&store)?)?
            ),
        }
        return Ok(());
    }
    print!("{}", status::summary(&store)?);
    match live {
        Ok(v) => {
            let net = &v["network"];
            println!(
                "node: running {} s, peer id {}",
                v["uptime_secs"],
                v["peer_id"].as_str().unwrap_or("")
            );
            println!(
                "network: {} · roster version {} · {} of {} peers connected{}",
                net["network_id"].as_str().unwrap_or("-"),
                net["roster_version"],
                v["peers_connected"],
                v["peers_total"],
                if net["is_coordinator"] == true {
                    " · coordinator"
                } else {
                    ""
                }
            );
        }
        Err(_) => match crate::network::load(store.conn())? {
            Some(m) => println!(
                "node: not running · network {} · roster version {}",
                m.network_id, m.roster.roster.version
            ),
            None => println!("node: not running · not in a network"),
        },
    }
    Ok(())
}

fn instruments_add(dir: &Path, file: &Path, json: bool) -> Result<()> {
    let (_, mut store) = open_node(dir)?;
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
    let (_, store) = open_node(dir)?;
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
