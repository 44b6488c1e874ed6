//! `mbc-node demo`: the whole system on one machine, in one process. Synthetic data for a
//! coordinator and four clinics; five nodes initialised, filled and formed into a network
//! exactly as the CLI does it; five daemons on 127.0.0.1 (in this process, so nothing is left
//! running), one of them a new clinic with too few past patients for a neighbour pool of its
//! own; a secure benchmark round and a trajectories round; the signed releases on every node;
//! a summary, the HTML reports, and the new clinic's clinical support for one patient, taken
//! from the network's expected-trajectory model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use protocol::benchmark::document::NetworkRelease;
use protocol::roster::JoinRequest;
use tokio_util::sync::CancellationToken;

use super::rounds;
use crate::aggregate::{RoundStatus, StartRequest};
use crate::config::{DashboardConfig, NetworkConfig};
use crate::ledger::{self, Policy};
use crate::node::{self, Node};
use crate::store::Clinic;
use crate::{
    api, benchmark, clock, daemon, directory, import, matching, membership, support, synth,
};

/// Marks a directory as made by `demo`, so a later demo may replace it.
const DEMO_MARKER: &str = ".mbc-demo";
/// The demo network's id.
const NETWORK: &str = "mbc-demo";
/// Longest the demo waits for the network to form or a release to spread.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Working directory for the demo's data and nodes (replaced if it holds an earlier demo)
    #[arg(long, default_value = "mbc-demo", value_name = "DIR")]
    dir: PathBuf,
    /// Number of nodes: the coordinator and the clinics (each with its own data)
    #[arg(long, default_value_t = 5)]
    clinics: u32,
    /// ρ (zCDP) each clinic spends on the benchmark round
    #[arg(long, default_value_t = 0.25)]
    rho: f64,
    /// ρ (zCDP) each clinic spends on the trajectories round (0: no trajectories round)
    #[arg(long, default_value_t = 0.25)]
    trajectories_rho: f64,
    /// ρ (zCDP) each clinic spends on the dropout-model training in all, split over its
    /// iterations (0: no training)
    #[arg(long, default_value_t = 0.25)]
    dropout_rho: f64,
    /// Most iterations (rounds) of the dropout-model training
    #[arg(long, default_value_t = 5)]
    dropout_iterations: u32,
    /// Past patients of one more, new clinic that joins too small for a neighbour pool of its
    /// own (0: none)
    #[arg(long, default_value_t = 60)]
    new_clinic_patients: u32,
    /// Random seed of the synthetic data
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Patients per clinic: enough that the network's curves and distributions rise above
    /// the privacy noise
    #[arg(long, default_value_t = 1500)]
    patients_per_clinic: u32,
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(DEMO_MARKER).exists() {
            bail!(
                "{} exists and was not made by `mbc-node demo`; choose another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("couldn't clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "made by mbc-node demo; safe to delete\n",
    )?;
    Ok(())
}

/// Forms the network: the first node creates it, every other node sends a join request, is
/// admitted and joins with the roster it gets back.
fn form(nodes: &[(PathBuf, String)]) -> Result<()> {
    let stamp = || (clock::now_utc().timestamp(), clock::now());
    let (coord_dir, coord_name) = &nodes[0];
    let coord = Node::open(coord_dir)?;
    let clinics = nodes[1..]
        .iter()
        .map(|(dir, name)| Ok((Node::open(dir)?, name)))
        .collect::<Result<Vec<_>>>()?;
    let mut store = coord.store();
    let (t, n) = stamp();
    membership::create(
        store.conn_mut(),
        coord.signer(),
        NETWORK,
        coord_name,
        coord.config().network.advertised(),
        (t, &n),
    )?;
    for (clinic, name) in &clinics {
        let (t, n) = stamp();
        let advertised = clinic.config().network.advertised();
        let request = JoinRequest::new(NETWORK, clinic.signer(), name, advertised, t)?;
        let roster = membership::admit(store.conn_mut(), coord.signer(), &request, (t, &n))?;
        let me = clinic.signer().key();
        membership::join(clinic.store().conn_mut(), &me, &roster, None, &n)?;
    }
    // Clinics admitted early would learn the final roster from their peers within seconds;
    // hand it to them now so that no connection is refused on the way.
    let last = membership::load(store.conn())?
        .context("the network vanished")?
        .roster;
    for (clinic, _) in &clinics {
        membership::accept(clinic.store().conn_mut(), &last, &clock::now())?;
    }
    Ok(())
}

/// The new clinic's node directory under `nodes`.
const NEW_CLINIC: &str = "new-clinic";

/// `mbc-node init` of a demo node called `name` in `node`, listening on a free loopback port.
fn init_node(node: &Path, name: &str) -> Result<()> {
    let port = crate::net::port::free()?;
    Node::init(
        node,
        &Clinic {
            name: name.to_string(),
            country: Some("GB".into()),
            service_type: None,
        },
        NetworkConfig {
            listen: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
            ..NetworkConfig::default()
        },
        // Five demo nodes on one machine: each its own free port (in dashboard.addr).
        DashboardConfig {
            bind: "127.0.0.1:0".into(),
            ..DashboardConfig::default()
        },
        &node::default_key_dir(node),
    )?;
    Ok(())
}

/// A demo node called `name` in `node` holding the synthetic `clinic` written under `data`;
/// says what it imported.
fn clinic_node(node: &Path, name: &str, data: &Path, clinic: &synth::ClinicSummary) -> Result<()> {
    init_node(node, name)?;
    let files: Vec<PathBuf> = clinic.csv_files.iter().map(|f| data.join(f)).collect();
    let outcomes = Node::open(node)?.import_files(&files, import::Options::default())?;
    let rows: u64 = outcomes.iter().map(|o| o.rows).sum();
    println!("   {name:<40} {rows:>7} rows  {}", node.display());
    Ok(())
}

/// Polls `check` until it gives a value or [`PATIENCE`] runs out.
fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if started.elapsed() > PATIENCE {
            bail!("gave up waiting for {what} after {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `mbc-node demo`.
pub(crate) fn demo(a: DemoArgs) -> Result<()> {
    if a.clinics < 2 {
        bail!("--clinics must be at least 2 (a coordinator and a clinic)");
    }
    let dir = &a.dir;
    fresh_dir(dir)?;
    let data = dir.join("synth");
    println!(
        "1. Synthetic outcome data for {} clinics (seed {}) in {}",
        a.clinics,
        a.seed,
        data.display()
    );
    let summary = synth::generate_to_dir(
        &synth::Params {
            clinics: a.clinics,
            seed: a.seed,
            patients_per_clinic: Some(a.patients_per_clinic),
            ..synth::Params::default()
        },
        &data,
    )?;
    println!("2. One node per clinic: init, import (pseudonymised on the way in)");
    let mut nodes = Vec::new();
    for (i, clinic) in summary.clinics.iter().enumerate() {
        let node = dir.join("nodes").join(&clinic.id);
        let name = if i == 0 {
            format!("{} (coordinator)", clinic.name)
        } else {
            clinic.name.clone()
        };
        clinic_node(&node, &name, &data, clinic)?;
        nodes.push((node, name));
    }
    if a.new_clinic_patients > 0 {
        let data = dir.join("synth-new-clinic");
        let small = synth::generate_to_dir(
            &synth::Params {
                clinics: 1,
                seed: a.seed + 1000,
                patients_per_clinic: Some(a.new_clinic_patients),
                ..synth::Params::default()
            },
            &data,
        )?;
        let clinic = &small.clinics[0];
        let node = dir.join("nodes").join(NEW_CLINIC);
        let name = "New Clinic (small)".to_string();
        clinic_node(&node, &name, &data, clinic)?;
        nodes.push((node, name));
    }
    println!("3. Network {NETWORK:?}: the coordinator admits every clinic's signed join request");
    form(&nodes)?;

    daemon::init_logging(daemon::LogFormat::Human, "warn");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("couldn't start the async runtime")?;
    let cancel = CancellationToken::new();
    let handles = nodes
        .iter()
        .map(|(dir, _)| Ok(Arc::new(Node::open(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|node| runtime.spawn(daemon::serve(node, cancel.child_token(), false)))
        .collect();
    let result = run_round(&a, dir, &nodes);
    cancel.cancel();
    runtime.block_on(async {
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(Ok(Err(e))) => eprintln!("a node stopped with an error: {e:#}"),
                Err(_) => eprintln!("a node did not stop within 10 s"),
                _ => {}
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Starts a round of `kind` at ρ `rho` (a training of at most `iterations` rounds) on the
/// coordinator and waits until every node keeps its release; the round's status (a
/// training's last round).
fn round(
    kind: &str,
    rho: f64,
    iterations: Option<u32>,
    nodes: &[(PathBuf, String)],
) -> Result<RoundStatus> {
    let coord = &nodes[0].0;
    let request = StartRequest {
        kind: kind.into(),
        rho,
        threshold: None,
        deadline_s: None,
        dim: None,
        plain: false,
        domains: if iterations.is_some() {
            vec!["depression".into()]
        } else {
            vec!["depression".into(), "anxiety".into()]
        },
        iterations,
    };
    let status: RoundStatus = api::post(coord, "/v1/rounds", Some(&request))?;
    let id = status
        .training
        .as_ref()
        .map_or(&status.round_id, |t| &t.training_id)
        .clone();
    let status = rounds::wait(coord, &id, false)?;
    let Some(release_id) = status.release_id.clone() else {
        bail!(
            "the {kind} round aborted: {}",
            status
                .error
                .as_deref()
                .or(status.training.as_ref().and_then(|t| t.stopped.as_deref()))
                .unwrap_or("unknown")
        );
    };
    for (node, name) in nodes {
        until(
            &format!("{name} to verify and keep the {kind} release"),
            || {
                benchmark::get_any(Node::open(node).ok()?.store().conn(), Some(&release_id))
                    .ok()
                    .flatten()
            },
        )?;
    }
    Ok(status)
}

fn run_round(a: &DemoArgs, dir: &Path, nodes: &[(PathBuf, String)]) -> Result<()> {
    let n = nodes.len() as u64;
    let started = Instant::now();
    for (node, name) in nodes {
        until(&format!("{name} to connect to every peer"), || {
            let s: api::NodeStatus = api::get(node, "/v1/status").ok()?;
            (s.peers_connected == Some(n - 1)).then_some(())
        })?;
    }
    println!(
        "4. {n} nodes running on 127.0.0.1, all connected ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let coord = &nodes[0].0;
    println!(
        "5. Secure benchmark round, ρ = {} per clinic: each clinic checks its policy, charges its \
         ledger, adds its noise share and sends only a masked vector",
        a.rho
    );
    let status = round("benchmark", a.rho, None, nodes)?;
    let release_id = status.release_id.clone().unwrap_or_default();
    println!(
        "6. Release {release_id} signed by the coordinator, verified and kept by all {n} nodes \
         (round took {:.2} s)",
        status.elapsed_ms.unwrap_or(0) as f64 / 1000.0
    );
    let release = benchmark::get(Node::open(coord)?.store().conn(), Some(&release_id))?
        .context("release vanished")?;
    print_summary(&release.document);
    let html = dir.join("benchmark.html");
    std::fs::write(&html, benchmark::html(&release))?;
    let json_out = dir.join("benchmark.json");
    std::fs::write(
        &json_out,
        serde_json::to_vec_pretty(&benchmark::export_json(&release.release)?)?,
    )?;
    let mut reports = vec![("Benchmark report", html), ("Benchmark release", json_out)];
    if a.trajectories_rho > 0.0 {
        println!(
            "\n7. Trajectories round, ρ = {} per clinic: per domain, each intake band's scores \
             at sessions 1–16 and the sums of the expected-trajectory model",
            a.trajectories_rho
        );
        let status = round("trajectories", a.trajectories_rho, None, nodes)?;
        let id = status.release_id.clone().unwrap_or_default();
        let kept = benchmark::trajectories::latest(Node::open(coord)?.store().conn(), Some(&id))?
            .context("release vanished")?;
        println!(
            "   Release {id} verified and kept by all {n} nodes (round took {:.2} s):",
            status.elapsed_ms.unwrap_or(0) as f64 / 1000.0
        );
        for x in &kept.document.summary {
            let (shown, total) = x.released_points();
            let model = x.model.as_ref().map_or_else(
                || "no model (noise dominates)".to_string(),
                |m| {
                    format!(
                        "its expected-trajectory model on {:.0} observations",
                        m.observations
                    )
                },
            );
            println!(
                "   {:<12} {shown:>3} of {total} band × session points released; {model}",
                x.domain
            );
        }
        let html = dir.join("trajectories.html");
        std::fs::write(&html, benchmark::trajectories::html(&kept))?;
        reports.push(("Trajectories report", html));
    }
    if a.dropout_rho > 0.0 {
        println!(
            "\n8. Dropout-model training, ρ = {} per clinic in all over at most {} iterations: \
             each round carries the current model, each clinic returns its noised gradient and \
             curvature sums, the coordinator takes a Newton step",
            a.dropout_rho, a.dropout_iterations
        );
        let status = round(
            "dropout-model",
            a.dropout_rho,
            Some(a.dropout_iterations),
            nodes,
        )?;
        let id = status.release_id.clone().unwrap_or_default();
        let kept = benchmark::dropout::latest(Node::open(coord)?.store().conn(), Some(&id))?
            .context("release vanished")?;
        for m in &kept.document.summary {
            println!(
                "   Release {id} verified and kept by all {n} nodes: {} iteration(s) of ρ = {} \
                 ({}), {:.0} episodes, dropout rate {}, Brier {}",
                m.iterations.len(),
                benchmark::rho_text(m.rho_per_iteration),
                if m.converged {
                    "converged"
                } else {
                    "the cap reached"
                },
                m.episodes,
                rate(m.dropout_rate),
                m.brier.map_or("–".into(), |b| format!("{b:.3}"))
            );
        }
        let html = dir.join("dropout-model.html");
        std::fs::write(&html, benchmark::dropout::html(&kept))?;
        reports.push(("Dropout-model report", html));
    }
    if a.trajectories_rho > 0.0 && a.new_clinic_patients > 0 {
        let page = dir.join("support.html");
        new_clinic_support(&nodes[nodes.len() - 1], &page)?;
        reports.push(("New clinic's support page", page));
    }
    demo_match(&nodes[1])?;
    demo_directory(nodes)?;
    print_budgets(nodes)?;
    let dashboard = demo_account(&nodes[1], &dir.join("synth"))?;
    println!();
    for (what, path) in reports {
        println!("{what}: {}", path.display());
    }
    println!(
        "Try: mbc-node benchmark list --data-dir {}",
        nodes[1].0.display()
    );
    println!(
        "     mbc-node match --data-dir {} --phq9 18 --gad7 12 --prefer gender=female --window weekdays-pm",
        nodes[1].0.display()
    );
    println!(
        "     mbc-node directory search --data-dir {} --domain anxiety",
        nodes[nodes.len() - 1].0.display()
    );
    println!(
        "The dashboard: mbc-node run --data-dir {} and open the URL its ready line names; sign \
         in as {DEMO_USER:?} with the password {DEMO_PASSWORD:?} (a supervisor of its {} \
         therapists; `mbc-node users add` makes more accounts)",
        nodes[1].0.display(),
        dashboard
    );
    Ok(())
}

/// The dashboard account the demo makes on the first clinic (synthetic data only).
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo dashboard";

/// A supervisor of every therapist of `node`'s clinic (from its synthetic therapists.csv
/// under `synth`), so the demo's dashboard has a caseload to show, and that file as the
/// dashboard's staff list (therapists by their staff ids); how many therapists.
fn demo_account(node: &(PathBuf, String), synth: &Path) -> Result<usize> {
    let id = node
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let csv = synth.join(&id).join("therapists.csv");
    let text = std::fs::read_to_string(&csv)
        .with_context(|| format!("couldn't read {}", csv.display()))?;
    let therapists: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_owned)
        .collect();
    let n = Node::open(&node.0)?;
    crate::users::add(
        &n.store(),
        n.pseudonymiser(),
        DEMO_USER,
        crate::users::Role::Supervisor,
        &therapists,
        DEMO_PASSWORD,
        &crate::clock::now(),
    )?;
    let mut config = crate::config::Config::load(&node.0)?;
    config.dashboard.staff_list = Some(std::path::absolute(&csv)?.to_string_lossy().into_owned());
    std::fs::write(node.0.join(crate::config::CONFIG_FILE), config.to_toml())?;
    Ok(therapists.len())
}

/// ρ of each demo clinic's directory badges.
const DIRECTORY_RHO: f64 = 0.05;

/// The referral directory: the four synthetic clinics publish their entries with badges
/// (a contact route in their config first), their daemons gossip them, every node keeps all
/// four, and the last node searches it.
fn demo_directory(nodes: &[(PathBuf, String)]) -> Result<()> {
    let clinics = &nodes[1..nodes.len().min(5)];
    println!(
        "\n11. Referral directory: {} clinics publish a clinic-level entry with badges (ρ = \
         {DIRECTORY_RHO} each, charged first); every node keeps them all",
        clinics.len()
    );
    for (node, name) in clinics {
        let path = node.join(crate::config::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)?;
        let contact = format!("contact = \"referrals@{}.example\"", name.replace(' ', "-"));
        std::fs::write(&path, text.replacen("# contact = \"\"", &contact, 1))?;
        directory::publish(&Node::open(node)?, Some(DIRECTORY_RHO), clock::now_utc())?;
        let _ = api::post::<api::Gossiped>(node, "/v1/directory/publish", None::<&()>);
    }
    for (node, name) in nodes {
        until(&format!("{name} to keep every directory entry"), || {
            let n = Node::open(node).ok()?;
            let kept = directory::current(n.store().conn(), clock::now_ms()).ok()?;
            (kept.len() >= clinics.len()).then_some(())
        })?;
    }
    let (last, name) = &nodes[nodes.len() - 1];
    let q = protocol::directory::Query {
        domain: Some("anxiety".into()),
        accepting_only: true,
        ..Default::default()
    };
    let hits = directory::find(Node::open(last)?.store().conn(), &q, clock::now_ms())?;
    println!("   {name} searches for anxiety, taking new referrals:");
    for h in hits.iter().take(2) {
        println!("   {}: {}", h.name, h.reasons.join("; "));
    }
    Ok(())
}

/// A shortlist at a clinic for a new patient (PHQ-9 18, GAD-7 12, weekday afternoons): its
/// trade-off line and the levels offered (logged in the clinic's matching audit).
fn demo_match((node, name): &(PathBuf, String)) -> Result<()> {
    let node = Node::open(node)?;
    let ask = matching::Ask {
        patient: matching::Patient::Given {
            scores: vec![("PHQ-9".into(), 18.0), ("GAD-7".into(), 12.0)],
            groups: matching::Groups::default(),
        },
        urgent: false,
        preferences: vec![protocol::matching::Preference::parse(
            "gender=female",
            false,
        )?],
        windows: protocol::matching::Slot::parse("weekdays-pm")?,
        from: None,
        radius_km: None,
        payer: None,
        max_wait_days: Some(60),
        by: Some("demo".into()),
    };
    let m = matching::shortlist(&node, &ask, &crate::staff::StaffList::default())?;
    let levels: Vec<String> = m
        .shortlist
        .offers
        .iter()
        .map(|o| format!("{} ({})", o.therapist, o.level))
        .collect();
    println!(
        "\n10. Matching at {name}: a new patient (PHQ-9 18, GAD-7 12, weekday afternoons, \
         prefers a female therapist)\n   shortlist {}: {}\n   trade-off: {}",
        m.request_id,
        levels.join(", "),
        m.shortlist.trade_off
    );
    Ok(())
}

/// Clinical support at the new clinic for its first patient with two PHQ-9 scores: which
/// reference it took, and the page as HTML in `out`.
fn new_clinic_support((node, name): &(PathBuf, String), out: &Path) -> Result<()> {
    let node = Node::open(node)?;
    let found = (1..=200).find_map(|i| {
        let page = node
            .support(&support::Who::Patient(format!("C01-P{i:05}")))
            .ok()?;
        let k = page
            .instruments
            .iter()
            .position(|s| s.instrument == "PHQ-9" && s.observed.len() >= 2)?;
        Some((page, k))
    });
    let Some((page, k)) = found else {
        println!("\n9. {name}: no patient with two PHQ-9 scores to show");
        return Ok(());
    };
    let phq9 = &page.instruments[k];
    let r = &phq9.reference;
    println!(
        "\n9. Clinical support at {name}, patient {}: PHQ-9 expected course from the {}{}\n   \
         because {}{}",
        page.patient,
        r.name(),
        r.release_id
            .as_deref()
            .map_or_else(String::new, |id| format!(
                " of release {}",
                &id[..id.len().min(12)]
            )),
        r.why,
        page.dropout.as_ref().map_or_else(String::new, |d| format!(
            "\n   Dropout risk: {:.0} % (the network's patients: {}), from the network's \
             dropout model",
            100.0 * d.risk,
            rate(d.network_rate)
        ))
    );
    std::fs::write(out, support::html::html(&page, &[], &clock::now()))
        .with_context(|| format!("couldn't write {}", out.display()))?;
    Ok(())
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "suppressed".into(), |x| format!("{:.1} %", 100.0 * x))
}

fn print_summary(doc: &NetworkRelease) {
    println!(
        "\n   Network benchmark ({} clinics contributed):",
        doc.clinics.contributing
    );
    println!(
        "   {:<12} {:>9} {:>10} {:>10} {:>10}   therapist effects (middle 95 %)",
        "domain", "episodes", "recovery", "rel.impr.", "rel.det."
    );
    for x in &doc.summary {
        let spread = match x.therapist_variance {
            // A release writes an ICC it could not compute as null (read as NaN).
            Some(v) if !v.icc.is_nan() => format!(
                "±{:.2} points (τ² = {:.2}, noise SD {:.2}; ICC {:.3})",
                1.96 * v.tau2.max(0.0).sqrt(),
                v.tau2,
                x.tau2_noise_sd.unwrap_or(f64::NAN),
                v.icc
            ),
            _ => "suppressed (noise dominates)".into(),
        };
        println!(
            "   {:<12} {:>9.0} {:>10} {:>10} {:>10}   {spread}",
            x.domain,
            x.episodes,
            rate(x.recovery_rate),
            rate(x.reliable_improvement_rate),
            rate(x.reliable_deterioration_rate),
        );
    }
}

fn print_budgets(nodes: &[(PathBuf, String)]) -> Result<()> {
    println!("\n   Privacy budget per clinic (ρ-zCDP, this period):");
    for (node, name) in nodes {
        let node = Node::open(node)?;
        let policy = Policy::from_config(&node.config().privacy)?;
        let b = ledger::budget(node.store().conn(), &policy, clock::now_utc())?;
        println!(
            "   {name:<40} spent ρ = {:.3} of {:.3} (ε = {:.2} at δ = {})",
            b.current.rho_spent, policy.rho_per_period, b.current.epsilon_spent, policy.delta
        );
    }
    Ok(())
}
