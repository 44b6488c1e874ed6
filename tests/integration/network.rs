//! The network as clinics and a coordinator run it: real `mbc-node run` processes on
//! 127.0.0.1, formed through the CLI; plus in-process peers that misbehave.

use integration_tests::mbc;
use integration_tests::net::{Daemon, admit, admit_seed, form, init, wait_converged, wait_for};
use libp2p::PeerId;
use mbc_node::net::{self, NetError, Settings};
use protocol::keys::{Bytes, Signer};
use protocol::messages::{
    Envelope, Header, MAX_REQUEST, Rejection, Request, Response, decode, encode,
};
use protocol::roster::{Roster, SignedRoster};
use tokio_util::sync::CancellationToken;

const NET: &str = "net-test";

fn all<'a>(c: &'a Daemon, ds: &'a [Daemon]) -> Vec<&'a Daemon> {
    std::iter::once(c).chain(ds).collect()
}

/// A coordinator and three clinics form the network through the CLI; a fourth clinic admitted
/// while everyone runs reaches every roster; a removed clinic is disconnected and refused; a
/// restarted clinic keeps its identity and rejoins.
#[test]
fn network_forms_propagates_removes_and_rejoins() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, clinics) = form(root, NET, 3);
    let c = Daemon::start(&coord);
    let mut ds: Vec<Daemon> = clinics.iter().map(Daemon::start).collect();
    // Clinic 1 joined at roster v2 and clinic 2 at v3: they learn v4 from their peers.
    wait_converged(&all(&c, &ds), 4, 3);
    assert_eq!(c.status()["network"]["is_coordinator"], true);

    // Admit a fourth clinic while the network runs: the roster reaches every node.
    let late = init(root, "Clinic 4");
    admit(root, &coord, &late, NET);
    ds.push(Daemon::start(&late));
    wait_converged(&all(&c, &ds), 5, 4);

    // Remove clinic 3: every node adopts v6 and closes its connections to it.
    let removed = ds.remove(2);
    let out = mbc(
        root,
        &[
            "network",
            "remove",
            "--data-dir",
            coord.arg(),
            &removed.node.peer_id,
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("published to the network"),
        "{}",
        out.stdout
    );
    wait_converged(&all(&c, &ds), 6, 3);
    wait_for(
        "the removed clinic to be disconnected from everyone",
        || (removed.status()["peers_connected"] == 0).then_some(()),
    );
    // Its requests are not answered: it cannot reconnect to the coordinator.
    let ping = mbc(
        root,
        &[
            "network",
            "ping",
            "--data-dir",
            removed.node.arg(),
            &coord.peer_id,
            "--count",
            "1",
        ],
    );
    assert_ne!(ping.code, 0, "a removed clinic's request was answered");
    assert!(c.log().contains("removed from the roster"), "{}", c.log());
    let peers = mbc(
        root,
        &["network", "peers", "--data-dir", coord.arg(), "--json"],
    )
    .ok()
    .json()["peers"]
        .clone();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["peer_id"] != removed.node.peer_id.as_str()),
        "{peers}"
    );

    // Restart clinic 1: clean exit on SIGTERM, same PeerId, back in the network.
    let one = ds.remove(0);
    let node = one.node.clone();
    assert_eq!(one.stop(), Some(0), "SIGTERM should exit cleanly");
    assert!(!node.dir.join("api.addr").exists(), "api.addr left behind");
    let again = Daemon::start(&node);
    assert_eq!(again.ready["peer_id"], node.peer_id.as_str());
    ds.insert(0, again);
    wait_converged(&all(&c, &ds), 6, 3);
    // A signed request-response round trip works end to end.
    let ping = mbc(
        root,
        &[
            "network",
            "ping",
            "--data-dir",
            node.arg(),
            &coord.peer_id,
            "--count",
            "5",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(ping["count"], 5);
}

/// The local API answers only with the bearer token.
#[test]
fn local_api_requires_the_token() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let d = Daemon::start(&coord);
    let addr = d.ready["api"].as_str().unwrap().to_owned();
    let raw_to = |host: &str, auth: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET /v1/status HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let raw = |auth: &str| raw_to(&addr, auth);
    assert!(raw("").starts_with("HTTP/1.1 401"), "{}", raw(""));
    assert!(raw("Authorization: Bearer 00\r\n").starts_with("HTTP/1.1 401"));
    let token = hex::encode(std::fs::read(coord.dir.join("api.token")).unwrap());
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert!(raw(&bearer).starts_with("HTTP/1.1 200"));
    // Issue 12, finding 9: a request addressed to another host (DNS rebinding: a web page
    // whose name now points at 127.0.0.1) is refused, even with the token.
    let port = addr.rsplit(':').next().unwrap();
    assert!(raw_to(&format!("localhost:{port}"), &bearer).starts_with("HTTP/1.1 200"));
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1",
        "127.0.0.1:1",
    ] {
        let answer = raw_to(host, &bearer);
        assert!(answer.starts_with("HTTP/1.1 403"), "Host {host}: {answer}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(coord.dir.join("api.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Issue 13, fixes 2 and 3: one daemon per data directory (a second `run` is refused with the
/// first one's pid and leaves its `api.addr` alone), and a daemon whose stdout is closed before
/// its ready line keeps running.
#[test]
fn one_daemon_per_data_directory_and_a_closed_stdout_does_not_stop_it() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let d = Daemon::start(&coord);
    let addr = std::fs::read_to_string(coord.dir.join("api.addr")).unwrap();
    let second = mbc(root, &["run", "--data-dir", coord.arg()]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    let pid = std::fs::read_to_string(coord.dir.join("daemon.lock")).unwrap();
    assert!(
        second.stderr.contains(&format!("(pid {pid})")) && second.stderr.contains("one daemon"),
        "{}",
        second.stderr
    );
    assert_eq!(
        std::fs::read_to_string(coord.dir.join("api.addr")).unwrap(),
        addr,
        "the refused daemon touched api.addr"
    );
    assert_eq!(d.status()["running"], true);
    assert_eq!(d.stop(), Some(0));

    // stdout closed before the ready line: the daemon serves anyway.
    let mut child = std::process::Command::new(integration_tests::bin())
        .args(["run", "--data-dir", coord.arg()])
        .env_remove("MBC_NODE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    wait_for("the daemon to serve with its stdout closed", || {
        let run = mbc(root, &["status", "--data-dir", coord.arg(), "--json"]);
        (run.code == 0 && run.json()["running"] == true).then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 12, finding 9: idle connections that never send a request once exhausted the daemon
/// (about 1,100 of them ran it out of file descriptors, and it held them forever). Now at most
/// 64 are open at once, the rest closed at once, and a request head must arrive within 5 s:
/// with the daemon limited to 256 open files and 300 idle connections held, the CLI is still
/// answered.
#[test]
fn local_api_survives_idle_connections() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let d = Daemon::start_with_file_limit(&coord, 256);
    let addr = d.ready["api"].as_str().unwrap().to_owned();
    let idle: Vec<std::net::TcpStream> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() > 256, "only {} connections opened", idle.len());
    // `status` falls back to what the store knows when the API does not answer: wait for the
    // live one.
    wait_for("the CLI to be answered beside 300 idle connections", || {
        let run = mbc(root, &["status", "--data-dir", coord.arg(), "--json"]);
        (run.code == 0 && run.json()["running"] == true).then_some(())
    });
    drop(idle);
    assert_eq!(d.status()["network"]["is_coordinator"], true);
}

/// An in-process peer with the given seed and roster: its client, and the token stopping it.
pub(super) fn peer(
    rt: &tokio::runtime::Runtime,
    seed: [u8; 32],
    roster: SignedRoster,
) -> (net::Client, CancellationToken) {
    let keypair = mbc_node::keystore::identity_keypair(seed).unwrap();
    let settings = Settings {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        max_connections: 16,
        software: "test".into(),
    };
    let _guard = rt.enter();
    let (client, mut events, event_loop) = net::new(
        keypair,
        std::sync::Arc::new(Signer::from_seed(&seed)),
        roster,
        &settings,
    )
    .unwrap();
    let cancel = CancellationToken::new();
    rt.spawn(event_loop.run(cancel.clone()));
    rt.spawn(async move { while events.recv().await.is_some() {} });
    (client, cancel)
}

pub(super) fn roster_of(
    root: &std::path::Path,
    node: &integration_tests::net::NodeDir,
) -> SignedRoster {
    let file = root.join("roster-now.json");
    mbc(
        root,
        &[
            "network",
            "roster",
            "--data-dir",
            node.arg(),
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .ok();
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A node that is not on the roster cannot complete a connection or get an answer, even with
/// a roster of its own that lists the coordinator.
#[test]
fn outsider_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let d = Daemon::start(&coord);
    let real = roster_of(root, &coord);
    // The outsider signs a roster listing itself and the real coordinator's key and address.
    let seed = [42u8; 32];
    let me = Signer::from_seed(&seed);
    let mut fake = Roster::genesis(NET, me.key(), "Outsider", vec![], 0).unwrap();
    let mut member = real.roster.members[0].clone();
    member.role = protocol::roster::Role::Clinic;
    fake.members.push(member);
    let fake = fake.sign(&me);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, cancel) = peer(&rt, seed, fake);
    let coord_id: PeerId = coord.peer_id.parse().unwrap();
    let answer = rt.block_on(client.request(coord_id, Request::Echo(Bytes(b"hi".to_vec()))));
    assert!(
        matches!(answer, Err(NetError::Failed { .. })),
        "an outsider's request was answered: {answer:?}"
    );
    assert_eq!(d.status()["peers_connected"], 0);
    wait_for("the coordinator to log the refusal", || {
        d.log()
            .contains("refused incoming connection")
            .then_some(())
    });
    cancel.cancel();
}

/// Oversized, malformed, wrongly signed, wrong-network, stale and replayed messages from a
/// member are refused with a logged reason, and the node stays up and keeps answering.
#[test]
fn hostile_messages_are_refused_and_the_node_stays_up() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    // Admit an in-process member: its join request made with the library, admitted by the CLI.
    let seed = [7u8; 32];
    let me = admit_seed(root, &coord, NET, seed, "Member");
    let d = Daemon::start(&coord);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, cancel) = peer(&rt, seed, roster_of(root, &coord));
    let coord_id: PeerId = coord.peer_id.parse().unwrap();
    // Wait until connected: a valid signed echo comes back.
    wait_for("the member to connect", || {
        rt.block_on(client.request(coord_id, Request::Echo(Bytes(vec![1]))))
            .ok()
    });

    let raw = |bytes: Vec<u8>| rt.block_on(client.request_raw(coord_id, bytes));
    let rejection = |bytes: Vec<u8>| -> Option<Rejection> {
        let answer = decode::<Response>(&raw(bytes).unwrap()).unwrap();
        match answer.body {
            Response::Rejected(r) => Some(r),
            _ => None,
        }
    };
    let header = |network_id: &'static str, nonce: u64, at: u64| Header {
        network_id,
        nonce,
        sent_at_ms: at,
        reply_to: None,
    };
    let echo = || Request::Echo(Bytes(b"x".to_vec()));

    assert_eq!(
        rejection(b"\xff\x00garbage".to_vec()),
        Some(Rejection::Malformed)
    );
    let big = raw(vec![0; MAX_REQUEST + 1]);
    assert!(
        big.is_err(),
        "an oversized request was answered: {:?}",
        big.map(|b| decode::<Response>(&b))
    );
    let other_net = Envelope::seal(&me, header("net-other", 1, now_ms()), echo());
    assert_eq!(rejection(encode(&other_net)), Some(Rejection::WrongNetwork));
    let mut tampered = Envelope::seal(&me, header(NET, 2, now_ms()), echo());
    tampered.body = Request::Echo(Bytes(b"y".to_vec()));
    assert_eq!(rejection(encode(&tampered)), Some(Rejection::BadSignature));
    let someone_else = Envelope::seal(
        &Signer::from_seed(&[8; 32]),
        header(NET, 3, now_ms()),
        echo(),
    );
    assert_eq!(
        rejection(encode(&someone_else)),
        Some(Rejection::WrongSender)
    );
    let stale = Envelope::seal(&me, header(NET, 4, now_ms() - 3_600_000), echo());
    assert_eq!(rejection(encode(&stale)), Some(Rejection::Stale));
    let fresh = encode(&Envelope::seal(&me, header(NET, 5, now_ms()), echo()));
    assert_eq!(
        rejection(fresh.clone()),
        None,
        "a valid message was refused"
    );
    assert_eq!(rejection(fresh), Some(Rejection::Replay));

    // Still up and answering, and every refusal was logged with its reason.
    assert!(rt.block_on(client.request(coord_id, echo())).is_ok());
    assert_eq!(d.status()["peers_connected"], 1);
    let log = d.log();
    for reason in [
        "malformed",
        "exceeds",
        "wrong network",
        "bad signature",
        "not the connected peer",
        "stale",
        "replayed",
    ] {
        assert!(log.contains(reason), "no log line says {reason:?}:\n{log}");
    }
    cancel.cancel();
}

/// Issue 12, finding 8: an outsider that keeps many handshakes stalled (TCP connected,
/// nothing sent; reopened as soon as the node drops them) once held every one of the node's 32
/// pending-connection slots and locked members out. Now one address gets a few pending slots
/// and the rest are refused at once, so a member connects while the flood goes on.
#[test]
fn stalled_handshakes_from_one_address_do_not_lock_members_out() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (coord, _) = form(root, NET, 0);
    let seed = [11u8; 32];
    admit_seed(root, &coord, NET, seed, "Member");
    let d = Daemon::start(&coord);
    let port: u16 = coord.addr.rsplit('/').next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The outsider floods from 127.0.0.2 (still loopback): it holds FLOOD connections open
    // and reopens each one the node closes, until told to stop (and at most 20 000 times).
    const FLOOD: usize = 64;
    let stop = CancellationToken::new();
    let opened_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attacker = {
        let (stop, counter) = (stop.clone(), opened_so_far.clone());
        rt.spawn(async move {
            let (mut held, mut opened, mut peak) = (Vec::new(), 0usize, 0usize);
            while !stop.is_cancelled() && opened < 20_000 {
                counter.store(opened, std::sync::atomic::Ordering::Relaxed);
                while held.len() < FLOOD {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                    match socket.connect(([127, 0, 0, 1], port).into()).await {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                    opened += 1;
                }
                held.retain(|s: &tokio::net::TcpStream| {
                    let mut buf = [0u8; 64];
                    match s.try_read(&mut buf) {
                        Ok(0) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                });
                peak = peak.max(held.len());
                // The attacker's pace (not a synchronisation point).
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            }
            (opened, peak)
        })
    };
    // The member, from 127.0.0.1, connects and is answered while the flood goes on.
    let (client, cancel) = peer(&rt, seed, roster_of(root, &coord));
    let coord_id: PeerId = coord.peer_id.parse().unwrap();
    wait_for("the member to connect during the flood", || {
        rt.block_on(client.request(coord_id, Request::Echo(Bytes(vec![1]))))
            .ok()
    });
    // The flood goes on until the node has closed some of its connections (it reopens each).
    wait_for("the node to close flooding connections", || {
        (opened_so_far.load(std::sync::atomic::Ordering::Relaxed) > FLOOD).then_some(())
    });
    stop.cancel();
    let (opened, _) = rt.block_on(attacker).unwrap();
    assert!(
        opened > FLOOD,
        "the node refused nothing: {opened} connections opened"
    );
    assert_eq!(d.status()["peers_connected"], 1);
    wait_for("the coordinator to log refused handshakes", || {
        d.log()
            .contains("incoming connections in their handshake")
            .then_some(())
    });
    cancel.cancel();
}
