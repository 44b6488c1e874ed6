//! Commands of clinical support: `support`, `support validate`, `alerts`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use protocol::pseudonym::IdKind;
use protocol::trajectory::Signal;

use super::{DataDir, data_dir};
use crate::alerts::{self, Action, Filter};
use crate::node::Node;
use crate::support::{self, PatientSupport, Who};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct SupportArgs {
    #[command(subcommand)]
    command: Option<SupportCommand>,
    /// The node's data directory
    #[arg(long, env = "MBC_NODE_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The patient as the clinic's exports name them (their latest episode is shown)
    #[arg(value_name = "PATIENT_ID", required_unless_present = "episode")]
    patient: Option<String>,
    /// One episode instead, as the exports name it
    #[arg(long, value_name = "EPISODE_ID", conflicts_with = "patient")]
    episode: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Also write the page as a self-contained HTML file with a chart per instrument
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum SupportCommand {
    /// The validation card: a time-split hold-out of this clinic's own data, against two
    /// baselines; its verdict switches not-on-track alerts on or off ([support] thresholds)
    ///
    /// Example: mbc-node support validate --data-dir /srv/mbc
    Validate(ValidateArgs),
}

#[derive(Debug, Args)]
struct ValidateArgs {
    #[command(flatten)]
    dir: DataDir,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `support`.
pub(super) fn support(a: SupportArgs) -> Result<()> {
    if let Some(SupportCommand::Validate(v)) = a.command {
        return validate(v);
    }
    let node = Node::open(&data_dir(a.data_dir)?)?;
    let who = match (a.patient, a.episode) {
        (Some(p), _) => Who::Patient(p),
        (None, Some(e)) => Who::Episode(e),
        (None, None) => bail!("give a PATIENT_ID or --episode"),
    };
    let (page, open) = node.support_page(&who)?;
    let lines: Vec<String> = open.iter().map(alerts::Alert::line).collect();
    if let Some(out) = &a.html {
        std::fs::write(
            out,
            support::html::html(&page, &lines, &crate::clock::now()),
        )
        .with_context(|| format!("couldn't write {}", out.display()))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&page)?;
        v["open_alerts"] = serde_json::to_value(&open)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !lines.is_empty() {
            println!("Open alerts:");
            for l in &lines {
                println!("  {l}");
            }
        }
        print!("{}", text(&page));
        if let Some(out) = &a.html {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn validate(a: ValidateArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let (cards, raised) = crate::release::validate_support(&node)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&cards)?);
        return Ok(());
    }
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.1} %", 100.0 * v));
    let num = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
    for c in &cards {
        if c.cut_date == support::validate::LEAVE_ONE_OUT {
            println!(
                "{}: too few ended episodes for a time split: every one of the {} is a test \
                 patient, against the network's release and (leave one out) the clinic's other \
                 {} ({} not reliably improved at the end)",
                c.instrument, c.test, c.pool, c.non_improved
            );
        } else {
            println!(
                "{}: pool {} episodes ended before {}, test {} ended since ({} of them not \
                 reliably improved at the end)",
                c.instrument, c.pool, c.cut_date, c.test, c.non_improved
            );
        }
        println!(
            "  {:<20} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>14} {:>5} {:>10}",
            "method",
            "patients",
            "AUC",
            "sens",
            "spec",
            "PPV",
            "NPV",
            "deteriorators",
            "r",
            "beyond P90"
        );
        println!(
            "  {:<20} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>14} {:>5} {:>10}",
            "", "", "", "(red by", "session", "3)", "", "(red by s3)", "", "(ties ½)"
        );
        for f in &c.methods {
            println!(
                "  {:<20} {:>8} {:>5} {:>8} {:>8} {:>8} {:>8} {:>14} {:>5} {:>10}",
                f.method.replace('_', " "),
                f.assessed,
                num(f.auc),
                pct(f.sensitivity),
                pct(f.specificity),
                pct(f.ppv),
                pct(f.npv),
                format!("{} of {}", pct(f.deteriorator_sensitivity), f.deteriorators),
                num(f.r),
                pct(f.above_p90_mid),
            );
        }
        if let Some(d) = &c.dropout {
            let line = |who: &str, k: &protocol::dropout::Check| {
                println!(
                    "    {who:<34} AUC {}  Brier {}  mean risk {} (observed {})",
                    num(k.auc),
                    k.brier.map_or("—".into(), |b| format!("{b:.3}")),
                    pct(k.mean_risk),
                    pct((k.episodes > 0).then(|| k.dropouts as f64 / k.episodes as f64)),
                )
            };
            println!(
                "  dropout risk on {} ended episodes with a known end ({} dropped out):",
                d.network.episodes, d.network.dropouts
            );
            line(
                &format!(
                    "network model (release {}…)",
                    d.release_id.get(..12).unwrap_or_default()
                ),
                &d.network,
            );
            match &d.alone {
                Some(k) => line("this clinic's own fit (5-fold CV)", k),
                None => println!("    this clinic's own fit: too few dropouts or completions"),
            }
        }
        let nn = &c.methods[0];
        let by: Vec<String> = nn
            .above_p90_by_session
            .iter()
            .map(|(t, n, s)| format!("s{t} {:.0} % of {n}", 100.0 * s))
            .collect();
        println!(
            "  beyond P90 by session (neighbours, ties ½): {}; strictly beyond (red): {}",
            by.join(", "),
            pct(nn.above_p90)
        );
        println!(
            "  support takes: {}\n  {} → not-on-track alerts for {} are {}",
            c.preferred.replace('_', " "),
            c.verdict,
            c.instrument,
            if c.passed { "ON" } else { "OFF" }
        );
    }
    if raised > 0 {
        println!(
            "\n{raised} open episodes were red at their latest score: their not-on-track \
             alerts are raised now (mbc-node alerts)."
        );
    }
    println!(
        "\nAUC: each method's early warning at sessions 2–3 for final non-improvement (the \
         neighbours': the share of past patients matched on intake and sessions 2–3 who ended \
         not improved; the baselines': how far beyond their expected score). Sensitivity, \
         specificity, PPV and NPV: of the red signal by session 3. r: predicted and observed \
         pre–post change. Safety alerts are always on."
    );
    Ok(())
}

fn signal_text(s: Option<Signal>) -> &'static str {
    match s {
        None => "(intake)",
        Some(Signal::Grey) => "grey: no basis",
        Some(Signal::White) => "white: below caseness",
        Some(Signal::Green) => "green: on track",
        Some(Signal::Yellow) => "YELLOW: less than expected",
        Some(Signal::Red) => "RED: not on track",
    }
}

/// The page as text.
fn text(p: &PatientSupport) -> String {
    let mut out = format!("Patient {} (episode {}…)\n", p.patient, p.episode);
    if let Some(d) = &p.dropout {
        out.push_str(&format!(
            "Dropout risk: {:.0} %{}, from {}\n",
            100.0 * d.risk,
            d.network_rate
                .map(|r| format!(" (the network's patients on average: {:.0} %)", 100.0 * r))
                .unwrap_or_default(),
            d.basis
        ));
    }
    for i in &p.instruments {
        out.push('\n');
        match &i.basis {
            Some(b) => out.push_str(&format!(
                "{}: based on {} similar past patients of {} ({} on {} features{}{}){}\n",
                i.instrument,
                b.neighbours,
                b.pool,
                b.metric,
                b.features.len(),
                if b.dynamic {
                    "; after session 3 also matched on sessions 2–3"
                } else {
                    ""
                },
                if b.left_out.is_empty() {
                    String::new()
                } else {
                    format!("; not used: {}", b.left_out.join(", "))
                },
                if b.atypical {
                    "; ATYPICAL: unlike most past patients, read with care"
                } else {
                    "; typical"
                },
            )),
            None if i.reference.release_id.is_some() => {}
            None => out.push_str(&format!(
                "{}: {}\n",
                i.instrument,
                i.no_basis.as_deref().unwrap_or("no expected trajectory")
            )),
        }
        if let Some(release) = &i.reference.release_id {
            out.push_str(&format!(
                "{}: expected from the network's {} (release {}…): {}\n",
                i.instrument,
                i.reference.name(),
                release.get(..12).unwrap_or(release),
                i.reference.why
            ));
        }
        out.push_str("  session  date        score  expected   P75    P90  signal\n");
        for o in &i.observed {
            let shown = |f: fn(&support::Expected) -> f64| {
                o.band
                    .as_ref()
                    .or(i.expected.iter().find(|e| e.session == o.session))
                    .map_or("—".to_string(), |b| format!("{:.1}", f(b)))
            };
            let (exp, p75, p90) = (shown(|b| b.expected), shown(|b| b.p75), shown(|b| b.p90));
            out.push_str(&format!(
                "  {:>7}  {}  {:>5}  {exp:>8}  {p75:>5}  {p90:>5}  {}\n",
                o.session,
                o.date,
                o.score,
                signal_text(o.signal)
            ));
            for s in &o.safety {
                out.push_str(&format!("           SAFETY: {}\n", s.reason));
            }
        }
        let curve = if i.expected_from_now.is_empty() {
            &i.expected
        } else {
            &i.expected_from_now
        };
        if let (Some(last), Some(plateau)) = (i.observed.last(), curve.last()) {
            let t = last.session + 1;
            let b = curve.iter().find(|e| e.session == t).unwrap_or(plateau);
            out.push_str(&format!(
                "  expected at session {t}: {:.1} (no worse than {:.1} is on track; beyond {:.1} \
                 is not)\n",
                b.expected, b.p75, b.p90
            ));
        }
        if !i.consider.is_empty() {
            out.push_str("  consider:\n");
            for c in &i.consider {
                out.push_str(&format!("    - {c}\n"));
            }
        }
    }
    out.push('\n');
    for s in &p.alerts {
        out.push_str(&format!(
            "Not-on-track alerts for {} are {}.\n",
            s.instrument, s.why
        ));
    }
    if !p.validated {
        out.push_str(
            "These signals have not passed validation on this clinic's data: read them as \
             prompts for clinical judgement, not as alerts.\n",
        );
    }
    out
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct AlertsArgs {
    #[command(subcommand)]
    command: Option<AlertsCommand>,
    /// The node's data directory
    #[arg(long, env = "MBC_NODE_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Only this therapist's caseload (the id as the clinic's exports name them)
    #[arg(long, value_name = "ID")]
    therapist: Option<String>,
    /// Only episodes whose latest signal is this
    #[arg(long, value_enum)]
    signal: Option<SignalArg>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SignalArg {
    Red,
    Yellow,
    Green,
    White,
    Grey,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Acknowledge an alert: seen, being dealt with
    ///
    /// Example: mbc-node alerts ack 12 --by "Dr Rao" --note "called the patient"
    Ack(ActArgs),
    /// Resolve an alert: dealt with
    ///
    /// Example: mbc-node alerts resolve 12 --by "Dr Rao" --note "safety plan agreed"
    Resolve(ActArgs),
}

#[derive(Debug, Args)]
struct ActArgs {
    #[command(flatten)]
    dir: DataDir,
    /// The alert's id (as `mbc-node alerts` lists it)
    id: i64,
    /// Who acts
    #[arg(long, value_name = "NAME")]
    by: String,
    /// Why, or what was done
    #[arg(long)]
    note: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// `alerts`: the caseload, or an action on one alert.
pub(super) fn alerts(a: AlertsArgs) -> Result<()> {
    match a.command {
        Some(AlertsCommand::Ack(x)) => return act(x, Action::Acknowledge),
        Some(AlertsCommand::Resolve(x)) => return act(x, Action::Resolve),
        None => {}
    }
    let node = Node::open(&data_dir(a.data_dir)?)?;
    let store = node.store();
    let filter = Filter {
        therapist: a
            .therapist
            .as_deref()
            .map(|t| node.pseudonymiser().pseudonym(IdKind::Therapist, t.trim())),
        signal: a.signal.map(|s| match s {
            SignalArg::Red => Signal::Red,
            SignalArg::Yellow => Signal::Yellow,
            SignalArg::Green => Signal::Green,
            SignalArg::White => Signal::White,
            SignalArg::Grey => Signal::Grey,
        }),
    };
    let cases = alerts::caseload(&store, node.config().import.episode_gap_weeks, &filter)?;
    let switches = support::validate::switches(&store)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "alerts": switches,
                "episodes": cases,
            }))?
        );
        return Ok(());
    }
    println!("Caseload: {} open episodes", cases.len());
    for s in &switches {
        println!("  not-on-track alerts for {} are {}", s.instrument, s.why);
    }
    println!("  safety alerts (critical items) are always on\n");
    if cases.is_empty() {
        println!("No open episodes match.");
        return Ok(());
    }
    println!(
        "{:<12}  {:<12}  {:<26}  {:<16}  {:>5}  open alerts",
        "episode", "therapist", "latest signal", "last score", "since"
    );
    for c in &cases {
        let signal = c
            .signal
            .as_deref()
            .map_or("(intake only)".to_string(), |s| {
                signal_text(Some(signal_of(s))).to_string()
            });
        let last = match (&c.instrument, c.last_score, c.last_scored_session) {
            (Some(i), Some(y), Some(t)) => format!("{i} {y} (s{t})"),
            _ => "—".to_string(),
        };
        let open: Vec<String> = c
            .open_alerts
            .iter()
            .map(|x| {
                format!(
                    "#{} {} s{}{} ({})",
                    x.id,
                    x.kind.replace('_', " "),
                    x.session,
                    if x.persistent_at.is_some() {
                        " PERSISTENT"
                    } else {
                        ""
                    },
                    x.state
                )
            })
            .collect();
        println!(
            "{:<12}  {:<12}  {:<26}  {:<16}  {:>5}  {}",
            c.episode,
            c.therapist,
            signal,
            last,
            c.sessions_since_measure,
            if open.is_empty() {
                "—".to_string()
            } else {
                open.join("; ")
            }
        );
    }
    println!(
        "\n\"since\": sessions since the last score. Act on an alert with `mbc-node alerts ack|resolve \
         ID --by NAME`."
    );
    Ok(())
}

fn signal_of(s: &str) -> Signal {
    match s {
        "red" => Signal::Red,
        "yellow" => Signal::Yellow,
        "green" => Signal::Green,
        "white" => Signal::White,
        _ => Signal::Grey,
    }
}

fn act(a: ActArgs, action: Action) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let alert = alerts::act(
        &node.store(),
        a.id,
        action,
        &a.by,
        a.note.as_deref(),
        &crate::clock::now(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&alert)?);
    } else {
        println!(
            "alert {} ({} {}, episode {}, session {}) is now {}",
            alert.id,
            alert.instrument,
            alert.kind.replace('_', " "),
            alert.episode,
            alert.session,
            alert.state
        );
    }
    Ok(())
}
