//! `mbc-node report`: one self-contained HTML file (inline CSS and SVG, no external assets)
//! that a clinic lead opens offline: clinic summary, a caterpillar plot per domain, and a report
//! card per therapist. With a therapist given, only that therapist's card (private feedback).

use std::fmt::Write;

use protocol::analysis::Rates;
use protocol::therapist::{Label, TrackRecord, wilson};

use crate::stats::Derived;
use crate::stats::output::{NATIONAL, rate_rows};

/// Escapes text for HTML element content and double-quoted attributes (`&`, `<`, `>`, `"`).
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

fn colour(label: Label) -> &'static str {
    match label {
        Label::Effective => "#1b7837",
        Label::Ineffective => "#b2182b",
        Label::Neutral => "#4d4d4d",
        Label::InsufficientData => "#9e9e9e",
    }
}

/// The file's own page rules (the dashboard has its frame's).
const PAGE_CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.6rem}";

/// The rules of what [`body`] draws, all under `.report`: the file inlines them, the dashboard
/// serves them with its style sheet (no inline style there).
pub const CSS: &str = ".report h2{margin-top:2.5rem;border-bottom:1px solid #ccc}.report h3\
{margin-top:1.8rem}.report table{border-collapse:collapse;margin:.5rem 0;background:#fff}\
.report td,.report th{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;text-align:right}\
.report td:first-child,.report th:first-child{text-align:left}.report .note{color:#555;\
font-size:.9rem}.report .label{font-weight:600}.report .label-effective{color:#1b7837}\
.report .label-ineffective{color:#b2182b}.report .label-neutral{color:#4d4d4d}\
.report .label-insufficient{color:#6b6b6b}.report .card{border:1px solid #ddd;border-radius:6px;\
padding:.5rem 1rem;margin:1rem 0;background:#fff}.report svg{max-width:100%;height:auto}";

/// The class of a label's cell.
fn label_class(label: Label) -> &'static str {
    match label {
        Label::Effective => "label label-effective",
        Label::Ineffective => "label label-ineffective",
        Label::Neutral => "label label-neutral",
        Label::InsufficientData => "label label-insufficient",
    }
}

/// One track record as a table row: `first` (a domain, or a therapist), n, mean residual, EB
/// effect, its interval and the label.
fn record_row(first: &str, r: &TrackRecord) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2} to {:.2}</td>\
         <td class=\"{}\">{}</td></tr>",
        esc(first),
        r.n,
        r.mean,
        r.eb,
        r.eb_interval.0,
        r.eb_interval.1,
        label_class(r.label),
        r.label.as_str()
    )
}

/// The title of the report, or of one therapist's card.
fn title(d: &Derived, only: Option<&str>) -> String {
    match only.and_then(|o| d.therapists.iter().position(|t| t == o)) {
        Some(t) => format!("Report card of therapist {}: {}", d.who(t), d.clinic),
        None => format!("Outcomes report: {}", d.clinic),
    }
}

/// Renders the report. `only` limits it to one therapist's card (by full pseudonym).
pub fn html(d: &Derived, only: Option<&str>, now: &str) -> String {
    let title = esc(&title(d, only)).into_owned();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{PAGE_CSS}{CSS}</style></head><body><h1>{title}</h1>{}</body></html>\n",
        body(d, only, now)
    )
}

/// What the report shows below its title, in one `<div class="report">` with no inline style
/// (the dashboard serves it under its policy).
pub fn body(d: &Derived, only: Option<&str>, now: &str) -> String {
    let mut h = String::from("<div class=\"report\">");
    let _ = write!(
        h,
        "<p class=\"note\">Computed {now} by mbc-node {} (algorithm v{}) from this clinic's local data. \
         Therapists are shown by {}. Residual = observed − expected end score \
         from the risk model (intake score and case mix): <b>negative means patients did better than \
         expected</b>. Reference: {}. Labels use {} with at least {} patients; statistics are shown from {} patients.</p>",
        env!("CARGO_PKG_VERSION"),
        protocol::analysis::ALGORITHM_VERSION,
        if d.revealed.iter().any(Option::is_some) {
            "the clinic's own staff ids (from its staff list, read for this page; they are not stored)"
        } else {
            "the first digits of their pseudonym"
        },
        esc(&d.reference_description()),
        match d.settings.rule {
            protocol::therapist::Rule::EbInterval => "the 95 % empirical-Bayes interval",
            protocol::therapist::Rule::Kraus => "the Kraus rule",
        },
        d.settings.minimums.classify,
        d.settings.minimums.show,
    );
    let summary_at = h.len();
    h.push_str("<h2>Clinic summary</h2>");
    let _ = write!(
        h,
        "<p>{} episodes; {} finished courses.</p>",
        d.episodes, d.analysis.clinic_rates.finished
    );
    rates_table(&mut h, &d.analysis.clinic_rates, d.national);
    h.push_str(&rates_svg(&d.analysis.clinic_rates, d.national));
    if only.is_none() {
        for dr in &d.analysis.domains {
            let dom = &d.domains[dr.domain];
            let _ = write!(
                h,
                "<h2>{} ({})</h2>",
                esc(&dom.name),
                esc(&dom.instrument_id)
            );
            let _ = write!(
                h,
                "<p>{} episodes with pre and post; {} elevated at intake.",
                dr.episodes, dr.eligible
            );
            if let (Some(m), Some(v)) = (&dr.model, &dr.variance) {
                let _ = write!(
                    h,
                    " Risk-model residual SD {:.2}. Between-therapist variance τ² = {:.2} (95 % {:.2} to {}), ICC {:.3}.",
                    m.residual_sd,
                    v.tau2,
                    v.tau2_interval.0,
                    if v.tau2_interval.1.is_finite() {
                        format!("{:.2}", v.tau2_interval.1)
                    } else {
                        "∞".into()
                    },
                    v.icc
                );
            }
            h.push_str("</p>");
            if dr.records.is_empty() {
                h.push_str("<p class=\"note\">No therapist has enough eligible patients yet.</p>");
            } else {
                h.push_str(&caterpillar(d, &dr.records));
            }
        }
    }
    let cards_at = h.len();
    h.push_str("<h2>Report cards</h2>");
    let mut shown = 0;
    for (t, pseudonym) in d.therapists.iter().enumerate() {
        if only.is_some_and(|o| o != pseudonym) {
            continue;
        }
        let records: Vec<(usize, &TrackRecord)> = d
            .analysis
            .domains
            .iter()
            .filter_map(|dr| {
                dr.records
                    .iter()
                    .find(|(k, _)| *k == t)
                    .map(|(_, r)| (dr.domain, r))
            })
            .collect();
        let rates = d
            .analysis
            .therapist_rates
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, r)| r);
        if records.is_empty() && rates.is_none() {
            continue;
        }
        shown += 1;
        let _ = write!(
            h,
            "<div class=\"card\"><h3>Therapist {}</h3>",
            esc(&d.who(t))
        );
        if records.is_empty() {
            h.push_str("<p class=\"note\">No domain has enough eligible patients for a track record yet.</p>");
        } else {
            h.push_str("<table><tr><th>domain</th><th>n</th><th>mean residual</th><th>EB effect</th><th>95 % interval</th><th>label</th></tr>");
            for (dom, r) in records {
                h.push_str(&record_row(&d.domains[dom].name, r));
            }
            h.push_str("</table>");
        }
        if let Some(r) = rates {
            rates_table(&mut h, r, false);
        }
        h.push_str("</div>");
    }
    if shown == 0 {
        h.push_str("<p class=\"note\">No therapist has finished courses or track records yet.</p>");
    }
    // One therapist's card comes first, the clinic after it as what to compare with.
    if only.is_some() {
        let cards = h.split_off(cards_at);
        let summary = h.split_off(summary_at);
        h.push_str(&cards);
        h.push_str(&summary.replacen(
            "<h2>Clinic summary</h2>",
            "<h2>The clinic, for comparison</h2>",
            1,
        ));
    }
    h.push_str("</div>");
    h
}

fn rates_table(h: &mut String, r: &Rates, national: bool) {
    let _ = write!(
        h,
        "<table><tr><th>NHS Talking Therapies measure</th><th>rate</th><th>95 % interval</th><th>of</th>{}</tr>",
        if national {
            "<th>England, NHS Talking Therapies</th>"
        } else {
            ""
        }
    );
    let rows = rate_rows(r);
    for (i, (name, k, n)) in rows.into_iter().enumerate() {
        let nat = if national {
            format!("<td>{}</td>", esc(NATIONAL[i].2))
        } else {
            String::new()
        };
        match wilson(k, n) {
            Some((lo, hi)) => {
                let _ = write!(
                    h,
                    "<tr><td>{name}</td><td>{:.1} %</td><td>{:.1} to {:.1} %</td><td>{k} / {n}</td>{nat}</tr>",
                    100.0 * k as f64 / n as f64,
                    100.0 * lo,
                    100.0 * hi
                );
            }
            None => {
                let _ = write!(
                    h,
                    "<tr><td>{name}</td><td>–</td><td>–</td><td>0</td>{nat}</tr>"
                );
            }
        }
    }
    h.push_str("</table>");
}

/// Bars with Wilson intervals for the clinic's rates, with ticks at England's figures when
/// `national`.
fn rates_svg(r: &Rates, national: bool) -> String {
    let rows = rate_rows(r);
    let (left, width, row) = (170.0, 420.0, 26.0);
    let height = row * rows.len() as f64 + 30.0;
    let x = |p: f64| left + p * width;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"rates with 95 % intervals (the \
         table gives every value)\" font-size=\"12\">",
        w = left + width + 20.0
    );
    for (i, (name, k, n)) in rows.into_iter().enumerate() {
        let y = 10.0 + row * i as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{name}</text>",
            left - 8.0,
            y + 13.0
        );
        if let Some((lo, hi)) = wilson(k, n) {
            let p = k as f64 / n as f64;
            let _ = write!(
                s,
                "<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"14\" fill=\"#92c5de\"/>",
                y + 2.0,
                p * width
            );
            let _ = write!(
                s,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#222\"/>",
                x(lo),
                x(hi),
                y + 9.0,
                y + 9.0
            );
        }
        if !national {
            continue;
        }
        let nat = NATIONAL[i].1;
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#d6604d\" stroke-width=\"2\"><title>England, NHS Talking Therapies: {}</title></line>",
            x(nat),
            x(nat),
            y,
            y + 18.0,
            esc(NATIONAL[i].2)
        );
    }
    let axis_y = 10.0 + row * 4.0 + 4.0;
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{:.0} %</text>",
            x(tick),
            axis_y + 12.0,
            tick * 100.0
        );
    }
    s.push_str(if national {
        "</svg><p class=\"note\">Bars: clinic rate with 95 % Wilson interval; red ticks: England's NHS Talking Therapies figures.</p>"
    } else {
        "</svg><p class=\"note\">Bars: clinic rate with 95 % Wilson interval. No national figures are shown: England's NHS Talking Therapies figures apply to clinics in GB ([stats] national_figures in config.toml).</p>"
    });
    s
}

/// Therapists' EB effects with 95 % intervals, sorted, coloured by label.
fn caterpillar(d: &Derived, records: &[(usize, TrackRecord)]) -> String {
    let mut rows: Vec<&(usize, TrackRecord)> = records.iter().collect();
    rows.sort_by(|a, b| a.1.eb.total_cmp(&b.1.eb));
    let lo = rows
        .iter()
        .map(|(_, r)| r.eb_interval.0.min(r.mean))
        .fold(0.0f64, f64::min);
    let hi = rows
        .iter()
        .map(|(_, r)| r.eb_interval.1.max(r.mean))
        .fold(0.0f64, f64::max);
    let span = (hi - lo).max(1.0);
    let (lo, hi) = (lo - 0.05 * span, hi + 0.05 * span);
    let (left, width, row) = (80.0, 520.0, 16.0);
    let height = row * rows.len() as f64 + 40.0;
    let x = |v: f64| left + (v - lo) / (hi - lo) * width;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"therapists' effects with 95 % \
         intervals (the table below gives every value)\" font-size=\"11\">",
        w = left + width + 20.0
    );
    let _ = write!(
        s,
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"5\" y2=\"{1}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
        x(0.0),
        height - 25.0
    );
    for (i, (t, r)) in rows.iter().enumerate() {
        let y = 12.0 + row * i as f64;
        let c = colour(r.label);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-family=\"monospace\">{}</text>",
            left - 6.0,
            y + 4.0,
            esc(&d.who(*t))
        );
        let _ = write!(
            s,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{c}\" stroke-width=\"2\"/>",
            x(r.eb_interval.0),
            x(r.eb_interval.1)
        );
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"4\" fill=\"{c}\"><title>n = {}, mean residual {:.2}, EB {:.2} ({:.2} to {:.2}), {}</title></circle>",
            x(r.eb),
            r.n,
            r.mean,
            r.eb,
            r.eb_interval.0,
            r.eb_interval.1,
            r.label.as_str()
        );
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"2\" fill=\"none\" stroke=\"{c}\"/>",
            x(r.mean)
        );
    }
    let axis_y = height - 18.0;
    let step = nice_step(hi - lo);
    let mut tick = (lo / step).ceil() * step;
    while tick <= hi {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            x(tick),
            axis_y + 12.0,
            fmt_tick(tick)
        );
        tick += step;
    }
    s.push_str("</svg><p class=\"note\">Filled dot: empirical-Bayes effect with 95 % interval; open dot: raw mean residual. \
                Green: effective; red: ineffective; dark grey: neutral; light grey: too few patients to label. Left of the dashed line = better than expected.</p>");
    // The same in words, for a screen reader and for anyone who wants the figures.
    s.push_str(
        "<details><summary>The same as a table</summary><table><tr><th>therapist</th><th>n</th>\
         <th>mean residual</th><th>EB effect</th><th>95 % interval</th><th>label</th></tr>",
    );
    for (t, r) in &rows {
        s.push_str(&record_row(&d.who(*t), r));
    }
    s.push_str("</table></details>");
    s
}

fn nice_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(mag * 10.0)
}

fn fmt_tick(v: f64) -> String {
    let v = if v.abs() < 1e-9 { 0.0 } else { v };
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(nice_step(12.0), 2.0);
        assert_eq!(nice_step(0.6), 0.1);
        assert_eq!(fmt_tick(-0.0000000001), "0");
        assert_eq!(fmt_tick(2.5), "2.5");
    }
}
