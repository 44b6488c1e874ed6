//! The web dashboard (issue 18): server-rendered pages of what `support`, `alerts`, `match`,
//! `stats` and the ledger compute, for the clinic's accounts (`users.rs`). It presents; it
//! computes nothing of its own.
//!
//! Every request passes `guard`: the Host header must name the dashboard itself (DNS
//! rebinding), every answer carries a Content-Security-Policy with no inline script and no
//! outside source, a page other than the sign-in needs a session (an HttpOnly, SameSite=Strict
//! cookie) of an account still enabled, and a state-changing request needs the session's CSRF
//! token. Sign-in failures are throttled per account name (`auth.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::node::Node;
use crate::users::User;

mod auth;
mod card;
mod caseload;
mod clinic;
mod matching;
mod network;
mod page;
mod patient;
#[cfg(test)]
mod tests;
mod validation;

pub use auth::{MAX_FAILURES, SESSION_HOURS};

/// The file holding the dashboard's address while the daemon runs.
pub const ADDR_FILE: &str = "dashboard.addr";

/// The policy every answer carries: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the handlers share.
#[derive(Clone)]
pub struct Dashboard {
    /// The node.
    pub node: Arc<Node>,
    /// The Host headers this dashboard answers (`127.0.0.1:PORT`, `localhost:PORT`, …).
    pub hosts: Arc<Vec<String>>,
    /// Whether it is served over TLS (cookies are then `Secure`).
    pub tls: bool,
    /// The running daemon's network and rounds, when `run` serves the dashboard.
    pub live: Option<Live>,
    /// The clinic's staff ids for its therapists (`[dashboard] staff_list`), for display.
    pub staff: Arc<crate::staff::StaffList>,
    sessions: Arc<Mutex<auth::Sessions>>,
    throttle: Arc<Mutex<HashMap<String, auth::Failures>>>,
}

impl Dashboard {
    /// A dashboard of `node` answering requests addressed to one of `hosts`.
    pub fn new(node: Arc<Node>, hosts: Vec<String>, tls: bool) -> Self {
        Self {
            node,
            hosts: Arc::new(hosts),
            tls,
            live: None,
            staff: Arc::default(),
            sessions: Arc::default(),
            throttle: Arc::default(),
        }
    }

    /// With the running daemon's network client and rounds (the Network screen's live parts).
    pub fn with_live(
        mut self,
        client: crate::net::Client,
        aggregation: Arc<crate::aggregate::Aggregation>,
    ) -> Self {
        self.live = Some(Live {
            client,
            aggregation,
        });
        self
    }

    /// Showing therapists by the staff ids of `staff`.
    pub fn with_staff(mut self, staff: crate::staff::StaffList) -> Self {
        self.staff = Arc::new(staff);
        self
    }

    /// The routes, behind `guard`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(caseload::page))
            .route("/login", get(auth::login_page).post(auth::login))
            .route("/logout", post(auth::logout))
            .route("/alerts/{id}/{action}", post(caseload::act))
            .route("/card", get(card::index))
            .route("/card/{therapist}", get(card::card))
            .route("/clinic", get(clinic::page))
            .route(
                "/clinic/import",
                post(clinic::import)
                    .layer(axum::extract::DefaultBodyLimit::max(clinic::MAX_UPLOAD)),
            )
            .route("/match", get(matching::form_page).post(matching::run))
            .route("/match/{id}/record", post(matching::record))
            .route("/network", get(network::page))
            .route("/network/rounds", post(network::start))
            .route("/validation", get(validation::page).post(validation::run))
            .route("/patient/find", post(patient::find))
            .route("/patient/{episode}", get(patient::page))
            .route("/patient/{episode}/print", get(patient::print))
            .route("/app.css", get(page::css))
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self)
    }
}

/// What only a running daemon has.
#[derive(Clone)]
pub struct Live {
    /// The network.
    pub client: crate::net::Client,
    /// The rounds this node runs as aggregator.
    pub aggregation: Arc<crate::aggregate::Aggregation>,
}

/// The signed-in account of a request and its CSRF token (put there by `guard`).
#[derive(Debug, Clone)]
pub struct Session {
    /// The account.
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// Host check, security headers, session and CSRF (module docs).
async fn guard(State(d): State<Dashboard>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !d.hosts.iter().any(|h| h == host) {
        tracing::warn!(
            host,
            "dashboard: refused a request addressed to another host"
        );
        return with_headers(
            d.tls,
            (
                StatusCode::MISDIRECTED_REQUEST,
                "this dashboard answers its own address only",
            )
                .into_response(),
        );
    }
    let path = request.uri().path().to_owned();
    // The browser asks for /favicon.ico by itself: a 404, not a redirect to a new sign-in form.
    let open = matches!(path.as_str(), "/login" | "/app.css" | "/favicon.ico");
    let mut request = request;
    if !open {
        let session = auth::session_of(&d, request.headers());
        let Some(session) = session else {
            return with_headers(d.tls, page::redirect("/login"));
        };
        if request.method() == Method::POST {
            match auth::check_csrf(request, &session).await {
                Ok(checked) => request = checked,
                Err(refused) => return with_headers(d.tls, refused),
            }
        }
        request.extensions_mut().insert(session);
    }
    with_headers(d.tls, next.run(request).await)
}

/// The headers every answer carries; under TLS, HSTS too (a browser that reached the
/// dashboard over HTTPS once never tries it over plain HTTP again).
fn with_headers(tls: bool, mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Runs `f` on the node off the async threads; an error becomes a page saying what failed.
async fn blocking<T: Send + 'static>(
    d: &Dashboard,
    f: impl FnOnce(&Node) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let node = d.node.clone();
    match tokio::task::spawn_blocking(move || f(&node)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(page::problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{e:#}"),
        )),
        Err(e) => Err(page::problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}
