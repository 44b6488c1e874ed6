//! Kept dropout-model releases: the text of `benchmark show` (coefficients with their noise,
//! every iteration of the training), the HTML report, and the latest release that clinical
//! support takes a patient's dropout risk from.

use std::fmt::Write;

use anyhow::Result;
use rusqlite::Connection;

use super::{Dropout, num};

/// The latest dropout-model release, or the one whose id starts with `id`.
pub fn latest(conn: &Connection, id: Option<&str>) -> Result<Option<Dropout>> {
    super::get_of(conn, id)
}

/// The human summary of `benchmark show` for a dropout-model release.
pub fn describe(s: &Dropout) -> String {
    let mut out = super::provenance("Dropout model", s);
    for m in &s.document.summary {
        let _ = writeln!(
            out,
            "  {}: logistic model of ending treatment by dropout, from the intake (features \
             standardised to [−1, 1]); training {}, {} of at most {} iterations, {}",
            m.domain,
            m.training_id,
            m.iterations.len(),
            m.iterations_declared,
            match (&m.stopped, m.converged) {
                (Some(why), _) => format!("stopped early ({why})"),
                (None, true) => "converged".into(),
                (None, false) => "not converged within the cap".into(),
            }
        );
        let _ = writeln!(
            out,
            "  last iteration: {} episodes with a known end, {} dropped out ({}), mean Brier \
             score {}\n",
            num(Some(m.episodes), 0),
            num(m.dropout_rate.map(|r| r * m.episodes), 0),
            m.dropout_rate
                .map_or("—".into(), |r| format!("{:.1} %", 100.0 * r)),
            num(m.brier, 4),
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>11} {:>10}",
            "feature", "coefficient", "noise SD"
        );
        for ((f, b), sd) in m.features.iter().zip(&m.coefficients).zip(&m.noise_sd) {
            let _ = writeln!(out, "  {f:<24} {b:>11.4} {:>10}", num(Some(*sd), 4));
        }
        let _ = writeln!(
            out,
            "\n  Each iteration: moved = how far its step moved the predictions (RMS change of \
             the logit over the episodes), noise = how far the step's noise alone would move \
             them; training stops once a step moves them less than twice its noise (at the optimum a step is \
             the difference of two noisy fits)."
        );
        let _ = writeln!(
            out,
            "  {:>4} {:<17} {:>7} {:>9} {:>8} {:>10} {:>10}",
            "iter", "round", "clinics", "episodes", "Brier", "moved", "noise"
        );
        for i in &m.iterations {
            let _ = writeln!(
                out,
                "  {:>4} {:<17} {:>7} {:>9} {:>8} {:>10.2e} {:>10.2e}{}",
                i.iteration,
                i.round_id,
                i.contributing.len(),
                num(Some(i.episodes), 0),
                num(i.brier, 4),
                i.shift,
                i.shift_noise,
                if i.converged { "  converged" } else { "" }
            );
        }
    }
    out
}

/// The HTML report of a dropout-model release: what the model is, a table of what raises and
/// lowers the risk (a coefficient within two noise SDs of 0 is "unclear"), then the whole
/// text summary.
pub fn html(s: &Dropout) -> String {
    let esc = super::html::esc;
    let mut rows = String::new();
    for m in &s.document.summary {
        for ((f, b), sd) in m.features.iter().zip(&m.coefficients).zip(&m.noise_sd) {
            if f == "intercept" {
                continue;
            }
            let reading = if b.abs() <= 2.0 * sd {
                "unclear (within noise)"
            } else if *b > 0.0 {
                "more dropout"
            } else {
                "less dropout"
            };
            let _ = write!(
                rows,
                "<tr><td>{}</td><td>{b:.3}</td><td>{sd:.3}</td><td>{reading}</td></tr>",
                esc(&f.replace('_', " "))
            );
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Dropout model \
         release {id}</title><style>body{{font-family:system-ui,sans-serif;max-width:1000px;\
         margin:2em auto;color:#222}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}\
         table{{border-collapse:collapse;font-size:14px}}td,th{{padding:3px 10px;\
         border-bottom:1px solid #ddd;text-align:right}}td:first-child,th:first-child,\
         td:last-child,th:last-child{{text-align:left}}</style></head><body><h1>Network \
         dropout-risk model</h1><p>The chance that a patient ends treatment by dropping out, \
         from their intake (severity, case mix), fitted by the network's clinics together: each \
         iteration every clinic sent only the noised sums of its patients' gradient and \
         curvature under secure aggregation, and the coordinator took a Newton step. It is a \
         guide to who may need more engagement, not a prediction for one person: published \
         models of dropout reach an AUC of about 0.66.</p><h2>What goes with dropout</h2>\
         <p>Each feature's coefficient on the log-odds of dropout (features scaled to −1…1 over \
         their range), with the noise SD the privacy protection adds; within two noise SDs of \
         zero the direction is unclear.</p><table><tr><th>feature</th><th>coefficient</th>\
         <th>noise SD</th><th>reading</th></tr>{rows}</table><h2>The release</h2>\
         <pre>{text}</pre></body></html>\n",
        id = esc(s.id()),
        text = esc(&describe(s)),
    )
}
