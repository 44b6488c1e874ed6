//! Kept trajectories releases: the text of `benchmark show`, the HTML report (per domain the
//! network's P25–P90 by session for each intake band, and the expected-trajectory model's
//! residual SDs), and the latest release that clinical support takes its network reference
//! from.

use std::fmt::Write;

use anyhow::Result;
use protocol::trajectories::{BandCurve, DomainTrajectories, PERCENTILES};
use rusqlite::Connection;

use super::html::esc;
use super::{Trajectories, num};

/// The latest trajectories release, or the one whose id starts with `id`.
pub fn latest(conn: &Connection, id: Option<&str>) -> Result<Option<Trajectories>> {
    super::get_of(conn, id)
}

/// The human summary of `benchmark show` for a trajectories release.
pub fn describe(s: &Trajectories) -> String {
    let d = &s.document;
    let mut out = super::provenance("Trajectories", s);
    for x in &d.summary {
        let (shown, total) = x.released_points();
        let _ = writeln!(
            out,
            "  {}: {shown} of {total} band × session points released (each on at least {} patients, beyond noise)",
            x.domain, x.min_count
        );
        for c in &x.curves {
            let median = |t: u32| num(c.at(t).and_then(|p| p.percentiles).map(|p| p[2]), 1);
            let _ = writeln!(
                out,
                "    intake ≥ {:<5} median at sessions 1, 4, 8, 12, 16: {}, {}, {}, {}, {}",
                c.from,
                median(1),
                median(4),
                median(8),
                median(12),
                median(16)
            );
        }
        match &x.model {
            Some(m) => {
                let _ = writeln!(
                    out,
                    "    expected-trajectory model: {:.0} observations; residual SD at sessions \
                     2, 4, 8, 16: {}, {}, {}, {}",
                    m.observations,
                    num(m.residual_sd(2), 2),
                    num(m.residual_sd(4), 2),
                    num(m.residual_sd(8), 2),
                    num(m.residual_sd(16), 2),
                );
            }
            None => {
                let _ = writeln!(out, "    expected-trajectory model: not released");
            }
        }
        if !x.suppressed.is_empty() {
            let _ = writeln!(out, "    withheld: {}", x.suppressed.join("; "));
        }
    }
    out
}

const W: f64 = 560.0;
const H: f64 = 240.0;
const PAD: f64 = 44.0;

/// One band's chart: the P25–P75 band darker, P75–P90 lighter, the median as a line; a text
/// table follows it as the chart's equivalent.
fn band_chart(x: &DomainTrajectories, c: &BandCurve) -> String {
    let sessions = c.points.len().max(2) as f64;
    let sx = |t: f64| PAD + (t - 1.0) / (sessions - 1.0) * (W - PAD - 12.0);
    let sy = |y: f64| H - PAD - (y - x.lo) / (x.hi - x.lo) * (H - PAD - 14.0);
    let shown: Vec<(f64, [f64; 5])> = c
        .points
        .iter()
        .filter_map(|p| p.percentiles.map(|q| (f64::from(p.session), q)))
        .collect();
    let title = format!(
        "{}, intake ≥ {}: the network's scores by session (median line; P25–P75 blue, P75–P90 \
         orange)",
        x.domain, c.from
    );
    let mut body = String::new();
    let _ = write!(
        body,
        "<rect x=\"{PAD}\" y=\"14\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
        W - PAD - 12.0,
        H - PAD - 14.0
    );
    // Session ticks with light grid lines, so a point can be read off the axis.
    let ticks = [1.0, 4.0, 8.0, 12.0, 16.0];
    for t in ticks.into_iter().filter(|t| *t <= sessions) {
        let _ = write!(
            body,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"14\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{t}</text>",
            H - PAD,
            H - PAD + 13.0,
            x = sx(t),
        );
    }
    if shown.len() < 2 {
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#555\">\
             not released: too few patients (under {}) or too much noise</text>",
            (W + PAD) / 2.0,
            H / 2.0,
            x.min_count
        );
    } else {
        let area = |lo: usize, hi: usize| {
            let top: Vec<String> = shown
                .iter()
                .map(|(t, q)| format!("{:.1},{:.1}", sx(*t), sy(q[hi])))
                .collect();
            let bottom: Vec<String> = shown
                .iter()
                .rev()
                .map(|(t, q)| format!("{:.1},{:.1}", sx(*t), sy(q[lo])))
                .collect();
            format!("{} {}", top.join(" "), bottom.join(" "))
        };
        let _ = write!(
            body,
            "<polygon fill=\"#f4c7a1\" points=\"{}\"/><polygon fill=\"#9cc3e4\" points=\"{}\"/>",
            area(3, 4),
            area(1, 3)
        );
        let median: Vec<String> = shown
            .iter()
            .map(|(t, q)| format!("{:.1},{:.1}", sx(*t), sy(q[2])))
            .collect();
        let _ = write!(
            body,
            "<polyline fill=\"none\" stroke=\"#1b4f8a\" stroke-width=\"2.5\" points=\"{}\"/>",
            median.join(" ")
        );
    }
    let middle = ((x.lo + x.hi) / 2.0).round();
    for v in [x.lo, middle, x.hi] {
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v}</text>",
            PAD - 4.0,
            sy(v) + 3.0
        );
    }
    let _ = write!(
        body,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">session</text>\
         <text x=\"12\" y=\"{cy:.1}\" font-size=\"11\" transform=\"rotate(-90 12 {cy:.1})\" \
         text-anchor=\"middle\">score</text>",
        (W + PAD) / 2.0,
        H - 8.0,
        cy = H / 2.0
    );
    let mut table = String::from(
        "<table><tr><th>session</th><th>patients</th><th>P10</th><th>P25</th><th>median</th>\
         <th>P75</th><th>P90</th><th>noise SD of the median</th></tr>",
    );
    for p in &c.points {
        let q = |i: usize| num(p.percentiles.map(|q| q[i]), 1);
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.session,
            p.count,
            q(0),
            q(1),
            q(2),
            q(3),
            q(4),
            num(p.noise_sd.map(|s| s[2]), 2)
        );
    }
    table.push_str("</table>");
    format!(
        "<figure><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"{t}\">{body}</svg><figcaption>{t}</figcaption><details><summary>the \
         figures as a table</summary>{table}</details></figure>",
        t = esc(&title)
    )
}

/// The report of a trajectories release as one self-contained HTML page.
pub fn html(s: &Trajectories) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Trajectories \
         release {id}</title><style>body{{font-family:system-ui,sans-serif;max-width:1180px;\
         margin:2em auto;color:#222}}figure{{display:inline-block;margin:0 1em 1em 0;\
         vertical-align:top}}figcaption{{font-size:12px;color:#444;max-width:560px}}\
         table{{border-collapse:collapse;font-size:12px}}td,th{{padding:2px 6px;\
         border-bottom:1px solid #ddd;text-align:right}}pre{{background:#f6f6f6;padding:1em;\
         overflow-x:auto}}</style></head><body><h1>Network recovery trajectories</h1><p>How the \
         network's patients' scores went session by session, by problem domain and intake \
         severity: the {p} percentiles, from a sum of the clinics' histograms \
         under secure aggregation with differentially private noise. A point stands on at \
         least the stated number of patients, and noise moves its median by little; other \
         points are not shown.</p><pre>{text}</pre>",
        id = esc(s.id()),
        p = PERCENTILES
            .map(|q| format!("{:.0}th", q * 100.0))
            .join(", "),
        text = esc(&describe(s)),
    );
    for x in &s.document.summary {
        let _ = write!(out, "<h2>{}</h2>", esc(&x.domain));
        for c in &x.curves {
            out.push_str(&band_chart(x, c));
        }
    }
    out.push_str("</body></html>\n");
    out
}
