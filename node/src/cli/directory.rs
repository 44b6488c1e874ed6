//! `mbc-node directory publish | list | search`: the network's referral directory of clinics
//! (node/src/directory.rs). Clinic level only; nothing about a patient or a therapist.

use anyhow::Result;
use clap::{Args, Subcommand};
use protocol::directory::{Entry, Query};
use protocol::matching::Delivery;
use serde_json::json;

use super::DataDir;
use crate::node::Node;
use crate::{api, clock, directory, release};

#[derive(Debug, Subcommand)]
pub(super) enum DirectoryCommand {
    /// Sign and publish this clinic's entry (from [directory] in config.toml and the
    /// therapists' profiles), optionally with badges from a DP release charged to the ledger
    ///
    /// The entry is kept at once and gossiped by the running node (or pulled by the others
    /// when it next runs). Publish again within 30 days: older entries are stale.
    ///
    /// Example: mbc-node directory publish --data-dir /srv/mbc --badges --rho 0.05
    Publish(PublishArgs),
    /// Every clinic's current entry this node keeps
    ///
    /// Example: mbc-node directory list --data-dir /srv/mbc
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Also entries no longer shown (stale, or of a clinic no longer on the roster), and why
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Clinics to refer a patient to, with reasons: by domain, language and delivery mode
    ///
    /// Example: mbc-node directory search --data-dir /srv/mbc --domain depression --language pl
    Search(SearchArgs),
}

#[derive(Debug, Args)]
pub(super) struct PublishArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Add clinic-level badges per domain (finished courses, reliable improvement) from a
    /// differentially private release of ρ --rho, charged to the ledger first
    #[arg(long, requires = "rho")]
    badges: bool,
    /// ρ (zCDP) of the badges' release
    #[arg(long, requires = "badges")]
    rho: Option<f64>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct SearchArgs {
    #[command(flatten)]
    dir: DataDir,
    /// A problem domain a service treats (e.g. depression)
    #[arg(long)]
    domain: Option<String>,
    /// A language therapy is offered in (e.g. pl)
    #[arg(long)]
    language: Option<String>,
    /// A delivery mode: in-person or video
    #[arg(long)]
    delivery: Option<Delivery>,
    /// Only clinics taking new referrals
    #[arg(long)]
    accepting: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Runs `mbc-node directory …`.
pub(super) fn directory_cmd(c: DirectoryCommand) -> Result<()> {
    match c {
        DirectoryCommand::Publish(a) => publish(&a),
        DirectoryCommand::List { dir, all, json } => list(&dir, all, json),
        DirectoryCommand::Search(a) => search(&a),
    }
}

fn publish(a: &PublishArgs) -> Result<()> {
    if let Some(rho) = a.rho {
        release::check_rho_arg(rho)?;
    }
    let node = Node::open(&a.dir.data_dir)?;
    let done = directory::publish(&node, a.rho, clock::now_utc())?;
    drop(node);
    // The running node gossips it; without one, peers pull it when the node next runs.
    let gossiped =
        api::post::<api::Gossiped>(&a.dir.data_dir, "/v1/directory/publish", None::<&()>);
    let (sent, note) = match &gossiped {
        Ok(g) if g.published => (true, None),
        Ok(g) => (
            false,
            Some(format!(
                "kept, not gossiped now ({}): the other nodes pull it",
                g.note.as_deref().unwrap_or("no peers")
            )),
        ),
        Err(_) => (
            false,
            Some(
                "kept; the node is not running: the others pull it once `mbc-node run` is up"
                    .to_string(),
            ),
        ),
    };
    if a.json {
        let out = json!({
            "id": done.signed.sha256(),
            "entry": done.entry,
            "badges_release": done.charged,
            "resumed": done.resumed,
            "gossiped": sent,
            "note": note,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if done.resumed {
        println!(
            "An entry charged earlier but never kept was published now (no new charge); run \
             `directory publish` again for a new one."
        );
    }
    println!(
        "Published the directory entry {}:\n",
        &done.signed.sha256()[..16]
    );
    print_entry(&done.entry);
    if let Some(e) = &done.charged {
        println!(
            "\nBadges: release {} charged ρ = {:.6} (ε = {:.3} at δ = {:e}) to the {} budget.",
            e.release_id, e.rho, e.epsilon, e.delta, e.period
        );
        if done.entry.badges.is_empty() {
            println!(
                "No domain had {} finished courses after noise: no badge is shown (the budget \
                 was spent).",
                protocol::directory::badges::MIN_FINISHED
            );
        }
    }
    match note {
        None => println!("\nGossiped to the network."),
        Some(n) => println!("\n{}", capitalise(&n)),
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn print_entry(e: &Entry) {
    println!("  {}", e.name);
    for s in &e.services {
        println!("  service     {} ({})", s.name, s.domains.join(", "));
    }
    let or_none = |v: Vec<&str>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    println!(
        "  languages   {}",
        or_none(e.languages.iter().map(String::as_str).collect())
    );
    println!(
        "  therapies   {}",
        or_none(e.modalities.iter().map(String::as_str).collect())
    );
    println!(
        "  delivery    {}",
        or_none(e.delivery.iter().map(|d| d.as_str()).collect())
    );
    if !e.eligibility.is_empty() {
        println!("  eligibility {}", e.eligibility);
    }
    println!(
        "  {}; wait {}",
        if e.accepting_new {
            "taking new referrals"
        } else {
            "not taking new referrals"
        },
        e.wait.as_str()
    );
    println!("  refer via   {}", e.contact);
    let day = |ms: u64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d").to_string())
    };
    println!(
        "  issued      {} (shown until {}; the clinic publishes again to stay listed)",
        day(e.issued_at_ms),
        day(e.issued_at_ms + protocol::directory::STALE_AFTER_MS)
    );
    for b in &e.badges {
        println!(
            "  badge       {}: reliable improvement about {:.0} % of about {:.0} finished courses \
             (± {:.1} percentage points, differentially private)",
            b.domain,
            100.0 * b.reliable_improvement,
            b.finished.max(0.0),
            100.0 * 1.96 * b.noise_sd
        );
    }
}

fn list(dir: &DataDir, all: bool, json: bool) -> Result<()> {
    let node = Node::open(&dir.data_dir)?;
    let kept = directory::kept(node.store().conn(), clock::now_ms())?;
    let shown: Vec<_> = kept.iter().filter(|k| all || k.verdict.is_ok()).collect();
    if json {
        let out: Vec<_> = shown
            .iter()
            .map(|k| match &k.verdict {
                Ok(e) => json!({"id": k.id, "received_at": k.received_at, "entry": e}),
                Err(why) => {
                    json!({"id": k.id, "received_at": k.received_at, "hidden": why.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if shown.is_empty() {
        println!(
            "No directory entries yet: clinics publish theirs with `mbc-node directory publish`; \
             a running node receives them."
        );
        return Ok(());
    }
    for (i, k) in shown.iter().enumerate() {
        if i > 0 {
            println!();
        }
        match &k.verdict {
            Ok(e) => print_entry(e),
            Err(why) => println!("  (entry {}: not shown: {why})", &k.id[..16]),
        }
    }
    Ok(())
}

fn search(a: &SearchArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let q = Query {
        domain: a.domain.clone(),
        language: a.language.clone(),
        delivery: a.delivery,
        accepting_only: a.accepting,
    };
    let hits = directory::find(node.store().conn(), &q, clock::now_ms())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(());
    }
    if hits.is_empty() {
        println!(
            "No clinic in the directory answers this search ({} entries kept; `mbc-node \
             directory list` shows them).",
            directory::current(node.store().conn(), clock::now_ms())?.len()
        );
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        println!("{}. {}", i + 1, h.name);
        for r in &h.reasons {
            println!("   - {r}");
        }
        println!("   refer via: {}", h.contact);
    }
    println!(
        "\nA referral is a contact step between people: no patient data goes through the \
         network."
    );
    Ok(())
}
