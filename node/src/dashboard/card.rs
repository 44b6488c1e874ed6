//! Report cards (private): a therapist's domains with n, the shrunken effect and its interval,
//! the label, and what they were measured against (the network's benchmark where one is kept),
//! drawn by `report::body`, the same as `report --therapist`. Visible only to that therapist,
//! their supervisors and the clinic's administrators (`User::sees_card_of`).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{PreEscaped, html};

use super::{Dashboard, Session, blocking, page};
use crate::node::Reference;
use crate::stats::Overrides;

/// `GET /card`: a clinician's own card; a supervisor's team and an administrator's clinic as a
/// list.
pub(super) async fn index(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
) -> Response {
    let user = s.user.clone();
    let listed = blocking(&d, move |node| {
        let store = node.store();
        let mut stmt = store
            .conn()
            .prepare("SELECT pseudonym FROM therapist ORDER BY pseudonym")?;
        let all: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(all
            .into_iter()
            .filter(|t| user.sees_card_of(t))
            .collect::<Vec<String>>())
    })
    .await;
    let listed = match listed {
        Ok(l) => l,
        Err(r) => return r,
    };
    if s.user.role == crate::users::Role::Clinician && listed.len() == 1 {
        return page::redirect(&format!("/card/{}", page::short(&listed[0])));
    }
    if listed.is_empty() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "this account sees no therapist's report card",
        );
    }
    let body = html! {
        p.note { "Report cards are private feedback: each is seen only by its therapist, their supervisors and the clinic's administrators." }
        ul.cards {
            @for t in &listed {
                li { a href=(format!("/card/{}", page::short(t))) { "Therapist " (page::therapist(&d.staff, t)) } }
            }
        }
    };
    page::frame(&s, "Report cards", "Report cards", body).into_response()
}

/// `GET /card/{therapist}`: by the first 12 characters of the pseudonym.
pub(super) async fn card(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Path(shown): Path<String>,
) -> Response {
    let user = s.user.clone();
    let want = shown.clone();
    let staff = d.staff.clone();
    let body = blocking(&d, move |node| {
        let mut derived = node.derive(&Overrides::default(), &Reference::Latest)?;
        staff.reveal(&mut derived);
        let Some(full) = derived
            .therapists
            .iter()
            .find(|t| want.len() == 12 && t.starts_with(&want) && user.sees_card_of(t))
            .cloned()
        else {
            return Ok(None);
        };
        Ok(Some(crate::report::body(
            &derived,
            Some(&full),
            &crate::clock::now(),
        )))
    })
    .await;
    match body {
        Ok(Some(b)) => {
            let body = html! {
                p.note { "Private feedback: seen only by this therapist, their supervisors and the clinic's administrators." }
                (PreEscaped(b))
            };
            page::frame(
                &s,
                "Report cards",
                &format!(
                    "Report card · therapist {}",
                    d.staff.get(&shown).unwrap_or(&shown)
                ),
                body,
            )
            .into_response()
        }
        // The same answer for a therapist that does not exist and one not the account's.
        Ok(None) => page::problem(
            StatusCode::NOT_FOUND,
            &format!("no report card of therapist {shown} for this account"),
        ),
        Err(r) => r,
    }
}
