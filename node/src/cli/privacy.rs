//! Commands of the privacy layer: `release`, `budget`, `audit`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::DataDir;
use super::stats::EngineArgs;
use crate::node::Node;
use crate::{clock, ledger, release};

#[derive(Debug, Args)]
pub(super) struct ReleaseArgs {
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
pub(super) struct BudgetArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON (every ledger entry, for an ethics board) instead of a table
    #[arg(long)]
    json: bool,
}

/// `release`.
pub(super) fn release(a: ReleaseArgs) -> Result<()> {
    release::check_rho_arg(a.rho)?;
    let node = Node::open(&a.dir.data_dir)?;
    let settings = node.engine_settings(&a.engine.overrides())?;
    let done = release::local_benchmark(&node, settings, a.rho, &a.out, clock::now_utc())?;
    let e = &done.charged.entry;
    if a.json {
        let mut out = serde_json::to_value(e)?;
        out["resumed"] = done.resumed.into();
        out["written_to"] = a.out.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if done.resumed {
        println!(
            "Release {} (ρ = {:.6}) was charged on {} for {} but never written: it is written now to \
             {} (no new charge), and the audit records where it went.",
            e.release_id,
            e.rho,
            e.charged_at,
            e.counterpart.trim_start_matches("file:"),
            a.out.display()
        );
        if (e.rho - a.rho).abs() > f64::EPSILON * a.rho.max(1.0) {
            println!(
                "The release you asked for (ρ = {}) was not made: a charged release is always \
                 written first. Run `mbc-node release` again to make it.",
                a.rho
            );
        }
    }
    println!(
        "Wrote {} ({}, release {}).\n{} ρ = {:.6} (ε = {:.3} at δ = {:e}) to the {} budget. \
         Noise σ = {:.4e} on a per-patient sensitivity of {:.4e}.",
        a.out.display(),
        e.kind,
        e.release_id,
        if done.resumed {
            "It was charged"
        } else {
            "Charged"
        },
        e.rho,
        e.epsilon,
        e.delta,
        e.period,
        e.sigma,
        e.sensitivity
    );
    Ok(())
}

/// `budget`.
pub(super) fn budget(a: BudgetArgs) -> Result<()> {
    let node = Node::open_read_only(&a.dir.data_dir)?;
    let policy = ledger::Policy::from_config(&node.config().privacy)?;
    let b = ledger::budget(node.store().conn(), &policy, clock::now_utc())?;
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

/// `audit`.
pub(super) fn audit(a: AuditArgs) -> Result<()> {
    let entries = ledger::entries(Node::open_read_only(&a.dir.data_dir)?.store().conn())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "releases": entries }))?
        );
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
            e.release_id,
            e.kind,
            e.period,
            e.rho,
            e.epsilon,
            e.status,
            e.charged_at,
            e.sent_to
                .as_deref()
                .map_or(e.counterpart.clone(), |to| format!(
                    "{to} (charged for {})",
                    e.counterpart
                ))
        );
    }
    println!(
        "ε at δ = {:e}; `mbc-node audit --json` has bounds, noise and layout of each.",
        entries[0].delta
    );
    Ok(())
}
