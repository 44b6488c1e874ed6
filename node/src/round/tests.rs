//! A clinic's side of rounds against a coordinator that deviates (issue 12): the node under
//! test is its network's coordinator, and three other members are simulated with the pure
//! SecAgg participant, so every request reaches the real `Participation` with the real store,
//! config, ledger and policy.

use protocol::round::{RoundKind, RoundSpec};
use protocol::secagg::{Aggregator, Confirmation, EncryptedShare};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use std::path::PathBuf;

use protocol::keys::Signer;

use super::*;
use crate::node::Node;

const NET: &str = "net";

/// A node with one small synthetic clinic, coordinator of a network with three other members
/// (their signers are returned, for the simulated participants).
struct TestNode {
    dir: PathBuf,
    signer: Arc<Signer>,
    members: Vec<Signer>,
    _tmp: tempfile::TempDir,
}

fn node() -> TestNode {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let opened = crate::node::synthetic_node(tmp.path(), 3, 120);
    let signer = opened.signer().clone();
    let mut store = opened.store();
    membership::create(store.conn_mut(), &signer, NET, "Test", vec![], (0, "t")).unwrap();
    let members: Vec<Signer> = (1..=3).map(|i| Signer::from_seed(&[i; 32])).collect();
    for (i, m) in members.iter().enumerate() {
        let request =
            protocol::roster::JoinRequest::new(NET, m, &format!("Clinic {i}"), vec![], 1).unwrap();
        membership::admit(store.conn_mut(), &signer, &request, (1, "t")).unwrap();
    }
    drop(store);
    // Back-to-back rounds in these tests.
    set_privacy(
        &dir,
        "min_round_interval_hours = 24.0",
        "min_round_interval_hours = 0.0",
    );
    TestNode {
        dir,
        signer,
        members,
        _tmp: tmp,
    }
}

/// Replaces one line of the node's `[privacy]` configuration.
fn set_privacy(dir: &std::path::Path, from: &str, to: &str) {
    let path = dir.join(crate::config::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

impl TestNode {
    /// The node's side of rounds, on the node opened afresh (so with the config as it is now).
    fn participation(&self) -> Arc<Participation> {
        Arc::new(Participation::new(
            Arc::new(self.open()),
            NET.into(),
            self.signer.key(),
        ))
    }

    fn open(&self) -> Node {
        Node::open(&self.dir).unwrap()
    }

    /// A benchmark round of this node and the three members, t = 3.
    fn spec(&self, round_id: u64) -> RoundSpec {
        let node = self.open();
        let layout = release::benchmark_layout(&node.store(), node.config()).unwrap();
        RoundSpec {
            network_id: NET.into(),
            round_id,
            kind: RoundKind::benchmark(&layout),
            rho: 0.25,
            threshold: 3,
            participants: std::iter::once(self.signer.key())
                .chain(self.members.iter().map(Signer::key))
                .collect(),
            aggregator: self.signer.key(),
            issued_at_ms: crate::clock::now_ms(),
            step_deadline_ms: 10_000,
        }
    }

    /// Every ledger row: (status, ρ).
    /// The ρ a round of [`TestNode::spec`] charges: ρ = 0.25 as opendp certifies it for the
    /// σ calibrated to the layout's sensitivity (at most 0.25, equal to it up to rounding).
    fn round_rho(&self) -> f64 {
        let spec = self.spec(0);
        let layout = spec.kind.layout().unwrap().unwrap();
        let sensitivity = layout.layout().sensitivity().patient;
        let rho = protocol::dp::Mechanism::distributed(sensitivity, spec.rho, spec.threshold)
            .unwrap()
            .rho;
        assert!(rho <= 0.25 && rho > 0.25 - 1e-12, "{rho}");
        rho
    }

    fn ledger(&self) -> Vec<(String, f64)> {
        ledger::entries(self.open().store().conn())
            .unwrap()
            .into_iter()
            .map(|e| (e.status, e.rho))
            .collect()
    }

    fn spent(&self) -> f64 {
        let node = self.open();
        let policy = Policy::from_config(&node.config().privacy).unwrap();
        ledger::budget(node.store().conn(), &policy, clock::now_utc())
            .unwrap()
            .current
            .rho_spent
    }
}

async fn ask(p: &Arc<Participation>, request: RoundRequest) -> RoundResponse {
    p.handle(p.coordinator(), request).await
}

#[track_caller]
fn declined(r: &RoundResponse, why: &str) {
    match r {
        RoundResponse::Declined(reason) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a refusal ({why}), got {other:?}"),
    }
}

/// Plays the rest of a round against the node: the three members are honest pure participants,
/// the aggregator is driven here. Members in `drop` stop before masking. Returns the node's
/// answer to the survivor list (`Confirmed` or `Declined`) and, if it confirmed, its answer
/// to the unmask request.
async fn play(
    node: &TestNode,
    p: &Arc<Participation>,
    spec: &SignedRoundSpec,
    drop: &[usize],
) -> (RoundResponse, Option<RoundResponse>) {
    let mut rng = ChaCha20Rng::seed_from_u64(spec.spec.round_id);
    let session = spec.spec.session().unwrap();
    let mut agg = Aggregator::new(session.clone()).unwrap();
    let RoundResponse::Joined(advert) = ask(p, RoundRequest::Announce(spec.clone())).await else {
        panic!("the node did not join");
    };
    agg.add_advert(&node.signer.key(), advert).unwrap();
    let dim = session.dim;
    let mut members: Vec<_> = node
        .members
        .iter()
        .map(|m| {
            let (part, a) =
                protocol::secagg::Participant::new(session.clone(), m, vec![1; dim], &mut rng)
                    .unwrap();
            agg.add_advert(&m.key(), a).unwrap();
            part
        })
        .collect();
    let adverts = agg.close_keys().unwrap();
    let round = session.round;
    let RoundResponse::Shares(mine) = ask(
        p,
        RoundRequest::Keys {
            round,
            adverts: adverts.clone(),
        },
    )
    .await
    else {
        panic!("no shares");
    };
    agg.add_shares(&node.signer.key(), mine).unwrap();
    for (m, part) in node.members.iter().zip(&mut members) {
        let shares: Vec<EncryptedShare> = part.on_keys(&adverts, &mut rng).unwrap();
        agg.add_shares(&m.key(), shares).unwrap();
    }
    let mut routed = agg.close_shares().unwrap();
    let RoundResponse::Masked(y) = ask(
        p,
        RoundRequest::Shares {
            round,
            shares: routed.remove(&0).unwrap(),
        },
    )
    .await
    else {
        panic!("no masked input");
    };
    agg.add_masked(&node.signer.key(), y).unwrap();
    for (i, (m, part)) in node.members.iter().zip(&mut members).enumerate() {
        if !drop.contains(&i) {
            let y = part.on_shares(&routed[&(i as u32 + 1)]).unwrap();
            agg.add_masked(&m.key(), y).unwrap();
        }
    }
    let survivors = agg.close_masked().unwrap();
    let answer = ask(
        p,
        RoundRequest::Survivors {
            round,
            survivors: survivors.clone(),
        },
    )
    .await;
    let RoundResponse::Confirmed(c) = &answer else {
        return (answer, None);
    };
    let mut confirmations: Vec<Confirmation> = vec![c.clone()];
    for (i, (m, part)) in node.members.iter().zip(&mut members).enumerate() {
        if !drop.contains(&i) {
            confirmations.push(part.on_survivors(&survivors, m).unwrap());
        }
    }
    let revealed = ask(
        p,
        RoundRequest::Unmask {
            round,
            survivors,
            confirmations,
        },
    )
    .await;
    (answer, Some(revealed))
}

/// Issue 12, finding 3: a re-announce reuses the charge only for the byte-identical spec. The
/// same spec again (same process, or after a "restart") joins with the one charged vector;
/// the same round id with other parameters is declined and charges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_is_reused_only_for_the_identical_round() {
    let node = node();
    let spec = node.spec(1).sign(&node.signer);
    let p = node.participation();
    let a = ask(&p, RoundRequest::Announce(spec.clone())).await;
    let b = ask(&p, RoundRequest::Announce(spec.clone())).await;
    assert!(matches!(a, RoundResponse::Joined(_)), "{a:?}");
    assert_eq!(a, b, "the same process answers with the same advert");
    // "Restart": fresh memory, same store.
    let again = ask(&node.participation(), RoundRequest::Announce(spec.clone())).await;
    assert!(matches!(again, RoundResponse::Joined(_)), "{again:?}");
    assert_eq!(node.ledger(), [("charged".to_string(), node.round_rho())]);
    // Same round id, other parameters (the attack: a smaller threshold, fewer participants).
    for change in [
        Box::new(|s: &mut RoundSpec| s.threshold = 4) as Box<dyn Fn(&mut RoundSpec)>,
        Box::new(|s| s.step_deadline_ms += 1),
        Box::new(|s| s.rho = 0.2),
    ] {
        let mut other = node.spec(1);
        change(&mut other);
        let r = ask(
            &node.participation(),
            RoundRequest::Announce(other.sign(&node.signer)),
        )
        .await;
        declined(&r, "before with other parameters");
    }
    assert_eq!(node.ledger().len(), 1, "charged twice");
    // A request from anyone but the coordinator is declined.
    let other = Signer::from_seed(&[5; 32]).key();
    declined(
        &p.handle(other, RoundRequest::Announce(spec)).await,
        "coordinator only",
    );
}

/// Issue 12, finding 3: the reproduction. Round R announced with the one real clinic and nine
/// invented keys at t = 10, then R again with the clinic alone at t = 1, recovered the clinic's
/// payload. Now the first is declined (strangers to the roster) and the second cannot even be
/// a valid round; nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_with_non_members_or_a_lone_clinic_are_declined() {
    let node = node();
    let p = node.participation();
    let mut strangers = node.spec(7);
    strangers.participants = std::iter::once(node.signer.key())
        .chain((10..19).map(|i| Signer::from_seed(&[i; 32]).key()))
        .collect();
    strangers.threshold = 10;
    let r = ask(&p, RoundRequest::Announce(strangers.sign(&node.signer))).await;
    declined(
        &r,
        "9 of the round's 10 participants are not on the network's roster",
    );
    let mut alone = node.spec(7);
    alone.participants = vec![node.signer.key()];
    alone.threshold = 1;
    let r = ask(&p, RoundRequest::Announce(alone.sign(&node.signer))).await;
    declined(&r, "1 participant(s) are too few for a round");
    assert!(node.ledger().is_empty());
}

/// Issue 12, finding 2: README's two-node network (the coordinator and one clinic) and a
/// threshold below the clinic's fraction are declined at announce, before any charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_rounds_and_low_thresholds_are_declined_by_policy() {
    let node = node();
    let p = node.participation();
    let mut pair = node.spec(3);
    pair.participants.truncate(2);
    pair.threshold = 2;
    declined(
        &ask(&p, RoundRequest::Announce(pair.sign(&node.signer))).await,
        "1 other participant(s); this clinic joins only rounds with at least 3",
    );
    set_privacy(
        &node.dir,
        "min_threshold = \"2/3\"",
        "min_threshold = \"1/1\"",
    );
    let p = node.participation(); // The daemon restarted with the new config.
    declined(
        &ask(&p, RoundRequest::Announce(node.spec(4).sign(&node.signer))).await,
        "requires at least 4",
    );
    assert!(node.ledger().is_empty());
}

/// Issue 12, findings 2 and 4: the survivor set is checked again before the node signs it (and
/// so before it reveals anything): one member gone leaves two others, below
/// min_participants = 3, and the node declines; with enough survivors it confirms and reveals
/// only against t signatures on that list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_are_checked_before_anything_is_revealed() {
    let node = node();
    let p = node.participation();
    let spec = node.spec(11).sign(&node.signer);
    let (answer, revealed) = play(&node, &p, &spec, &[2]).await;
    declined(&answer, "only 2 other clinic(s) survived");
    assert!(revealed.is_none());
    // The charge stays: the masked vector left.
    assert_eq!(node.ledger(), [("sent".to_string(), node.round_rho())]);

    let spec = node.spec(12).sign(&node.signer);
    let (answer, revealed) = play(&node, &p, &spec, &[]).await;
    assert!(matches!(answer, RoundResponse::Confirmed(_)), "{answer:?}");
    assert!(
        matches!(revealed, Some(RoundResponse::Revealed(_))),
        "{revealed:?}"
    );
    // A contribution leaves once: the same round again is declined.
    declined(
        &ask(&p, RoundRequest::Announce(spec)).await,
        "already sent its masked contribution",
    );
}

/// Issue 12, finding 11: with min_contributor_change = 2, a round whose contributors differ
/// from the previous round's by exactly one clinic is refused before the list is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_differing_by_one_contributor_is_refused_when_asked() {
    let node = node();
    set_privacy(&node.dir, "min_participants = 3", "min_participants = 2");
    set_privacy(
        &node.dir,
        "min_contributor_change = 0",
        "min_contributor_change = 2",
    );
    set_privacy(&node.dir, "rho_per_period = 1.0", "rho_per_period = 2.0");
    let p = node.participation();
    let (first, _) = play(&node, &p, &node.spec(21).sign(&node.signer), &[]).await;
    assert!(matches!(first, RoundResponse::Confirmed(_)), "{first:?}");
    let (second, revealed) = play(&node, &p, &node.spec(22).sign(&node.signer), &[1]).await;
    declined(
        &second,
        "differ from this clinic's previous round by 1 clinic(s)",
    );
    assert!(revealed.is_none());
    // The same contributors as the last round it confirmed: nothing to difference, accepted.
    let (third, _) = play(&node, &p, &node.spec(23).sign(&node.signer), &[]).await;
    assert!(matches!(third, RoundResponse::Confirmed(_)), "{third:?}");
    set_privacy(
        &node.dir,
        "min_contributor_change = 2",
        "min_contributor_change = 0",
    );
    let p = node.participation(); // The daemon restarted with the new config.
    let (fourth, _) = play(&node, &p, &node.spec(24).sign(&node.signer), &[1]).await;
    assert!(matches!(fourth, RoundResponse::Confirmed(_)), "{fourth:?}");
}

/// Issue 12, finding 5: a contribution whose masked vector never left is refunded when its
/// round expires (kept in the ledger as `aborted`, no longer spent), and its vector can no
/// longer leave; a sent one is never refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contribution_that_never_left_is_refunded_at_expiry() {
    let node = node();
    let p = node.participation();
    let spec = node.spec(31).sign(&node.signer);
    let expires = spec.spec.expires_at_ms();
    assert!(matches!(
        ask(&p, RoundRequest::Announce(spec.clone())).await,
        RoundResponse::Joined(_)
    ));
    assert!((node.spent() - 0.25).abs() < 1e-9);
    {
        let opened = node.open();
        let store = opened.store();
        assert!(refund_expired(store.conn(), expires).unwrap().is_empty());
        assert_eq!(
            refund_expired(store.conn(), expires + 1).unwrap(),
            [spec.spec.id_hex()]
        );
        // Only once.
        assert!(
            refund_expired(store.conn(), expires + 1)
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(node.ledger(), [("aborted".to_string(), node.round_rho())]);
    assert!(node.spent().abs() < 1e-12, "refunded ρ still counted");
    // The refunded vector cannot leave: the shares step finds its charge gone.
    let opened = node.open();
    let id = ledger::entries(opened.store().conn()).unwrap()[0]
        .release_id
        .clone();
    assert!(ledger::mark_sent(opened.store().conn(), &id, None, clock::now_utc()).is_err());
    // Re-announced, it is not charged again.
    declined(
        &ask(&node.participation(), RoundRequest::Announce(spec)).await,
        "was refunded",
    );
    // A sent contribution stays spent whatever happens after.
    let sent = node.spec(32).sign(&node.signer);
    let (answer, _) = play(&node, &p, &sent, &[2]).await;
    declined(&answer, "survived");
    assert!(
        refund_expired(opened.store().conn(), u64::MAX / 2)
            .unwrap()
            .is_empty()
    );
    assert!((node.spent() - 0.25).abs() < 1e-9);
}

/// Issue 12, finding 6: the policy is checked before calibration, and a ρ no mechanism may
/// have is refused as invalid: neither hangs, neither charges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_rho_bounds_come_before_calibration() {
    let node = node();
    let p = node.participation();
    let mut greedy = node.spec(41);
    greedy.rho = 5.0;
    declined(
        &ask(&p, RoundRequest::Announce(greedy.sign(&node.signer))).await,
        "above the clinic's maximum per release",
    );
    let mut absurd = node.spec(42);
    absurd.rho = 1e308;
    declined(
        &ask(&p, RoundRequest::Announce(absurd.sign(&node.signer))).await,
        "outside the range",
    );
    assert!(node.ledger().is_empty());
}

/// Issue 12, finding 5: the period's cap on rounds and the minimum interval between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_caps_are_enforced() {
    let node = node();
    set_privacy(
        &node.dir,
        "min_round_interval_hours = 0.0",
        "min_round_interval_hours = 24.0",
    );
    let p = node.participation();
    assert!(matches!(
        ask(&p, RoundRequest::Announce(node.spec(51).sign(&node.signer))).await,
        RoundResponse::Joined(_)
    ));
    declined(
        &ask(&p, RoundRequest::Announce(node.spec(52).sign(&node.signer))).await,
        "min_round_interval_hours",
    );
    set_privacy(
        &node.dir,
        "min_round_interval_hours = 24.0",
        "min_round_interval_hours = 0.0",
    );
    set_privacy(
        &node.dir,
        "max_rounds_per_period = 12",
        "max_rounds_per_period = 1",
    );
    let p = node.participation(); // The daemon restarted with the new config.
    declined(
        &ask(&p, RoundRequest::Announce(node.spec(53).sign(&node.signer))).await,
        "max_rounds_per_period",
    );
    assert_eq!(node.ledger().len(), 1);
}

/// Issue 16: a training's later iterations reuse the contributions read for its earlier ones
/// while the store is unchanged, and read them again after an erasure (the erased patient must
/// reach no later iteration) or for another training.
#[test]
fn a_training_reads_the_store_once_until_it_changes() {
    let node = node();
    let p = node.participation();
    let opened = node.open();
    let layout = release::benchmark_layout(&opened.store(), opened.config()).unwrap();
    let domains: Vec<_> = layout
        .domains()
        .iter()
        .filter(|d| d.id == "depression")
        .cloned()
        .collect();
    let settings = opened.engine_settings(&Default::default()).unwrap();
    let now = clock::now_utc();
    let read = |id: &str| {
        let mut store = opened.store();
        p.training_data(id, &mut store, settings.clone(), &domains, now)
            .unwrap()
    };
    let first = read("t1");
    assert!(
        Arc::ptr_eq(&first, &read("t1")),
        "the same training, unchanged store"
    );
    let other = read("t2");
    assert!(!Arc::ptr_eq(&first, &other), "another training reads again");
    assert_eq!(other.contributions, first.contributions);
    crate::erasure::erase_patient(
        &mut opened.store(),
        opened.pseudonymiser(),
        "C01-P00001",
        true,
        &clock::now(),
    )
    .unwrap();
    let after = read("t2");
    assert!(!Arc::ptr_eq(&other, &after), "an erasure is read");
    assert_eq!(after.patients, other.patients - 1);
}
