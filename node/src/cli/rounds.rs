//! `mbc-node round …` (the coordinator runs rounds through its daemon's local API) and
//! `mbc-node benchmark …` (every node reads the releases it keeps).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::DataDir;
use crate::aggregate::{RoundStatus, RoundStep, StartRequest};
use crate::node::Node;
use crate::{api, benchmark};

#[derive(Debug, Subcommand)]
pub(super) enum RoundCommand {
    /// Start a secure-aggregation round (coordinator; the node must be running)
    ///
    /// Every member is invited; each decides by its own policy and budget. Prints the round id
    /// and returns, or with --wait follows the round to its end and prints the result.
    ///
    /// Example: mbc-node round start --data-dir /srv/coord --kind benchmark --rho 0.25 --wait
    Start(StartArgs),
    /// A round's progress: step, participants, dropouts (default: the latest round)
    ///
    /// Example: mbc-node round status --data-dir /srv/coord
    Status {
        #[command(flatten)]
        dir: DataDir,
        /// Round id (a prefix will do)
        id: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(super) struct StartArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Round kind: "benchmark" (the cross-site benchmark), "trajectories" (the network's score
    /// percentiles by session and its expected-trajectory model, for clinical support),
    /// "dropout-model" (a logistic model of dropout risk from intake, trained by one round per
    /// iteration) or "bench" (synthetic vectors, for measuring the protocol)
    #[arg(long, default_value = "benchmark")]
    kind: String,
    /// ρ (zCDP) of the release, at patient level; each clinic's ledger is charged this (for a
    /// dropout-model training: the whole training's, split evenly over its iterations, each
    /// charged before its round's vector leaves)
    #[arg(long, default_value_t = 0.0)]
    rho: f64,
    /// Dropout-model training: most iterations (rounds); it stops sooner once converged
    #[arg(long, value_name = "N")]
    iterations: Option<u32>,
    /// Reconstruction threshold t: fewer surviving clinics abort the round (default ⌈2n/3⌉)
    #[arg(long)]
    threshold: Option<u32>,
    /// Deadline of each step, seconds; a clinic that misses it is a dropout
    #[arg(long, value_name = "SECONDS")]
    deadline: Option<f64>,
    /// Benchmark and trajectories rounds: a domain to include (repeat for several; default
    /// every domain). Dropout-model: the one domain whose intake gives the features (default
    /// depression)
    #[arg(long = "domain", value_name = "ID")]
    domains: Vec<String>,
    /// Bench rounds: vector length
    #[arg(long)]
    dim: Option<u32>,
    /// Bench rounds: send vectors unmasked in one request (the baseline)
    #[arg(long)]
    plain: bool,
    /// Follow the round to its end
    #[arg(long)]
    wait: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum BenchmarkCommand {
    /// The signed network releases this node keeps (benchmark, trajectories, dropout model)
    ///
    /// Example: mbc-node benchmark list --data-dir /srv/mbc
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One release: provenance, privacy, per-domain figures (default: the latest)
    ///
    /// Example: mbc-node benchmark show --data-dir /srv/mbc
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// Release id (a prefix will do)
        id: Option<String>,
        /// Print the whole document as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write a release as JSON (with its signature) or as an HTML report with plots, or every
    /// release as a static site to publish
    ///
    /// The format follows the file name: .html or .htm for the report, anything else JSON.
    /// `--site DIR` writes index.html and, per release, its report and signed JSON.
    ///
    /// Example: mbc-node benchmark export --data-dir /srv/mbc 3f2a --out benchmark.html
    /// Example: mbc-node benchmark export --data-dir /srv/coord --site /var/www/benchmarks
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// Release id (a prefix will do)
        #[arg(required_unless_present = "site")]
        id: Option<String>,
        /// Output file
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "site",
            conflicts_with = "site"
        )]
        out: Option<PathBuf>,
        /// Write every release as a static site into DIR instead
        #[arg(long, value_name = "DIR", conflicts_with = "id")]
        site: Option<PathBuf>,
    },
    /// Check an exported release's signature offline: the signed bytes verify under their
    /// coordinator's key and every figure in the file is theirs
    ///
    /// Example: mbc-node benchmark verify release.json --coordinator 5b1e…
    Verify {
        /// The exported JSON (`benchmark export ID --out FILE.json`, or a site's releases/ID.json)
        file: PathBuf,
        /// The network coordinator's key (hex) the release must be signed by
        #[arg(long, value_name = "KEY", conflicts_with = "data_dir")]
        coordinator: Option<String>,
        /// Take the coordinator's key from this node's network instead
        #[arg(long, env = "MBC_NODE_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Runs `mbc-node round …`.
pub(super) fn round_cmd(c: RoundCommand) -> Result<()> {
    match c {
        RoundCommand::Start(a) => start(&a),
        RoundCommand::Status { dir, id, json } => {
            let path = format!("/v1/rounds/{}", id.as_deref().unwrap_or("latest"));
            print_status(&api::get(&dir.data_dir, &path)?, json)
        }
    }
}

fn start(a: &StartArgs) -> Result<()> {
    let request = StartRequest {
        kind: a.kind.clone(),
        rho: a.rho,
        threshold: a.threshold,
        deadline_s: a.deadline,
        dim: a.dim,
        plain: a.plain,
        domains: a.domains.clone(),
        iterations: a.iterations,
    };
    let dir = &a.dir.data_dir;
    let status: RoundStatus = api::post(dir, "/v1/rounds", Some(&request))?;
    // A training is followed by its id: each iteration is a round of its own.
    let id = status
        .training
        .as_ref()
        .map_or(&status.round_id, |t| &t.training_id)
        .clone();
    if !a.wait {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            let what = match &status.training {
                Some(t) => format!(
                    "Training {id} (dropout-model, up to {} iterations, ρ = {} in all; its \
                     first round {})",
                    t.iterations, t.total_rho, status.round_id
                ),
                None => format!("Round {id} ({})", status.kind),
            };
            println!(
                "{what} started with {} invited clinics, threshold {}.\n\
                 Follow it with: mbc-node round status --data-dir {} {id}",
                status.participants.len(),
                status.threshold,
                dir.display()
            );
        }
        return Ok(());
    }
    let status = wait(dir, &id, a.json)?;
    print_status(&status, a.json)?;
    if status.step == RoundStep::Aborted && status.release_id.is_none() {
        bail!(
            "round {id} aborted, nothing released: {}",
            status.error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// Polls the round's status until it ends, printing each step change (unless `quiet`).
pub(crate) fn wait(dir: &Path, id: &str, quiet: bool) -> Result<RoundStatus> {
    let started = Instant::now();
    let mut last = None;
    loop {
        let status: RoundStatus = api::get(dir, &format!("/v1/rounds/{id}"))?;
        let now = (status.round_id.clone(), status.step);
        if last.as_ref() != Some(&now) && !quiet {
            let iteration = status
                .training
                .as_ref()
                .map(|t| format!(" (iteration {} of at most {})", t.iteration, t.iterations))
                .unwrap_or_default();
            eprintln!(
                "  [{:>6.1} s] round {}{iteration}: {}",
                started.elapsed().as_secs_f64(),
                status.round_id,
                status.step
            );
        }
        if status.finished() {
            return Ok(status);
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_status(status: &RoundStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    println!(
        "Round {} ({}): {}{}\n  ρ = {}, threshold {}, vector length {}{}",
        status.round_id,
        status.kind,
        status.step,
        status
            .elapsed_ms
            .map(|ms| format!(" in {:.2} s", ms as f64 / 1000.0))
            .unwrap_or_default(),
        status.rho,
        status.threshold,
        status.dim,
        status
            .error
            .as_deref()
            .map(|e| format!("\n  aborted: {e}"))
            .unwrap_or_default(),
    );
    for p in &status.participants {
        println!(
            "  {:>3} {:<28} {:<9} {}",
            p.index,
            p.name,
            p.reached.to_string(),
            p.dropped
                .as_deref()
                .map(|d| format!("dropped at {d}"))
                .unwrap_or_default()
        );
    }
    if let Some(t) = &status.training {
        println!(
            "  training {}: iteration {} of at most {}, ρ = {} in all declared{}{}",
            t.training_id,
            t.iteration,
            t.iterations,
            t.total_rho,
            if t.converged { ", converged" } else { "" },
            if t.finished { "" } else { ", running" }
        );
        for i in &t.history {
            match &i.error {
                Some(e) => println!("    {:>2}  round {}  aborted: {e}", i.iteration, i.round_id),
                None => println!(
                    "    {:>2}  round {}  {} clinics  moved the predictions {:.2e} (noise {:.2e})  \
                     Brier {}",
                    i.iteration,
                    i.round_id,
                    i.contributing,
                    i.shift.unwrap_or(f64::NAN),
                    i.shift_noise.unwrap_or(f64::NAN),
                    i.brier.map_or("–".into(), |b| format!("{b:.4}"))
                ),
            }
        }
        if let Some(why) = &t.stopped {
            println!("  stopped early: {why}");
        }
    }
    if let Some(r) = &status.release_id {
        println!("  release {r} (mbc-node benchmark show {r})");
    }
    if let Some(exact) = status.exact {
        println!("  decoded sum exact: {exact}");
    }
    Ok(())
}

/// Runs `mbc-node benchmark …`.
pub(super) fn benchmark_cmd(c: BenchmarkCommand) -> Result<()> {
    match c {
        BenchmarkCommand::List { dir, json } => {
            let list = benchmark::list(Node::open_read_only(&dir.data_dir)?.store().conn())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "releases": list }))?
                );
            } else if list.is_empty() {
                println!("No releases yet (they arrive when the coordinator runs a round).");
            } else {
                println!(
                    "{:<34} {:<13} {:<20} {:>7} {:>6}  domains",
                    "release", "kind", "issued", "clinics", "ρ"
                );
                for l in list {
                    println!(
                        "{:<34} {:<13} {:<20} {:>7} {:>6}  {}",
                        l.release_id,
                        l.kind,
                        l.issued_at,
                        l.clinics,
                        benchmark::rho_text(l.rho),
                        l.domains.join(", ")
                    );
                }
            }
            Ok(())
        }
        BenchmarkCommand::Show { dir, id, json } => {
            let s = find(
                Node::open_read_only(&dir.data_dir)?.store().conn(),
                id.as_deref(),
            )?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&benchmark::export_json(s.release())?)?
                );
            } else {
                match &s {
                    benchmark::Any::Benchmark(s) => print!("{}", benchmark::describe(s)),
                    benchmark::Any::Trajectories(s) => {
                        print!("{}", benchmark::trajectories::describe(s))
                    }
                    benchmark::Any::Dropout(s) => print!("{}", benchmark::dropout::describe(s)),
                }
            }
            Ok(())
        }
        BenchmarkCommand::Export {
            dir,
            id,
            out,
            site: Some(site),
        } => {
            debug_assert!(id.is_none() && out.is_none());
            let node = Node::open_read_only(&dir.data_dir)?;
            let membership = crate::membership::load(node.store().conn())?
                .context("this node is not in a network: it keeps no releases")?;
            let n = benchmark::site::export_site(
                node.store().conn(),
                &site,
                &membership.network_id,
                &hex::encode(membership.coordinator.0),
            )?;
            println!(
                "{}",
                json!({"releases": n, "site": site.display().to_string(), "index": site.join("index.html").display().to_string()})
            );
            Ok(())
        }
        BenchmarkCommand::Export {
            dir,
            id,
            out,
            site: None,
        } => {
            let (Some(id), Some(out)) = (id, out) else {
                bail!("give a release id and --out FILE, or --site DIR");
            };
            let s = find(
                Node::open_read_only(&dir.data_dir)?.store().conn(),
                Some(&id),
            )?;
            let html = out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
            let bytes = if html {
                s.html().into_bytes()
            } else {
                serde_json::to_vec_pretty(&benchmark::export_json(s.release())?)?
            };
            std::fs::write(&out, bytes)
                .with_context(|| format!("couldn't write {}", out.display()))?;
            println!(
                "{}",
                json!({"release_id": s.id(), "out": out.display().to_string(), "format": if html { "html" } else { "json" }})
            );
            Ok(())
        }
        BenchmarkCommand::Verify {
            file,
            coordinator,
            data_dir,
            json,
        } => {
            let pinned = match (coordinator, data_dir) {
                (Some(hex_key), _) => Some(
                    protocol::keys::NodeKey::from_hex(&hex_key)
                        .context("--coordinator: expected the key as 64 hex digits")?,
                ),
                (None, Some(dir)) => Some(
                    crate::membership::load(Node::open_read_only(&dir)?.store().conn())?
                        .context("that node is not in a network: give --coordinator KEY")?
                        .coordinator,
                ),
                (None, None) => None,
            };
            let bytes = std::fs::read(&file)
                .with_context(|| format!("couldn't read {}", file.display()))?;
            let v = benchmark::verify_export(&bytes, pinned.as_ref())
                .with_context(|| format!("{}: not a valid signed release", file.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"valid": true, "pinned": pinned.is_some(), "release": v})
                    )?
                );
            } else {
                println!(
                    "{}: valid. Release {} of network {}, issued {}, signed by {}{}.",
                    file.display(),
                    v.release_id,
                    v.network_id,
                    v.issued_at,
                    v.signer,
                    if pinned.is_some() {
                        " (the coordinator given)"
                    } else {
                        "; check that this is your network's coordinator key (--coordinator KEY pins it)"
                    }
                );
            }
            Ok(())
        }
    }
}

fn find(conn: &rusqlite::Connection, id: Option<&str>) -> Result<benchmark::Any> {
    benchmark::get_any(conn, id)?.with_context(|| match id {
        Some(id) => format!("no release {id:?} on this node (see `mbc-node benchmark list`)"),
        None => "no releases on this node yet".into(),
    })
}
