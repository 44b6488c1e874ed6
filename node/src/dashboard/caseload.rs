//! The caseload (home page of clinicians and supervisors): the open episodes of the account's
//! therapists, the most worrying first, each with its latest signal in colour, symbol and
//! words, the last score, sessions since it, and its open alerts, acknowledged or resolved in
//! place. The rows are `alerts::caseload`'s; this file only shows them.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use rusqlite::OptionalExtension;
use serde::Deserialize;

use super::{Dashboard, Session, blocking, page};
use crate::alerts::{self, Action, Case, Filter};

/// The caseload's filter, from the query string.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Shown {
    #[serde(default)]
    signal: Option<String>,
}

/// Symbol and words of a stored signal name.
pub(super) fn signal_look(signal: Option<&str>) -> (&'static str, &'static str) {
    match signal {
        Some("red") => ("✕", "not on track"),
        Some("yellow") => ("!", "less progress than expected"),
        Some("green") => ("✓", "on track"),
        Some("white") => ("○", "below caseness"),
        Some("grey") => ("?", "no basis yet"),
        _ => ("–", "not yet assessed"),
    }
}

/// `GET /`.
pub(super) async fn page(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Query(shown): Query<Shown>,
) -> Response {
    if !s.user.sees_patients() {
        let body = html! {
            p { "This account (" (s.user.role.title()) ") has no caseload: patient pages are for clinicians and supervisors." }
            @if s.user.runs_clinic() {
                p { "See the " a href="/clinic" { "clinic's outcomes, imports and privacy budget" } " and the therapists' " a href="/card" { "report cards" } "." }
            }
        };
        return page::frame(&s, "", "Welcome", body).into_response();
    }
    let signal = match shown.signal.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match protocol_signal(v) {
            Some(sig) => Some(sig),
            None => {
                return page::problem(StatusCode::BAD_REQUEST, &format!("unknown signal {v:?}"));
            }
        },
    };
    let user = s.user.clone();
    let cases = blocking(&d, move |node| {
        let filter = Filter {
            // One therapist: let the query select; a team: select below.
            therapist: (user.therapists.len() == 1).then(|| user.therapists[0].clone()),
            signal,
        };
        let all = alerts::caseload(
            &node.store(),
            node.config().import.episode_gap_weeks,
            &filter,
        )?;
        Ok(all
            .into_iter()
            .filter(|c| user.therapists.iter().any(|t| t.starts_with(&c.therapist)))
            .collect::<Vec<Case>>())
    })
    .await;
    let cases = match cases {
        Ok(c) => c,
        Err(r) => return r,
    };
    let team = s.user.therapists.len() > 1;
    let body = html! {
        (super::patient::find_form(&s))
        form.filters method="get" action="/" {
            label { "Show"
                select name="signal" {
                    @for (value, label) in [("", "every open episode"), ("red", "not on track"), ("yellow", "less progress than expected"), ("green", "on track"), ("grey", "no basis yet"), ("white", "below caseness")] {
                        option value=(value) selected[shown.signal.as_deref().unwrap_or("") == value] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        p.note { (cases.len()) " open episode" @if cases.len() != 1 { "s" } ", the most worrying first (open safety alerts, then not on track, less progress, …)." }
        @if cases.is_empty() {
            p { "No open episodes to show." }
        } @else {
            table.caseload {
                thead { tr {
                    th scope="col" { "Signal" }
                    th scope="col" { "Episode" }
                    @if team { th scope="col" { "Therapist" } }
                    th scope="col" { "Measure" }
                    th.num scope="col" { "Last score" }
                    th.num scope="col" { "Sessions since" }
                    th scope="col" { "Open alerts" }
                } }
                tbody {
                    @for c in &cases { (row(&s, c, team.then_some(&*d.staff))) }
                }
            }
        }
    };
    page::frame(&s, "Caseload", "Caseload", body).into_response()
}

/// One open episode; `team` (the staff list) shows its therapist too.
fn row(s: &Session, c: &Case, team: Option<&crate::staff::StaffList>) -> Markup {
    let (symbol, words) = signal_look(c.signal.as_deref());
    let class = format!("sig sig-{}", c.signal.as_deref().unwrap_or("none"));
    html! {
        tr {
            td class=(class) data-label="Signal" { span aria-hidden="true" { (symbol) } " " (words) }
            td data-label="Episode" { a href=(format!("/patient/{}", c.episode)) title="Open the patient's page" { code { (c.episode) } } }
            @if let Some(staff) = team { td data-label="Therapist" { (page::therapist(staff, &c.therapist)) } }
            td data-label="Measure" { (c.instrument.as_deref().unwrap_or("—")) }
            td.num data-label="Last score" {
                @match (c.last_score, c.last_scored_session) {
                    (Some(v), Some(t)) => { (format!("{v:.0}")) " " br; span.note { "session " (t) } }
                    _ => "—",
                }
            }
            td.num data-label="Sessions since" { (c.sessions_since_measure) }
            td data-label="Open alerts" {
                @for a in &c.open_alerts { (page::alert_box(s, a, "/")) }
            }
        }
    }
}

fn protocol_signal(v: &str) -> Option<protocol::trajectory::Signal> {
    use protocol::trajectory::Signal;
    [
        Signal::Red,
        Signal::Yellow,
        Signal::Green,
        Signal::Grey,
        Signal::White,
    ]
    .into_iter()
    .find(|s| alerts::signal_name(*s) == v)
}

/// The form of an alert action.
#[derive(Debug, Deserialize)]
pub(super) struct ActForm {
    #[serde(default)]
    note: Option<String>,
    /// The page to go back to: the caseload or a patient's page.
    #[serde(default)]
    back: Option<String>,
}

/// `back` when it is one of this dashboard's pages an alert is acted on from, else the caseload
/// (never an address elsewhere).
pub(super) fn back_to(back: Option<&str>) -> String {
    match back {
        Some(b) if super::patient::episode_path(b) => b.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `POST /alerts/{id}/{ack|resolve}`: recorded under the account's name, then back to the
/// caseload. Only an alert of the account's own patients.
pub(super) async fn act(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Path((id, action)): Path<(i64, String)>,
    Form(f): Form<ActForm>,
) -> Response {
    let action = match action.as_str() {
        "ack" => Action::Acknowledge,
        "resolve" => Action::Resolve,
        _ => return page::problem(StatusCode::NOT_FOUND, "no such action"),
    };
    let user = s.user.clone();
    let back = back_to(f.back.as_deref());
    let done = blocking(&d, move |node| {
        let store = node.store();
        let therapist: Option<Option<String>> = store
            .conn()
            .query_row(
                "SELECT t.pseudonym FROM alert a JOIN episode e USING (episode_id)
                 LEFT JOIN therapist t ON t.therapist_id = e.therapist_id WHERE a.alert_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        match therapist {
            Some(t) if user.sees_patient_of(t.as_deref()) => {}
            // The same answer for an alert that does not exist and one of another's patient.
            _ => return Ok(false),
        }
        alerts::act(
            &store,
            id,
            action,
            &user.name,
            f.note.as_deref(),
            &crate::clock::now(),
        )?;
        Ok(true)
    })
    .await;
    match done {
        Ok(true) => page::redirect(&back),
        Ok(false) => page::problem(
            StatusCode::NOT_FOUND,
            &format!("no alert {id} among your patients"),
        ),
        Err(r) => r,
    }
}
