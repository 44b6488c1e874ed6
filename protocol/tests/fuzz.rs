//! Seeded fuzzing of every entry point that takes bytes or values from another node (issue 12:
//! the review's fuzzing found a ρ that never finished calibrating and layout bounds that
//! overflowed). Each golden message (`testdata/messages.txt`) is mutated (bit flips, boundary
//! bytes, insertions, deletions, truncation, splices with another message) and, structurally,
//! decoded to a CBOR value whose numbers, strings, arrays and maps are changed and re-encoded.
//! Every result goes through `decode`, `Envelope::open`, and for round traffic the round
//! specification's validation, layout, session, threshold policy and ρ calibration, and the
//! SecAgg state machine step it belongs to. Nothing may panic or hang; the iteration counts
//! bound the run (raise them with `MBC_FUZZ_ITERATIONS=N` for a longer local run).

use ciborium::Value;
use protocol::dp::Mechanism;
use protocol::keys::{NodeKey, Signer};
use protocol::messages::{
    Envelope, Gossip, Request, Response, RoundRequest, RoundResponse, decode, encode,
};
use protocol::round::{RoundKind, Safety, SignedRoundSpec};
use protocol::secagg::{Aggregator, Participant, Session};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const NET: &str = "net-1";

fn golden() -> Vec<(String, Vec<u8>)> {
    include_str!("../testdata/messages.txt")
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once('\t').unwrap();
            (name.to_owned(), hex::decode(hex).unwrap())
        })
        .collect()
}

/// The golden messages plus a `benchmark` announcement (the golden one is a bench round, whose
/// ρ is 0 and which has no layout to calibrate).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = golden();
    let r = round();
    let spec = benchmark_spec(&r).sign(&r.signers[0]);
    let header = protocol::messages::Header {
        network_id: NET,
        nonce: 99,
        sent_at_ms: 1_700_000_000_000,
        reply_to: None,
    };
    let announce = Envelope::seal(
        &r.signers[0],
        header,
        Request::Round(RoundRequest::Announce(spec)),
    );
    seeds.push(("request round announce benchmark".into(), encode(&announce)));
    seeds
}

/// A valid benchmark round over one PHQ-9-like domain, in the golden round's network.
fn benchmark_spec(r: &Round) -> protocol::round::RoundSpec {
    protocol::round::RoundSpec {
        kind: RoundKind::Benchmark {
            layout_version: protocol::benchmark::LAYOUT_VERSION,
            domains: vec![protocol::benchmark::DomainSpec {
                id: "depression".into(),
                lo: 0.0,
                hi: 27.0,
                bands: vec![0.0, 5.0, 10.0, 15.0, 20.0],
                direction: protocol::instrument::Direction::LowerIsBetter,
            }],
            max_episodes: 1,
            caseload_cap: 200,
        },
        rho: 0.25,
        ..r.spec.spec.clone()
    }
}

fn iterations(default: usize) -> usize {
    std::env::var("MBC_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Byte-level mutations of `seed`, sometimes spliced with `other`.
fn mutate_bytes(seed: &[u8], other: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    let pick = |rng: &mut ChaCha20Rng, n: usize| (rng.next_u64() as usize) % n.max(1);
    for _ in 0..1 + pick(rng, 4) {
        match pick(rng, 7) {
            0 if !b.is_empty() => {
                let i = pick(rng, b.len());
                b[i] ^= 1 << pick(rng, 8);
            }
            1 if !b.is_empty() => {
                let i = pick(rng, b.len());
                b[i] = [0x00, 0xff, 0x7f, 0x80, 0x1b, 0x9f, 0xbf, 0xf6][pick(rng, 8)];
            }
            2 => {
                let i = pick(rng, b.len() + 1);
                b.insert(i, rng.next_u64() as u8);
            }
            3 if !b.is_empty() => {
                let i = pick(rng, b.len());
                b.remove(i);
            }
            4 => {
                let n = pick(rng, b.len() + 1);
                b.truncate(n);
            }
            5 => {
                let (i, j) = (pick(rng, b.len() + 1), pick(rng, other.len() + 1));
                b.truncate(i);
                b.extend_from_slice(&other[j..]);
            }
            _ => {
                // A run of bytes overwritten with one value (lengths, counts, floats).
                if !b.is_empty() {
                    let i = pick(rng, b.len());
                    let v = rng.next_u64() as u8;
                    for x in b.iter_mut().skip(i).take(1 + pick(rng, 9)) {
                        *x = v;
                    }
                }
            }
        }
    }
    b
}

/// Awkward numbers for structural mutation.
fn awkward_number(rng: &mut ChaCha20Rng) -> Value {
    let ints: [i128; 9] = [
        0,
        1,
        2,
        -1,
        u32::MAX as i128,
        u64::MAX as i128,
        i64::MIN as i128,
        1000,
        100_001,
    ];
    let floats = [
        f64::NAN,
        f64::INFINITY,
        -f64::INFINITY,
        1e308,
        9e307,
        1e-300,
        -0.0,
        f64::MIN_POSITIVE / 2.0,
        1e-7,
    ];
    if rng.next_u32().is_multiple_of(2) {
        Value::Integer(
            ints[rng.next_u32() as usize % ints.len()]
                .try_into()
                .unwrap_or(0.into()),
        )
    } else {
        Value::Float(floats[rng.next_u32() as usize % floats.len()])
    }
}

/// Changes one node of a CBOR value tree (depth-first, the `target`-th node).
fn mutate_value(v: &mut Value, target: &mut usize, rng: &mut ChaCha20Rng) -> bool {
    if *target == 0 {
        *v = match (rng.next_u32() % 6, &*v) {
            (0 | 1, _) => awkward_number(rng),
            (2, Value::Text(t)) => Value::Text(t.repeat(1 + rng.next_u32() as usize % 200)),
            (2, Value::Array(a)) if !a.is_empty() => {
                let mut a = a.clone();
                let x = a[rng.next_u32() as usize % a.len()].clone();
                for _ in 0..1 + rng.next_u32() % 3 {
                    a.push(x.clone());
                }
                Value::Array(a)
            }
            (3, Value::Array(a)) => {
                let mut a = a.clone();
                a.pop();
                Value::Array(a)
            }
            (3, Value::Map(m)) => {
                let mut m = m.clone();
                m.pop();
                Value::Map(m)
            }
            (4, Value::Bytes(b)) => {
                let mut b = b.clone();
                if !b.is_empty() {
                    let i = rng.next_u32() as usize % b.len();
                    b[i] ^= 0x55;
                }
                Value::Bytes(b)
            }
            (5, _) => Value::Text("x".repeat(rng.next_u32() as usize % 70)),
            (_, other) => other.clone(),
        };
        return true;
    }
    *target -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| mutate_value(x, target, rng)),
        Value::Map(m) => m.iter_mut().any(|(_, x)| mutate_value(x, target, rng)),
        Value::Tag(_, x) => mutate_value(x, target, rng),
        _ => false,
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Map(m) => m.iter().map(|(_, x)| count(x)).sum(),
        Value::Tag(_, x) => count(x),
        _ => 0,
    }
}

fn mutate_structure(seed: &[u8], rng: &mut ChaCha20Rng) -> Vec<u8> {
    let Ok(mut value) = ciborium::from_reader::<Value, _>(seed) else {
        return seed.to_vec();
    };
    for _ in 0..1 + rng.next_u32() % 3 {
        let mut target = rng.next_u64() as usize % count(&value);
        mutate_value(&mut value, &mut target, rng);
    }
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).unwrap();
    out
}

/// The golden round's session and its two participants' signers.
struct Round {
    spec: SignedRoundSpec,
    session: Session,
    signers: [Signer; 2],
    /// The golden roster (coordinator 1, clinic 2): what directory entries are checked against.
    roster: protocol::roster::Roster,
}

fn round() -> Round {
    let bytes = &golden()
        .into_iter()
        .find(|(n, _)| n == "request round announce")
        .unwrap()
        .1;
    let Request::Round(RoundRequest::Announce(spec)) = decode::<Request>(bytes).unwrap().body
    else {
        panic!("the golden announce is not an announcement");
    };
    let session = spec.spec.session().unwrap();
    let roster_bytes = &golden()
        .into_iter()
        .find(|(n, _)| n == "gossip roster")
        .unwrap()
        .1;
    let Gossip::Roster(roster) = decode::<Gossip>(roster_bytes).unwrap().body else {
        panic!("the golden roster gossip is not a roster");
    };
    Round {
        spec,
        session,
        signers: [Signer::from_seed(&[1; 32]), Signer::from_seed(&[2; 32])],
        roster: roster.roster,
    }
}

/// Participant 0 advanced honestly to the step before `step`, with its aggregator alongside.
fn participant_at(
    r: &Round,
    step: u8,
    rng: &mut ChaCha20Rng,
) -> (Participant, Participant, Aggregator) {
    let mut agg = Aggregator::new(r.session.clone()).unwrap();
    let (mut p, a) =
        Participant::new(r.session.clone(), &r.signers[0], vec![1, 2, 3], rng).unwrap();
    let (mut q, b) =
        Participant::new(r.session.clone(), &r.signers[1], vec![4, 5, 6], rng).unwrap();
    if step == 0 {
        return (p, q, agg);
    }
    agg.add_advert(&r.signers[0].key(), a).unwrap();
    agg.add_advert(&r.signers[1].key(), b).unwrap();
    let adverts = agg.close_keys().unwrap();
    if step == 1 {
        return (p, q, agg);
    }
    let s0 = p.on_keys(&adverts, rng).unwrap();
    let s1 = q.on_keys(&adverts, rng).unwrap();
    agg.add_shares(&r.signers[0].key(), s0).unwrap();
    agg.add_shares(&r.signers[1].key(), s1).unwrap();
    let routed = agg.close_shares().unwrap();
    if step == 2 {
        return (p, q, agg);
    }
    let y0 = p.on_shares(&routed[&0]).unwrap();
    let y1 = q.on_shares(&routed[&1]).unwrap();
    agg.add_masked(&r.signers[0].key(), y0).unwrap();
    agg.add_masked(&r.signers[1].key(), y1).unwrap();
    let survivors = agg.close_masked().unwrap();
    if step == 3 {
        return (p, q, agg);
    }
    let c0 = p.on_survivors(&survivors, &r.signers[0]).unwrap();
    let c1 = q.on_survivors(&survivors, &r.signers[1]).unwrap();
    agg.add_confirmation(&r.signers[0].key(), c0).unwrap();
    agg.add_confirmation(&r.signers[1].key(), c1).unwrap();
    agg.close_confirmations().unwrap();
    (p, q, agg)
}

/// A round specification from another node, as a clinic handles it: validation, then (only
/// if valid) its session, layout, expiry, the threshold policy and the calibration of its ρ.
fn exercise_spec(spec: &SignedRoundSpec) {
    let _ = spec.verify();
    let s = &spec.spec;
    if s.validate().is_err() {
        return;
    }
    let _ = s.session();
    let _ = s.expires_at_ms();
    let _ = Safety {
        min_others: 3,
        threshold_fraction: (2, 3),
    }
    .check_spec(s);
    if let Ok(Some(layout)) = s.kind.layout() {
        let sensitivity = layout.layout().sensitivity();
        assert!(sensitivity.patient.is_finite() && sensitivity.patient > 0.0);
        if let RoundKind::Benchmark { .. } = s.kind {
            // Terminates, whatever ρ and t a valid spec carries.
            let _ = Mechanism::distributed(sensitivity.patient, s.rho, s.threshold);
        }
    }
}

/// Hands a decoded round message to the state machine step it belongs to.
fn exercise_request(r: &Round, request: &RoundRequest, rng: &mut ChaCha20Rng) {
    match request {
        RoundRequest::Announce(spec) | RoundRequest::Plain(spec) => exercise_spec(spec),
        RoundRequest::Keys { adverts, .. } => {
            let (mut p, _, _) = participant_at(r, 1, rng);
            let _ = p.on_keys(adverts, rng);
        }
        RoundRequest::Shares { shares, .. } => {
            let (mut p, _, _) = participant_at(r, 2, rng);
            let _ = p.on_shares(shares);
        }
        RoundRequest::Survivors { survivors, .. } => {
            let (mut p, _, _) = participant_at(r, 3, rng);
            let _ = p.on_survivors(survivors, &r.signers[0]);
        }
        RoundRequest::Unmask {
            survivors,
            confirmations,
            ..
        } => {
            let (mut p, _, _) = participant_at(r, 4, rng);
            let _ = p.on_unmask(survivors, confirmations);
        }
    }
}

fn exercise_response(r: &Round, sender: &NodeKey, response: &RoundResponse, rng: &mut ChaCha20Rng) {
    match response {
        RoundResponse::Joined(a) => {
            let (_, _, mut agg) = participant_at(r, 0, rng);
            let _ = agg.add_advert(sender, a.clone());
        }
        RoundResponse::Shares(s) => {
            let (_, _, mut agg) = participant_at(r, 1, rng);
            let _ = agg.add_shares(sender, s.clone());
        }
        RoundResponse::Masked(y) | RoundResponse::Plain(y) => {
            let (_, _, mut agg) = participant_at(r, 2, rng);
            let _ = agg.add_masked(sender, y.clone());
        }
        RoundResponse::Confirmed(c) => {
            let (_, _, mut agg) = participant_at(r, 3, rng);
            let _ = agg.add_confirmation(sender, c.clone());
        }
        RoundResponse::Revealed(rs) => {
            let (_, _, mut agg) = participant_at(r, 4, rng);
            let _ = agg.add_reveal(sender, rs.clone());
            let _ = agg.finish();
        }
        RoundResponse::Declined(_) => {}
    }
}

/// One candidate message, through every entry point its bytes reach.
fn exercise(r: &Round, bytes: &[u8], rng: &mut ChaCha20Rng, deep: bool) -> bool {
    let mut decoded = false;
    if let Ok(m) = decode::<Request>(bytes) {
        decoded = true;
        let _ = m.open(NET, &m.sender);
        let _ = encode(&m);
        if let Request::Round(req) = &m.body
            && deep
        {
            exercise_request(r, req, rng);
        }
    }
    if let Ok(m) = decode::<Response>(bytes) {
        decoded = true;
        let _ = m.open(NET, &m.sender);
        if let Response::Round(resp) = &m.body
            && deep
        {
            exercise_response(r, &m.sender, resp, rng);
        }
        if let Response::Releases(rs) = &m.body {
            for rel in rs {
                let _ = rel.verify(&r.spec.spec.aggregator);
            }
        }
        if let Response::Directory(es) = &m.body {
            for e in es {
                let _ = protocol::directory::check(e, &r.roster, 1_700_000_000_000);
            }
            let _ = protocol::directory::set_digest(es);
        }
    }
    if let Ok(m) = decode::<Gossip>(bytes) {
        decoded = true;
        let _ = m.open(NET, &m.sender);
        match &m.body {
            Gossip::Roster(roster) => {
                let _ = roster.verify(Some(NET), None);
            }
            Gossip::Release(rel) => {
                let _ = rel.verify(&r.spec.spec.aggregator);
            }
            Gossip::Directory(e) => {
                let _ = protocol::directory::check(e, &r.roster, 1_700_000_000_000);
            }
        }
    }
    decoded
}

/// Byte mutations of every golden message: nothing panics, and some mutants still decode
/// (the loop reaches past the decoder, not just into its first check).
#[test]
fn mutated_messages_never_panic_any_entry_point() {
    let golden = seeds();
    let r = round();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut decoded = 0;
    let n = iterations(30_000);
    for i in 0..n {
        let (_, seed) = &golden[i % golden.len()];
        let (_, other) = &golden[rng.next_u32() as usize % golden.len()];
        let bytes = mutate_bytes(seed, other, &mut rng);
        decoded += usize::from(exercise(&r, &bytes, &mut rng, i % 8 == 0));
    }
    assert!(decoded > n / 50, "only {decoded} of {n} mutants decoded");
}

/// Structural mutations (awkward numbers, long strings, grown or shrunk arrays and maps) of
/// every golden message: these decode far more often, so they reach field validation, the
/// round specification's layout and calibration, and the SecAgg steps.
#[test]
fn structurally_mutated_messages_never_panic_any_entry_point() {
    let golden = seeds();
    let r = round();
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut decoded = 0;
    let n = iterations(12_000);
    for i in 0..n {
        let (_, seed) = &golden[i % golden.len()];
        let bytes = mutate_structure(seed, &mut rng);
        decoded += usize::from(exercise(&r, &bytes, &mut rng, true));
    }
    assert!(decoded > n / 10, "only {decoded} of {n} mutants decoded");
}

/// Benchmark round specifications with every numeric field set to awkward values, re-signed so
/// that they also pass the signature: validation refuses or accepts, and an accepted one builds
/// its layout and calibrates, quickly.
#[test]
fn awkward_benchmark_specs_are_refused_or_calibrated() {
    let r = round();
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let signer = &r.signers[0];
    let base = benchmark_spec(&r);
    exercise_spec(&base.clone().sign(signer));
    let floats = [
        f64::NAN,
        f64::INFINITY,
        1e308,
        9e307,
        1e-300,
        -1.0,
        0.0,
        1e-7,
        10.0,
        1e6,
        1e-3,
    ];
    let mut valid = 0;
    for _ in 0..iterations(2_000) {
        let mut s = base.clone();
        let f = |rng: &mut ChaCha20Rng| floats[rng.next_u32() as usize % floats.len()];
        match rng.next_u32() % 6 {
            0 => s.rho = f(&mut rng),
            1 => s.threshold = rng.next_u32() % 4,
            2 => s.step_deadline_ms = rng.next_u64() >> (rng.next_u32() % 64),
            _ => {
                if let RoundKind::Benchmark {
                    domains,
                    max_episodes,
                    caseload_cap,
                    ..
                } = &mut s.kind
                {
                    let d = &mut domains[0];
                    match rng.next_u32() % 5 {
                        0 => d.lo = f(&mut rng),
                        1 => d.hi = f(&mut rng),
                        2 => d.bands = (0..rng.next_u32() % 20).map(|_| f(&mut rng)).collect(),
                        3 => *max_episodes = rng.next_u32() >> (rng.next_u32() % 32),
                        _ => *caseload_cap = rng.next_u32() >> (rng.next_u32() % 32),
                    }
                }
            }
        }
        valid += usize::from(s.validate().is_ok());
        exercise_spec(&s.sign(signer));
    }
    assert!(
        valid > 0,
        "no mutant was valid: the loop never reached calibration"
    );
}
