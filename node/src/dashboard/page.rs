//! The frame of every page (header, navigation by role, the account and its sign-out), the
//! style sheet (served from the binary: no inline style, nothing from elsewhere), redirects and
//! the page that says what went wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::Session;

/// The style sheet.
const CSS: &str = include_str!("app.css");

/// `GET /app.css`: the dashboard's rules, then those of the clinical-support body it embeds.
pub(super) async fn css() -> Response {
    let mut r = format!(
        "{CSS}{}\n{}\n",
        crate::support::html::CSS,
        crate::report::CSS
    )
    .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

/// A page without navigation (sign-in).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mbc-node" }
                link rel="stylesheet" href="/app.css";
            }
            body { main { (body) } }
        }
    }
}

/// A page of a signed-in session: `active` names its navigation entry.
pub(super) fn frame(s: &Session, active: &str, title: &str, body: Markup) -> Markup {
    let mut nav: Vec<(&str, &str)> = Vec::new();
    if s.user.sees_patients() {
        nav.push(("/", "Caseload"));
        nav.push(("/match", "Match"));
    }
    if s.user.sees_patients() || s.user.runs_clinic() {
        nav.push(("/card", "Report cards"));
    }
    if s.user.sees_patients() || s.user.runs_clinic() {
        nav.push(("/validation", "Validation"));
    }
    if s.user.runs_clinic() {
        nav.push(("/clinic", "Clinic"));
    }
    if s.user.coordinates() {
        nav.push(("/network", "Network"));
    }
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mbc-node" }
                link rel="stylesheet" href="/app.css";
            }
            body {
                header.top {
                    span.brand { "mbc-node" }
                    nav aria-label="Main" {
                        @for (href, label) in &nav {
                            a href=(href) aria-current=[(*label == active).then_some("page")] { (label) }
                        }
                    }
                    span.who { (s.user.name) " · " (s.user.role.title()) }
                    form.inline method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// An id (a pseudonym, a release or round id) as pages show it: its first 12 characters.
pub(super) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A therapist as pages show them: by the clinic's staff id when its display list names them
/// (the pseudonym's short form in the title), else by that short form.
pub(super) fn therapist(staff: &crate::staff::StaffList, id: &str) -> Markup {
    match staff.get(id) {
        Some(name) => html! { span.staff title=(format!("pseudonym {}", short(id))) { (name) } },
        None => html! { code { (short(id)) } },
    }
}

/// A form's number field `v` (blank: `None`); anything but a finite number is one of the
/// form's `problems`, named by the field's `label`.
pub(super) fn number(v: &str, label: &str, problems: &mut Vec<String>) -> Option<f64> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Some(x),
        _ => {
            problems.push(format!("{label}: {v:?} is not a number"));
            None
        }
    }
}

/// A number of a form ([`number`]) that must be a whole one, at least 0, that fits `T`;
/// anything else is one of the form's `problems`.
pub(super) fn whole<T: TryFrom<i64>>(
    v: Option<f64>,
    label: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let x = v?;
    let fits = (x.fract() == 0.0 && x >= 0.0)
        .then(|| T::try_from(x as i64).ok())
        .flatten();
    if fits.is_none() {
        problems.push(format!("{label}: {x} is not a whole number"));
    }
    fits
}

/// A moment stored as RFC 3339 as pages show it: "4 Dec 2026, 21:57 UTC", the exact value in
/// its `datetime` and title. Anything else is shown as it is.
pub(super) fn when(at: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(at) {
        Ok(t) => html! {
            time datetime=(at) title=(at) {
                (t.with_timezone(&chrono::Utc).format("%-d %b %Y, %H:%M UTC").to_string())
            }
        },
        Err(_) => html! { (at) },
    }
}

/// `303 See Other` to `to`.
pub(super) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    // Unwrap safety: every target is a fixed ASCII path or one built from hex and digits.
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).expect("an ASCII path"),
    );
    r
}

/// A page saying what went wrong, with `code`.
pub(super) fn problem(code: StatusCode, what: &str) -> Response {
    let body = html! {
        h1 { (code.canonical_reason().unwrap_or("Problem")) }
        p.problem role="alert" { (what) }
        p { a href="/" { "Back to the start page" } }
    };
    (code, bare("Problem", body)).into_response()
}

/// One open alert with its Acknowledge (while open) and Resolve buttons; after either, back to
/// `back`.
pub(super) fn alert_box(s: &Session, a: &crate::alerts::Alert, back: &str) -> Markup {
    html! {
        div class=(format!("alert alert-{}", a.kind)) {
            p {
                b { @if a.kind == "safety" { "Safety" } @else { "Not on track" } }
                ", session " (a.session) ": " (a.reason) " "
                span.note { "(" (a.state) ")" }
            }
            @for (action, label) in [("ack", "Acknowledge"), ("resolve", "Resolve")] {
                @if action == "resolve" || a.state == "open" {
                    form.inline method="post" action=(format!("/alerts/{}/{action}", a.id)) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="back" value=(back);
                        button type="submit" aria-label=(format!("{label} alert {} ({})", a.id, a.kind.replace('_', " "))) { (label) }
                    }
                }
            }
        }
    }
}
