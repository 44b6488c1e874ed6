//! A patient's page (`/patient/{episode}`) and its printable form (`…/print`): the episode's open
//! alerts, acknowledged or resolved in place, then what `support` computes for it, drawn by
//! `support::html::body` (the same chart and tables as `support --html`). Only an account whose
//! therapists include the episode's sees it, and every view is recorded (`users::record_view`)
//! before the page is sent. A patient is found by the clinic's own id with a POST, so the id
//! stays out of addresses and browser history.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::{Dashboard, Session, blocking, page};
use crate::alerts::Alert;
use crate::node::Node;
use crate::support::{Located, PatientSupport, Who};
use crate::users::{self, User};

/// Whether `path` is a patient page of this dashboard (`/patient/` and 12 lowercase hex digits).
pub(super) fn episode_path(path: &str) -> bool {
    path.strip_prefix("/patient/").is_some_and(shown)
}

/// Whether `s` is an episode as pages show it (12 lowercase hex digits).
fn shown(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where the episode `who` names is, if it is one of `user`'s patients (`None` for one that is
/// not stored and for another therapist's alike).
pub(super) fn locate_mine(node: &Node, user: &User, who: &Who) -> Option<Located> {
    node.locate(who)
        .ok()
        .filter(|l| user.sees_patient_of(l.therapist.as_deref()))
}

/// The form that opens a patient's page by the clinic's id.
pub(super) fn find_form(s: &Session) -> Markup {
    html! {
        form.filters method="post" action="/patient/find" {
            input type="hidden" name="csrf" value=(s.csrf);
            label { "Open a patient by the clinic's id"
                input type="text" name="id" required autocomplete="off" spellcheck="false";
            }
            button type="submit" { "Open" }
        }
    }
}

/// The form of `find_form`.
#[derive(Debug, Deserialize)]
pub(super) struct FindForm {
    #[serde(default)]
    id: String,
}

/// `POST /patient/find`: to the page of the patient's latest episode, if they are the
/// account's.
pub(super) async fn find(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Form(f): Form<FindForm>,
) -> Response {
    let id = f.id.trim().to_owned();
    if id.is_empty() {
        return page::problem(StatusCode::BAD_REQUEST, "give the patient's id");
    }
    let user = s.user.clone();
    let who = Who::Patient(id.clone());
    let found = blocking(&d, move |node| Ok(locate_mine(node, &user, &who))).await;
    match found {
        Ok(Some(l)) => page::redirect(&format!("/patient/{}", l.shown)),
        // The same answer for a patient not stored and one of another therapist's.
        Ok(None) => not_yours(&format!("patient {id}")),
        Err(r) => r,
    }
}

fn not_yours(what: &str) -> Response {
    page::problem(
        StatusCode::NOT_FOUND,
        &format!("no {what} among your patients"),
    )
}

/// Which form of the page.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Page,
    Print,
}

/// `GET /patient/{episode}`.
pub(super) async fn page(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Path(episode): Path<String>,
) -> Response {
    show(d, s, episode, Shape::Page).await
}

/// `GET /patient/{episode}/print`.
pub(super) async fn print(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Path(episode): Path<String>,
) -> Response {
    show(d, s, episode, Shape::Print).await
}

/// What the page shows, or why it shows nothing.
enum Found {
    Page(Box<PatientSupport>, Vec<Alert>),
    NotYours,
    Nothing(String),
}

async fn show(d: Dashboard, s: Session, episode: String, form: Shape) -> Response {
    if !s.user.sees_patients() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "patient pages are for clinicians and supervisors",
        );
    }
    if !shown(&episode) {
        return not_yours(&format!("episode {episode}"));
    }
    let user: User = s.user.clone();
    let who = Who::Shown(episode.clone());
    let found = blocking(&d, move |node| {
        let Some(at) = locate_mine(node, &user, &who) else {
            return Ok(Found::NotYours);
        };
        let (page, open) = match node.support_page(&who) {
            Ok(v) => v,
            // Nothing of the patient is shown, so nothing is recorded.
            Err(e) => return Ok(Found::Nothing(format!("{e:#}"))),
        };
        let name = match form {
            Shape::Page => "patient",
            Shape::Print => "print",
        };
        users::record_view(&node.store(), &user, at.episode, name, &crate::clock::now())?;
        Ok(Found::Page(Box::new(page), open))
    })
    .await;
    let (support, open) = match found {
        Ok(Found::Page(p, open)) => (p, open),
        Ok(Found::NotYours) => return not_yours(&format!("episode {episode}")),
        Ok(Found::Nothing(why)) => {
            let body = html! {
                p { "Episode " code { (episode) } ": " (why) "." }
                p { a href="/" { "Back to the caseload" } }
            };
            return page::frame(&s, "Caseload", "Patient", body).into_response();
        }
        Err(r) => return r,
    };
    let now = crate::clock::now();
    let title = format!("Patient · episode {}", support.episode);
    let here = format!("/patient/{}", support.episode);
    let computed = PreEscaped(crate::support::html::body(&support, &now));
    match form {
        Shape::Page => {
            let body = html! {
                p.actions {
                    a href="/" { "← Caseload" }
                    " · "
                    a href=(format!("{here}/print")) { "Printable view" }
                    " (to go through with the patient)"
                }
                @if !open.is_empty() {
                    section.open-alerts aria-labelledby="open-alerts" {
                        h2 #open-alerts { "Open alerts" }
                        @for a in &open { (page::alert_box(&s, a, &here)) }
                    }
                }
                (computed)
            };
            page::frame(&s, "Caseload", &title, body).into_response()
        }
        Shape::Print => {
            let body = html! {
                p.note.noprint {
                    "Printable view: print it with your browser (Ctrl+P or ⌘P). "
                    a href=(here) { "Back to the patient's page" }
                }
                h1 { (title) }
                p.note {
                    "Printed from mbc-node by " (s.user.name) " (" (s.user.role.title()) ") at "
                    (now) ". Confidential: part of the patient's record."
                }
                @if !open.is_empty() {
                    section.open-alerts {
                        h2 { "Open alerts" }
                        ul { @for a in &open { li { (a.line()) } } }
                    }
                }
                (computed)
            };
            page::bare(&title, body).into_response()
        }
    }
}
