//! The event loop: sole owner of the `Swarm`. Handlers are synchronous, so the loop never
//! awaits the node; requests for the node go out with `try_send` and are answered `Busy` when
//! the node is behind.
//!
//! Every inbound message is decoded strictly, checked against the network id, the connection's
//! authenticated peer and its signature, and checked for replay, before anything acts on it;
//! each refusal is logged with its reason (`warn!`) and answered `Rejected`, and the loop goes
//! on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use protocol::keys::{NodeKey, Signer};
use protocol::messages::{
    Body, Envelope, Gossip, Header, Rejection, ReplayGuard, Request, Response, decode, encode,
};
use protocol::roster::{Member, SignedRoster};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Behaviour, BehaviourEvent, Command, Event, InboundHandle, NetError, PeerInfo};
use crate::clock::now_ms;
use crate::membership::peer_id;

/// How often the loop checks for members to (re)dial.
const TICK: Duration = Duration::from_millis(250);
/// How often the loop asks a connected peer for a newer roster (anti-entropy beside gossip).
const ROSTER_PULL_EVERY: Duration = Duration::from_secs(15);
/// First redial delay; doubles per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest redial delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Gossip topics, per network.
struct Topics {
    roster: IdentTopic,
    rounds: IdentTopic,
    releases: IdentTopic,
    directory: IdentTopic,
}

/// What an outbound request's response is for.
enum Pending {
    /// A caller waits for the verified response to the request with this nonce.
    Verified {
        nonce: u64,
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    /// A caller waits for the raw bytes.
    Raw(oneshot::Sender<Result<Vec<u8>, NetError>>),
    /// The loop's own roster pull.
    RosterPull { nonce: u64 },
}

struct Connection {
    since: Instant,
    address: Multiaddr,
}

struct Redial {
    attempts: u32,
    due: Instant,
}

/// Appends `bytes` to the wire tap ([`crate::hooks::WIRE_TAP`]) when it is on.
fn tap(bytes: &[u8]) {
    if let Some(path) = crate::hooks::wire_tap() {
        use std::io::Write;
        let line = format!("{}\n", hex::encode(bytes));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            warn!(
                "{}: couldn't append to {}: {e}",
                crate::hooks::WIRE_TAP,
                path.display()
            );
        }
    }
}

/// Owns the swarm; see the module docs.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    signer: Arc<Signer>,
    network_id: String,
    roster: SignedRoster,
    members: HashMap<PeerId, Member>,
    topics: Topics,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    guard: ReplayGuard,
    connections: HashMap<PeerId, Connection>,
    rtt: HashMap<PeerId, Duration>,
    agents: HashMap<PeerId, String>,
    redial: HashMap<PeerId, Redial>,
    last_pull: Instant,
    refusals: Refusals,
}

/// Refused incoming connections, logged once per source address per [`REFUSAL_LOG_EVERY`]
/// (a flood must not flood the log too), with the count of those not logged.
#[derive(Debug, Default)]
struct Refusals {
    by_ip: HashMap<std::net::IpAddr, (Instant, u64)>,
}

/// How often refused connections from one address are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// Addresses remembered for the refusal log (then it starts over).
const REFUSAL_ADDRESSES: usize = 1024;

impl Refusals {
    /// Whether to log this refusal from `remote`, and how many went unlogged before it.
    fn note(&mut self, remote: &libp2p::Multiaddr) -> Option<u64> {
        let ip = super::pending::source_ip(remote)?;
        if self.by_ip.len() >= REFUSAL_ADDRESSES {
            self.by_ip.clear();
        }
        let now = Instant::now();
        match self.by_ip.get_mut(&ip) {
            Some((since, quiet)) if now.duration_since(*since) < REFUSAL_LOG_EVERY => {
                *quiet += 1;
                None
            }
            Some((since, quiet)) => {
                let unlogged = *quiet;
                *since = now;
                *quiet = 0;
                Some(unlogged)
            }
            None => {
                self.by_ip.insert(ip, (now, 0));
                Some(0)
            }
        }
    }
}

/// An error with its causes, "a: b: c".
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn backoff(attempts: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempts.min(8))
        .min(MAX_BACKOFF);
    base + Duration::from_millis(rand::random::<u64>() % 250)
}

impl EventLoop {
    pub(super) fn new(
        mut swarm: Swarm<Behaviour>,
        signer: Arc<Signer>,
        roster: SignedRoster,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Result<Self> {
        let network_id = roster.roster.network_id.clone();
        let topic = |name: &str| IdentTopic::new(format!("mbc/{network_id}/{name}"));
        let topics = Topics {
            roster: topic("roster"),
            rounds: topic("rounds"),
            releases: topic("releases"),
            directory: topic("directory"),
        };
        for t in [
            &topics.roster,
            &topics.rounds,
            &topics.releases,
            &topics.directory,
        ] {
            swarm
                .behaviour_mut()
                .gossip
                .subscribe(t)
                .map_err(|e| anyhow::anyhow!("couldn't subscribe to {t}: {e}"))?;
        }
        let mut this = Self {
            swarm,
            signer,
            network_id,
            roster: roster.clone(),
            members: HashMap::new(),
            topics,
            commands,
            events,
            pending: HashMap::new(),
            guard: ReplayGuard::default(),
            connections: HashMap::new(),
            rtt: HashMap::new(),
            agents: HashMap::new(),
            redial: HashMap::new(),
            last_pull: Instant::now(),
            refusals: Refusals::default(),
        };
        this.set_roster(roster);
        Ok(this)
    }

    /// Runs until `cancel` fires or every [`super::Client`] is dropped. Callers waiting on a
    /// reply get [`NetError::Stopped`].
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                // In-flight work (responses, connection events) before new local commands.
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => {
                    let Some(command) = command else { break }; // Every Client dropped.
                    self.on_command(command);
                }
                _ = tick.tick() => self.on_tick(),
            }
        }
        for (_, (_, pending)) in self.pending.drain() {
            match pending {
                Pending::Verified { reply, .. } => drop(reply.send(Err(NetError::Stopped))),
                Pending::Raw(reply) => drop(reply.send(Err(NetError::Stopped))),
                Pending::RosterPull { .. } => {}
            }
        }
        info!("network stopped");
    }

    fn local(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn key_of(&self, peer: &PeerId) -> Option<NodeKey> {
        self.members.get(peer).map(|m| m.key)
    }

    fn name_of(&self, peer: &PeerId) -> &str {
        self.members.get(peer).map_or("?", |m| m.name.as_str())
    }

    fn seal<B: Body>(&self, body: B, reply_to: Option<u64>) -> (u64, Vec<u8>) {
        let nonce = rand::random();
        let header = Header {
            network_id: &self.network_id,
            nonce,
            sent_at_ms: now_ms(),
            reply_to,
        };
        let bytes = encode(&Envelope::seal(&self.signer, header, body));
        tap(&bytes);
        (nonce, bytes)
    }

    // ---- commands ----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                if !self.members.contains_key(&peer) {
                    let _ = reply.send(Err(NetError::NotMember(peer)));
                    return;
                }
                let (nonce, bytes) = self.seal(*request, None);
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, bytes);
                self.pending
                    .insert(id, (peer, Pending::Verified { nonce, reply }));
            }
            Command::RequestRaw { peer, bytes, reply } => {
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, bytes);
                self.pending.insert(id, (peer, Pending::Raw(reply)));
            }
            Command::Respond { handle, response } => {
                self.respond(handle.channel, Some(handle.nonce), response);
            }
            Command::Publish { gossip, reply } => {
                let _ = reply.send(self.publish(gossip));
            }
            Command::SetRoster { roster } => self.set_roster(roster),
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
        }
    }

    fn publish(&mut self, gossip: Gossip) -> Result<(), NetError> {
        let topic = match &gossip {
            Gossip::Roster(_) => self.topics.roster.clone(),
            Gossip::Release(_) => self.topics.releases.clone(),
            Gossip::Directory(_) => self.topics.directory.clone(),
        };
        let (_, bytes) = self.seal(gossip, None);
        self.swarm
            .behaviour_mut()
            .gossip
            .publish(topic, bytes)
            .map(|_| ())
            .map_err(|e| NetError::Publish(e.to_string()))
    }

    fn set_roster(&mut self, roster: SignedRoster) {
        let new: HashMap<PeerId, Member> = roster
            .roster
            .members
            .iter()
            .map(|m| (peer_id(&m.key), m.clone()))
            .collect();
        let local = self.local();
        let removed: Vec<PeerId> = self
            .members
            .keys()
            .filter(|p| !new.contains_key(p))
            .copied()
            .collect();
        for peer in removed {
            info!(%peer, name = self.name_of(&peer), "removed from the roster: closing its connections");
            if let Some(key) = self.key_of(&peer) {
                self.guard.forget(&key);
            }
            self.swarm.behaviour_mut().allowed.disallow_peer(peer);
            self.redial.remove(&peer);
        }
        for peer in new.keys().filter(|p| **p != local) {
            self.swarm.behaviour_mut().allowed.allow_peer(*peer);
            if !self.connections.contains_key(peer) {
                self.redial.entry(*peer).or_insert(Redial {
                    attempts: 0,
                    due: Instant::now(),
                });
            }
        }
        if !new.contains_key(&local) {
            warn!(
                "this node is not on roster version {}",
                roster.roster.version
            );
        }
        info!(
            version = roster.roster.version,
            members = new.len(),
            "roster in force"
        );
        self.members = new;
        self.roster = roster;
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let local = self.local();
        let mut out: Vec<PeerInfo> = self
            .members
            .iter()
            .filter(|(p, _)| **p != local)
            .map(|(p, m)| {
                let conn = self.connections.get(p);
                PeerInfo {
                    peer_id: p.to_string(),
                    name: m.name.clone(),
                    role: m.role,
                    connected: conn.is_some(),
                    address: conn.map(|c| c.address.to_string()),
                    connected_secs: conn.map(|c| c.since.elapsed().as_secs()),
                    rtt_ms: self.rtt.get(p).map(|d| d.as_secs_f64() * 1e3),
                    agent: self.agents.get(p).cloned(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        out
    }

    // ---- timers ----

    fn on_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(p, r)| r.due <= now && !self.connections.contains_key(p))
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let addrs: Vec<Multiaddr> = self
                .members
                .get(&peer)
                .map(|m| m.addrs.iter().filter_map(|a| a.parse().ok()).collect())
                .unwrap_or_default();
            let Some(r) = self.redial.get_mut(&peer) else {
                continue;
            };
            r.due = now + backoff(r.attempts);
            r.attempts += 1;
            if addrs.is_empty() {
                continue; // It has no address we can dial; it will dial us.
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, "dial not started: {e}");
            }
        }
        if now.duration_since(self.last_pull) >= ROSTER_PULL_EVERY {
            self.last_pull = now;
            let connected: Vec<PeerId> = self.connections.keys().copied().collect();
            if !connected.is_empty() {
                let peer = connected[rand::random::<usize>() % connected.len()];
                self.pull_roster(peer);
            }
        }
    }

    fn pull_roster(&mut self, peer: PeerId) {
        let have = self.roster.roster.version;
        let (nonce, bytes) = self.seal(Request::Roster { have }, None);
        let id = self.swarm.behaviour_mut().rpc.send_request(&peer, bytes);
        self.pending
            .insert(id, (peer, Pending::RosterPull { nonce }));
    }

    // ---- swarm events ----

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                let _ = self.events.try_send(Event::Listening(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                self.redial.remove(&peer_id);
                if num_established.get() == 1 {
                    info!(peer = %peer_id, name = self.name_of(&peer_id), "connected");
                    self.connections.insert(
                        peer_id,
                        Connection {
                            since: Instant::now(),
                            address: endpoint.get_remote_address().clone(),
                        },
                    );
                    self.pull_roster(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                info!(peer = %peer_id, name = self.name_of(&peer_id), cause = ?cause.map(|c| c.to_string()), "disconnected");
                self.connections.remove(&peer_id);
                self.rtt.remove(&peer_id);
                if self.members.contains_key(&peer_id) {
                    self.redial.insert(
                        peer_id,
                        Redial {
                            attempts: 0,
                            due: Instant::now() + FIRST_BACKOFF,
                        },
                    );
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => match self.refusals.note(&send_back_addr) {
                Some(0) => {
                    warn!(remote = %send_back_addr, "refused incoming connection: {}", chain(&error))
                }
                Some(unlogged) => warn!(
                    remote = %send_back_addr,
                    "refused incoming connection: {} ({unlogged} more from this address not logged)",
                    chain(&error)
                ),
                None => {
                    debug!(remote = %send_back_addr, "refused incoming connection: {}", chain(&error))
                }
            },
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, "dial failed: {error}");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = match self.on_gossip(&message) {
                    Ok(()) => MessageAcceptance::Accept,
                    Err(reason) => {
                        warn!(peer = %propagation_source, "refused gossip: {reason}");
                        MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossip
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.rtt.insert(peer, rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.agents.insert(peer_id, info.agent_version);
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, message: &gossipsub::Message) -> Result<(), String> {
        let envelope = decode::<Gossip>(&message.data).map_err(|e| e.to_string())?;
        let sender = peer_id(&envelope.sender);
        if message.source != Some(sender) {
            return Err("envelope signer is not the gossip author".into());
        }
        if !self.members.contains_key(&sender) {
            return Err(format!("author {sender} is not a member"));
        }
        envelope
            .open(&self.network_id, &envelope.sender)
            .map_err(|r| r.to_string())?;
        self.guard
            .check(
                &envelope.sender,
                envelope.nonce,
                envelope.sent_at_ms,
                now_ms(),
            )
            .map_err(|r| r.to_string())?;
        match envelope.body {
            Gossip::Roster(roster) => {
                if roster.roster.version > self.roster.roster.version {
                    self.hand_roster(sender, roster);
                }
            }
            // The node checks the release against the pinned coordinator and stores it.
            Gossip::Release(release) => {
                let event = Event::Release {
                    from: sender,
                    release,
                };
                if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
                    warn!(peer = %sender, "node busy: release dropped");
                }
            }
            // The node checks the entry against the roster and its clinic's signature.
            Gossip::Directory(entry) => {
                let event = Event::Directory {
                    from: sender,
                    entries: vec![entry],
                };
                if let Err(TrySendError::Full(_)) = self.events.try_send(event) {
                    warn!(peer = %sender, "node busy: directory entry dropped; it will be pulled");
                }
            }
        }
        Ok(())
    }

    fn hand_roster(&mut self, from: PeerId, roster: SignedRoster) {
        if let Err(TrySendError::Full(_)) = self.events.try_send(Event::Roster { from, roster }) {
            warn!(peer = %from, "node busy: roster dropped; it will be pulled again");
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message {
                peer,
                message: M::Request {
                    request, channel, ..
                },
                ..
            } => self.on_request(peer, &request, channel),
            E::Message {
                peer,
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, pending)) = self.pending.remove(&request_id) else {
                    return;
                };
                match pending {
                    Pending::Raw(reply) => drop(reply.send(Ok(response))),
                    Pending::Verified { nonce, reply } => {
                        let _ = reply.send(self.open_response(peer, nonce, &response));
                    }
                    Pending::RosterPull { nonce } => {
                        match self.open_response(peer, nonce, &response) {
                            Ok(Response::Roster(Some(roster))) => self.hand_roster(peer, roster),
                            Ok(_) => {}
                            Err(e) => warn!(%peer, "roster pull: {e}"),
                        }
                    }
                }
            }
            E::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some((_, pending)) = self.pending.remove(&request_id) else {
                    return;
                };
                let err = NetError::Failed {
                    peer,
                    reason: error.to_string(),
                };
                match pending {
                    Pending::Raw(reply) => drop(reply.send(Err(err))),
                    Pending::Verified { reply, .. } => drop(reply.send(Err(err))),
                    Pending::RosterPull { .. } => debug!(%peer, "roster pull failed: {error}"),
                }
            }
            E::InboundFailure { peer, error, .. } => {
                warn!(%peer, "refused request: {error}");
            }
            E::ResponseSent { .. } => {}
        }
    }

    fn open_response(&self, peer: PeerId, nonce: u64, bytes: &[u8]) -> Result<Response, NetError> {
        let bad = |reason: String| NetError::BadResponse { peer, reason };
        let key = self.key_of(&peer).ok_or(NetError::NotMember(peer))?;
        let envelope = decode::<Response>(bytes).map_err(|e| bad(e.to_string()))?;
        envelope
            .open(&self.network_id, &key)
            .map_err(|r| bad(r.to_string()))?;
        if envelope.reply_to != Some(nonce) {
            return Err(bad("it answers another request".into()));
        }
        match envelope.body {
            Response::Rejected(rejection) => Err(NetError::Rejected { peer, rejection }),
            response => Ok(response),
        }
    }

    fn on_request(&mut self, peer: PeerId, bytes: &[u8], channel: ResponseChannel<Vec<u8>>) {
        let Some(key) = self.key_of(&peer) else {
            // The allow-list keeps non-members out; a member removed a moment ago may still
            // have a request in flight.
            warn!(%peer, "refused request: not a member");
            return;
        };
        let envelope = match decode::<Request>(bytes) {
            Ok(e) => e,
            Err(err) => {
                warn!(%peer, "refused request: {err}");
                self.respond(channel, None, Response::Rejected(Rejection::Malformed));
                return;
            }
        };
        let checked = envelope
            .open(&self.network_id, &key)
            .map(|_| ())
            .and_then(|()| {
                self.guard.check(
                    &envelope.sender,
                    envelope.nonce,
                    envelope.sent_at_ms,
                    now_ms(),
                )
            });
        if let Err(rejection) = checked {
            warn!(%peer, "refused request: {rejection}");
            self.respond(channel, Some(envelope.nonce), Response::Rejected(rejection));
            return;
        }
        let nonce = envelope.nonce;
        let response = match envelope.body {
            Request::Echo(payload) => Response::Echo(payload),
            Request::Roster { have } => {
                Response::Roster((self.roster.roster.version > have).then(|| self.roster.clone()))
            }
            // Application requests are the node's to answer.
            request @ (Request::Info
            | Request::Round(_)
            | Request::Releases { .. }
            | Request::Directory { .. }) => {
                return self.forward(peer, request, channel, nonce);
            }
        };
        self.respond(channel, Some(nonce), response);
    }

    fn respond(
        &mut self,
        channel: ResponseChannel<Vec<u8>>,
        reply_to: Option<u64>,
        response: Response,
    ) {
        let (_, bytes) = self.seal(response, reply_to);
        // The requester may have gone; nothing to do then.
        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, bytes);
    }

    /// Hands a request to the node, or answers `Busy` when the node is behind.
    fn forward(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Vec<u8>>,
        nonce: u64,
    ) {
        let event = Event::Request {
            peer,
            request,
            handle: InboundHandle { channel, nonce },
        };
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(Event::Request { handle, .. }))
            | Err(TrySendError::Closed(Event::Request { handle, .. })) => {
                debug!(%peer, "node busy: answering Busy");
                self.respond(handle.channel, Some(handle.nonce), Response::Busy);
            }
            Err(_) => {}
        }
    }
}
