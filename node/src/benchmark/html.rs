//! The HTML report of a release: one self-contained file (inline SVG, no scripts, no external
//! resources) with the provenance and, per domain, the distribution of change, the rates, the
//! expected curves by intake severity and the spread of therapist effects.

use std::fmt::Write;

use protocol::benchmark::document::{DomainLayout, DomainRelease, NetworkRelease};

use super::{Stored, describe};

const W: f64 = 560.0;
const H: f64 = 220.0;
const PAD: f64 = 40.0;
const COLOURS: [&str; 6] = [
    "#1b6ca8", "#e07b39", "#3b9b5e", "#b5443a", "#7b5ea7", "#8a8a8a",
];

/// Escapes text for HTML element content and double-quoted attributes (`&`, `<`, `>`, `"`).
pub(super) fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

fn frame(title: &str, body: &str, x_label: &str, y_label: &str) -> String {
    format!(
        "<figure><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"{t}\"><rect x=\"{PAD}\" y=\"10\" width=\"{w}\" height=\"{h}\" fill=\"none\" \
         stroke=\"#999\"/>{body}<text x=\"{cx}\" y=\"{by}\" font-size=\"11\" \
         text-anchor=\"middle\">{xl}</text><text x=\"12\" y=\"{cy}\" font-size=\"11\" \
         transform=\"rotate(-90 12 {cy})\" text-anchor=\"middle\">{yl}</text></svg>\
         <figcaption>{t}</figcaption></figure>",
        t = esc(title),
        w = W - PAD - 10.0,
        h = H - PAD - 10.0,
        cx = (W + PAD) / 2.0,
        by = H - 6.0,
        cy = H / 2.0,
        xl = esc(x_label),
        yl = esc(y_label),
    )
}

/// Maps data coordinates to the plot area.
struct Scale {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Scale {
    fn x(&self, x: f64) -> f64 {
        PAD + (x - self.x0) / (self.x1 - self.x0).max(f64::MIN_POSITIVE) * (W - PAD - 10.0)
    }
    fn y(&self, y: f64) -> f64 {
        H - PAD - (y - self.y0) / (self.y1 - self.y0).max(f64::MIN_POSITIVE) * (H - PAD - 10.0)
    }
    /// A dashed vertical line at x = 0.
    fn zero_line(&self, out: &mut String) {
        let _ = write!(
            out,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"10\" y2=\"{1:.1}\" stroke=\"#333\" stroke-dasharray=\"3 3\"/>",
            self.x(0.0),
            H - PAD
        );
    }

    fn ticks(&self, out: &mut String) {
        for (v, anchor) in [(self.x0, "start"), (self.x1, "end")] {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\">{}</text>",
                self.x(v),
                H - PAD + 12.0,
                short(v)
            );
        }
        for v in [self.y0, self.y1] {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                PAD - 3.0,
                self.y(v) + 3.0,
                short(v)
            );
        }
    }
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A figure's frame holding only the reason it is not drawn.
fn suppressed(title: &str, why: &[&str]) -> String {
    // One line each, centred in the plot area: one long line ran past the frame.
    let cx = (W + PAD - 10.0) / 2.0;
    let lines: String = why
        .iter()
        .enumerate()
        .map(|(i, line)| {
            format!(
                "<tspan x=\"{cx:.1}\" dy=\"{}\">{}</tspan>",
                if i == 0 { "0" } else { "1.3em" },
                esc(line)
            )
        })
        .collect();
    let body = format!(
        "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#555\">{lines}</text>",
        H / 2.0 - 8.0,
    );
    frame(title, &body, "", "")
}

/// Why a domain's figures are not drawn: post-processing suppressed them.
const NOISE_DOMINATES: [&str; 2] = [
    "suppressed: noise dominates",
    "(the network has too few episodes here for this privacy level)",
];

fn histogram(doc: &NetworkRelease, x: &DomainRelease, domain: &DomainLayout) -> Option<String> {
    let d = &x.domain;
    let title = format!("{d}: change from first to last score (episodes, noisy counts)");
    if x.change.is_none() {
        return Some(suppressed(&title, &NOISE_DOMINATES));
    }
    let counts: Vec<f64> = doc
        .layout
        .decode(&doc.values, &format!("{d}.change"))?
        .into_iter()
        .map(|c| c.max(0.0))
        .collect();
    let (start, width) = (domain.change_bins.start, domain.change_bins.width);
    let top = counts.iter().copied().fold(1.0, f64::max);
    let s = Scale {
        x0: start,
        x1: start + width * counts.len() as f64,
        y0: 0.0,
        y1: top,
    };
    let mut body = String::new();
    for (i, c) in counts.iter().enumerate() {
        let x = start + width * i as f64;
        let _ = write!(
            body,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
            s.x(x),
            s.y(*c),
            (s.x(x + width) - s.x(x)).max(0.5),
            s.y(0.0) - s.y(*c),
            COLOURS[0]
        );
    }
    s.zero_line(&mut body);
    s.ticks(&mut body);
    Some(frame(&title, &body, "post − pre", "episodes"))
}

fn rates(summary: &[DomainRelease]) -> String {
    type Rate = fn(&DomainRelease) -> Option<f64>;
    let names: [(Rate, &str); 3] = [
        (|x| x.recovery_rate, "recovery"),
        (|x| x.reliable_improvement_rate, "reliable improvement"),
        (|x| x.reliable_deterioration_rate, "reliable deterioration"),
    ];
    let s = Scale {
        x0: 0.0,
        x1: summary.len().max(1) as f64,
        y0: 0.0,
        y1: 1.0,
    };
    let mut body = String::new();
    let group = 1.0 / (names.len() as f64 + 1.0);
    for (i, x) in summary.iter().enumerate() {
        for (j, (rate, _)) in names.iter().enumerate() {
            let left = i as f64 + group * (j as f64 + 0.5);
            if let Some(v) = rate(x) {
                let _ = write!(
                    body,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
                    s.x(left),
                    s.y(v),
                    s.x(left + group) - s.x(left),
                    s.y(0.0) - s.y(v),
                    COLOURS[j],
                    format_args!("{:.1} %", 100.0 * v)
                );
            }
        }
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            s.x(i as f64 + 0.5),
            H - PAD + 12.0,
            esc(&x.domain)
        );
    }
    for (j, (_, label)) in names.iter().enumerate() {
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"{}\">{label}</text>",
            PAD + 6.0,
            24.0 + 12.0 * j as f64,
            COLOURS[j]
        );
    }
    frame(
        "Rates per domain (missing bars: suppressed)",
        &body,
        "domain",
        "rate",
    )
}

fn curves(x: &DomainRelease, domain: &DomainLayout) -> Option<String> {
    let d = &x.domain;
    let rows = &x.expected_curves;
    let (lo, hi) = (domain.lo, domain.hi);
    let sessions = rows.first()?.len();
    let s = Scale {
        x0: 1.0,
        x1: sessions as f64,
        y0: lo,
        y1: hi,
    };
    let bands = &domain.bands;
    let title = format!(
        "{d}: expected score by session and intake severity band (points whose noise SD is \
         over {} points are left out)",
        short(protocol::benchmark::SUPPRESS_CURVE_SD * (hi - lo))
    );
    let drawn = rows
        .iter()
        .any(|row| row.iter().filter(|v| v.is_some()).count() > 1);
    if !drawn {
        return Some(suppressed(&title, &NOISE_DOMINATES));
    }
    let mut body = String::new();
    for (b, row) in rows.iter().enumerate() {
        let points: Vec<String> = row
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", s.x(i as f64 + 1.0), s.y(v))))
            .collect();
        let colour = COLOURS[b % COLOURS.len()];
        let band = bands.get(b).map(|v| short(*v)).unwrap_or_default();
        // A band without a line says so in the legend, in grey, rather than a colour that
        // matches nothing.
        let (legend, note) = if points.len() > 1 {
            let _ = write!(
                body,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
            (colour, "")
        } else {
            ("#888", " (too few patients)")
        };
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"{legend}\">intake ≥ {band}{note}</text>",
            W - 16.0,
            24.0 + 12.0 * b as f64,
        );
    }
    s.ticks(&mut body);
    Some(frame(&title, &body, "session", "mean score"))
}

fn spread(summary: &[DomainRelease]) -> String {
    // Therapist effects ~ N(0, τ²): the middle 95 % of therapists lie within ±1.96 τ.
    let taus: Vec<(&str, Option<f64>)> = summary
        .iter()
        .map(|x| {
            (
                x.domain.as_str(),
                x.therapist_variance.map(|v| v.tau2.max(0.0).sqrt()),
            )
        })
        .collect();
    let top = taus.iter().filter_map(|(_, t)| *t).fold(0.5, f64::max) * 2.2;
    let s = Scale {
        x0: -top,
        x1: top,
        y0: 0.0,
        y1: taus.len().max(1) as f64,
    };
    let mut body = String::new();
    for (i, (d, tau)) in taus.iter().enumerate() {
        let y = s.y(i as f64 + 0.5);
        match tau {
            Some(t) => {
                let _ = write!(
                    body,
                    "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"6\"><title>τ = {t:.2}</title></line>",
                    s.x(-1.96 * t),
                    s.x(1.96 * t),
                    COLOURS[0]
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">suppressed</text>",
                    s.x(0.0),
                    y + 3.0
                );
            }
        }
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            PAD + 4.0,
            y - 6.0,
            esc(d)
        );
    }
    s.zero_line(&mut body);
    s.ticks(&mut body);
    frame(
        "Spread of therapist effects: middle 95 % of therapists (±1.96 τ, risk-adjusted residual units)",
        &body,
        "therapist effect (points)",
        "",
    )
}

/// The report as one HTML page.
pub fn render(s: &Stored) -> String {
    let doc = &s.document;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Benchmark release {id}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;color:#222}}\
         figure{{display:inline-block;margin:0 1em 1em 0}}figcaption{{font-size:12px;color:#444}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body>\
         <h1>Cross-site benchmark</h1><p>Every figure is computed from a sum of the clinics' \
         statistics under secure aggregation with differentially private noise (the provenance \
         below says how much); no clinic's own figures were seen by anyone.</p><pre>{text}</pre>\
         <h2>Rates</h2>{rates}<h2>Therapist effects</h2>{spread}",
        id = esc(s.id()),
        text = esc(&describe(s)),
        rates = rates(&doc.summary),
        spread = spread(&doc.summary),
    );
    for x in &doc.summary {
        let _ = write!(out, "<h2>{}</h2>", esc(&x.domain));
        let Some(domain) = doc.layout.domain(&x.domain) else {
            continue;
        };
        if let Some(h) = histogram(doc, x, domain) {
            out.push_str(&h);
        }
        if let Some(c) = curves(x, domain) {
            out.push_str(&c);
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn domain(summary: serde_json::Value) -> DomainRelease {
        let mut d = json!({"domain": "depression", "episodes": 100.0, "finished": 90.0,
            "finished_at_caseness": 80.0, "reliable_improvement_rate": null,
            "reliable_deterioration_rate": null, "recovery_rate": null,
            "reliable_recovery_rate": null});
        d.as_object_mut()
            .unwrap()
            .extend(summary.as_object().unwrap().clone());
        serde_json::from_value(d).unwrap()
    }

    /// Issue 13, fix 13: a domain whose curves and change histogram post-processing suppressed
    /// gets panels that say so, not empty axes or pure-noise bars.
    #[test]
    fn suppressed_figures_say_noise_dominates() {
        let layout: DomainLayout = serde_json::from_value(json!({"id": "depression",
            "lo": 0.0, "hi": 27.0, "bands": [0.0, 10.0],
            "intake_bins": {"start": -0.5, "width": 1.0, "n": 28},
            "change_bins": {"start": -27.5, "width": 1.0, "n": 55}}))
        .unwrap();
        let x = domain(json!({"change": null,
            "expected_curves": [[null, null, null], [null, 4.0, null]]}));
        let panel = curves(&x, &layout).unwrap();
        assert!(panel.contains("suppressed: noise dominates") && !panel.contains("polyline"));
        let doc = super::super::test_release(serde_json::to_value(&x).unwrap()).document;
        let panel = histogram(&doc, &x, &layout).unwrap();
        // The frame's own border is the only rectangle: no bars.
        assert!(
            panel.contains("suppressed: noise dominates") && panel.matches("<rect").count() == 1
        );
        // Two points of a band are a curve.
        let x = domain(
            json!({"change": {"mean": -6.0, "quartiles": [-8.0, -6.0, -4.0]},
            "expected_curves": [[12.0, 9.0, null]]}),
        );
        let drawn = curves(&x, &layout).unwrap();
        assert!(drawn.contains("polyline") && !drawn.contains("suppressed"));
        // A band with one point or none has no line, and its legend entry says why.
        let x = domain(json!({"expected_curves": [[12.0, 9.0, null], [null, 4.0, null]]}));
        let drawn = curves(&x, &layout).unwrap();
        assert_eq!(drawn.matches("polyline").count(), 1);
        assert!(drawn.contains("intake ≥ 10 (too few patients)"), "{drawn}");
        assert!(!drawn.contains("intake ≥ 0 (too few"), "{drawn}");
    }
}
