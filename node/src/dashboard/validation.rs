//! The validation card of the clinical-support signals (`support validate`): per instrument its
//! latest stored card (pool and test episodes, each method's AUC, sensitivity, specificity,
//! PPV, NPV, r and calibration beyond P90, the verdict) and whether its not-on-track alerts are
//! on because of it. A clinic administrator can validate again from here.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::Value;

use super::{Dashboard, Session, blocking, page};
use crate::benchmark;
use crate::support::validate;

/// `GET /validation`.
pub(super) async fn page(State(d): State<Dashboard>, Extension(s): Extension<Session>) -> Response {
    if !(s.user.sees_patients() || s.user.runs_clinic()) {
        return page::problem(
            StatusCode::FORBIDDEN,
            "the validation card is for the clinic's staff",
        );
    }
    let cards = match blocking(&d, |node| validate::latest(&node.store())).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pct = |v: &Value| benchmark::pct(v.as_f64());
    let num = |v: &Value| benchmark::num(v.as_f64(), 2);
    let body = html! {
        p.note { "Each instrument's signals are checked on this clinic's own ended episodes: the past patients before a cut date predict those after it. Not-on-track alerts are on only for an instrument whose card passed; safety alerts are always on." }
        @if s.user.runs_clinic() {
            form.inline method="post" action="/validation" {
                input type="hidden" name="csrf" value=(s.csrf);
                button type="submit" { "Validate again on today's data" }
            }
        }
        @if cards.is_empty() {
            p { "No validation yet: the signals are prompts for judgement, not alerts, until one passes." }
        }
        @for stored in &cards {
            @let (at, passed, c) = (&stored.validated_at, stored.passed, &stored.card);
            section.card {
                h2 { (c["instrument"].as_str().unwrap_or("?")) " "
                    @if passed { span.sig.sig-green { "✓ passed: not-on-track alerts on" } }
                    @else { span.sig.sig-red { "✕ not passed: not-on-track alerts off" } }
                }
                p.note {
                    "Validated " (at) ". "
                    @if c["cut_date"] == validate::LEAVE_ONE_OUT {
                        "Too few ended episodes for a time split: each of the " (c["test"]) " tested against the clinic's other episodes."
                    } @else {
                        "Pool: " (c["pool"]) " episodes that ended before " (c["cut_date"].as_str().unwrap_or("?")) "; test: " (c["test"]) " that ended since"
                    }
                    " (" (c["non_improved"]) " not reliably improved at the end)."
                }
                p { (c["verdict"].as_str().unwrap_or("")) }
                div.scroll { table {
                    caption.note { "AUC: early warning at sessions 2–3 for final non-improvement. Sensitivity, specificity, PPV and NPV: of the red signal by session 3." }
                    tr { th scope="col" { "method" } th.num scope="col" { "patients" } th.num scope="col" { "AUC" } th.num scope="col" { "sensitivity" } th.num scope="col" { "specificity" } th.num scope="col" { "PPV" } th.num scope="col" { "NPV" } th.num scope="col" { "r (change)" } th.num scope="col" { "beyond P90" } }
                    @for m in c["methods"].as_array().into_iter().flatten() {
                        tr {
                            td { (m["method"].as_str().unwrap_or("?").replace('_', " "))
                                 @if m["method"] == c["preferred"] { " " b { "(used)" } } }
                            td.num { (m["assessed"]) }
                            td.num { (num(&m["auc"])) }
                            td.num { (pct(&m["sensitivity"])) }
                            td.num { (pct(&m["specificity"])) }
                            td.num { (pct(&m["ppv"])) }
                            td.num { (pct(&m["npv"])) }
                            td.num { (num(&m["r"])) }
                            td.num { (pct(&m["above_p90_mid"])) }
                        }
                    }
                } }
            }
        }
    };
    page::frame(
        &s,
        "Validation",
        "Validation of the clinical-support signals",
        body,
    )
    .into_response()
}

/// `POST /validation` (administrators): validates again, then back to the card.
pub(super) async fn run(State(d): State<Dashboard>, Extension(s): Extension<Session>) -> Response {
    if !s.user.runs_clinic() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "validation is run by the clinic's administrators",
        );
    }
    let by = s.user.name.clone();
    match blocking(&d, crate::release::validate_support).await {
        Ok((cards, raised)) => {
            tracing::info!(
                user = by,
                cards = cards.len(),
                raised,
                "dashboard: validated the clinical-support signals"
            );
            page::redirect("/validation")
        }
        Err(r) => r,
    }
}
