//! The Clinic screen (administrators): the clinic's NHS Talking Therapies rates against the
//! national figures and every domain's therapists (`report::body`, as `report` draws them), the
//! latest network benchmark, an import by upload (the same all-or-nothing import and messages
//! as `import`: `Node::import_upload`), the privacy budget, the audit of every release that left
//! the node, and the latest views of patient pages.

use axum::Extension;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, PreEscaped, html};

use super::{Dashboard, Session, blocking, page};
use crate::import::FileOutcome;
use crate::node::Reference;
use crate::stats::Overrides;
use crate::{benchmark, clock, ledger, users};

/// The largest upload taken, bytes.
pub(super) const MAX_UPLOAD: usize = 256 << 20;

/// `GET /clinic`.
pub(super) async fn page(State(d): State<Dashboard>, Extension(s): Extension<Session>) -> Response {
    if !s.user.runs_clinic() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "the clinic's screen is for its administrators",
        );
    }
    let staff = d.staff.clone();
    let shown = blocking(&d, move |node| {
        let now = clock::now();
        let mut derived = node.derive(&Overrides::default(), &Reference::Latest)?;
        staff.reveal(&mut derived);
        let report = crate::report::body(&derived, None, &now);
        let store = node.store();
        let latest = benchmark::get(store.conn(), None)?;
        let policy = ledger::Policy::from_config(&node.config().privacy)?;
        let budget = ledger::budget(store.conn(), &policy, clock::now_utc())?;
        let entries = ledger::entries(store.conn())?;
        let views = users::views(&store, None, 50)?;
        Ok((report, latest, budget, entries, views))
    })
    .await;
    let (report, latest, budget, entries, views) = match shown {
        Ok(v) => v,
        Err(r) => return r,
    };
    let c = &budget.current;
    let body = html! {
        nav.toc aria-label="On this page" {
            a href="#outcomes" { "Outcomes" } " · " a href="#network" { "Network benchmark" } " · "
            a href="#import" { "Import" } " · " a href="#privacy" { "Privacy budget and audit" } " · "
            a href="#views" { "Patient page views" }
        }
        section #outcomes {
            h2 { "Outcomes" }
            (PreEscaped(report))
        }
        section #network {
            h2 { "Latest network benchmark" }
            @match &latest {
                None => p.note { "No network benchmark release is kept yet: the clinic's figures below are against its own data." },
                Some(b) => {
                    @let doc = &b.document;
                    p { "Release " code { (page::short(&doc.release_id)) } ", issued " (page::when(&doc.issued_at)) " for " (doc.period) ", from " (doc.clinics.contributing) " clinics, signed by the coordinator and checked by this node." }
                    table {
                        caption.note { "The network's figures (differentially private sums: nothing of any patient left any clinic)" }
                        tr { th scope="col" { "domain" } th scope="col" { "episodes" } th scope="col" { "recovery" } th scope="col" { "reliable improvement" } th scope="col" { "reliable deterioration" } }
                        @for x in &doc.summary {
                            tr {
                                td { (x.domain) }
                                td.num { (format!("{:.0}", x.episodes)) }
                                td.num { (benchmark::pct(x.recovery_rate)) }
                                td.num { (benchmark::pct(x.reliable_improvement_rate)) }
                                td.num { (benchmark::pct(x.reliable_deterioration_rate)) }
                            }
                        }
                    }
                }
            }
        }
        section #import {
            h2 { "Import outcome data" }
            (upload_form(&s))
        }
        section #privacy {
            h2 { "Privacy budget" }
            p { "This period (" (c.period) "): spent ρ " (format!("{:.4}", c.rho_spent)) " of " (format!("{:.4}", c.rho_limit))
                " in " (c.releases) " release(s); " b { "remaining ρ " (format!("{:.4}", c.rho_remaining)) } ". Renews " (budget.renews) "." }
            p.note { "ρ-zCDP; ε " (format!("{:.3}", c.epsilon_spent)) " of " (format!("{:.3}", c.epsilon_limit)) " at δ = " (format!("{:e}", budget.delta)) ". The largest release allowed: ρ " (budget.max_rho_per_release) "." }
            h3 { "Every release that left this node" }
            @if entries.is_empty() {
                p.note { "No release has left this node." }
            } @else {
                div.scroll { table {
                    tr { th scope="col" { "release" } th scope="col" { "kind" } th scope="col" { "period" } th.num scope="col" { "ρ" } th.num scope="col" { "ε" } th scope="col" { "status" } th scope="col" { "charged" } th scope="col" { "to" } }
                    @for e in &entries {
                        tr {
                            td { code { (page::short(&e.release_id)) } }
                            td { (e.kind) } td { (e.period) }
                            td.num { (format!("{:.4}", e.rho)) } td.num { (format!("{:.3}", e.epsilon)) }
                            td { (e.status) } td { (page::when(&e.charged_at)) }
                            td { (e.sent_to.as_deref().unwrap_or(&e.counterpart)) }
                        }
                    }
                } }
            }
        }
        section #views {
            h2 { "Patient page views" }
            @if views.is_empty() {
                p.note { "No patient page has been viewed yet." }
            } @else {
                p.note { "The latest " (views.len()) ", newest first (every view is recorded)." }
                div.scroll { table {
                    tr { th scope="col" { "when" } th scope="col" { "account" } th scope="col" { "role" } th scope="col" { "episode" } th scope="col" { "page" } }
                    @for v in &views { tr { td { (page::when(&v.at)) } td { (v.user) } td { (v.role) } td { code { (v.episode) } } td { (v.page) } } }
                } }
            }
        }
    };
    page::frame(&s, "Clinic", "Clinic", body).into_response()
}

fn upload_form(s: &Session) -> Markup {
    html! {
        form.upload method="post" enctype="multipart/form-data" action=(format!("/clinic/import?csrf={}", s.csrf)) {
            label { "Files (CSV or FHIR R4 JSON; several are imported in the order chosen, each whole or not at all)"
                input type="file" name="file" multiple required accept=".csv,.json,.ndjson,.txt,text/csv,application/json";
            }
            button type="submit" { "Import" }
        }
    }
}

/// One file's upload: its name and what became of it.
struct Imported {
    name: String,
    outcome: Result<FileOutcome, String>,
}

/// `POST /clinic/import`: each file in turn, whole or not at all, stopping at the first that
/// fails (whose every problem is shown), as `import` does.
pub(super) async fn import(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    mut form: Multipart,
) -> Response {
    if !s.user.runs_clinic() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "imports are for the clinic's administrators",
        );
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                // Only the name's last part: a browser's, never a path on this machine.
                let name = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("upload {}", files.len() + 1));
                match field.bytes().await {
                    Ok(b) => files.push((name, b.to_vec())),
                    Err(e) => {
                        return page::problem(
                            StatusCode::BAD_REQUEST,
                            &format!("{name}: the upload broke off ({e})"),
                        );
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                return page::problem(
                    StatusCode::BAD_REQUEST,
                    &format!("the upload could not be read: {e}"),
                );
            }
        }
    }
    if files.iter().all(|(_, b)| b.is_empty()) {
        return page::problem(StatusCode::BAD_REQUEST, "choose a file to import");
    }
    let by = s.user.name.clone();
    let done = blocking(&d, move |node| {
        let mut out = Vec::new();
        for (name, bytes) in files {
            let outcome = node
                .import_upload(&name, bytes)
                .map(|(o, _)| o)
                .map_err(|e| format!("{e:#}"));
            let failed = outcome.is_err();
            tracing::info!(user = by, file = name, ok = !failed, "dashboard: import");
            out.push(Imported { name, outcome });
            if failed {
                break;
            }
        }
        Ok(out)
    })
    .await;
    let done = match done {
        Ok(v) => v,
        Err(r) => return r,
    };
    let failed = done.iter().any(|i| i.outcome.is_err());
    let body = html! {
        @for i in &done {
            @match &i.outcome {
                Ok(o) if o.status == "already_imported" => p.done { b { (i.name) } ": already imported on " (o.previously_imported_at.as_deref().unwrap_or("?")) " (the same content); nothing to do." },
                Ok(o) => p.done role="status" {
                    b { (i.name) } ": imported " (o.rows) " rows (" (o.kind) "): "
                    (o.counts.assessments) " new assessments, " (o.counts.sessions) " sessions, " (o.counts.episodes) " episodes, "
                    (o.counts.patients) " patients, " (o.counts.therapists) " therapists."
                },
                Err(e) => div.problem role="alert" {
                    p { b { (i.name) ": not imported" } " — nothing of it was stored. Correct the file and upload it again." }
                    ul.problems { @for line in e.split('\n').filter(|l| !l.trim().is_empty()) { li { (line.trim()) } } }
                },
            }
        }
        (upload_form(&s))
        p { a href="/clinic" { "Back to the clinic" } }
    };
    let code = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (code, page::frame(&s, "Clinic", "Import", body)).into_response()
}
