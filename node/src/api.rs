//! The local API: HTTP/1 on 127.0.0.1, for the CLI (`status`, `network peers`, ...) to talk to
//! the running daemon (DESIGN.md §8).
//!
//! Every request must carry `Authorization: Bearer <token>`, where the token is the content of
//! `api.token` (mode 0600) in the data directory, must come from a loopback address, and must
//! be addressed to the API itself (`Host: 127.0.0.1:PORT` or `localhost:PORT`: a page in a
//! browser that a DNS-rebinding attack points at 127.0.0.1 sends its own host name). The
//! server binds 127.0.0.1 only. The address in use is written to `api.addr`.
//!
//! Connections are bounded: at most [`MAX_CONNECTIONS`] at once (more are closed at once), the
//! request head must arrive within [`HEADER_READ_TIMEOUT`], and one request per connection. The
//! blocking [`get`] and [`post`] are the client side the CLI uses; every answer has one type
//! (`api/answers.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use protocol::keys::Bytes;
use protocol::messages::{Gossip, MAX_ECHO, Request as NetRequest, Response as NetResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::net::Client;
use crate::{membership, status};

mod answers;

pub use crate::status::{NetworkStatus, NodeStatus};
pub use answers::{ApiError, EchoRequest, EchoStats, Gossiped, Published};

/// The bearer-token file in the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// The file holding the API's address while the daemon runs.
pub const ADDR_FILE: &str = "api.addr";
/// Most echo round trips one diagnostics call may make.
const MAX_ECHO_COUNT: u32 = 100_000;
/// Most API connections open at once; a new one beyond this is closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may live (the longest call, an echo series, stays well inside).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(11 * 60);

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The network.
    pub client: Client,
    /// The node.
    pub node: std::sync::Arc<crate::node::Node>,
    /// When the daemon started.
    pub started: Instant,
    /// The bearer token.
    pub token: String,
    /// Rounds this node runs as aggregator.
    pub aggregation: std::sync::Arc<crate::aggregate::Aggregation>,
    /// The API's port (requests must name it in their Host header).
    pub port: u16,
}

/// Creates `api.token` (32 random bytes, hex, mode 0600) if absent and returns the token.
pub fn ensure_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if !path.exists() {
        crate::keystore::create_key_file(&path)?;
    }
    Ok(hex::encode(crate::keystore::read_key_file(&path)?))
}

/// Serves the API on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    cancel: CancellationToken,
) -> Result<()> {
    let app = Router::new()
        .route("/v1/status", routing::get(status_handler))
        .route("/v1/peers", routing::get(peers_handler))
        .route("/v1/roster/publish", routing::post(publish_handler))
        .route("/v1/echo", routing::post(echo_handler))
        .route("/v1/directory/publish", routing::post(directory_handler))
        .route(
            "/v1/rounds",
            routing::post(round_start_handler).get(rounds_handler),
        )
        .route("/v1/rounds/{id}", routing::get(round_handler))
        .layer(middleware::from_fn_with_state(state.clone(), authorise))
        .with_state(state);
    serve_router(listener, app, cancel).await
}

/// Serves `app` on `listener` until `cancel` fires: at most [`MAX_CONNECTIONS`] connections,
/// each with [`HEADER_READ_TIMEOUT`], one request each, the caller's address as `ConnectInfo`
/// (the local API and the dashboard).
pub(crate) async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: CancellationToken,
) -> Result<()> {
    serve_router_tls(listener, app, None, cancel).await
}

/// [`serve_router`], each connection first through `tls` when given (the dashboard's own TLS;
/// a handshake must finish within [`HEADER_READ_TIMEOUT`]).
pub(crate) async fn serve_router_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) -> Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("local API: couldn't accept a connection: {e}");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "local API: {MAX_CONNECTIONS} connections open; closed a new one");
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(ConnectInfo(remote))),
        );
        let cancel = cancel.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_one(stream, service, &cancel, remote).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_one(stream, service, &cancel, remote).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, "dashboard: TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(%remote, "dashboard: TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One request on one connection.
async fn serve_one<I, S>(io: I, service: S, cancel: &CancellationToken, remote: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = Response>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::select! {
        () = cancel.cancelled() => {}
        done = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {
            if let Ok(Err(e)) = done {
                tracing::debug!(%remote, "local API connection: {e}");
            }
        }
    }
}

/// Refuses non-loopback callers and requests without the right bearer token.
async fn authorise(
    State(state): State<ApiState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !remote.ip().is_loopback() {
        tracing::warn!(%remote, "local API: refused a non-loopback caller");
        return error(
            StatusCode::FORBIDDEN,
            "the local API answers loopback callers only",
        );
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let port = state.port;
    if ![format!("127.0.0.1:{port}"), format!("localhost:{port}")].contains(&host.to_owned()) {
        tracing::warn!(%remote, host, "local API: refused a request addressed to another host");
        return error(
            StatusCode::FORBIDDEN,
            &format!("the local API answers requests addressed to 127.0.0.1:{port} only"),
        );
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests so the comparison takes the same time wherever the strings differ.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    if digest(presented).as_ref() != digest(&state.token).as_ref() {
        tracing::warn!(%remote, "local API: refused a request without the bearer token");
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see api.token in the data directory)",
        );
    }
    next.run(request).await
}

fn error(code: StatusCode, message: &str) -> Response {
    let answer = ApiError {
        error: message.into(),
    };
    (code, Json(answer)).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
}

/// Runs `f` on the node's store, off the async threads; errors become 500s.
async fn with_store<T: Send + 'static>(
    state: &ApiState,
    f: impl FnOnce(&crate::store::Store) -> Result<T> + Send + 'static,
) -> Result<T, Response> {
    let node = state.node.clone();
    match tokio::task::spawn_blocking(move || f(&node.store())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(internal(e)),
        Err(e) => Err(internal(e)),
    }
}

async fn status_handler(State(state): State<ApiState>) -> Response {
    let node = state.node.clone();
    let offline = tokio::task::spawn_blocking(move || status::node_status(&node)).await;
    let mut answer = match offline {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let peers = match state.client.peers().await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    answer.running = true;
    answer.uptime_secs = Some(state.started.elapsed().as_secs());
    answer.peers_connected = Some(peers.iter().filter(|p| p.connected).count() as u64);
    answer.peers_total = Some(peers.len() as u64);
    Json(answer).into_response()
}

async fn peers_handler(State(state): State<ApiState>) -> Response {
    match state.client.peers().await {
        Ok(p) => Json(p).into_response(),
        Err(e) => internal(e),
    }
}

/// Adopts the newest stored roster (after `network admit` / `remove`) and gossips it.
async fn publish_handler(State(state): State<ApiState>) -> Response {
    let roster = match with_store(&state, |store| membership::load(store.conn())).await {
        Ok(Some(m)) => m.roster,
        Ok(None) => return error(StatusCode::CONFLICT, "this node is not in a network"),
        Err(response) => return response,
    };
    let version = roster.roster.version;
    if let Err(e) = state.client.set_roster(roster.clone()).await {
        return internal(e);
    }
    let published = state.client.publish(Gossip::Roster(roster)).await;
    Json(Published {
        version,
        published: published.is_ok(),
        note: published.err().map(|e| e.to_string()),
    })
    .into_response()
}

/// Gossips this clinic's directory entry as kept (after `directory publish`).
async fn directory_handler(State(state): State<ApiState>) -> Response {
    let key = state.node.signer().key();
    let own = with_store(&state, move |store| {
        crate::directory::own(store.conn(), &key, crate::clock::now_ms())
    })
    .await;
    let signed = match own {
        Ok(Some(s)) => s,
        Ok(None) => {
            return error(
                StatusCode::CONFLICT,
                "this clinic has no current directory entry: run `mbc-node directory publish`",
            );
        }
        Err(response) => return response,
    };
    let id = signed.sha256();
    let published = state.client.publish(Gossip::Directory(signed)).await;
    Json(Gossiped {
        id,
        published: published.is_ok(),
        note: published.err().map(|e| e.to_string()),
    })
    .into_response()
}

/// Starts a round (coordinator only); answers its first status.
async fn round_start_handler(
    State(state): State<ApiState>,
    Json(request): Json<crate::aggregate::StartRequest>,
) -> Response {
    let aggregation = state.aggregation.clone();
    match tokio::task::spawn_blocking(move || aggregation.start(&request)).await {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(e)) => error(StatusCode::CONFLICT, &format!("{e:#}")),
        Err(e) => internal(e),
    }
}

/// Every round this daemon ran as aggregator.
async fn rounds_handler(State(state): State<ApiState>) -> Response {
    Json(state.aggregation.list()).into_response()
}

/// One round's status (`latest` for the most recent); a prefix of the id will do.
async fn round_handler(
    State(state): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let id = (id != "latest").then_some(id);
    match state.aggregation.status(id.as_deref()) {
        Some(status) => Json(status).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "no such round on this node (rounds are run by the coordinator)",
        ),
    }
}

/// Diagnostics: `count` sequential signed echo round trips to `peer`; latency percentiles.
async fn echo_handler(State(state): State<ApiState>, Json(p): Json<EchoRequest>) -> Response {
    let Ok(peer) = p.peer.parse() else {
        return error(StatusCode::BAD_REQUEST, "peer is not a PeerId");
    };
    if p.count == 0 || p.count > MAX_ECHO_COUNT || p.size > MAX_ECHO {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("count must be 1-{MAX_ECHO_COUNT} and size at most {MAX_ECHO}"),
        );
    }
    let payload = Bytes(vec![0x5a; p.size]);
    let mut micros = Vec::with_capacity(p.count as usize);
    for _ in 0..p.count {
        let t = Instant::now();
        match state
            .client
            .request(peer, NetRequest::Echo(payload.clone()))
            .await
        {
            Ok(NetResponse::Echo(b)) if b == payload => {}
            Ok(other) => return internal(format!("unexpected answer {other:?}")),
            Err(e) => return internal(e),
        }
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let q = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    Json(EchoStats {
        count: micros.len() as u64,
        p50_us: q(0.5),
        p99_us: q(0.99),
    })
    .into_response()
}

/// `GET path` from the running daemon's API, read as `T`.
pub fn get<T: DeserializeOwned>(data_dir: &Path, path: &str) -> Result<T> {
    answer(path, call(data_dir, "GET", path, None)?)
}

/// `POST path` with `body` (JSON) to the running daemon's API, read as `T`.
pub fn post<T: DeserializeOwned>(
    data_dir: &Path,
    path: &str,
    body: Option<&impl Serialize>,
) -> Result<T> {
    let body = body.map(serde_json::to_value).transpose()?;
    answer(path, call(data_dir, "POST", path, body.as_ref())?)
}

fn answer<T: DeserializeOwned>(path: &str, value: Value) -> Result<T> {
    serde_json::from_value(value)
        .with_context(|| format!("the local API's answer to {path} has an unexpected shape"))
}

/// Calls the running daemon's API: `method` GET or POST, `path` like `/v1/status`.
fn call(data_dir: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let addr_file = data_dir.join(ADDR_FILE);
    let not_running = || {
        format!(
            "the node in {} is not running (start it with `mbc-node run --data-dir {}`)",
            data_dir.display(),
            data_dir.display()
        )
    };
    let addr: SocketAddr = std::fs::read_to_string(&addr_file)
        .with_context(not_running)?
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold an address", addr_file.display()))?;
    if !addr.ip().is_loopback() {
        bail!("{} names a non-loopback address", addr_file.display());
    }
    let token = hex::encode(crate::keystore::read_key_file(&data_dir.join(TOKEN_FILE))?);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(not_running)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context("the node closed the local API connection")?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the local API")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed status line from the local API")?;
    let value: Value = serde_json::from_str(payload)
        .with_context(|| format!("the local API answered {code} with non-JSON"))?;
    if code != 200 {
        let why = serde_json::from_value::<ApiError>(value)
            .map_or_else(|_| "unknown error".into(), |e| e.error);
        bail!("the node refused {path}: {why}");
    }
    Ok(value)
}
