//! Commands of clinical support: `support`.

use anyhow::{Context, Result, bail};
use clap::Args;
use protocol::trajectory::Signal;

use super::DataDir;
use crate::node::Node;
use crate::support::{self, PatientSupport, Who};

#[derive(Debug, Args)]
pub(super) struct SupportArgs {
    #[command(flatten)]
    dir: DataDir,
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
    html: Option<std::path::PathBuf>,
}

/// `support`.
pub(super) fn support(a: SupportArgs) -> Result<()> {
    let node = Node::open(&a.dir.data_dir)?;
    let who = match (a.patient, a.episode) {
        (Some(p), _) => Who::Patient(p),
        (None, Some(e)) => Who::Episode(e),
        (None, None) => bail!("give a PATIENT_ID or --episode"),
    };
    let page = support::patient(
        &node.store(),
        node.pseudonymiser(),
        &who,
        node.config().import.episode_gap_weeks,
        &Default::default(),
    )?;
    if let Some(out) = &a.html {
        std::fs::write(out, support::html::html(&page, &crate::clock::now()))
            .with_context(|| format!("couldn't write {}", out.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
    } else {
        print!("{}", text(&page));
        if let Some(out) = &a.html {
            println!("wrote {}", out.display());
        }
    }
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
            None => out.push_str(&format!(
                "{}: {}\n",
                i.instrument,
                i.no_basis.as_deref().unwrap_or("no expected trajectory")
            )),
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
    if !p.validated {
        out.push_str(
            "\nThese signals have not been validated on this clinic's data yet: read them as \
             prompts for clinical judgement, not as alerts.\n",
        );
    }
    out
}
