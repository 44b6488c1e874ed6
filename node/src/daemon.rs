//! `mbc-node run`: the daemon that keeps the node online (DESIGN.md §8).
//!
//! Starts the network event loop ([`crate::net`]) and the local API ([`crate::api`]), then
//! runs the node's own loop: adopt verified rosters from peers into the store, answer
//! application requests. Stops cleanly on SIGTERM or ctrl-c: cancellation first in every
//! loop, bounded waits for the tasks, `api.addr` removed.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libp2p::{Multiaddr, PeerId};
use protocol::messages::{MAX_RELEASES, NodeInfo, Request, Response, RoundResponse};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aggregate::Aggregation;
use crate::net::{self, Client, Event};
use crate::node::Node;
use crate::round::Participation;
use crate::{api, benchmark, clock, directory, membership};

/// How often a clinic asks the coordinator for releases it missed (it may have been offline
/// when one was gossiped); the first time right after start.
const RELEASE_PULL_EVERY: Duration = Duration::from_secs(10);
/// Largest total of release documents in one answer (below the 1 MiB response bound).
const RELEASES_BYTES: usize = 900 << 10;

/// How often a clinic forgets expired rounds and refunds contributions that never left; the
/// first time right after start.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

/// How long shutdown waits for the network and API tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the tracing subscriber: stderr, level from `MBC_NODE_LOG` (default `level`).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MBC_NODE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the daemon of the node in `data_dir` until SIGTERM or ctrl-c.
pub fn run(data_dir: &Path) -> Result<()> {
    let node = Arc::new(Node::open(data_dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("couldn't start the async runtime")?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(cancel.clone()));
        let result = serve(node, cancel.clone(), true).await;
        signals.abort();
        result
    })
}

async fn stop_on_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("couldn't install the SIGTERM handler: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt: shutting down"),
    }
    cancel.cancel();
}

/// The file a running daemon holds locked (and names its pid in) for its whole life.
pub const LOCK_FILE: &str = "daemon.lock";

/// Takes the data directory's daemon lock: one daemon per data directory. The lock is held
/// while the returned file is open and released by the OS when the process ends, however it
/// ends; a second daemon is refused with the first one's pid.
pub fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::io::{Read, Seek};
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("couldn't open {}", path.display()))?;
    if let Err(e) = file.try_lock() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(match e {
            std::fs::TryLockError::WouldBlock => anyhow::anyhow!(
                "another `mbc-node run` (pid {}) is serving {}; stop it first (one daemon per \
                 data directory)",
                pid.trim(),
                dir.display()
            ),
            std::fs::TryLockError::Error(e) => {
                anyhow::Error::new(e).context(format!("couldn't lock {}", path.display()))
            }
        });
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Binds and serves the web dashboard of `[dashboard]` (writing its address to
/// [`crate::dashboard::ADDR_FILE`]); its URL, or `None` when it is off.
async fn serve_dashboard(
    node: &Arc<Node>,
    live: (Client, Arc<Aggregation>),
    cancel: &CancellationToken,
) -> Result<Option<String>> {
    let path = node.dir().join(crate::dashboard::ADDR_FILE);
    let Some(bind) = node.config().dashboard.address()? else {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(bind).await.with_context(|| {
        format!(
            "couldn't bind the dashboard to {bind} (in use? set [dashboard] bind in config.toml)"
        )
    })?;
    let addr = listener.local_addr()?;
    let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
    hosts.extend(node.config().dashboard.hostnames.iter().cloned());
    let tls = match node.config().dashboard.tls(node.dir())? {
        Some((cert, key)) => Some(tls_acceptor(&cert, &key)?),
        None => None,
    };
    let secure = tls.is_some();
    let staff = match &node.config().dashboard.staff_list {
        Some(list) => crate::staff::StaffList::read(node, &node.dir().join(list))
            .context("[dashboard] staff_list")?,
        None => Default::default(),
    };
    let app = crate::dashboard::Dashboard::new(node.clone(), hosts, secure)
        .with_live(live.0, live.1)
        .with_staff(staff)
        .router();
    tokio::spawn(api::serve_router_tls(
        listener,
        app,
        tls,
        cancel.child_token(),
    ));
    std::fs::write(&path, format!("{addr}\n"))
        .with_context(|| format!("couldn't write {}", path.display()))?;
    Ok(Some(format!(
        "{}://{addr}/",
        if secure { "https" } else { "http" }
    )))
}

/// The dashboard's TLS from its PEM certificate chain and key (aws-lc-rs, TLS 1.2 and 1.3).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| anyhow::anyhow!("[dashboard] tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "[dashboard] tls_cert {}: no certificate in it",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("[dashboard] tls_key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("[dashboard] tls_cert and tls_key do not make a certificate and its key")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `node` until `cancel` fires; with `announce`, prints the ready line on stdout.
pub async fn serve(node: Arc<Node>, cancel: CancellationToken, announce: bool) -> Result<()> {
    let data_dir = node.dir();
    let _lock = lock(data_dir)?;
    let config = node.config();
    let membership = membership::load(node.store().conn())?.with_context(|| {
        format!(
            "the node in {} is not in a network yet: run `mbc-node network create` (coordinator) \
             or `mbc-node network join` (clinic) first",
            data_dir.display()
        )
    })?;
    config.rounds.validate()?;
    config.dashboard.address()?;
    if !membership.is_coordinator && !config.rounds.schedule.is_empty() {
        tracing::warn!("[rounds] schedule is set but only the coordinator starts rounds: ignored");
    }
    let keypair = node.identity_keypair()?;
    let peer_id = keypair.public().to_peer_id();
    let listen = config
        .network
        .listen
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("[network] listen: {a:?} is not a multiaddress"))
        })
        .collect::<Result<Vec<_>>>()?;
    let settings = net::Settings {
        listen,
        max_connections: config.network.max_connections,
        software: env!("CARGO_PKG_VERSION").into(),
    };
    let roster_version = membership.roster.roster.version;
    let (client, mut events, event_loop) =
        net::new(keypair, node.signer().clone(), membership.roster, &settings)?;
    let net_task = tokio::spawn(event_loop.run(cancel.child_token()));
    let participation = Arc::new(Participation::new(
        node.clone(),
        membership.network_id.clone(),
        membership.coordinator,
    ));
    let aggregation = Arc::new(Aggregation::new(
        node.clone(),
        client.clone(),
        participation.clone(),
    ));
    if membership.is_coordinator && !config.rounds.schedule.is_empty() {
        tokio::spawn(crate::aggregate::schedule::run(
            aggregation.clone(),
            config.rounds.schedule.clone(),
            cancel.child_token(),
        ));
    }
    let coordinator = membership::peer_id(&membership.coordinator);
    if !membership.is_coordinator {
        tokio::spawn(pull_releases(
            client.clone(),
            node.clone(),
            coordinator,
            cancel.child_token(),
        ));
    }
    tokio::spawn(pull_directory(
        client.clone(),
        node.clone(),
        (!membership.is_coordinator).then_some(coordinator),
        cancel.child_token(),
    ));

    let api_listener = tokio::net::TcpListener::bind(("127.0.0.1", config.network.api_port))
        .await
        .with_context(|| {
            format!(
                "couldn't bind the local API to 127.0.0.1:{}",
                config.network.api_port
            )
        })?;
    let api_addr = api_listener.local_addr()?;
    let state = api::ApiState {
        client: client.clone(),
        node: node.clone(),
        started: Instant::now(),
        token: api::ensure_token(data_dir)?,
        aggregation: aggregation.clone(),
        port: api_addr.port(),
    };
    let api_task = tokio::spawn(api::serve(api_listener, state, cancel.child_token()));
    let addr_file = data_dir.join(api::ADDR_FILE);
    std::fs::write(&addr_file, format!("{api_addr}\n"))
        .with_context(|| format!("couldn't write {}", addr_file.display()))?;
    let dashboard_url = serve_dashboard(&node, (client.clone(), aggregation), &cancel).await?;

    // The first listen address makes the node ready: say so once (stdout, one JSON line).
    let mut ready = false;
    let mut expiry = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = expiry.tick() => {
                let p = participation.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = p.expire() {
                        warn!("couldn't refund expired round contributions: {e:#}");
                    }
                });
            }
            event = events.recv() => match event {
                Some(Event::Listening(address)) if !ready => {
                    ready = true;
                    if announce {
                        let line = json!({
                            "event": "ready",
                            "peer_id": peer_id.to_string(),
                            "listen": [address.to_string()],
                            "api": api_addr.to_string(),
                            "dashboard": dashboard_url,
                            "network_id": membership.network_id,
                            "roster_version": roster_version,
                        });
                        // Nobody reading the ready line (stdout closed) is no reason to stop.
                        let mut out = std::io::stdout().lock();
                        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                            warn!("couldn't print the ready line on stdout ({e}); running anyway");
                        }
                    }
                    info!(%peer_id, api = %api_addr, network = %membership.network_id, dashboard = dashboard_url.as_deref().unwrap_or("off"), "node running");
                }
                Some(event) => on_event(&node, &client, &participation, coordinator, event).await,
                None => {
                    warn!("the network event loop stopped");
                    break;
                }
            },
        }
    }

    cancel.cancel();
    let _ = std::fs::remove_file(&addr_file);
    drop(client);
    let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let _ = net_task.await;
        let _ = api_task.await;
    })
    .await;
    if stopped.is_err() {
        warn!("shutdown: tasks did not stop within {SHUTDOWN_GRACE:?}");
    }
    info!("stopped");
    Ok(())
}

/// Asks the coordinator, now and every [`RELEASE_PULL_EVERY`], for the releases issued since
/// the newest this node keeps, and keeps those that verify.
async fn pull_releases(
    client: Client,
    node: Arc<Node>,
    coordinator: PeerId,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RELEASE_PULL_EVERY);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let n = node.clone();
        let after = tokio::task::spawn_blocking(move || benchmark::newest(n.store().conn())).await;
        let Ok(Ok(after)) = after else { continue };
        // Offline or busy: next time.
        let Ok(Response::Releases(releases)) = client
            .request(coordinator, Request::Releases { after })
            .await
        else {
            continue;
        };
        if releases.is_empty() {
            continue;
        }
        let n = node.clone();
        let kept = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let mut store = n.store();
            let mut kept = Vec::new();
            for r in &releases {
                match benchmark::accept(store.conn_mut(), r, &clock::now()) {
                    Ok(Some(id)) => kept.push(id),
                    Ok(None) => {}
                    Err(e) => warn!("refused a release from the coordinator: {e:#}"),
                }
            }
            Ok(kept)
        })
        .await;
        if let Ok(Ok(kept)) = kept {
            for id in kept {
                info!(release = %id, "kept a benchmark release missed while offline");
            }
        }
    }
}

/// Asks, now and every [`RELEASE_PULL_EVERY`], for the directory entries this node lacks: a
/// clinic asks the coordinator (`from`), the coordinator every connected member, each with
/// the digest of what it keeps, so two nodes that agree exchange nothing.
async fn pull_directory(
    client: Client,
    node: Arc<Node>,
    from: Option<PeerId>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RELEASE_PULL_EVERY);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let peers: Vec<PeerId> = match from {
            Some(p) => vec![p],
            None => match client.peers().await {
                Ok(peers) => peers
                    .iter()
                    .filter(|p| p.connected)
                    .filter_map(|p| p.peer_id.parse().ok())
                    .collect(),
                Err(_) => continue,
            },
        };
        for peer in peers {
            let n = node.clone();
            let digest = tokio::task::spawn_blocking(move || {
                directory::digest(n.store().conn(), clock::now_ms())
            })
            .await;
            let Ok(Ok(digest)) = digest else { continue };
            // Offline or busy: next time.
            let Ok(Response::Directory(entries)) =
                client.request(peer, Request::Directory { digest }).await
            else {
                continue;
            };
            if !entries.is_empty() {
                let n = node.clone();
                let _ = tokio::task::spawn_blocking(move || keep_entries(&n, peer, &entries)).await;
            }
        }
    }
}

/// Keeps the directory entries that verify and are newer than this node's; logs each refusal.
fn keep_entries(node: &Node, from: PeerId, entries: &[protocol::directory::SignedEntry]) {
    let mut store = node.store();
    for e in entries {
        match directory::accept(store.conn_mut(), e, clock::now_ms()) {
            Ok(Some(entry)) => info!(peer = %from, clinic = %entry.name, "kept a directory entry"),
            Ok(None) => {}
            Err(err) => warn!(peer = %from, "refused a directory entry: {err:#}"),
        }
    }
}

/// Handles one network event. Never fails the daemon: a peer's fault is logged.
async fn on_event(
    node: &Node,
    client: &Client,
    participation: &Arc<Participation>,
    coordinator: PeerId,
    event: Event,
) {
    match event {
        Event::Listening(_) => {} // The event loop logs it.
        Event::Roster { from, roster } => {
            let version = roster.roster.version;
            let accepted = membership::accept(node.store().conn_mut(), &roster, &clock::now());
            match accepted {
                Ok(true) => {
                    info!(peer = %from, version, "accepted roster");
                    let _ = client.set_roster(roster).await;
                }
                Ok(false) => {}
                Err(e) => warn!(peer = %from, version, "refused roster: {e:#}"),
            }
        }
        Event::Request {
            peer,
            request,
            handle,
        } => {
            let response = match request {
                Request::Info => {
                    let version = membership::load(node.store().conn())
                        .ok()
                        .flatten()
                        .map_or(0, |m| m.roster.roster.version);
                    Response::Info(NodeInfo {
                        roster_version: version,
                        software: env!("CARGO_PKG_VERSION").into(),
                    })
                }
                Request::Releases { after } => {
                    let releases =
                        benchmark::since(node.store().conn(), &after, MAX_RELEASES, RELEASES_BYTES);
                    match releases {
                        Ok(releases) => Response::Releases(releases),
                        Err(e) => {
                            warn!(%peer, "couldn't read releases for a peer: {e:#}");
                            Response::Busy
                        }
                    }
                }
                Request::Directory { digest } => {
                    match directory::for_peer(node.store().conn(), &digest, clock::now_ms()) {
                        Ok(entries) => Response::Directory(entries),
                        Err(e) => {
                            warn!(%peer, "couldn't read the directory for a peer: {e:#}");
                            Response::Busy
                        }
                    }
                }
                Request::Round(round) if peer == coordinator => {
                    // Rounds run off the node loop: joining analyses the store.
                    let (client, participation) = (client.clone(), participation.clone());
                    tokio::spawn(async move {
                        let from = participation.coordinator();
                        let response = participation.handle(from, round).await;
                        let _ = client.respond(handle, Response::Round(response)).await;
                    });
                    return;
                }
                Request::Round(_) => {
                    warn!(%peer, "refused a round request: not from the coordinator");
                    Response::Round(RoundResponse::Declined(
                        "round requests come from the coordinator only".into(),
                    ))
                }
                other => {
                    warn!(%peer, "no handler for {other:?}");
                    Response::Busy
                }
            };
            let _ = client.respond(handle, response).await;
        }
        Event::Directory { from, entries } => keep_entries(node, from, &entries),
        Event::Release { from, release } => {
            let accepted = benchmark::accept(node.store().conn_mut(), &release, &clock::now());
            match accepted {
                Ok(Some(id)) => info!(peer = %from, release = %id, "kept a benchmark release"),
                Ok(None) => {}
                Err(e) => warn!(peer = %from, "refused a release: {e:#}"),
            }
        }
    }
}
