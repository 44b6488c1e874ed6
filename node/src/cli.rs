//! The `mbc-node` command line: one binary, subcommands grouped by job (DESIGN.md §11).
//!
//! Every command takes `--data-dir` (or env `MBC_NODE_DIR`), prints for people by default and
//! JSON with `--json`. Exit codes: 0 success, 1 runtime failure (including bad input files),
//! 2 usage error.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

mod clinic;
mod demo;
mod directory;
mod matching;
mod network;
mod privacy;
mod rounds;
mod stats;
mod storage;
mod support;
mod users;

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
    Init(clinic::InitArgs),
    /// Import outcome data (CSV or FHIR R4 JSON), all or nothing per file
    ///
    /// Example: mbc-node import --data-dir /srv/mbc therapists.csv patients.csv assessments.csv
    Import(clinic::ImportArgs),
    /// Generate synthetic clinic data with planted therapist effects (DOMAIN.md §11)
    ///
    /// Example: mbc-node synth --out synth --clinics 3 --seed 1
    Synth(clinic::SynthArgs),
    /// Summarise what the node's store holds
    ///
    /// Example: mbc-node status --data-dir /srv/mbc
    Status(clinic::StatusArgs),
    /// Erase one patient's data on request (withdrawal of consent, a data-protection request)
    ///
    /// Without --yes, says what would be erased and changes nothing. Erased patients are
    /// skipped by later imports. Releases already made keep their (noised) contribution: see
    /// README.md, "Correcting and erasing data".
    ///
    /// Example: mbc-node erase --data-dir /srv/mbc --patient NHS-4857773456 --yes
    Erase(clinic::EraseArgs),
    /// Therapist × domain track records and NHS Talking Therapies rates
    ///
    /// Example: mbc-node stats --data-dir /srv/mbc --domain depression
    Stats(stats::StatsArgs),
    /// One patient's expected trajectory against similar past patients, each score's signal,
    /// safety signals, and what to consider when not on track (all local)
    ///
    /// Example: mbc-node support --data-dir /srv/mbc MRN0042
    Support(support::SupportArgs),
    /// The caseload: open episodes with their latest signal and open alerts; `alerts ack|resolve
    /// ID --by NAME` records what staff did
    ///
    /// Example: mbc-node alerts --data-dir /srv/mbc --signal red
    Alerts(support::AlertsArgs),
    /// A shortlist of 3–5 therapists for a patient: track record and preferences together,
    /// logistics first, with reasons; every shortlist is logged (`match record`, `match
    /// report`)
    ///
    /// Example: mbc-node match --data-dir /srv/mbc --phq9 18 --gad7 12 --prefer language=pl --window mon-pm
    Match(Box<matching::MatchArgs>),
    /// The network's referral directory of clinics: publish this clinic's entry, list and
    /// search the others' (clinic level only; a referral is a contact step between people)
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// The web dashboard's local accounts: add, list, disable, password (roles: clinician,
    /// supervisor, admin, coordinator)
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Write a self-contained HTML report (clinic summary, caterpillar plots, report cards)
    ///
    /// Example: mbc-node report --data-dir /srv/mbc --out report.html
    Report(stats::ReportArgs),
    /// Release the clinic's benchmark statistics with differential privacy, charged to the ledger
    ///
    /// The release is refused if it would exceed the clinic's privacy budget ([privacy] in
    /// config.toml). A release charged but not written (a crash) is written by the next
    /// `release` of the same kind, without a second charge.
    ///
    /// Example: mbc-node release --data-dir /srv/mbc --kind local-benchmark --rho 0.1 --out benchmark.json
    Release(privacy::ReleaseArgs),
    /// The privacy budget: spent and remaining, per period, in ρ (zCDP) and ε at δ
    ///
    /// Example: mbc-node budget --data-dir /srv/mbc
    Budget(privacy::BudgetArgs),
    /// Every release that left this clinic: what, to whom, when, at what privacy cost
    ///
    /// Example: mbc-node audit --data-dir /srv/mbc --json > audit-2026.json
    Audit(privacy::AuditArgs),
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
    Instruments(clinic::InstrumentsCommand),
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

/// The data directory of a command whose subcommands take it too (`--data-dir` optional in
/// clap, required here).
pub(crate) fn data_dir(d: Option<PathBuf>) -> Result<PathBuf> {
    anyhow::Context::context(d, "give --data-dir DIR (or set MBC_NODE_DIR)")
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => clinic::init(a),
        Command::Import(a) => clinic::import(a),
        Command::Synth(a) => clinic::synth(a),
        Command::Status(a) => clinic::status(a),
        Command::Erase(a) => clinic::erase(a),
        Command::Instruments(c) => clinic::instruments(c),
        Command::Stats(a) => stats::stats(a),
        Command::Report(a) => stats::report(a),
        Command::Support(a) => support::support(a),
        Command::Alerts(a) => support::alerts(a),
        Command::Match(a) => matching::match_cmd(*a),
        Command::Directory(c) => directory::directory_cmd(c),
        Command::Users(c) => users::users_cmd(c),
        Command::Release(a) => privacy::release(a),
        Command::Budget(a) => privacy::budget(a),
        Command::Audit(a) => privacy::audit(a),
        Command::Network(c) => network::network_cmd(c),
        Command::Run(a) => network::run_cmd(a),
        Command::Round(c) => rounds::round_cmd(c),
        Command::Benchmark(c) => rounds::benchmark_cmd(c),
        Command::Store(c) => storage::store_cmd(c),
        Command::Demo(a) => demo::demo(a),
    }
}
