//! `support --html FILE`: one patient's page as a self-contained HTML file (inline CSS and SVG).
//! Per instrument, a chart: the band of similar past patients (P25–P75 on track, P75–P90 less
//! than expected), the failure boundary (P90), the expected score (dashed), the caseness line,
//! and each observed score coloured by its signal **and** marked with a symbol, so the signal
//! reads without colour; then the same as a table, in words.

use std::fmt::Write;

use protocol::trajectory::Signal;

use super::{InstrumentSupport, PatientSupport};

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    html_escape::encode_double_quoted_attribute(s)
}

/// Colour, symbol and words of a signal.
fn look(s: Option<Signal>) -> (&'static str, &'static str, &'static str) {
    match s {
        None => ("#333333", "◆", "intake"),
        Some(Signal::Grey) => ("#9e9e9e", "?", "no basis (too few similar past patients)"),
        Some(Signal::White) => ("#ffffff", "○", "below caseness"),
        Some(Signal::Green) => ("#1b7837", "✓", "on track"),
        Some(Signal::Yellow) => ("#d9a400", "!", "less progress than expected"),
        Some(Signal::Red) => ("#b2182b", "✕", "not on track"),
    }
}

/// The page's own rules (the file), which the dashboard replaces with its frame's.
const PAGE_CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#222}h1{font-size:1.5rem}.alerts{background:#fde8e8;border-left:4px solid \
#b2182b;padding:.2rem 1rem;margin:.6rem 0}.alerts h2{margin-top:.4rem;font-size:1.1rem}\
.note{color:#555;font-size:.9rem}";

/// The rules of what `body` draws, all under `.support`: the file inlines them, the dashboard
/// serves them with its style sheet (its policy allows no inline style).
pub const CSS: &str = ".support h2{margin-top:2rem;border-bottom:1px solid #ccc}\
.support table{border-collapse:collapse;margin:.5rem 0;background:#fff}.support td,.support th\
{padding:.25rem .6rem;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}\
.support th{white-space:normal;vertical-align:bottom}.support td:first-child,\
.support th:first-child,.support td.sig,.support .scores th:last-child{text-align:left}.support .note{color:#555;\
font-size:.9rem}.support .safety{background:#fde8e8;border-left:4px solid #b2182b;padding:.5rem \
1rem;margin:.6rem 0}.support .warn{background:#fff6db;border-left:4px solid #d9a400;padding:.5rem \
1rem}.support .sig{font-weight:600}.support .dropout{background:#eef3f8;border-left:4px solid \
#1b6ca8;padding:.5rem 1rem}.support .s-red{color:#b2182b}.support .s-yellow{color:#8a6d00}\
.support .s-green{color:#1b7837}.support .s-grey,.support .s-white,.support .s-intake{color:#555}\
.support .critical{background:#fde8e8;font-weight:700}.support svg{max-width:100%;height:auto}\
.support .scroll{overflow-x:auto}@media print{.support h2{break-after:avoid}.support svg,\
.support table{break-inside:avoid}}";

/// The class of a signal's symbol.
fn class(s: Option<Signal>) -> &'static str {
    match s {
        None => "s-intake",
        Some(Signal::Grey) => "s-grey",
        Some(Signal::White) => "s-white",
        Some(Signal::Green) => "s-green",
        Some(Signal::Yellow) => "s-yellow",
        Some(Signal::Red) => "s-red",
    }
}

/// The page as a self-contained file, with the episode's unresolved alerts (one line each) at
/// the top.
pub fn html(p: &PatientSupport, alerts: &[String], now: &str) -> String {
    let mut h = String::new();
    let title = format!("Clinical support: patient {}", esc(&p.patient));
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{PAGE_CSS}{CSS}</style></head><body><h1>{title}</h1>"
    );
    if !alerts.is_empty() {
        h.push_str("<div class=\"alerts\"><h2>Open alerts</h2><ul>");
        for a in alerts {
            let _ = write!(h, "<li>{}</li>", esc(a));
        }
        h.push_str("</ul><p class=\"note\">Acknowledge or resolve with <code>mbc-node alerts ack|resolve ID --by NAME</code>.</p></div>");
    }
    h.push_str(&body(p, now));
    h.push_str("</body></html>\n");
    h
}

/// What the page shows below its title and alerts, in one `<div class="support">` (no inline
/// style, so the dashboard can serve it under its policy): the basis, a safety banner when the
/// latest answers call for one, and per instrument the chart, the table and the item answers.
pub fn body(p: &PatientSupport, now: &str) -> String {
    let mut h = String::from("<div class=\"support\">");
    let network = p
        .instruments
        .iter()
        .any(|i| i.reference.release_id.is_some());
    let basis = if network || p.dropout.is_some() {
        "from this clinic's own data and the network's releases (said where used below); \
         nothing of this patient left the clinic"
    } else {
        "from this clinic's own past patients; nothing of it left the clinic"
    };
    let _ = write!(
        h,
        "<p class=\"note\">Episode {}…, computed {now} by mbc-node {} {basis}.</p>",
        esc(&p.episode),
        env!("CARGO_PKG_VERSION")
    );
    for i in &p.instruments {
        if let Some(last) = i.observed.last()
            && !last.safety.is_empty()
        {
            let _ = write!(
                h,
                "<p class=\"safety\" role=\"alert\"><b>Safety, at the latest {} (session {}, \
                 {}):</b> {}. Follow the clinic's risk procedure before anything else on this \
                 page.</p>",
                esc(&i.instrument),
                last.session,
                esc(&last.date),
                esc(&last
                    .safety
                    .iter()
                    .map(|s| s.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; "))
            );
        }
    }
    for s in &p.alerts {
        let _ = write!(
            h,
            "<p class=\"note\">Not-on-track alerts for {} are {}.</p>",
            esc(&s.instrument),
            esc(&s.why)
        );
    }
    if !p.validated {
        h.push_str(
            "<p class=\"warn\">These signals have not passed validation on this clinic's data: \
             read them as prompts for clinical judgement, not as alerts.</p>",
        );
    }
    if let Some(d) = &p.dropout {
        let _ = write!(
            h,
            "<p class=\"dropout\"><b>Dropout risk: {:.0} %</b>{}. <span class=\"note\">From {}.\
             </span></p>",
            100.0 * d.risk,
            d.network_rate
                .map(|r| format!(" (the network's patients on average: {:.0} %)", 100.0 * r))
                .unwrap_or_default(),
            esc(&d.basis)
        );
    }
    for i in &p.instruments {
        instrument(&mut h, i);
    }
    h.push_str("</div>");
    h
}

fn instrument(h: &mut String, i: &InstrumentSupport) {
    let _ = write!(h, "<h2>{}</h2>", esc(&i.instrument));
    // Safety: one line per critical item, with every session it was answered at or above.
    let mut flagged: Vec<(usize, Vec<String>, String)> = Vec::new();
    for o in &i.observed {
        for s in &o.safety {
            let at = format!("session {} ({}): {}", o.session, o.date, s.value);
            match flagged.iter_mut().find(|(item, _, _)| *item == s.item) {
                Some((_, sessions, reason)) => {
                    sessions.push(at);
                    reason.clone_from(&s.reason);
                }
                None => flagged.push((s.item, vec![at], s.reason.clone())),
            }
        }
    }
    for (_, sessions, latest) in &flagged {
        let _ = write!(
            h,
            "<p class=\"safety\"><b>Safety:</b> {}. Answers: {}.</p>",
            esc(latest),
            esc(&sessions.join("; "))
        );
    }
    match &i.basis {
        Some(b) => {
            let _ = write!(
                h,
                "<p>Compared with the <b>{} most similar</b> of {} past patients of this clinic \
                 ({} distance on: {}){}.{}{}</p>",
                b.neighbours,
                b.pool,
                b.metric,
                esc(&b.features.join(", ")),
                if b.dynamic {
                    "; sessions after 3 against those who also scored alike at sessions 2–3"
                } else {
                    ""
                },
                if b.left_out.is_empty() {
                    String::new()
                } else {
                    format!(" Not used: {}.", esc(&b.left_out.join(", ")))
                },
                if b.atypical {
                    " <b>Atypical:</b> this patient is unlike most past patients; read the \
                     expectation with care."
                } else {
                    ""
                }
            );
        }
        None if i.reference.release_id.is_some() => {
            let release = i.reference.release_id.as_deref().unwrap_or_default();
            let _ = write!(
                h,
                "<p>Expected from the <b>network's {}</b> (release {}…), because {}. No \
                 patient's record left any clinic: the release is a differentially private \
                 sum.</p>",
                esc(i.reference.name()),
                esc(release.get(..12).unwrap_or(release)),
                esc(&i.reference.why)
            );
        }
        None => {
            let _ = write!(
                h,
                "<p>{}</p>",
                esc(i.no_basis.as_deref().unwrap_or("No expected trajectory."))
            );
        }
    }
    chart(h, i);
    h.push_str(
        "<div class=\"scroll\"><table class=\"scores\"><caption class=\"note\">Scores by session, with what \
         similar past patients scored</caption><tr><th>session</th><th>date</th><th>score</th><th>expected</th>\
         <th>on track up to (P75)</th><th>failure boundary (P90)</th><th>signal</th></tr>",
    );
    for o in &i.observed {
        let (_, symbol, words) = look(o.signal);
        let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"sig\"><span class=\"{}\" aria-hidden=\"true\">{symbol}</span> \
             {words}</td></tr>",
            o.session,
            esc(&o.date),
            o.score,
            cell(o.band.as_ref().map(|b| b.expected)),
            cell(o.band.as_ref().map(|b| b.p75)),
            cell(o.band.as_ref().map(|b| b.p90)),
            class(o.signal),
        );
    }
    h.push_str("</table></div>");
    answers(h, i);
    if !i.consider.is_empty() {
        h.push_str("<p><b>Consider</b> (Trier Treatment Navigator areas):</p><ul>");
        for c in &i.consider {
            let _ = write!(h, "<li>{}</li>", esc(c));
        }
        h.push_str("</ul>");
    }
}

/// Item answers at intake, the previous and the latest administration (those that have any),
/// an answer at or above its item's critical value marked in words as well as colour.
fn answers(h: &mut String, i: &InstrumentSupport) {
    let with: Vec<&super::Observed> = i.observed.iter().filter(|o| !o.items.is_empty()).collect();
    let shown: Vec<(&str, &super::Observed)> = match with.as_slice() {
        [] => return,
        [only] => vec![("intake", only)],
        [first, last] => vec![("first", first), ("latest", last)],
        [first, .., previous, last] => {
            vec![("first", first), ("previous", previous), ("latest", last)]
        }
    };
    let items: std::collections::BTreeMap<usize, &str> = shown
        .iter()
        .flat_map(|(_, o)| o.items.iter().map(|a| (a.item, a.code.as_str())))
        .collect();
    let _ = write!(
        h,
        "<div class=\"scroll\"><table class=\"items\"><caption class=\"note\">{} item \
         answers</caption><tr><th>item</th>",
        esc(&i.instrument)
    );
    for (label, o) in &shown {
        let _ = write!(h, "<th>{label}<br>session {}</th>", o.session);
    }
    h.push_str("</tr>");
    for (item, code) in &items {
        let _ = write!(h, "<tr><td>item {item}");
        if !code.is_empty() {
            let _ = write!(h, " <span class=\"note\">({})</span>", esc(code));
        }
        h.push_str("</td>");
        for (_, o) in &shown {
            match o.items.iter().find(|a| a.item == *item) {
                Some(a) if a.critical => {
                    let _ = write!(
                        h,
                        "<td class=\"critical\">{} (needs attention)</td>",
                        a.value
                    );
                }
                Some(a) => {
                    let _ = write!(h, "<td>{}</td>", a.value);
                }
                None => h.push_str("<td>—</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></div>");
}

/// The curve the signals used: from intake up to the last of sessions 2–3, and after them the
/// dynamic variant's when there is one.
fn judged(i: &InstrumentSupport) -> Vec<super::Expected> {
    let last_early = i
        .observed
        .iter()
        .map(|o| o.session)
        .filter(|t| (2..=3).contains(t))
        .max();
    match last_early {
        Some(t) if !i.expected_from_now.is_empty() => i
            .expected
            .iter()
            .filter(|b| b.session <= t)
            .chain(i.expected_from_now.iter().filter(|b| b.session > t))
            .copied()
            .collect(),
        _ => i.expected.clone(),
    }
}

/// The chart: x = session, y = score (worse upwards for lower-is-better instruments).
fn chart(h: &mut String, i: &InstrumentSupport) {
    let (w, ht, left, right, top, bottom) = (820.0, 340.0, 48.0, 220.0, 16.0, 40.0);
    let last_obs = i.observed.last().map_or(1, |o| o.session);
    let curve = judged(i);
    let last_band = curve.last().map_or(1, |b| b.session);
    let sessions = last_obs.max(last_band).max(2);
    let scores = i
        .observed
        .iter()
        .map(|o| o.score)
        .chain(curve.iter().flat_map(|b| [b.p25, b.p90]));
    let (mut lo, mut hi) = scores.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if let Some(c) = i.caseness_cutoff {
        (lo, hi) = (lo.min(c), hi.max(c));
    }
    let (lo, hi) = ((lo - 2.0).floor().max(0.0), (hi + 2.0).ceil());
    let x = |t: f64| left + (t - 1.0) / f64::from(sessions - 1) * (w - left - right);
    let y = |v: f64| top + (hi - v) / (hi - lo).max(1.0) * (ht - top - bottom);
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{ht}\" \
         viewBox=\"0 0 {w} {ht}\" role=\"img\" aria-label=\"{} scores by session against \
         similar past patients (the table below gives every value)\" font-size=\"12\" \
         font-family=\"system-ui,sans-serif\">",
        esc(&i.instrument)
    );
    // Axes and grid.
    let step = if hi - lo > 20.0 { 5.0 } else { 2.0 };
    let mut v = (lo / step).ceil() * step;
    while v <= hi {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{v}</text>",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y0 = y(v)
        );
        v += step;
    }
    for t in 1..=sessions {
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{t}</text>",
            x(f64::from(t)),
            ht - bottom + 16.0
        );
    }
    let _ = write!(
        h,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">session</text>\
         <text x=\"12\" y=\"{:.1}\" fill=\"#333\" transform=\"rotate(-90 12 {:.1})\" \
         text-anchor=\"middle\">score{}</text>",
        (left + w - right) / 2.0,
        ht - 4.0,
        (top + ht - bottom) / 2.0,
        (top + ht - bottom) / 2.0,
        if i.direction == "lower_is_better" {
            " (higher = worse)"
        } else {
            " (lower = worse)"
        }
    );
    // The band, extended flat to the last session shown.
    // Each session's band is the one its score was judged against; green runs from the better
    // edge of the chart to P75 (everything no worse than P75 is on track).
    let better = if i.direction == "lower_is_better" {
        lo
    } else {
        hi
    };
    let mut band: Vec<(f64, f64, f64, f64, f64)> = curve
        .iter()
        .map(|b| (f64::from(b.session), better, b.p75, b.p90, b.expected))
        .collect();
    if let Some(&(t, a, b, c, d)) = band.last()
        && t < f64::from(sessions)
    {
        band.push((f64::from(sessions), a, b, c, d));
    }
    if band.len() >= 2 {
        let area = |upper: fn(&(f64, f64, f64, f64, f64)) -> f64,
                    lower: fn(&(f64, f64, f64, f64, f64)) -> f64| {
            let mut pts: Vec<String> = band
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(upper(p))))
                .collect();
            pts.extend(
                band.iter()
                    .rev()
                    .map(|p| format!("{:.1},{:.1}", x(p.0), y(lower(p)))),
            );
            pts.join(" ")
        };
        let line = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| {
            band.iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(f(p))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = write!(
            h,
            "<polygon points=\"{}\" fill=\"#d9efd9\"><title>no worse than P75 of similar \
             past patients: on track</title></polygon>\
             <polygon points=\"{}\" fill=\"#fbe7b5\"><title>P75–P90: less progress than \
             expected</title></polygon>\
             <polyline points=\"{}\" fill=\"none\" stroke=\"#b2182b\" stroke-width=\"1.2\"/>\
             <polyline points=\"{}\" fill=\"none\" stroke=\"#1b4f72\" stroke-width=\"2\" \
             stroke-dasharray=\"6 4\"/>",
            area(|p| p.2, |p| p.1),
            area(|p| p.3, |p| p.2),
            line(|p| p.3),
            line(|p| p.4),
        );
    }
    if let Some(c) = i.caseness_cutoff {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yc:.1}\" y2=\"{yc:.1}\" stroke=\"#555\" \
             stroke-dasharray=\"2 3\"/>",
            w - right,
            yc = y(c)
        );
    }
    // The patient's scores: a line, then each point with its colour and symbol.
    let path: Vec<String> = i
        .observed
        .iter()
        .map(|o| format!("{:.1},{:.1}", x(f64::from(o.session)), y(o.score)))
        .collect();
    let _ = write!(
        h,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\"/>",
        path.join(" ")
    );
    for o in &i.observed {
        let (colour, symbol, words) = look(o.signal);
        let (cx, cy) = (x(f64::from(o.session)), y(o.score));
        let _ = write!(
            h,
            "<g><title>session {}: {} ({words})</title><circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" \
             r=\"9\" fill=\"{colour}\" stroke=\"#333\"/><text x=\"{cx:.1}\" y=\"{:.1}\" \
             text-anchor=\"middle\" font-weight=\"700\" fill=\"{}\">{symbol}</text></g>",
            o.session,
            o.score,
            cy + 4.0,
            if matches!(o.signal, Some(Signal::White) | Some(Signal::Yellow)) {
                "#222"
            } else {
                "#fff"
            }
        );
    }
    // Legend, in words: (swatch at the row's y, text).
    let lx = w - right + 12.0;
    type Swatch = Box<dyn Fn(f64) -> String>;
    let mut rows: Vec<(Swatch, String)> = vec![
        (
            Box::new(move |ly| {
                format!(
                    "<rect x=\"{lx}\" y=\"{:.1}\" width=\"16\" height=\"10\" fill=\"#d9efd9\"/>",
                    ly - 5.0
                )
            }),
            "on track (up to P75)".into(),
        ),
        (
            Box::new(move |ly| {
                format!(
                    "<rect x=\"{lx}\" y=\"{:.1}\" width=\"16\" height=\"10\" fill=\"#fbe7b5\"/>",
                    ly - 5.0
                )
            }),
            "less than expected (P75–P90)".into(),
        ),
        (
            Box::new(move |ly| {
                format!(
                    "<line x1=\"{lx}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" \
                     stroke=\"#b2182b\"/>",
                    lx + 16.0
                )
            }),
            "failure boundary (P90)".into(),
        ),
        (
            Box::new(move |ly| {
                format!(
                    "<line x1=\"{lx}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" \
                     stroke=\"#1b4f72\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>",
                    lx + 16.0
                )
            }),
            "expected score".into(),
        ),
    ];
    if let Some(c) = i.caseness_cutoff {
        rows.push((
            Box::new(move |ly| {
                format!(
                    "<line x1=\"{lx}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" \
                     stroke=\"#555\" stroke-dasharray=\"2 3\"/>",
                    lx + 16.0
                )
            }),
            format!("caseness ({c})"),
        ));
    }
    for s in [
        Signal::Green,
        Signal::Yellow,
        Signal::Red,
        Signal::White,
        Signal::Grey,
    ] {
        let (colour, symbol, words) = look(Some(s));
        let ink = if matches!(s, Signal::White | Signal::Yellow) {
            "#222"
        } else {
            "#fff"
        };
        rows.push((
            Box::new(move |ly| {
                format!(
                    "<circle cx=\"{:.1}\" cy=\"{ly:.1}\" r=\"7\" fill=\"{colour}\" \
                     stroke=\"#333\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
                     font-size=\"10\" font-weight=\"700\" fill=\"{ink}\">{symbol}</text>",
                    lx + 8.0,
                    lx + 8.0,
                    ly + 3.5
                )
            }),
            words.split(" (").next().unwrap_or(words).to_string(),
        ));
    }
    for (k, (swatch, text)) in rows.iter().enumerate() {
        let ly = top + 8.0 + 19.0 * k as f64;
        let _ = write!(
            h,
            "{}<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#333\">{}</text>",
            swatch(ly),
            lx + 22.0,
            ly + 4.0,
            esc(text)
        );
    }
    h.push_str("</svg>");
}
