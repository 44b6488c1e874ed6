//! Commands of the effectiveness engine: `stats` and `report`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::DataDir;
use crate::node::{Node, Reference};
use crate::stats::output::Filter;
use crate::stats::{Derived, Overrides};
use crate::{clock, report};

/// Overrides of `[stats]` in config.toml.
#[derive(Debug, Args)]
pub(super) struct EngineArgs {
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
    /// Clinical margin in points: label only effects whose interval clears ± M (default from
    /// config: 0)
    #[arg(long, value_name = "M")]
    clinical_margin: Option<f64>,
}

/// Which benchmark local track records are measured against.
#[derive(Debug, Args)]
pub(super) struct ReferenceArgs {
    /// Use this network benchmark release as the reference (default: the latest one kept)
    #[arg(long, value_name = "ID", conflicts_with = "local_reference")]
    release: Option<String>,
    /// Use the clinic's own data as the reference even when a network release is kept
    #[arg(long)]
    local_reference: bool,
}

#[derive(Debug, Args)]
pub(super) struct StatsArgs {
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
    #[command(flatten)]
    reveal: RevealArgs,
    /// Print JSON instead of a table
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (one row per therapist × domain) instead of a table
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
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
    #[command(flatten)]
    reveal: RevealArgs,
}

/// Showing the clinic's own staff ids instead of pseudonyms.
#[derive(Debug, Args)]
pub(super) struct RevealArgs {
    /// Show therapists by the clinic's staff ids listed in FILE (a CSV with a therapist_id
    /// column, such as the therapists.csv that was imported): for display here only, never
    /// stored or released
    #[arg(long, value_name = "FILE")]
    reveal: Option<PathBuf>,
}

impl RevealArgs {
    /// Fills `derived.revealed` from the display list, if one was given.
    fn apply(&self, node: &Node, derived: &mut Derived) -> Result<()> {
        if let Some(path) = &self.reveal {
            crate::staff::StaffList::read(node, path)?.reveal(derived);
        }
        Ok(())
    }
}

impl RevealArgs {
    /// The display list given (empty without one).
    pub(super) fn staff(&self, node: &Node) -> Result<crate::staff::StaffList> {
        match &self.reveal {
            Some(path) => crate::staff::StaffList::read(node, path),
            None => Ok(Default::default()),
        }
    }
}

/// The pseudonyms `who` may mean: the pseudonym of a local staff id, or stored pseudonyms
/// starting with `who` (at least 6 hex digits).
fn resolve_therapist(node: &Node, derived: &Derived, who: &str) -> Result<Vec<String>> {
    let own = node
        .pseudonymiser()
        .pseudonym(protocol::pseudonym::IdKind::Therapist, who);
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

/// `stats`.
pub(super) fn stats(a: StatsArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let mut derived = node.derive(&a.engine.overrides(), &a.reference.reference())?;
    a.reveal.apply(&node, &mut derived)?;
    if let Some(d) = &a.domain
        && !derived.domains.iter().any(|x| x.id == *d)
    {
        let known: Vec<&str> = derived.domains.iter().map(|x| x.id.as_str()).collect();
        bail!("unknown domain {d:?} (known: {})", known.join(", "));
    }
    let therapists = a
        .therapist
        .as_deref()
        .map(|t| resolve_therapist(&node, &derived, t))
        .transpose()?;
    let filter = Filter {
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

/// `report`.
pub(super) fn report(a: ReportArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let mut derived = node.derive(&a.engine.overrides(), &a.reference.reference())?;
    a.reveal.apply(&node, &mut derived)?;
    let only = a
        .therapist
        .as_deref()
        .map(|t| resolve_therapist(&node, &derived, t))
        .transpose()?;
    let html = report::html(
        &derived,
        only.as_ref().and_then(|v| v.first()).map(String::as_str),
        &clock::now(),
    );
    std::fs::write(&a.out, html).with_context(|| format!("couldn't write {}", a.out.display()))?;
    println!("wrote {}", a.out.display());
    Ok(())
}

impl EngineArgs {
    /// The overrides of `[stats]` these flags give.
    pub(super) fn overrides(&self) -> Overrides {
        Overrides {
            rule: self.rule.clone(),
            min_show: self.min_show,
            min_classify: self.min_classify,
            no_other_measure_clause: self.no_other_measure_clause,
            clinical_margin: self.clinical_margin,
        }
    }
}

impl ReferenceArgs {
    /// The reference these flags select.
    fn reference(&self) -> Reference {
        match (&self.release, self.local_reference) {
            (_, true) => Reference::Local,
            (Some(id), false) => Reference::Release(id.clone()),
            (None, false) => Reference::Latest,
        }
    }
}
