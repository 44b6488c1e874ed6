//! The network's public face: [`Client`], [`Event`] and [`new`] (DESIGN.md §8).
//!
//! [`EventLoop`] is the sole owner of the libp2p `Swarm`; everything else in the node holds a
//! cheap [`Client`] that sends it bounded [`Command`]s, each carrying its own reply channel
//! (STYLE.md, "Event-loop pattern"). The loop answers transport-level requests itself (roster
//! pull, echo), hands application requests to the node as [`Event`]s through a bounded
//! channel and answers `Busy` when that channel is full.
//!
//! Stack: TCP + Noise + Yamux; identify; ping; request-response over [`codec::RawCodec`]
//! (signed `protocol::messages` envelopes, size-bounded); gossipsub for roster, round and
//! release announcements; an allow-list driven by the roster (non-members cannot complete a
//! connection); connection limits.

pub mod codec;
mod event_loop;
pub mod pending;
pub mod port;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    Multiaddr, PeerId, allow_block_list, connection_limits, gossipsub, identify, noise, ping, tcp,
    yamux,
};
use protocol::directory::SignedEntry;
use protocol::keys::Signer;
use protocol::messages::{Gossip, MAX_GOSSIP, Rejection, Request, Response};
use protocol::roster::{Role, SignedRoster};
use protocol::round::SignedRelease;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use event_loop::EventLoop;

/// Commands are small; a full channel back-pressures callers instead of growing memory.
pub const COMMAND_CAPACITY: usize = 64;
/// Inbound requests for the node beyond this are answered `Busy` at once.
pub const EVENT_CAPACITY: usize = 64;
/// Longest an outbound request waits for its response: the longest round step (a round's
/// own, shorter deadlines are enforced by its driver).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(protocol::round::DEADLINE_MS.1);
/// Most connections per peer (two when both sides dial at once).
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Most incoming connections still in their handshake, from all addresses together (a memory
/// bound; one address gets at most [`pending::MAX_PENDING_PER_IP`] of them).
pub const MAX_PENDING_INCOMING: u32 = 256;
/// Longest a connection may take to negotiate, authenticate (Noise) and multiplex (Yamux);
/// a stalled handshake is dropped after this (libp2p's default is 10 s).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);
/// Version string exchanged by identify.
pub const IDENTIFY_PROTOCOL: &str = "/mbc-node/id/1";

/// Why a network operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NetError {
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
    /// The peer is not on the roster.
    #[error("peer {0} is not a member of the network")]
    NotMember(PeerId),
    /// The request failed in transport (dial, timeout, stream closed).
    #[error("request to {peer} failed: {reason}")]
    Failed {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The peer's response did not decode or verify.
    #[error("response from {peer} refused: {reason}")]
    BadResponse {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The peer refused our request.
    #[error("{peer} refused the request: {rejection}")]
    Rejected {
        /// The peer.
        peer: PeerId,
        /// Why.
        rejection: Rejection,
    },
    /// Publishing a gossip message failed.
    #[error("couldn't publish: {0}")]
    Publish(String),
}

/// A roster member as the network sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    /// PeerId.
    pub peer_id: String,
    /// Clinic name from the roster.
    pub name: String,
    /// Role from the roster.
    pub role: Role,
    /// Whether a connection is established now.
    pub connected: bool,
    /// The remote address of the connection, if connected.
    pub address: Option<String>,
    /// Seconds since the connection was established, if connected.
    pub connected_secs: Option<u64>,
    /// Round-trip time of the last ping, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The peer's agent version from identify.
    pub agent: Option<String>,
}

/// What the node asks of the network.
#[derive(Debug)]
pub enum Command {
    /// Send a request and wait for its verified response.
    Request {
        /// To whom.
        peer: PeerId,
        /// What (boxed: a round announcement is far larger than the other commands).
        request: Box<Request>,
        /// Where the response goes.
        reply: oneshot::Sender<Result<Response, NetError>>,
    },
    /// Send bytes as they are and return the response bytes as they are (tests and
    /// benchmarks: hand-crafted, hostile or pre-encoded messages).
    RequestRaw {
        /// To whom.
        peer: PeerId,
        /// The bytes.
        bytes: Vec<u8>,
        /// Where the response bytes go.
        reply: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    /// Answer an inbound request handed to the node as [`Event::Request`].
    Respond {
        /// The request's handle.
        handle: InboundHandle,
        /// The answer.
        response: Response,
    },
    /// Gossip a message.
    Publish {
        /// The message.
        gossip: Gossip,
        /// Whether it went out.
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    /// Adopt a roster the node has verified and stored: allow its members, dial them, close
    /// connections to removed ones.
    SetRoster {
        /// The roster.
        roster: SignedRoster,
    },
    /// List roster members with their connection state.
    Peers {
        /// Where the list goes.
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
}

/// An inbound request awaiting the node's answer.
#[derive(Debug)]
pub struct InboundHandle {
    channel: request_response::ResponseChannel<Vec<u8>>,
    nonce: u64,
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// The transport listens on an address.
    Listening(Multiaddr),
    /// A verified request for the node to answer with [`Command::Respond`].
    Request {
        /// From whom.
        peer: PeerId,
        /// What.
        request: Request,
        /// Pass back with the answer.
        handle: InboundHandle,
    },
    /// A roster from a peer (gossip or pull), signature not yet checked against the pinned
    /// coordinator: the node does that before adopting it.
    Roster {
        /// Who sent it.
        from: PeerId,
        /// The roster.
        roster: SignedRoster,
    },
    /// A gossiped release (envelope verified; the release's own signature not yet).
    Release {
        /// Who published it.
        from: PeerId,
        /// The release.
        release: SignedRelease,
    },
    /// Directory entries, gossiped (envelope verified) or pulled; not yet checked against the
    /// roster and their clinics' signatures.
    Directory {
        /// Who sent them.
        from: PeerId,
        /// The entries.
        entries: Vec<SignedEntry>,
    },
}

/// The node's handle on the network. Cheap to clone; when every clone is dropped the event
/// loop stops.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
}

impl Client {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Sends `request` to `peer` and waits for its verified response. Cancel-safe: dropping
    /// the future drops the reply receiver; the event loop ignores the closed channel.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        self.call(|reply| Command::Request {
            peer,
            request: Box::new(request),
            reply,
        })
        .await?
    }

    /// Sends raw bytes to `peer` and returns the raw response bytes.
    pub async fn request_raw(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, NetError> {
        self.call(|reply| Command::RequestRaw { peer, bytes, reply })
            .await?
    }

    /// Answers an inbound request.
    pub async fn respond(&self, handle: InboundHandle, response: Response) -> Result<(), NetError> {
        self.commands
            .send(Command::Respond { handle, response })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Gossips `gossip` on its topic.
    pub async fn publish(&self, gossip: Gossip) -> Result<(), NetError> {
        self.call(|reply| Command::Publish { gossip, reply })
            .await?
    }

    /// Adopts a verified roster.
    pub async fn set_roster(&self, roster: SignedRoster) -> Result<(), NetError> {
        self.commands
            .send(Command::SetRoster { roster })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Roster members and their connection state.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NetError> {
        self.call(|reply| Command::Peers { reply }).await
    }
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    // First: a flood from one address is refused before it takes the global pending slots.
    pending: pending::PendingPerIp,
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    rpc: request_response::Behaviour<codec::RawCodec>,
    gossip: gossipsub::Behaviour,
}

/// Settings of the network layer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Most simultaneous connections.
    pub max_connections: u32,
    /// `mbc-node` version, for identify and `Info`.
    pub software: String,
}

/// Builds the swarm and starts listening. Returns the node's client, the event stream and the
/// event loop to spawn.
pub fn new(
    keypair: Keypair,
    signer: Arc<Signer>,
    roster: SignedRoster,
    settings: &Settings,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop)> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP + 4096)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .context("couldn't configure gossipsub")?;
    let software = settings.software.clone();
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(settings.max_connections))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            Ok(Behaviour {
                pending: Default::default(),
                allowed: Default::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                        .with_agent_version(format!("mbc-node/{software}")),
                ),
                ping: ping::Behaviour::default(),
                rpc: request_response::Behaviour::with_codec(
                    codec::RawCodec,
                    [(codec::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                gossip: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?,
            })
        })
        .map_err(|e| anyhow::anyhow!("couldn't build the network behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
        .with_connection_timeout(UPGRADE_TIMEOUT)
        .build();
    for addr in &settings.listen {
        swarm
            .listen_on(addr.clone())
            .with_context(|| format!("couldn't listen on {addr}"))?;
    }
    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
    let event_loop = EventLoop::new(swarm, signer, roster, command_rx, event_tx)?;
    Ok((Client { commands }, events, event_loop))
}
