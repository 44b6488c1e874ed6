//! `match`, `match record`, `match report`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::stats::RevealArgs;
use super::{DataDir, data_dir};
use crate::matching::request::{GroupsFile, RequestFile, ask};
use crate::matching::{self, Ask, Choice, MatchReport, Matched};
use crate::node::Node;

/// Request flags: who, preferences, logistics. Everything a request file can say.
const REQUEST_FLAGS: [&str; 18] = [
    "patient",
    "score",
    "phq9",
    "gad7",
    "core10",
    "urgent",
    "prefer",
    "require",
    "window",
    "from",
    "near",
    "radius_km",
    "payer",
    "max_wait_days",
    "sex",
    "age",
    "ethnicity",
    "deprivation_decile",
];

#[derive(Debug, Args)]
pub(super) struct MatchArgs {
    #[command(subcommand)]
    command: Option<MatchCommand>,
    /// The node's data directory
    #[arg(long, env = "MBC_NODE_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A stored patient (the id as the clinic's exports name them): intake from their latest
    /// episode
    #[arg(long, value_name = "ID", conflicts_with_all = ["score", "phq9", "gad7", "core10"])]
    patient: Option<String>,
    /// An intake score, INSTRUMENT=TOTAL (repeatable), e.g. --score PHQ-9=18
    #[arg(long, value_name = "INSTRUMENT=TOTAL")]
    score: Vec<String>,
    /// PHQ-9 total at intake
    #[arg(long, value_name = "TOTAL")]
    phq9: Option<f64>,
    /// GAD-7 total at intake
    #[arg(long, value_name = "TOTAL")]
    gad7: Option<f64>,
    /// CORE-10 total at intake
    #[arg(long, value_name = "TOTAL")]
    core10: Option<f64>,
    /// Urgent (a crisis): the first available safe therapist, no waiting offered (a stored
    /// patient's critical safety answers make it urgent by themselves)
    #[arg(long)]
    urgent: bool,
    /// Nice-to-haves, KEY=VALUE with KEY gender, language, modality or delivery
    /// (comma-separated or repeated), e.g. --prefer gender=female,language=pl
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    prefer: Vec<String>,
    /// Must-haves (same keys): therapists without them are not offered
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    require: Vec<String>,
    /// Weekly windows the patient can attend: DAY-PART (mon…sun, weekdays, weekend; am, pm,
    /// eve) or a DAY, comma-separated or repeated, e.g. --window mon-pm,weekdays-eve
    #[arg(long, value_name = "WINDOW", value_delimiter = ',')]
    window: Vec<String>,
    /// Where the patient travels from, LAT,LON in degrees
    #[arg(
        long,
        value_name = "LAT,LON",
        conflicts_with = "near",
        allow_hyphen_values = true
    )]
    from: Option<String>,
    /// Where the patient travels from: a site of [matching] sites
    #[arg(long, value_name = "SITE")]
    near: Option<String>,
    /// How far the patient can travel (km); video therapists are within reach
    #[arg(long, value_name = "KM")]
    radius_km: Option<f64>,
    /// The patient's payer (e.g. NHS): therapists who do not take it are not offered
    #[arg(long)]
    payer: Option<String>,
    /// The longest wait the patient accepts, days (default [matching] max_wait_days)
    #[arg(long, value_name = "DAYS")]
    max_wait_days: Option<u32>,
    /// The patient's sex, for the equity monitor (stored patients: from the store)
    #[arg(long, conflicts_with = "patient")]
    sex: Option<String>,
    /// The patient's age in years, for the equity monitor
    #[arg(long, conflicts_with = "patient")]
    age: Option<i64>,
    /// The patient's ethnicity group, for the equity monitor
    #[arg(long, conflicts_with = "patient")]
    ethnicity: Option<String>,
    /// The patient's deprivation decile (1–10), for the equity monitor
    #[arg(long, value_name = "DECILE", conflicts_with = "patient")]
    deprivation_decile: Option<i64>,
    /// The whole request as a TOML or JSON file (README, "Matching"), instead of the flags
    #[arg(long, value_name = "FILE", conflicts_with_all = REQUEST_FLAGS)]
    request: Option<PathBuf>,
    /// Who asks (kept in the audit)
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    #[command(flatten)]
    reveal: RevealArgs,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum MatchCommand {
    /// Record what happened after a shortlist: the therapist chosen, or a decline
    ///
    /// Example: mbc-node match record 12 --chose STAFF07 --by "A. Khan"
    Record(RecordArgs),
    /// Oversight: allocations per therapist per month, outcomes by level allocated, and the
    /// equity monitor
    ///
    /// Example: mbc-node match report --since 2026-01
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct RecordArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The shortlist's id (as `match` printed it)
    id: i64,
    /// The therapist the patient chose (as the shortlist shows them, or the staff id)
    #[arg(long, value_name = "THERAPIST", required_unless_present = "declined")]
    chose: Option<String>,
    /// The patient declined this therapist, or the whole list when none is named
    #[arg(long, value_name = "THERAPIST", num_args = 0..=1, default_missing_value = "",
          conflicts_with = "chose")]
    declined: Option<String>,
    /// Why (e.g. a decline's reason)
    #[arg(long)]
    reason: Option<String>,
    /// Who records it
    #[arg(long, value_name = "NAME")]
    by: String,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Only shortlists from this date on (YYYY, YYYY-MM or YYYY-MM-DD)
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    #[command(flatten)]
    reveal: RevealArgs,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `match`.
pub(super) fn match_cmd(a: MatchArgs) -> Result<()> {
    match a.command {
        Some(MatchCommand::Record(r)) => return record(r),
        Some(MatchCommand::Report(r)) => return report(r),
        None => {}
    }
    let ask = match &a.request {
        Some(path) => from_file(path)?,
        None => from_flags(&a)?,
    };
    let ask = Ask {
        by: a.by.clone(),
        ..ask
    };
    let node = Node::open(&data_dir(a.data_dir)?)?;
    let staff = a.reveal.staff(&node)?;
    let matched = matching::shortlist(&node, &ask, &staff)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&matched)?);
    } else {
        print!("{}", text(&matched));
    }
    Ok(())
}

/// The flags as a request (the same shape as a request file).
fn from_flags(a: &MatchArgs) -> Result<Ask> {
    let mut scores = std::collections::BTreeMap::new();
    for s in &a.score {
        let (inst, total) = s.split_once('=').context(format!(
            "score {s:?}: expected INSTRUMENT=TOTAL, e.g. PHQ-9=18"
        ))?;
        let total: f64 = total
            .trim()
            .parse()
            .with_context(|| format!("score {s:?}: {total:?} is not a number"))?;
        scores.insert(inst.trim().to_string(), total);
    }
    for (id, v) in [("PHQ-9", a.phq9), ("GAD-7", a.gad7), ("CORE-10", a.core10)] {
        if let Some(v) = v {
            scores.insert(id.to_string(), v);
        }
    }
    if a.patient.is_none() && scores.is_empty() {
        bail!(
            "say whose intake to match on: --patient ID, or scores (--phq9 18 --gad7 12, \
             --score INSTRUMENT=TOTAL), or --request FILE"
        );
    }
    ask(RequestFile {
        patient: a.patient.clone(),
        scores,
        urgent: a.urgent,
        prefer: a.prefer.clone(),
        require: a.require.clone(),
        windows: a.window.clone(),
        from: a.from.as_deref().map(position).transpose()?,
        near: a.near.clone(),
        radius_km: a.radius_km,
        payer: a.payer.clone(),
        max_wait_days: a.max_wait_days,
        groups: GroupsFile {
            sex: a.sex.clone(),
            age: a.age,
            ethnicity: a.ethnicity.clone(),
            deprivation_decile: a.deprivation_decile,
        },
    })
}

/// LAT,LON.
fn position(s: &str) -> Result<[f64; 2]> {
    let bad = || format!("position {s:?}: expected LAT,LON in degrees, e.g. 53.48,-2.24");
    let (lat, lon) = s.split_once(',').with_context(bad)?;
    Ok([
        lat.trim().parse().with_context(bad)?,
        lon.trim().parse().with_context(bad)?,
    ])
}

fn from_file(path: &Path) -> Result<Ask> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("couldn't read the request file {file}"))?;
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let r: RequestFile = if json {
        serde_json::from_str(&text).with_context(|| format!("{file}: not a valid request"))?
    } else {
        toml::from_str(&text).with_context(|| format!("{file}: not a valid request"))?
    };
    ask(r).with_context(|| format!("{file}"))
}

/// The shortlist as text, for staff going through it with the patient.
fn text(m: &Matched) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let l = &m.shortlist;
    let for_whom = m
        .patient
        .as_deref()
        .map_or(String::new(), |p| format!(" for patient {p}"));
    let _ = writeln!(
        out,
        "Shortlist {}{for_whom} ({})",
        m.request_id, m.created_at
    );
    let intake: Vec<String> = m
        .intake
        .domains
        .iter()
        .map(|d| {
            format!(
                "{} {} {}{}",
                d.domain,
                d.instrument,
                d.score,
                if d.elevated { " (elevated)" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(out, "Intake: {}", intake.join(", "));
    for n in &l.notes {
        let _ = writeln!(out, "Note: {n}");
    }
    let _ = writeln!(out, "Trade-off: {}\n", l.trade_off);
    for (k, o) in l.offers.iter().enumerate() {
        let badges: Vec<String> = o
            .badges
            .iter()
            .map(|b| format!("{}: {}", b.thin.as_str(), b.domain))
            .collect();
        let _ = writeln!(
            out,
            "{:>2}. {}   {}{}",
            k + 1,
            o.therapist,
            o.level,
            if badges.is_empty() {
                String::new()
            } else {
                format!("   [{}]", badges.join("; "))
            }
        );
        for r in &o.reasons {
            let aspect = match r.aspect {
                protocol::matching::Aspect::Outcome => "outcome",
                protocol::matching::Aspect::Fit => "fit",
                protocol::matching::Aspect::Logistics => "logistics",
            };
            let _ = writeln!(out, "    {aspect}: {}", r.text);
        }
        if let Some(note) = &o.staff_note {
            let _ = writeln!(out, "    {note}");
        }
    }
    if !l.excluded.is_empty() {
        let _ = writeln!(out, "\nNot offered ({}):", l.excluded.len());
        for e in &l.excluded {
            let _ = writeln!(out, "  {}: {}", e.therapist, e.reasons.join("; "));
        }
    }
    if l.not_listed > 0 {
        let _ = writeln!(
            out,
            "{} more eligible therapist(s) ranked below the list.",
            l.not_listed
        );
    }
    let _ = writeln!(
        out,
        "\nTrack records: measured against {}.\nLevels and records are for staff: go through \
         the list with the patient, who chooses.\nRecord the choice: mbc-node match record {} \
         --chose THERAPIST --by NAME (or --declined)",
        m.reference, m.request_id
    );
    out
}

fn record(a: RecordArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let choice = match (a.chose, a.declined) {
        (Some(t), _) => Choice::Chosen(t),
        (None, Some(t)) => Choice::Declined((!t.trim().is_empty()).then_some(t)),
        (None, None) => bail!("say what happened: --chose THERAPIST or --declined [THERAPIST]"),
    };
    let r = matching::record(&node, a.id, &choice, a.reason.as_deref(), &a.by)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    match (&r.therapist, r.kind) {
        (Some(t), "chosen") => println!(
            "Shortlist {}: {t} chosen (level {}), recorded {} by {}",
            r.request_id,
            r.level.unwrap_or_default(),
            r.at,
            r.by
        ),
        (Some(t), _) => println!(
            "Shortlist {}: {t} declined, recorded {} by {}",
            r.request_id, r.at, r.by
        ),
        (None, _) => println!(
            "Shortlist {}: the whole list declined, recorded {} by {}",
            r.request_id, r.at, r.by
        ),
    }
    Ok(())
}

fn report(a: ReportArgs) -> Result<()> {
    if let Some(s) = &a.since
        && !is_date_prefix(s)
    {
        bail!("--since {s:?}: expected YYYY, YYYY-MM or YYYY-MM-DD");
    }
    let node = Node::open(&a.dir.data_dir)?;
    let staff = a.reveal.staff(&node)?;
    let r = matching::report(&node, a.since.as_deref(), &staff)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report_text(&r));
    }
    Ok(())
}

fn is_date_prefix(s: &str) -> bool {
    let full = match s.len() {
        4 => format!("{s}-01-01"),
        7 => format!("{s}-01"),
        10 => s.to_string(),
        _ => return false,
    };
    chrono::NaiveDate::parse_from_str(&full, "%Y-%m-%d").is_ok()
}

fn report_text(r: &MatchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let since = r
        .since
        .as_deref()
        .map_or("all time".to_string(), |s| format!("since {s}"));
    let _ = writeln!(
        out,
        "Matching, {since}: {} shortlists ({} urgent), {} allocations, {} declines",
        r.shortlists, r.urgent, r.allocations, r.declines
    );
    let _ = writeln!(
        out,
        "\nCaseload fairness (allocations per therapist per month):"
    );
    if let Some(first) = r.fairness.first() {
        let months: Vec<&str> = first.by_month.iter().map(|(m, _)| m.as_str()).collect();
        let _ = writeln!(
            out,
            "  {:<12} {} {:>6} {:>7}",
            "therapist",
            months.iter().map(|m| format!("{m:>8}")).collect::<String>(),
            "total",
            "×mean"
        );
        for l in &r.fairness {
            let _ = writeln!(
                out,
                "  {:<12} {} {:>6} {:>7.2}",
                l.therapist,
                l.by_month
                    .iter()
                    .map(|(_, n)| format!("{n:>8}"))
                    .collect::<String>(),
                l.total,
                l.ratio_to_mean
            );
        }
    } else {
        let _ = writeln!(out, "  no allocations recorded yet (mbc-node match record)");
    }
    let _ = writeln!(
        out,
        "\nOutcomes by level allocated (mean residual on the most elevated domain; negative = \
         better than expected):"
    );
    for o in &r.by_level {
        let interval = o
            .interval
            .map_or("—".to_string(), |(a, b)| format!("{a:.2} to {b:.2}"));
        let _ = writeln!(
            out,
            "  {}: {} patients, mean {:.2} (95 % interval {interval})",
            o.level, o.n, o.mean
        );
    }
    let _ = writeln!(
        out,
        "  {} allocations without an outcome yet",
        r.without_outcome
    );
    let _ = writeln!(
        out,
        "\nEquity monitor (share of allocations at level {}; flagged below {}× the overall \
         share):",
        matching::report::BEST_LEVEL.number(),
        protocol::matching::EQUITY_RATIO
    );
    if r.equity.is_empty() {
        let _ = writeln!(out, "  no allocations with a known group yet");
    }
    for e in &r.equity {
        let _ = writeln!(
            out,
            "  {} (overall {:.2} of {}):",
            e.attribute, e.overall, e.n
        );
        for g in &e.groups {
            let _ = writeln!(
                out,
                "    {:<14} {:>4} of {:<4} {:>5.2}  {}{}",
                g.group,
                g.best,
                g.n,
                g.rate,
                g.ratio.map_or("—".to_string(), |x| format!("{x:.2}×")),
                if g.flagged { "  FLAGGED" } else { "" }
            );
        }
    }
    out
}
