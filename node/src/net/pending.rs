//! A bound on incoming connections still in their handshake, per source IP address.
//!
//! libp2p's `connection_limits` bounds pending incoming connections in total only: one outsider
//! that opens that many TCP connections and never finishes the Noise handshake blocks every new
//! incoming connection, members' included (issue 12, finding 8). This behaviour, placed first in
//! the node's `Behaviour`, refuses a pending connection from an address that already has
//! [`MAX_PENDING_PER_IP`] of them; the transport's upgrade timeout
//! ([`super::UPGRADE_TIMEOUT`]) frees the slots of stalled ones. A connection leaves the count
//! when its handshake succeeds or fails.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

/// Most incoming connections one IP address may have in their handshake at once.
pub const MAX_PENDING_PER_IP: usize = 8;

/// Why a pending connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} already has {MAX_PENDING_PER_IP} incoming connections in their handshake")]
pub struct TooManyPending(pub IpAddr);

/// Counts pending incoming connections per source IP address; see the module docs.
#[derive(Debug, Default)]
pub struct PendingPerIp {
    by_connection: HashMap<ConnectionId, IpAddr>,
    by_ip: HashMap<IpAddr, usize>,
}

impl PendingPerIp {
    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.by_connection.remove(&id) else {
            return;
        };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Connections now counted (for tests and diagnostics).
    pub fn pending(&self) -> usize {
        self.by_connection.len()
    }
}

/// The IP address of a multiaddress, if it has one.
pub(crate) fn source_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for PendingPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = source_ip(remote) else {
            return Ok(());
        };
        let n = self.by_ip.entry(ip).or_default();
        if *n >= MAX_PENDING_PER_IP {
            return Err(ConnectionDenied::new(TooManyPending(ip)));
        }
        *n += 1;
        self.by_connection.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection_id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) = event {
            self.release(connection_id);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_is_capped_others_are_not_and_slots_come_back() {
        let mut b = PendingPerIp::default();
        let local = addr("/ip4/127.0.0.1/tcp/7400");
        let flood = addr("/ip4/127.0.0.2/tcp/5000");
        let ids: Vec<ConnectionId> = (0..MAX_PENDING_PER_IP + 1)
            .map(|_| ConnectionId::new_unchecked(rand::random()))
            .collect();
        for id in &ids[..MAX_PENDING_PER_IP] {
            b.handle_pending_inbound_connection(*id, &local, &flood)
                .unwrap();
        }
        let refused = b
            .handle_pending_inbound_connection(ids[MAX_PENDING_PER_IP], &local, &flood)
            .unwrap_err();
        let cause = refused
            .downcast_ref::<TooManyPending>()
            .expect("refused by this limit");
        assert!(cause.to_string().contains("127.0.0.2"), "{cause}");
        // Another address still gets in.
        let member = ConnectionId::new_unchecked(1);
        b.handle_pending_inbound_connection(member, &local, &addr("/ip4/127.0.0.1/tcp/6000"))
            .unwrap();
        // A handshake that ends (well or badly) frees its slot.
        b.handle_established_inbound_connection(ids[0], PeerId::random(), &local, &flood)
            .unwrap();
        b.handle_pending_inbound_connection(ids[MAX_PENDING_PER_IP], &local, &flood)
            .unwrap();
        assert_eq!(b.pending(), MAX_PENDING_PER_IP + 1);
    }
}
