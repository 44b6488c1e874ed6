//! Network membership on this node (DESIGN.md §8): creating a network, join requests,
//! admitting and removing clinics, joining, and accepting newer rosters.
//!
//! The store pins the network id and the coordinator's key once (`network` table) and keeps
//! every accepted roster (`roster` table). The checks themselves are `protocol::roster`'s;
//! this module does the reading, writing and the mapping between keys and libp2p PeerIds.

use anyhow::{Context, Result, bail};
use libp2p::PeerId;
use libp2p::identity::{PublicKey, ed25519};
use protocol::keys::{NodeKey, Signer};
use protocol::roster::{JoinRequest, Roster, SignedRoster};
use rusqlite::{Connection, OptionalExtension, params};

/// The network this node belongs to, as pinned at create or join.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Network id.
    pub network_id: String,
    /// The coordinator's key, pinned.
    pub coordinator: NodeKey,
    /// Whether this node is the coordinator.
    pub is_coordinator: bool,
    /// The newest accepted roster.
    pub roster: SignedRoster,
}

/// The libp2p PeerId of a node key.
pub fn peer_id(key: &NodeKey) -> PeerId {
    // Unwrap safety: NodeKeys come from verified signatures or our own seed; any 32 bytes
    // that fail to parse as a point could not have verified a signature.
    let public = ed25519::PublicKey::try_from_bytes(&key.0)
        .map(PublicKey::from)
        .expect("roster keys are valid Ed25519 points");
    public.to_peer_id()
}

/// Finds the roster member with PeerId `peer` (as typed by a user).
pub fn member_key(roster: &Roster, peer: &str) -> Result<NodeKey> {
    let wanted: PeerId = peer
        .parse()
        .with_context(|| format!("{peer:?} is not a PeerId (they look like 12D3KooW...)"))?;
    roster
        .members
        .iter()
        .find(|m| peer_id(&m.key) == wanted)
        .map(|m| m.key)
        .with_context(|| format!("{peer} is not on roster version {}", roster.version))
}

/// The pinned network and newest roster, if this node has created or joined one.
pub fn load(conn: &Connection) -> Result<Option<Membership>> {
    let pinned: Option<(String, String, bool)> = conn
        .query_row(
            "SELECT network_id, coordinator_key, is_coordinator FROM network",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((network_id, coordinator, is_coordinator)) = pinned else {
        return Ok(None);
    };
    let json: String = conn
        .query_row(
            "SELECT signed_json FROM roster ORDER BY version DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .context("the store pins a network but holds no roster")?;
    let roster: SignedRoster =
        serde_json::from_str(&json).context("couldn't parse the stored roster")?;
    let coordinator = NodeKey::from_hex(&coordinator)
        .context("the stored coordinator key is not 32 bytes of hex")?;
    // A store edited by hand must not widen the allow-list.
    roster
        .verify(Some(&network_id), Some(&coordinator))
        .context("the stored roster does not verify")?;
    Ok(Some(Membership {
        network_id,
        coordinator,
        is_coordinator,
        roster,
    }))
}

fn insert_roster(conn: &Connection, roster: &SignedRoster, now: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO roster (version, signed_json, received_at) VALUES (?1, ?2, ?3)",
        params![
            roster.roster.version as i64,
            serde_json::to_string(roster)?,
            now
        ],
    )?;
    Ok(())
}

fn pin(conn: &Connection, roster: &Roster, is_coordinator: bool, now: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO network (one_row, network_id, coordinator_key, is_coordinator, joined_at)
         VALUES (1, ?1, ?2, ?3, ?4)",
        params![
            roster.network_id,
            hex::encode(roster.coordinator.0),
            is_coordinator,
            now
        ],
    )?;
    Ok(())
}

fn refuse_if_member(conn: &Connection) -> Result<()> {
    if let Some(m) = load(conn)? {
        bail!(
            "this node is already in network {:?} (roster version {}); a node belongs to one network",
            m.network_id,
            m.roster.roster.version
        );
    }
    Ok(())
}

/// Creates a network with this node as coordinator: roster version 1, signed.
pub fn create(
    conn: &mut Connection,
    signer: &Signer,
    network_id: &str,
    name: &str,
    addrs: Vec<String>,
    now: (i64, &str),
) -> Result<SignedRoster> {
    let tx = crate::store::ledger_transaction(conn)?;
    refuse_if_member(&tx)?;
    let roster = Roster::genesis(network_id, signer.key(), name, addrs, now.0)?.sign(signer);
    pin(&tx, &roster.roster, true, now.1)?;
    insert_roster(&tx, &roster, now.1)?;
    tx.commit()?;
    Ok(roster)
}

fn coordinator_change(
    conn: &mut Connection,
    signer: &Signer,
    change: impl FnOnce(&Roster) -> Result<Roster>,
    now: &str,
) -> Result<SignedRoster> {
    let tx = crate::store::ledger_transaction(conn)?;
    let m = load(&tx)?
        .context("this node is not in a network; create one with `mbc-node network create`")?;
    if !m.is_coordinator || m.coordinator != signer.key() {
        bail!("only the network's coordinator can change the roster");
    }
    let next = change(&m.roster.roster)?.sign(signer);
    insert_roster(&tx, &next, now)?;
    tx.commit()?;
    Ok(next)
}

/// Admits a clinic (coordinator only): the next roster version, signed and stored.
pub fn admit(
    conn: &mut Connection,
    signer: &Signer,
    request: &JoinRequest,
    now: (i64, &str),
) -> Result<SignedRoster> {
    coordinator_change(conn, signer, |r| Ok(r.admit(request, now.0)?), now.1)
}

/// Removes a member (coordinator only): the next roster version, signed and stored.
pub fn remove(
    conn: &mut Connection,
    signer: &Signer,
    peer: &str,
    now: (i64, &str),
) -> Result<SignedRoster> {
    coordinator_change(
        conn,
        signer,
        |r| Ok(r.remove(&member_key(r, peer)?, now.0)?),
        now.1,
    )
}

/// Joins the network of `roster`, pinning its network id and coordinator. The roster must
/// list this node. `expect_coordinator`, if given, must be the coordinator's PeerId.
pub fn join(
    conn: &mut Connection,
    own: &NodeKey,
    roster: &SignedRoster,
    expect_coordinator: Option<&str>,
    now: &str,
) -> Result<()> {
    roster.verify(None, None)?;
    if let Some(expected) = expect_coordinator {
        let actual = peer_id(&roster.roster.coordinator).to_string();
        if actual != expected {
            bail!("the roster is signed by coordinator {actual}, not {expected}");
        }
    }
    if roster.roster.member(own).is_none() {
        bail!(
            "this node ({}) is not on the roster; ask the coordinator to admit its join request first",
            peer_id(own)
        );
    }
    let tx = crate::store::ledger_transaction(conn)?;
    refuse_if_member(&tx)?;
    pin(&tx, &roster.roster, roster.roster.coordinator == *own, now)?;
    insert_roster(&tx, roster, now)?;
    tx.commit()?;
    Ok(())
}

/// Stores `roster` if it is a valid update of the newest one. `Ok(false)` when it is not newer.
pub fn accept(conn: &mut Connection, roster: &SignedRoster, now: &str) -> Result<bool> {
    let tx = crate::store::ledger_transaction(conn)?;
    let m = load(&tx)?.context("this node is not in a network")?;
    if roster.roster.version <= m.roster.roster.version {
        return Ok(false);
    }
    roster.check_update(&m.roster)?;
    insert_roster(&tx, roster, now)?;
    tx.commit()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn store() -> Store {
        Store::open_in_memory().unwrap()
    }

    fn signer(i: u8) -> Signer {
        Signer::from_seed(&[i; 32])
    }

    #[test]
    fn peer_ids_match_libp2p() {
        let seed = [5u8; 32];
        let expected = crate::keystore::peer_id(seed).unwrap();
        assert_eq!(peer_id(&Signer::from_seed(&seed).key()), expected);
    }

    #[test]
    fn create_admit_join_remove() {
        let (c, k) = (signer(1), signer(2));
        let mut coord = store();
        let g = create(coord.conn_mut(), &c, "net", "C", vec![], (1, "t")).unwrap();
        assert!(create(coord.conn_mut(), &c, "net", "C", vec![], (1, "t")).is_err());
        let req = JoinRequest::new("net", &k, "K", vec![], 2).unwrap();
        let v2 = admit(coord.conn_mut(), &c, &req, (3, "t")).unwrap();
        assert_eq!(v2.roster.version, 2);
        assert_eq!(load(coord.conn()).unwrap().unwrap().roster, v2);

        let mut clinic = store();
        // The genesis roster does not list the clinic yet.
        let err = join(clinic.conn_mut(), &k.key(), &g, None, "t").unwrap_err();
        assert!(err.to_string().contains("not on the roster"), "{err}");
        let wrong = peer_id(&signer(9).key()).to_string();
        assert!(join(clinic.conn_mut(), &k.key(), &v2, Some(&wrong), "t").is_err());
        let right = peer_id(&c.key()).to_string();
        join(clinic.conn_mut(), &k.key(), &v2, Some(&right), "t").unwrap();
        let m = load(clinic.conn()).unwrap().unwrap();
        assert!(!m.is_coordinator);
        assert_eq!(m.coordinator, c.key());
        // A clinic cannot change the roster.
        assert!(admit(clinic.conn_mut(), &k, &req, (4, "t")).is_err());

        let v3 = remove(
            coord.conn_mut(),
            &c,
            &peer_id(&k.key()).to_string(),
            (5, "t"),
        )
        .unwrap();
        assert!(accept(clinic.conn_mut(), &v3, "t").unwrap());
        assert!(!accept(clinic.conn_mut(), &v3, "t").unwrap());
        assert!(!accept(clinic.conn_mut(), &v2, "t").unwrap());
        assert_eq!(
            load(clinic.conn()).unwrap().unwrap().roster.roster.version,
            3
        );
        // A roster signed by another key is refused and nothing is stored.
        let forged = v3.roster.admit(&req, 6).unwrap().sign(&k);
        assert!(accept(clinic.conn_mut(), &forged, "t").is_err());
        assert_eq!(
            load(clinic.conn()).unwrap().unwrap().roster.roster.version,
            3
        );
    }

    #[test]
    fn the_pin_and_rosters_cannot_be_rewritten() {
        let mut s = store();
        create(s.conn_mut(), &signer(1), "net", "C", vec![], (1, "t")).unwrap();
        for sql in [
            "UPDATE network SET coordinator_key = 'x'",
            "DELETE FROM network",
            "UPDATE roster SET signed_json = '{}'",
            "DELETE FROM roster",
        ] {
            assert!(s.conn().execute(sql, []).is_err(), "{sql}");
        }
    }
}
