//! The Network screen (the coordinator): the roster and who is connected now, the latest
//! rounds, kept across restarts (step, participants, dropouts against the threshold t), the
//! signed releases this node keeps, the round schedule of `[rounds]`, and a form that starts a
//! round (the same `Aggregation::start` as `round start`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Dashboard, Session, blocking, page};
use crate::aggregate::{StartRequest, record};
use crate::benchmark;

/// How many rounds the screen shows, newest first.
const ROUNDS_SHOWN: usize = 50;

/// `GET /network`.
pub(super) async fn page(State(d): State<Dashboard>, Extension(s): Extension<Session>) -> Response {
    if !s.user.coordinates() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "the network's screen is for its coordinator",
        );
    }
    show(&d, &s, None, StatusCode::OK).await
}

async fn show(d: &Dashboard, s: &Session, problem: Option<&str>, code: StatusCode) -> Response {
    let releases = match blocking(d, |node| benchmark::list(node.store().conn())).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (peers, rounds) = match &d.live {
        Some(live) => {
            let aggregation = live.aggregation.clone();
            let rounds = tokio::task::spawn_blocking(move || aggregation.history(ROUNDS_SHOWN))
                .await
                .unwrap_or_default();
            (live.client.peers().await.ok(), rounds)
        }
        None => match blocking(d, |node| record::recent(node.store().conn(), ROUNDS_SHOWN)).await {
            Ok(r) => (None, r),
            Err(r) => return r,
        },
    };
    let schedule = &d.node.config().rounds.schedule;
    let body = html! {
        nav.toc aria-label="On this page" {
            a href="#clinics" { "Clinics" } " · " a href="#rounds" { "Rounds" } " · "
            a href="#releases" { "Releases" } " · " a href="#schedule" { "Schedule" }
        }
        @if let Some(p) = problem { p.problem role="alert" { (p) } }
        section #clinics {
            h2 { "Clinics on the roster" }
            @match &peers {
                None => p.note { "Who is connected shows while " code { "mbc-node run" } " serves this page." },
                Some(peers) if peers.is_empty() => p.note { "No other clinic is on the roster yet: admit clinics with " code { "mbc-node network admit" } "." },
                Some(peers) => {
                    p.note { (peers.iter().filter(|p| p.connected).count()) " of " (peers.len()) " other members connected now." }
                    table {
                        tr { th scope="col" { "clinic" } th scope="col" { "role" } th scope="col" { "connected" } th.num scope="col" { "round trip" } th scope="col" { "peer" } }
                        @for p in peers {
                            tr {
                                td { (p.name) }
                                td { (format!("{:?}", p.role).to_lowercase()) }
                                td class=(if p.connected { "sig sig-green" } else { "sig sig-grey" }) {
                                    @if p.connected { "✓ online" } @else { "○ offline" }
                                }
                                td.num { (p.rtt_ms.map_or("—".into(), |r| format!("{r:.0} ms"))) }
                                td { code { (&p.peer_id[p.peer_id.len().saturating_sub(12)..]) } }
                            }
                        }
                    }
                }
            }
        }
        section #rounds {
            h2 { "Rounds" }
            (start_form(s))
            @if rounds.is_empty() {
                p.note { "No round has run yet." }
            } @else {
                p.note { "The latest " (rounds.len()) " rounds, newest first." }
                div.scroll { table {
                    tr { th scope="col" { "started" } th scope="col" { "round" } th scope="col" { "kind" } th scope="col" { "step" } th.num scope="col" { "clinics" } th.num scope="col" { "dropped" } th.num scope="col" { "t" } th scope="col" { "outcome" } }
                    @for r in rounds.iter().rev() {
                        @let dropped = r.participants.iter().filter(|p| p.dropped.is_some()).count();
                        tr {
                            td { (page::when(&r.started_at)) }
                            td { code { (page::short(&r.round_id)) } }
                            td { (r.kind) }
                            td { (r.step.to_string()) }
                            td.num { (r.participants.len()) }
                            td.num { (dropped) }
                            td.num { (r.threshold) }
                            td {
                                @if let Some(e) = &r.error { span.sig.sig-red { "✕ " } (e) }
                                @else if let Some(id) = &r.release_id { "release " code { (page::short(id)) } }
                                @else if r.participants.len() - dropped < r.threshold as usize { span.sig.sig-red { "✕ fewer than t left" } }
                                @else { "—" }
                            }
                        }
                    }
                } }
            }
        }
        section #releases {
            h2 { "Signed releases kept by this node" }
            @if releases.is_empty() {
                p.note { "No release yet." }
            } @else {
                div.scroll { table {
                    tr { th scope="col" { "issued" } th scope="col" { "release" } th scope="col" { "kind" } th.num scope="col" { "clinics" } th.num scope="col" { "ρ" } th scope="col" { "domains" } }
                    @for l in &releases {
                        tr {
                            td { (page::when(&l.issued_at)) } td { code { (page::short(&l.release_id)) } }
                            td { (l.kind) } td.num { (l.clinics) } td.num { (format!("{:.3}", l.rho)) }
                            td { (l.domains.join(", ")) }
                        }
                    }
                } }
                p.note { code { "mbc-node benchmark export --site DIR" } " writes them all as a static site to publish." }
            }
        }
        section #schedule {
            h2 { "Round schedule" }
            @if schedule.is_empty() {
                p.note { "No round is scheduled (" code { "[rounds] schedule" } " in config.toml): rounds start from here or with " code { "mbc-node round start" } "." }
            } @else {
                table {
                    tr { th scope="col" { "kind" } th.num scope="col" { "ρ" } th.num scope="col" { "every (days)" } th scope="col" { "domains" } }
                    @for e in schedule {
                        tr { td { (e.kind) } td.num { (e.rho) } td.num { (e.every_days) } td { (if e.domains.is_empty() { "all".to_string() } else { e.domains.join(", ") }) } }
                    }
                }
            }
        }
    };
    (code, page::frame(s, "Network", "Network", body)).into_response()
}

fn start_form(s: &Session) -> Markup {
    html! {
        form.filters method="post" action="/network/rounds" {
            input type="hidden" name="csrf" value=(s.csrf);
            label { "Kind"
                select name="kind" {
                    option value="benchmark" { "benchmark (outcomes and track-record reference)" }
                    option value="trajectories" { "trajectories (expected recovery curves)" }
                    option value="dropout-model" { "dropout model" }
                }
            }
            label { "ρ of the release " span.note { "(each clinic is charged it)" }
                input type="number" name="rho" step="any" min="0" required value="0.25";
            }
            label { "Iterations " span.note { "(dropout model only)" }
                input type="number" name="iterations" min="1" max="20" step="1";
            }
            label { "Threshold t " span.note { "(fewer clinics left abort; default ⌈2n/3⌉)" }
                input type="number" name="threshold" min="2" step="1";
            }
            label { "Step deadline, s " span.note { "(default 60)" }
                input type="number" name="deadline" min="1" step="any";
            }
            button type="submit" { "Start a round" }
        }
    }
}

/// The form of `start_form`.
#[derive(Debug, Deserialize)]
pub(super) struct StartForm {
    kind: String,
    #[serde(default)]
    rho: String,
    #[serde(default)]
    iterations: String,
    #[serde(default)]
    threshold: String,
    #[serde(default)]
    deadline: String,
}

/// `POST /network/rounds`: starts a round, then back to the screen (its row shows it).
pub(super) async fn start(
    State(d): State<Dashboard>,
    Extension(s): Extension<Session>,
    Form(f): Form<StartForm>,
) -> Response {
    if !s.user.coordinates() {
        return page::problem(
            StatusCode::FORBIDDEN,
            "rounds are started by the network's coordinator",
        );
    }
    let mut problems = Vec::new();
    let rho = page::number(&f.rho, "ρ of the release", &mut problems);
    if rho.is_none() && problems.is_empty() {
        problems.push("say the ρ each clinic is charged".into());
    }
    let iterations = page::number(&f.iterations, "Iterations", &mut problems);
    let iterations = page::whole(iterations, "Iterations", &mut problems);
    let threshold = page::number(&f.threshold, "Threshold t", &mut problems);
    let threshold = page::whole(threshold, "Threshold t", &mut problems);
    let deadline_s = page::number(&f.deadline, "Step deadline, s", &mut problems);
    if let Some(s) = deadline_s.filter(|s| *s <= 0.0) {
        problems.push(format!(
            "Step deadline, s: {s} is not a positive number of seconds"
        ));
    }
    let Some(rho) = rho.filter(|_| problems.is_empty()) else {
        return show(
            &d,
            &s,
            Some(&problems.join("; ")),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let Some(live) = d.live.clone() else {
        return show(
            &d,
            &s,
            Some("rounds start only while “mbc-node run” serves this page"),
            StatusCode::CONFLICT,
        )
        .await;
    };
    let request = StartRequest {
        kind: f.kind,
        rho,
        threshold,
        deadline_s,
        dim: None,
        plain: false,
        domains: Vec::new(),
        iterations,
    };
    let by = s.user.name.clone();
    let started = tokio::task::spawn_blocking(move || live.aggregation.start(&request)).await;
    match started {
        Ok(Ok(status)) => {
            tracing::info!(
                user = by,
                round = status.round_id,
                "dashboard: started a round"
            );
            page::redirect("/network#rounds")
        }
        Ok(Err(e)) => {
            show(
                &d,
                &s,
                Some(&format!("the round did not start: {e:#}")),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => page::problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
