//! The Match screen: the request form (a stored patient or intake scores; preferences,
//! must-haves, weekly windows, travel, payer, the longest wait), the shortlist `match` computes
//! and logs (`crate::matching::shortlist`, the same as the command line), with its reasons,
//! levels for staff, the wait-versus-fit trade-off, and a button per therapist to record the
//! patient's choice, or a decline of the list. A request with problems is shown again with
//! every problem and nothing is logged.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::patient::locate_mine;
use super::{Dashboard, Session, blocking, page};
use crate::matching::request::{GroupsFile, RequestFile, ask};
use crate::matching::{self, Ask, Choice, Matched, Patient};
use crate::support::Who;

/// Days and day parts of the windows grid, as `Slot::parse` reads them.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const PARTS: [(&str, &str); 3] = [("am", "morning"), ("pm", "afternoon"), ("eve", "evening")];

/// The form's fields as given (a field may repeat: `window`).
#[derive(Debug, Default, Clone)]
struct Given(Vec<(String, String)>);

impl Given {
    fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map_or("", |(_, v)| v.trim())
    }
    fn all(&self, k: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn some(&self, k: &str) -> Option<String> {
        Some(self.get(k).to_owned()).filter(|v| !v.is_empty())
    }
}

/// `GET /match`.
pub(super) async fn form_page(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
) -> Response {
    if !s.user.sees_patients() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "matching is for clinicians and supervisors",
        );
    }
    let sites = sites(&d);
    page::frame(
        &s,
        "Match",
        "Match a patient to a therapist",
        form(&s, &Given::default(), &sites, &[]),
    )
    .into_response()
}

fn sites(d: &Dashboard) -> Vec<String> {
    d.node.config().matching.sites.keys().cloned().collect()
}

/// The request form, filled with `given`, with `problems` above it.
fn form(s: &Session, given: &Given, sites: &[String], problems: &[String]) -> Markup {
    let windows: Vec<&str> = given.all("window").collect();
    let number = |name: &str, label: &str, hint: &str| {
        html! {
            label { (label) " " span.note { (hint) }
                input type="number" name=(name) value=(given.get(name)) step="any" min="0" inputmode="decimal";
            }
        }
    };
    html! {
        @if !problems.is_empty() {
            div.problem role="alert" {
                p { b { "The request was not run, and nothing was logged:" } }
                ul { @for p in problems { li { (p) } } }
            }
        }
        form.request method="post" action="/match" {
            input type="hidden" name="csrf" value=(s.csrf);
            fieldset {
                legend { "Whose intake" }
                label { "A stored patient, by the clinic's id " span.note { "(intake, safety answers and groups from the store)" }
                    input type="text" name="patient" value=(given.get("patient")) autocomplete="off" spellcheck="false";
                }
                p.note { "or the intake scores:" }
                div.row {
                    (number("phq9", "PHQ-9", "0–27"))
                    (number("gad7", "GAD-7", "0–21"))
                    (number("core10", "CORE-10", "0–40"))
                }
                label.check { input type="checkbox" name="urgent" value="on" checked[given.get("urgent") == "on"]; " Urgent (a crisis): the first available safe therapist, no waiting offered" }
            }
            fieldset {
                legend { "What the patient wants" }
                label { "Would like " span.note { "KEY=VALUE, comma-separated; keys gender, language, modality, delivery (e.g. gender=female, language=pl)" }
                    input type="text" name="prefer" value=(given.get("prefer")) autocomplete="off";
                }
                label { "Must have " span.note { "(same keys: therapists without these are not offered)" }
                    input type="text" name="require" value=(given.get("require")) autocomplete="off";
                }
            }
            fieldset {
                legend { "When the patient can come " span.note { "(none ticked: any time)" } }
                table.windows {
                    thead { tr { th scope="col" { span.visually-hidden { "part of day" } } @for d in DAYS { th scope="col" { (d) } } } }
                    tbody {
                        @for (part, words) in PARTS {
                            tr {
                                th scope="row" { (words) }
                                @for d in DAYS {
                                    @let value = format!("{d}-{part}");
                                    td { input type="checkbox" name="window" value=(value) checked[windows.contains(&value.as_str())] aria-label=(format!("{d} {words}")); }
                                }
                            }
                        }
                    }
                }
            }
            fieldset {
                legend { "Logistics" }
                div.row {
                    @if !sites.is_empty() {
                        label { "Travels from"
                            select name="near" {
                                option value="" { "anywhere / not given" }
                                @for site in sites { option value=(site) selected[given.get("near") == site.as_str()] { (site) } }
                            }
                        }
                    }
                    (number("radius_km", "Can travel, km", ""))
                    label { "Payer" input type="text" name="payer" value=(given.get("payer")) placeholder="e.g. NHS"; }
                    (number("max_wait_days", "Longest wait, days", ""))
                }
            }
            details {
                summary { "Equity monitor groups " span.note { "(scores only; a stored patient's come from the store)" } }
                div.row {
                    label { "Sex" select name="sex" {
                        @for (v, l) in [("", "not given"), ("female", "female"), ("male", "male"), ("other", "other")] {
                            option value=(v) selected[given.get("sex") == v] { (l) }
                        }
                    } }
                    (number("age", "Age, years", ""))
                    label { "Ethnicity group" input type="text" name="ethnicity" value=(given.get("ethnicity")); }
                    (number("deprivation_decile", "Deprivation decile", "1–10"))
                }
            }
            button type="submit" { "Find therapists" }
        }
    }
}

/// The form as a request, or every problem with it.
fn request(given: &Given) -> Result<RequestFile, Vec<String>> {
    let mut problems = Vec::new();
    let mut number = |name: &str, label: &str| page::number(given.get(name), label, &mut problems);
    let mut scores = BTreeMap::new();
    for (name, id) in [("phq9", "PHQ-9"), ("gad7", "GAD-7"), ("core10", "CORE-10")] {
        if let Some(v) = number(name, id) {
            scores.insert(id.to_owned(), v);
        }
    }
    let radius_km = number("radius_km", "Can travel, km");
    let max_wait = number("max_wait_days", "Longest wait, days");
    let age = number("age", "Age");
    let decile = number("deprivation_decile", "Deprivation decile");
    let max_wait_days = page::whole(max_wait, "Longest wait, days", &mut problems);
    let age = page::whole(age, "Age", &mut problems);
    let deprivation_decile = page::whole(decile, "Deprivation decile", &mut problems);
    let list = |k: &str| -> Vec<String> {
        given
            .get(k)
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let patient = given.some("patient");
    if patient.is_some() && !scores.is_empty() {
        problems.push("give either a stored patient or intake scores, not both".into());
    }
    if patient.is_none() && scores.is_empty() {
        problems
            .push("say whose intake to match on: a stored patient's id, or intake scores".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(RequestFile {
        patient,
        scores,
        urgent: given.get("urgent") == "on",
        prefer: list("prefer"),
        require: list("require"),
        windows: given.all("window").map(str::to_owned).collect(),
        from: None,
        near: given.some("near"),
        radius_km,
        payer: given.some("payer"),
        max_wait_days,
        groups: GroupsFile {
            sex: given.some("sex"),
            age,
            ethnicity: given.some("ethnicity"),
            deprivation_decile,
        },
    })
}

/// What a request came to.
enum Outcome {
    Listed(Box<Matched>),
    Refused(Vec<String>),
}

/// `POST /match`: the shortlist, logged, or the form again with its problems.
pub(super) async fn run(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    body: Bytes,
) -> Response {
    if !s.user.sees_patients() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "matching is for clinicians and supervisors",
        );
    }
    let given = Given(
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k != "csrf")
            .collect(),
    );
    let asked: Result<Ask, Vec<String>> =
        request(&given).and_then(|r| ask(r).map_err(|e| vec![format!("{e:#}")]));
    let user = s.user.clone();
    let outcome = match asked {
        Err(problems) => Outcome::Refused(problems),
        Ok(asked) => {
            let asked = Ask {
                by: Some(user.name.clone()),
                ..asked
            };
            let staff = d.staff.clone();
            let run = blocking(&d, move |node| {
                if let Patient::Stored(raw) = &asked.patient
                    && locate_mine(node, &user, &Who::Patient(raw.clone())).is_none()
                {
                    return Ok(Outcome::Refused(vec![format!(
                        "no patient {raw} among your patients"
                    )]));
                }
                Ok(match matching::shortlist(node, &asked, &staff) {
                    Ok(m) => Outcome::Listed(Box::new(m)),
                    Err(e) => Outcome::Refused(vec![format!("{e:#}")]),
                })
            })
            .await;
            match run {
                Ok(o) => o,
                Err(r) => return r,
            }
        }
    };
    match outcome {
        Outcome::Refused(problems) => {
            let body = form(&s, &given, &sites(&d), &problems);
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                page::frame(&s, "Match", "Match a patient to a therapist", body),
            )
                .into_response()
        }
        Outcome::Listed(m) => {
            let title = format!("Shortlist {}", m.request_id);
            page::frame(&s, "Match", &title, shortlist(&s, &m)).into_response()
        }
    }
}

/// The shortlist as staff go through it with the patient.
fn shortlist(s: &Session, m: &Matched) -> Markup {
    let l = &m.shortlist;
    html! {
        p.note {
            "Made " (page::when(&m.created_at)) @if let Some(p) = &m.patient { " for patient " code { (p) } } ". "
            "Intake: "
            @for (k, d) in m.intake.domains.iter().enumerate() {
                @if k > 0 { ", " }
                (d.domain) " (" (d.instrument) " " (d.score) ")" @if d.elevated { b { " elevated" } }
            }
            "."
        }
        @if let Some(why) = &m.intake.urgent { p.problem role="alert" { b { "Urgent: " } (why) ". The first available safe therapist is listed first; no waiting is offered." } }
        @for n in &l.notes { p.note { (sentence(n)) } }
        p.tradeoff { b { "Wait or fit: " } (l.trade_off) }
        ol.offers {
            @for o in &l.offers {
                li.offer {
                    h2 { code { (o.therapist) } " " span class=(format!("level level-{}", o.level.number())) { (o.level.to_string()) } }
                    @if !o.badges.is_empty() {
                        p.badges { @for b in &o.badges { span.badge { (b.thin.as_str()) ": " (b.domain) } " " } }
                    }
                    ul.reasons {
                        @for r in &o.reasons {
                            li { b { (aspect(r.aspect)) ": " } (r.text) }
                        }
                    }
                    @if let Some(note) = &o.staff_note { p.staff-note { (note) } }
                    form.inline method="post" action=(format!("/match/{}/record", m.request_id)) {
                        input type="hidden" name="csrf" value=(s.csrf);
                        input type="hidden" name="chose" value=(o.therapist);
                        button type="submit" { "The patient chose this therapist" }
                    }
                }
            }
        }
        form.decline method="post" action=(format!("/match/{}/record", m.request_id)) {
            input type="hidden" name="csrf" value=(s.csrf);
            label { "Or the patient declined the list; why " span.note { "(optional)" }
                input type="text" name="reason";
            }
            button type="submit" name="declined" value="list" { "Record the decline" }
        }
        @if !l.excluded.is_empty() {
            details {
                summary { "Not offered (" (l.excluded.len()) ")" }
                ul { @for e in &l.excluded { li { code { (e.therapist) } ": " (e.reasons.join("; ")) } } }
            }
        }
        @if l.not_listed > 0 { p.note { (l.not_listed) " more eligible therapist(s) ranked below the list." } }
        p.note {
            "Track records are measured against " (m.reference) ". Levels and records are for staff: "
            "go through the list with the patient, who chooses."
        }
        p { a href="/match" { "A new request" } }
    }
}

fn aspect(a: protocol::matching::Aspect) -> &'static str {
    match a {
        protocol::matching::Aspect::Outcome => "Outcomes",
        protocol::matching::Aspect::Fit => "Fit",
        protocol::matching::Aspect::Logistics => "Logistics",
    }
}

/// `text` with its first letter in capitals (the shortlist's notes are clauses).
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// The form recording what happened.
#[derive(Debug, Deserialize)]
pub(super) struct RecordForm {
    #[serde(default)]
    chose: Option<String>,
    #[serde(default)]
    declined: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /match/{id}/record`.
pub(super) async fn record(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Form(f): Form<RecordForm>,
) -> Response {
    if !s.user.sees_patients() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "matching is for clinicians and supervisors",
        );
    }
    let choice = match (f.chose.filter(|c| !c.trim().is_empty()), f.declined) {
        (Some(t), _) => Choice::Chosen(t),
        (None, Some(_)) => Choice::Declined(None),
        (None, None) => {
            return page::problem(
                StatusCode::BAD_REQUEST,
                "say what happened: a therapist chosen, or a decline",
            );
        }
    };
    let by = s.user.name.clone();
    let reason = f.reason.filter(|r| !r.trim().is_empty());
    let done = blocking(&d, move |node| {
        Ok(matching::record(node, id, &choice, reason.as_deref(), &by)
            .map_err(|e| format!("{e:#}")))
    })
    .await;
    match done {
        Ok(Ok(r)) => {
            let body = html! {
                p.done role="status" {
                    @match (&r.therapist, r.kind) {
                        (Some(t), "chosen") => { "Recorded: the patient chose " code { (t) } " (level " (r.level.unwrap_or_default()) ")." }
                        (Some(t), _) => { "Recorded: the patient declined " code { (t) } "." }
                        (None, _) => { "Recorded: the patient declined the list." }
                    }
                    " " span.note { (page::when(&r.at)) ", by " (r.by) }
                }
                p { a href="/match" { "A new request" } }
            };
            page::frame(&s, "Match", &format!("Shortlist {id}"), body).into_response()
        }
        Ok(Err(why)) => page::problem(StatusCode::UNPROCESSABLE_ENTITY, &why),
        Err(r) => r,
    }
}
