use proptest::prelude::*;

use super::*;
use crate::roster::{JoinRequest, Roster};
use crate::round::{RoundKind, RoundSpec, SignedRelease};
use crate::secagg::{Participant, Secret, Session, shamir::Share};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NET: &str = "net-1";

fn signer(i: u8) -> Signer {
    Signer::from_seed(&[i; 32])
}

fn header(nonce: u64, reply_to: Option<u64>) -> Header<'static> {
    Header {
        network_id: NET,
        nonce,
        sent_at_ms: 1_700_000_000_000,
        reply_to,
    }
}

fn roster() -> SignedRoster {
    let c = signer(1);
    let g = Roster::genesis(
        NET,
        c.key(),
        "Coordinator",
        vec!["/ip4/127.0.0.1/tcp/7400".into()],
        100,
    )
    .unwrap();
    let req = JoinRequest::new(NET, &signer(2), "Clinic 2", vec![], 200).unwrap();
    g.admit(&req, 300).unwrap().sign(&c)
}

/// One example of every message type, in a fixed order (the golden file follows it).
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let s = signer(2);
    let req = |n, b| encode(&Envelope::seal(&s, header(n, None), b));
    let resp = |n, b| encode(&Envelope::seal(&s, header(n, Some(7)), b));
    vec![
        ("request roster", req(1, Request::Roster { have: 3 })),
        ("request info", req(2, Request::Info)),
        (
            "request echo",
            req(3, Request::Echo(Bytes(b"ping".to_vec()))),
        ),
        ("response roster none", resp(4, Response::Roster(None))),
        ("response roster", resp(5, Response::Roster(Some(roster())))),
        (
            "response info",
            resp(
                6,
                Response::Info(NodeInfo {
                    roster_version: 2,
                    software: "0.1.0".into(),
                }),
            ),
        ),
        (
            "response echo",
            resp(8, Response::Echo(Bytes(b"ping".to_vec()))),
        ),
        ("response busy", resp(9, Response::Busy)),
        (
            "response rejected",
            resp(10, Response::Rejected(Rejection::Replay)),
        ),
        (
            "gossip roster",
            encode(&Envelope::seal(
                &signer(1),
                header(11, None),
                Gossip::Roster(roster()),
            )),
        ),
    ]
    .into_iter()
    .chain(round_examples())
    .collect()
}

fn round_spec() -> RoundSpec {
    RoundSpec {
        network_id: NET.into(),
        round_id: 0x0123_4567_89ab_cdef,
        kind: RoundKind::Bench {
            dim: 3,
            plain: false,
        },
        rho: 0.0,
        threshold: 2,
        participants: vec![signer(1).key(), signer(2).key()],
        aggregator: signer(1).key(),
        issued_at_ms: 1_700_000_000_000,
        step_deadline_ms: 10_000,
    }
}

fn plain_spec() -> RoundSpec {
    RoundSpec {
        kind: RoundKind::Bench {
            dim: 3,
            plain: true,
        },
        ..round_spec()
    }
}

/// One example of every round message (deterministic: keys from a seeded ChaCha20).
fn round_examples() -> Vec<(&'static str, Vec<u8>)> {
    let spec = round_spec();
    let session: Session = spec.session().unwrap();
    let round = session.round;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (mut p1, a1) =
        Participant::new(session.clone(), &signer(1), vec![1, 2, 3], &mut rng).unwrap();
    let (_, a2) = Participant::new(session, &signer(2), vec![4, 5, 6], &mut rng).unwrap();
    let adverts = vec![a1.clone(), a2];
    let shares = p1.on_keys(&adverts, &mut rng).unwrap();
    let revealed = vec![crate::secagg::Revealed {
        owner: 1,
        secret: Secret::MaskKey,
        share: Share {
            x: 1,
            y: [1, 2, 3, 4, 5],
        },
    }];
    let agg = signer(1);
    let confirmation = crate::secagg::Confirmation {
        index: 0,
        signature: agg.sign(&crate::secagg::survivors_transcript(
            &round,
            &[0, 1].into_iter().collect(),
        )),
    };
    let req = |n, b| encode(&Envelope::seal(&agg, header(n, None), Request::Round(b)));
    let s2 = signer(2);
    let resp = |n, b| encode(&Envelope::seal(&s2, header(n, Some(7)), Response::Round(b)));
    vec![
        (
            "request round announce",
            req(20, RoundRequest::Announce(spec.sign(&agg))),
        ),
        (
            "request round keys",
            req(21, RoundRequest::Keys { round, adverts }),
        ),
        (
            "request round shares",
            req(
                22,
                RoundRequest::Shares {
                    round,
                    shares: shares.clone(),
                },
            ),
        ),
        (
            "request round unmask",
            req(
                23,
                RoundRequest::Unmask {
                    round,
                    survivors: vec![0, 1],
                    confirmations: vec![confirmation.clone()],
                },
            ),
        ),
        (
            "request round plain",
            req(24, RoundRequest::Plain(plain_spec().sign(&agg))),
        ),
        ("response round joined", resp(25, RoundResponse::Joined(a1))),
        (
            "response round declined",
            resp(26, RoundResponse::Declined("budget".into())),
        ),
        (
            "response round shares",
            resp(27, RoundResponse::Shares(shares)),
        ),
        (
            "response round masked",
            resp(28, RoundResponse::Masked(vec![u64::MAX, 0, 7])),
        ),
        (
            "response round revealed",
            resp(29, RoundResponse::Revealed(revealed)),
        ),
        (
            "response round plain",
            resp(30, RoundResponse::Plain(vec![1, 2, 3])),
        ),
        (
            "gossip release",
            encode(&Envelope::seal(
                &agg,
                header(31, None),
                Gossip::Release(SignedRelease::sign(
                    &agg,
                    br#"{"kind":"benchmark"}"#.to_vec(),
                )),
            )),
        ),
        (
            "request releases",
            encode(&Envelope::seal(
                &agg,
                header(32, None),
                Request::Releases {
                    after: "2026-11-23T00:00:00Z".into(),
                },
            )),
        ),
        (
            "response releases",
            encode(&Envelope::seal(
                &s2,
                header(33, Some(7)),
                Response::Releases(vec![SignedRelease::sign(
                    &agg,
                    br#"{"kind":"benchmark"}"#.to_vec(),
                )]),
            )),
        ),
        (
            "request round survivors",
            req(
                34,
                RoundRequest::Survivors {
                    round,
                    survivors: vec![0, 1],
                },
            ),
        ),
        (
            "response round confirmed",
            resp(35, RoundResponse::Confirmed(confirmation)),
        ),
        (
            "gossip directory",
            encode(&Envelope::seal(
                &s2,
                header(36, None),
                Gossip::Directory(directory_entry()),
            )),
        ),
        (
            "request directory",
            encode(&Envelope::seal(
                &s2,
                header(37, None),
                Request::Directory { digest: [7; 32] },
            )),
        ),
        (
            "response directory",
            encode(&Envelope::seal(
                &agg,
                header(38, Some(7)),
                Response::Directory(vec![directory_entry()]),
            )),
        ),
    ]
}

/// Clinic 2's directory entry (fixed fields, so its bytes are too).
fn directory_entry() -> crate::directory::SignedEntry {
    use crate::directory::{Entry, FORMAT, Service, SignedEntry, WaitBand};
    let s2 = signer(2);
    SignedEntry::sign(
        &s2,
        &Entry {
            format: FORMAT.into(),
            network_id: NET.into(),
            clinic: s2.key(),
            name: "Clinic 2".into(),
            services: vec![Service {
                name: "Step 3 CBT".into(),
                domains: vec!["depression".into()],
            }],
            languages: vec!["en".into()],
            modalities: vec!["CBT".into()],
            delivery: vec![crate::matching::Delivery::Video],
            eligibility: "adults".into(),
            accepting_new: true,
            wait: WaitBand::UnderTwoWeeks,
            contact: "referrals@clinic2.example".into(),
            badges: vec![],
            issued_at_ms: 1_700_000_000_000,
        },
    )
}

/// Directory messages beyond their bounds are refused at decode: an entry over
/// [`crate::directory::MAX_ENTRY`] bytes, more than [`MAX_ENTRIES`] in an answer.
#[test]
fn directory_messages_out_of_bounds_are_refused() {
    let s2 = signer(2);
    let mut big = directory_entry();
    big.document.0.resize(crate::directory::MAX_ENTRY + 1, 0);
    let gossip = encode(&Envelope::seal(
        &s2,
        header(1, None),
        Gossip::Directory(big),
    ));
    assert!(matches!(
        decode::<Gossip>(&gossip),
        Err(DecodeError::Invalid(_))
    ));
    let many = encode(&Envelope::seal(
        &s2,
        header(2, Some(1)),
        Response::Directory(vec![directory_entry(); MAX_ENTRIES + 1]),
    ));
    assert!(matches!(
        decode::<Response>(&many),
        Err(DecodeError::Invalid(_))
    ));
    let fine = encode(&Envelope::seal(
        &s2,
        header(3, Some(1)),
        Response::Directory(vec![directory_entry(); MAX_ENTRIES]),
    ));
    assert!(decode::<Response>(&fine).is_ok());
}

#[test]
fn round_messages_out_of_bounds_are_refused() {
    let agg = signer(1);
    let seal = |r: RoundResponse| {
        encode(&Envelope::seal(
            &agg,
            header(1, Some(1)),
            Response::Round(r),
        ))
    };
    let long = seal(RoundResponse::Declined("x".repeat(MAX_REASON + 1)));
    assert!(matches!(
        decode::<Response>(&long),
        Err(DecodeError::Invalid(_))
    ));
    let mut spec = round_spec();
    spec.threshold = 3;
    let bad = encode(&Envelope::seal(
        &agg,
        header(2, None),
        Request::Round(RoundRequest::Announce(spec.sign(&agg))),
    ));
    assert!(matches!(
        decode::<Request>(&bad),
        Err(DecodeError::Invalid(_))
    ));
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let session = round_spec().session().unwrap();
    let (mut p, a) = Participant::new(session.clone(), &agg, vec![0; 3], &mut rng).unwrap();
    let (_, b) = Participant::new(session, &signer(2), vec![0; 3], &mut rng).unwrap();
    let mut shares = p.on_keys(&[a, b], &mut rng).unwrap();
    shares[0].ciphertext.0.push(0);
    let short = seal(RoundResponse::Shares(shares));
    assert!(matches!(
        decode::<Response>(&short),
        Err(DecodeError::Invalid(_))
    ));
}

fn round_trip(name: &str, bytes: &[u8]) {
    let ok = if name.starts_with("request") {
        let m = decode::<Request>(bytes).unwrap();
        assert_eq!(encode(&m), bytes);
        m.open(NET, &m.sender).is_ok()
    } else if name.starts_with("response") {
        let m = decode::<Response>(bytes).unwrap();
        assert_eq!(encode(&m), bytes);
        m.open(NET, &m.sender).is_ok()
    } else {
        let m = decode::<Gossip>(bytes).unwrap();
        assert_eq!(encode(&m), bytes);
        m.open(NET, &m.sender).is_ok()
    };
    assert!(ok, "{name}: signature does not verify after the round trip");
}

/// Golden bytes: `testdata/messages.txt` holds `name<TAB>hex` for every message type, made
/// by `MBC_UPDATE_GOLDEN=1 cargo test -p mbc-protocol messages::tests::golden` at the commit
/// that introduced it. Ed25519 signatures are deterministic, so the bytes are too. A change to
/// the wire layout or a transcript makes this fail; update the file only on purpose, with a
/// protocol version bump.
#[test]
fn golden() {
    let got: String = examples()
        .iter()
        .map(|(n, b)| format!("{n}\t{}\n", hex::encode(b)))
        .collect();
    if std::env::var_os("MBC_UPDATE_GOLDEN").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/messages.txt"),
            &got,
        )
        .unwrap();
    }
    let golden = include_str!("../../testdata/messages.txt");
    assert_eq!(golden.lines().count(), examples().len());
    for (line, (name, bytes)) in golden.lines().zip(examples()) {
        let (gname, ghex) = line.split_once('\t').unwrap();
        assert_eq!(gname, name);
        assert_eq!(
            ghex,
            hex::encode(&bytes),
            "{name}: bytes differ from the golden file"
        );
        round_trip(name, &hex::decode(ghex).unwrap());
    }
}

#[test]
fn open_rejects_wrong_network_sender_and_signature() {
    let s = signer(2);
    let m = Envelope::seal(&s, header(1, None), Request::Info);
    assert_eq!(m.open(NET, &s.key()), Ok(&Request::Info));
    assert_eq!(m.open("net-2", &s.key()), Err(Rejection::WrongNetwork));
    assert_eq!(m.open(NET, &signer(3).key()), Err(Rejection::WrongSender));
    // Re-labelled for another network: the signature no longer verifies.
    let mut moved = m.clone();
    moved.network_id = "net-2".into();
    assert_eq!(moved.open("net-2", &s.key()), Err(Rejection::BadSignature));
    // Any header or body change breaks the signature.
    let tamper: Vec<fn(&mut Envelope<Request>)> = vec![
        |m| m.nonce += 1,
        |m| m.sent_at_ms += 1,
        |m| m.reply_to = Some(1),
        |m| m.body = Request::Roster { have: 0 },
    ];
    for (i, t) in tamper.into_iter().enumerate() {
        let mut bad = m.clone();
        t(&mut bad);
        assert_eq!(
            bad.open(NET, &s.key()),
            Err(Rejection::BadSignature),
            "tamper {i}"
        );
    }
    // A request signature is not a response signature (distinct transcript labels).
    let as_response = Envelope {
        version: m.version,
        network_id: m.network_id.clone(),
        sender: m.sender,
        nonce: m.nonce,
        sent_at_ms: m.sent_at_ms,
        reply_to: m.reply_to,
        body: Response::Busy,
        signature: m.signature,
    };
    assert_eq!(
        as_response.open(NET, &s.key()),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn decode_is_strict() {
    let s = signer(2);
    let bytes = encode(&Envelope::seal(&s, header(1, None), Request::Info));
    // Trailing bytes.
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(decode::<Request>(&long), Err(DecodeError::Trailing(1)));
    // Truncated.
    assert!(matches!(
        decode::<Request>(&bytes[..bytes.len() - 1]),
        Err(DecodeError::Malformed(_))
    ));
    // Oversized: refused before parsing.
    let huge = vec![0u8; MAX_REQUEST + 1];
    assert_eq!(
        decode::<Request>(&huge),
        Err(DecodeError::Oversized {
            len: MAX_REQUEST + 1,
            max: MAX_REQUEST
        })
    );
    // Another version.
    let mut v2 = Envelope::seal(&s, header(1, None), Request::Info);
    v2.version = 2;
    assert_eq!(
        decode::<Request>(&encode(&v2)),
        Err(DecodeError::Version(2))
    );
    // An echo payload beyond its bound.
    let big = Envelope::seal(
        &s,
        header(1, None),
        Request::Echo(Bytes(vec![0; MAX_ECHO + 1])),
    );
    assert!(matches!(
        decode::<Request>(&encode(&big)),
        Err(DecodeError::Invalid(_))
    ));
    // A request is not a response.
    assert!(decode::<Response>(&bytes).is_err());
}

#[test]
fn replay_guard_refuses_repeats_and_stale_messages() {
    let k = signer(2).key();
    let now = 1_700_000_000_000;
    let mut g = ReplayGuard::default();
    assert_eq!(g.check(&k, 1, now, now), Ok(()));
    assert_eq!(g.check(&k, 1, now, now + 1), Err(Rejection::Replay));
    assert_eq!(g.check(&signer(3).key(), 1, now, now), Ok(())); // per sender
    assert_eq!(
        g.check(&k, 2, now - FRESHNESS_MS - 1, now),
        Err(Rejection::Stale)
    );
    assert_eq!(
        g.check(&k, 3, now + FRESHNESS_MS + 1, now),
        Err(Rejection::Stale)
    );
    assert_eq!(g.check(&k, 4, now - FRESHNESS_MS, now), Ok(()));
    g.forget(&k);
    assert_eq!(g.check(&k, 1, now, now), Ok(()));
}

#[test]
fn replay_guard_is_bounded_per_sender() {
    let k = signer(2).key();
    let now = 10 * FRESHNESS_MS;
    let mut g = ReplayGuard::default();
    for n in 0..NONCES_PER_SENDER as u64 {
        g.check(&k, n, now - FRESHNESS_MS, now).unwrap();
    }
    assert_eq!(g.check(&k, u64::MAX, now, now), Err(Rejection::Flood));
    // Once the old nonces are out of the window they are dropped and the sender may go on;
    // a replay of one of them is then refused as stale.
    let later = now + 1;
    assert_eq!(g.check(&k, u64::MAX, later, later), Ok(()));
    assert_eq!(
        g.check(&k, 0, now - FRESHNESS_MS, later),
        Err(Rejection::Stale)
    );
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u64>().prop_map(|have| Request::Roster { have }),
        Just(Request::Info),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Request::Echo(Bytes(b))),
    ]
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Request>(&bytes);
        let _ = decode::<Response>(&bytes);
        let _ = decode::<Gossip>(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_messages(
        which in 0usize..24, at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()
    ) {
        let (_, mut bytes) = examples().swap_remove(which);
        let i = at.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        let _ = decode::<Request>(&bytes);
        if let Ok(m) = decode::<Response>(&bytes) { let _ = m.open(NET, &m.sender); }
        let _ = decode::<Gossip>(&bytes);
    }

    #[test]
    fn round_trips(body in arb_request(), nonce in any::<u64>(), at in any::<u64>(), reply in any::<Option<u64>>()) {
        let s = signer(4);
        let m = Envelope::seal(&s, Header { network_id: NET, nonce, sent_at_ms: at, reply_to: reply }, body);
        let back = decode::<Request>(&encode(&m)).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert!(back.open(NET, &s.key()).is_ok());
    }
}
