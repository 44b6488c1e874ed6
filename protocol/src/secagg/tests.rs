use std::collections::BTreeMap;

use x25519_dalek::StaticSecret;

use super::*;
use crate::keys::Signer;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// The aggregate and the survivors, or the error that ended the round.
type Outcome = Result<(Vec<u64>, Vec<u32>), SecAggError>;

fn signers(n: usize) -> Vec<Signer> {
    (0..n)
        .map(|i| Signer::from_seed(&[i as u8 + 1; 32]))
        .collect()
}

fn session(signers: &[Signer], threshold: usize, dim: usize, round: u8) -> Session {
    Session {
        round: [round; 32],
        participants: signers.iter().map(Signer::key).collect(),
        threshold,
        dim,
    }
}

fn inputs(n: usize, dim: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<u64>> {
    (0..n)
        .map(|_| (0..dim).map(|_| rng.next_u64()).collect())
        .collect()
}

/// Runs a whole round in memory; participants in `drop[step]` stop answering at that step.
/// Returns the aggregate and the survivors, or the error that ended it.
fn run(
    n: usize,
    t: usize,
    dim: usize,
    drops: &BTreeMap<u32, Step>,
    seed: u64,
) -> (Outcome, Vec<Vec<u64>>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let signers = signers(n);
    let s = session(&signers, t, dim, 7);
    let xs = inputs(n, dim, &mut rng);
    let result = (|| {
        let mut agg = Aggregator::new(s.clone())?;
        let alive = |i: u32, step: Step| drops.get(&i).is_none_or(|d| *d > step);
        let mut parts = Vec::new();
        for (i, signer) in signers.iter().enumerate() {
            let (p, advert) = Participant::new(s.clone(), signer, xs[i].clone(), &mut rng)?;
            if alive(i as u32, Step::Keys) {
                agg.add_advert(&signer.key(), advert)?;
            }
            parts.push(p);
        }
        let adverts = agg.close_keys()?;
        for v in agg.progress().keys {
            if alive(v, Step::Shares) {
                let shares = parts[v as usize].on_keys(&adverts, &mut rng)?;
                agg.add_shares(&signers[v as usize].key(), shares)?;
            }
        }
        let routed = agg.close_shares()?;
        for (v, inbox) in routed {
            if alive(v, Step::Masked) {
                let y = parts[v as usize].on_shares(&inbox)?;
                assert_ne!(y, xs[v as usize], "the masked input must not be the input");
                agg.add_masked(&signers[v as usize].key(), y)?;
            }
        }
        let survivors = agg.close_masked()?;
        for v in &survivors {
            if alive(*v, Step::Confirm) {
                let c = parts[*v as usize].on_survivors(&survivors, &signers[*v as usize])?;
                agg.add_confirmation(&signers[*v as usize].key(), c)?;
            }
        }
        let confirmations = agg.close_confirmations()?;
        for c in &confirmations {
            if alive(c.index, Step::Unmask) {
                let revealed = parts[c.index as usize].on_unmask(&survivors, &confirmations)?;
                agg.add_reveal(&signers[c.index as usize].key(), revealed)?;
            }
        }
        agg.finish()
    })();
    (result, xs)
}

fn sum_of(xs: &[Vec<u64>], who: &[u32], dim: usize) -> Vec<u64> {
    let mut s = vec![0u64; dim];
    for w in who {
        for (a, b) in s.iter_mut().zip(&xs[*w as usize]) {
            *a = a.wrapping_add(*b);
        }
    }
    s
}

/// Every step a participant can drop out at.
const STEPS: [Step; 5] = [
    Step::Keys,
    Step::Shares,
    Step::Masked,
    Step::Confirm,
    Step::Unmask,
];

/// ⌈2n/3⌉, the default threshold.
fn default_t(n: usize) -> usize {
    (2 * n).div_ceil(3)
}

#[test]
fn no_dropouts_gives_the_exact_sum() {
    let (r, xs) = run(5, 4, 50, &BTreeMap::new(), 1);
    let (sum, survivors) = r.unwrap();
    assert_eq!(survivors, [0, 1, 2, 3, 4]);
    assert_eq!(sum, sum_of(&xs, &survivors, 50));
}

#[test]
fn one_and_a_third_dropping_at_each_step_still_decode_exactly() {
    let n = 9;
    let t = default_t(n); // 6
    for step in STEPS {
        for k in [1, n / 3] {
            let drops: BTreeMap<u32, Step> = (0..k as u32).map(|i| (i * 2, step)).collect();
            let (r, xs) = run(n, t, 20, &drops, 10 + k as u64);
            let (sum, survivors) = r.unwrap_or_else(|e| panic!("{k} dropouts at {step:?}: {e}"));
            // Who is in the sum: everyone who sent a masked input.
            let expected: Vec<u32> = (0..n as u32)
                .filter(|i| drops.get(i).is_none_or(|d| *d > Step::Masked))
                .collect();
            assert_eq!(survivors, expected, "{k} dropouts at {step:?}");
            assert_eq!(sum, sum_of(&xs, &expected, 20), "{k} dropouts at {step:?}");
        }
    }
}

#[test]
fn fewer_than_t_at_any_step_aborts_with_nothing() {
    let n = 6;
    let t = default_t(n); // 4
    for step in STEPS {
        let drops: BTreeMap<u32, Step> = (0..(n - t + 1) as u32).map(|i| (i, step)).collect();
        let (r, _) = run(n, t, 8, &drops, 3);
        assert_eq!(
            r,
            Err(SecAggError::TooFew {
                step,
                have: t - 1,
                need: t
            })
        );
    }
}

#[test]
fn a_share_for_another_round_or_from_another_sender_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let signers = signers(3);
    let run_keys = |round: u8, rng: &mut ChaCha20Rng| {
        let s = session(&signers, 2, 4, round);
        let mut parts = Vec::new();
        let mut adverts = Vec::new();
        for signer in &signers {
            let (p, a) = Participant::new(s.clone(), signer, vec![1; 4], rng).unwrap();
            parts.push(p);
            adverts.push(a);
        }
        let shares: Vec<Vec<EncryptedShare>> = parts
            .iter_mut()
            .map(|p| p.on_keys(&adverts, rng).unwrap())
            .collect();
        (parts, adverts, shares)
    };
    let (mut a_parts, a_adverts, a_shares) = run_keys(1, &mut rng);
    let (_, b_adverts, b_shares) = run_keys(2, &mut rng);
    let to_0 = |shares: &[Vec<EncryptedShare>]| -> Vec<EncryptedShare> {
        shares
            .iter()
            .flatten()
            .filter(|s| s.to == 0)
            .cloned()
            .collect()
    };
    // Round B's shares (same participants, same indices) do not open in round A.
    assert_eq!(
        a_parts[0].on_shares(&to_0(&b_shares)),
        Err(SecAggError::BadShare(1))
    );
    // A share claiming another sender does not open either.
    let mut forged = to_0(&a_shares);
    forged[0].from = 2;
    forged[1].from = 1;
    assert_eq!(a_parts[0].on_shares(&forged), Err(SecAggError::BadShare(2)));
    // A tampered ciphertext is refused.
    let mut tampered = to_0(&a_shares);
    tampered[0].ciphertext.0[3] ^= 0x40;
    assert_eq!(
        a_parts[0].on_shares(&tampered),
        Err(SecAggError::BadShare(1))
    );
    // The genuine ones open.
    assert!(a_parts[0].on_shares(&to_0(&a_shares)).is_ok());

    // Adverts: another round's advert, or one signed by someone else, are refused.
    let s_a = session(&signers, 2, 4, 1);
    let mut agg = Aggregator::new(s_a.clone()).unwrap();
    assert_eq!(
        agg.add_advert(&signers[1].key(), b_adverts[1].clone()),
        Err(SecAggError::BadSignature(1))
    );
    let mut wrong_signer = a_adverts[1].clone();
    wrong_signer.signature = signers[2].sign(&wrong_signer.transcript(&s_a.round));
    assert_eq!(
        agg.add_advert(&signers[1].key(), wrong_signer),
        Err(SecAggError::BadSignature(1))
    );
    // Sent by participant 2 in participant 1's name.
    assert_eq!(
        agg.add_advert(&signers[2].key(), a_adverts[1].clone()),
        Err(SecAggError::WrongSender(1))
    );
    let outsider = Signer::from_seed(&[99; 32]);
    assert!(matches!(
        agg.add_advert(&outsider.key(), a_adverts[0].clone()),
        Err(SecAggError::Malformed(_))
    ));
    agg.add_advert(&signers[1].key(), a_adverts[1].clone())
        .unwrap();
    assert_eq!(
        agg.add_advert(&signers[1].key(), a_adverts[1].clone()),
        Err(SecAggError::Duplicate(1))
    );
}

#[test]
fn revealing_both_secrets_of_one_participant_is_refused() {
    // Participant 2 drops before masking.
    let (signers, mut parts, mut agg, survivors) = masked_three(5, 2);
    for i in 0..2 {
        let c = parts[i].on_survivors(&survivors, &signers[i]).unwrap();
        agg.add_confirmation(&signers[i].key(), c).unwrap();
    }
    let confirmations = agg.close_confirmations().unwrap();
    let mut revealed = parts[0].on_unmask(&survivors, &confirmations).unwrap();
    // Also claim the self seed of the dropped participant 2: refused.
    let extra = revealed.iter().find(|r| r.owner == 2).copied().unwrap();
    assert_eq!(extra.secret, Secret::MaskKey);
    revealed.push(Revealed {
        secret: Secret::SelfSeed,
        ..extra
    });
    assert!(matches!(
        agg.add_reveal(&signers[0].key(), revealed),
        Err(SecAggError::Malformed(_))
    ));
    // A survivor asked to unmask a list other than the one it signed refuses.
    assert!(matches!(
        parts[1].on_unmask(&[0], &confirmations),
        Err(SecAggError::Malformed(_))
    ));
}

/// Three participants (t = 2) through the masked step, of whom the first `masking` send their
/// masked input: ready for the consistency check.
fn masked_three(
    seed: u64,
    masking: usize,
) -> (Vec<Signer>, Vec<Participant>, Aggregator, Vec<u32>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let signers = signers(3);
    let s = session(&signers, 2, 2, 11);
    let mut agg = Aggregator::new(s.clone()).unwrap();
    let mut parts = Vec::new();
    for signer in &signers {
        let (p, a) = Participant::new(s.clone(), signer, vec![1, 2], &mut rng).unwrap();
        agg.add_advert(&signer.key(), a).unwrap();
        parts.push(p);
    }
    let adverts = agg.close_keys().unwrap();
    for (i, p) in parts.iter_mut().enumerate() {
        let shares = p.on_keys(&adverts, &mut rng).unwrap();
        agg.add_shares(&signers[i].key(), shares).unwrap();
    }
    let routed = agg.close_shares().unwrap();
    for i in 0..masking {
        let y = parts[i].on_shares(&routed[&(i as u32)]).unwrap();
        agg.add_masked(&signers[i].key(), y).unwrap();
    }
    let survivors = agg.close_masked().unwrap();
    (signers, parts, agg, survivors)
}

/// The consistency check (issue 12, finding 4): a survivor reveals nothing unless it gets at
/// least t valid signatures by distinct survivors on the very list it signed. Forged,
/// foreign, duplicated, too few and other-list confirmations are all refused.
#[test]
fn a_survivor_reveals_only_with_t_signatures_on_the_list_it_signed() {
    let (signers, mut parts, mut agg, survivors) = masked_three(6, 3);
    let round = agg.session().round;
    let confirm = |i: usize, parts: &mut Vec<Participant>| {
        parts[i].on_survivors(&survivors, &signers[i]).unwrap()
    };
    let (c0, c1) = (confirm(0, &mut parts), confirm(1, &mut parts));
    let _ = confirm(2, &mut parts);
    // A signature on another list (the aggregator pretending 2 dropped) does not count.
    let other_list = Confirmation {
        index: 1,
        signature: signers[1].sign(&survivors_transcript(&round, &[0, 1].into_iter().collect())),
    };
    let forged = Confirmation {
        index: 1,
        signature: signers[0].sign(&survivors_transcript(
            &round,
            &[0, 1, 2].into_iter().collect(),
        )),
    };
    let outsider = Confirmation {
        index: 7,
        signature: c1.signature,
    };
    for (bad, why) in [
        (vec![c0.clone()], "one signature, t = 2"),
        (vec![c0.clone(), c0.clone()], "the same signer twice"),
        (
            vec![c0.clone(), other_list.clone()],
            "a signature on another list",
        ),
        (vec![c0.clone(), forged.clone()], "signed by someone else"),
        (
            vec![c0.clone(), outsider],
            "a signer that is not a survivor",
        ),
    ] {
        // A refusal leaves the participant waiting, so each case is tried on the same one.
        assert!(parts[2].on_unmask(&survivors, &bad).is_err(), "{why}");
        assert_eq!(parts[2].step(), Step::Unmask);
    }
    // The aggregator refuses the same forgeries at collection.
    assert_eq!(
        agg.add_confirmation(&signers[1].key(), other_list),
        Err(SecAggError::BadConfirmation(1))
    );
    assert_eq!(
        agg.add_confirmation(&signers[0].key(), c1.clone()),
        Err(SecAggError::WrongSender(1))
    );
    agg.add_confirmation(&signers[0].key(), c0.clone()).unwrap();
    assert_eq!(
        agg.add_confirmation(&signers[0].key(), c0.clone()),
        Err(SecAggError::Duplicate(0))
    );
    // A participant signs one list once: asked again, it refuses.
    assert!(matches!(
        parts[0].on_survivors(&[0, 1], &signers[0]),
        Err(SecAggError::WrongStep(_))
    ));
    // Two genuine signatures on its own list: it reveals.
    assert!(parts[2].on_unmask(&survivors, &[c0, c1]).is_ok());
}

/// What a deviating aggregator learns by telling some survivors that `target` survived and
/// the others that it dropped out (`told_dropped`: bit i set = honest participant i is told
/// the short list). With `corrupt`, that participant is the aggregator's own node: it signs
/// both lists and hands over its shares of everything. Returns true when the aggregator
/// rebuilds both of the target's secrets and unmasks its input exactly.
fn inconsistent_views_unmask_target(
    n: usize,
    t: usize,
    corrupt: Option<usize>,
    told_dropped: u32,
    seed: u64,
) -> bool {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let signers = signers(n);
    let s = session(&signers, t, 3, 13);
    let target = n - 1;
    let xs = inputs(n, 3, &mut rng);
    let mut parts = Vec::new();
    let mut adverts = Vec::new();
    for (i, signer) in signers.iter().enumerate() {
        let (p, a) = Participant::new(s.clone(), signer, xs[i].clone(), &mut rng).unwrap();
        parts.push(p);
        adverts.push(a);
    }
    let mut inbox: BTreeMap<u32, Vec<EncryptedShare>> = BTreeMap::new();
    for p in parts.iter_mut() {
        for share in p.on_keys(&adverts, &mut rng).unwrap() {
            inbox.entry(share.to).or_default().push(share);
        }
    }
    let ys: Vec<Vec<u64>> = parts
        .iter_mut()
        .enumerate()
        .map(|(i, p)| p.on_shares(&inbox[&(i as u32)]).unwrap())
        .collect();
    let long: Vec<u32> = (0..n as u32).collect();
    let short: Vec<u32> = (0..n as u32).filter(|v| *v != target as u32).collect();
    let view = |i: usize| {
        if i != target && told_dropped & (1 << i) != 0 {
            &short
        } else {
            &long
        }
    };
    // Consistency check: every honest survivor signs the list it was told; the corrupt one
    // signs both.
    let mut signed: BTreeMap<Vec<u32>, Vec<Confirmation>> = BTreeMap::new();
    for i in 0..n {
        if Some(i) == corrupt {
            for list in [&long, &short] {
                let set: BTreeSet<u32> = list.iter().copied().collect();
                signed.entry(list.clone()).or_default().push(Confirmation {
                    index: i as u32,
                    signature: signers[i].sign(&survivors_transcript(&s.round, &set)),
                });
            }
        } else if let Ok(c) = parts[i].on_survivors(view(i), &signers[i]) {
            // (A list shorter than t is refused outright.)
            signed.entry(view(i).clone()).or_default().push(c);
        }
    }
    // Reveal: each honest survivor shown its own list's signatures.
    let (mut seed_shares, mut key_shares) = (Vec::new(), Vec::new());
    if let Some(c) = corrupt {
        let (mask, seed) = parts[c].held[&(target as u32)];
        key_shares.push(mask);
        seed_shares.push(seed);
    }
    for (i, p) in parts.iter_mut().enumerate() {
        if Some(i) == corrupt || p.step() != Step::Unmask {
            continue;
        }
        let Ok(revealed) = p.on_unmask(view(i), &signed[view(i)]) else {
            continue;
        };
        for r in revealed.into_iter().filter(|r| r.owner == target as u32) {
            match r.secret {
                Secret::SelfSeed => seed_shares.push(r.share),
                Secret::MaskKey => key_shares.push(r.share),
            }
        }
    }
    let (Ok(seed), Ok(key)) = (
        shamir::combine(&seed_shares, t),
        shamir::combine(&key_shares, t),
    ) else {
        return false;
    };
    let key = StaticSecret::from(key);
    let mut x = ys[target].clone();
    crypto::apply_mask(&mut x, &self_seed_stream(&s.round, &seed), -1);
    for (v, advert) in adverts.iter().enumerate().filter(|(v, _)| *v != target) {
        let shared = crypto::agree(&key, &advert.mask_key).unwrap();
        let sign = pair_sign(target as u32, v as u32);
        crypto::apply_mask(&mut x, &pair_seed(&s.round, &shared), -sign);
    }
    x == xs[target]
}

/// Issue 12, finding 4, by brute force over every way of splitting the survivors: a deviating
/// aggregator unmasks one clinic's input exactly if and only if 2t ≤ n + a (a = 1 when it is
/// a participant itself), which is exactly what `round::min_threshold` forbids. At n = 4, t = 2
/// (the reproduction) the attack works; at the floor it never does.
#[test]
fn inconsistent_survivor_lists_unmask_a_clinic_exactly_below_the_threshold_floor() {
    assert!(inconsistent_views_unmask_target(4, 2, None, 0b0110, 1));
    for n in 3..=6usize {
        for t in 1..=n {
            for corrupt in [None, Some(0)] {
                let others = (0..n - 1)
                    .filter(|i| Some(*i) != corrupt)
                    .collect::<Vec<_>>();
                let splits = 1u32 << others.len();
                let broken = (0..splits).any(|bits| {
                    let told: u32 = others
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| bits & (1 << k) != 0)
                        .map(|(_, i)| 1 << i)
                        .sum();
                    inconsistent_views_unmask_target(n, t, corrupt, told, u64::from(bits))
                });
                let floor = crate::round::min_threshold(n, corrupt.is_some()) as usize;
                assert_eq!(
                    broken,
                    t < floor,
                    "n = {n}, t = {t}, aggregator participates: {}",
                    corrupt.is_some()
                );
            }
        }
    }
}

/// SecAgg+ (issue 16): the sparse graph is symmetric, k-regular, the same for every party of a
/// round and another in every round, and complete up to [`COMPLETE_UP_TO`].
#[test]
fn the_sparse_graph_is_regular_symmetric_and_drawn_per_round() {
    let all = signers(60);
    for n in [5, COMPLETE_UP_TO] {
        let g = Graph::of(&session(&all[..n], default_t(n), 4, 1));
        for u in 0..n as u32 {
            assert_eq!(g.neighbourhood(u).len(), n, "complete at n = {n}");
        }
    }
    let (n, k) = (60, degree(60));
    assert_eq!(k, 24);
    assert_eq!((degree(40), degree(100), degree(1000)), (22, 28, 40));
    let g = Graph::of(&session(&all, default_t(n), 4, 1));
    for u in 0..n as u32 {
        let hood = g.neighbourhood(u);
        assert_eq!(hood.len(), k + 1);
        assert!(hood.contains(&u));
        for v in hood {
            assert!(g.linked(*v, u), "{u} – {v} one way only");
        }
    }
    assert_eq!(g, Graph::of(&session(&all, default_t(n), 9, 1)));
    assert_ne!(g, Graph::of(&session(&all, default_t(n), 4, 2)));
    // t_N: the round's fraction of the neighbourhood, and more than half of it plus one.
    let s = session(&all, default_t(n), 4, 1);
    assert_eq!(s.neighbourhood_threshold(), 17); // ⌈40 · 25 / 60⌉ = 17 ≥ 14
    assert_eq!(session(&all, 31, 4, 1).neighbourhood_threshold(), 14);
    assert_eq!(session(&all[..9], 6, 4, 1).neighbourhood_threshold(), 6);
}

/// SecAgg+ on 60 participants: each sends shares to its k = 24 neighbours only, the sum is
/// exact with and without dropouts at every step, a share addressed outside the sender's
/// neighbourhood is refused, and a participant whose neighbourhood lost too many members
/// cannot be unmasked: the round aborts with nothing.
#[test]
fn sparse_rounds_decode_exactly_and_abort_when_a_neighbourhood_is_gone() {
    let n = 60;
    let t = default_t(n);
    let (r, xs) = run(n, t, 16, &BTreeMap::new(), 5);
    let (sum, survivors) = r.unwrap();
    assert_eq!(survivors.len(), n);
    assert_eq!(sum, sum_of(&xs, &survivors, 16));
    for step in STEPS {
        let drops: BTreeMap<u32, Step> =
            [3u32, 17, 29, 44, 58].iter().map(|i| (*i, step)).collect();
        let (r, xs) = run(n, t, 16, &drops, 6);
        let (sum, survivors) = r.unwrap_or_else(|e| panic!("dropouts at {step:?}: {e}"));
        let expected: Vec<u32> = (0..n as u32)
            .filter(|i| drops.get(i).is_none_or(|d| *d > Step::Masked))
            .collect();
        assert_eq!(survivors, expected, "{step:?}");
        assert_eq!(sum, sum_of(&xs, &expected, 16), "{step:?}");
    }
    // Shares go to the neighbourhood only; one more, to a stranger, is refused.
    let all = signers(n);
    let s = session(&all, t, 4, 7);
    let graph = Graph::of(&s);
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut agg = Aggregator::new(s.clone()).unwrap();
    let mut parts: Vec<Participant> = all
        .iter()
        .map(|signer| {
            let (p, a) = Participant::new(s.clone(), signer, vec![1; 4], &mut rng).unwrap();
            agg.add_advert(&signer.key(), a).unwrap();
            p
        })
        .collect();
    let adverts = agg.close_keys().unwrap();
    let mut shares = parts[0].on_keys(&adverts, &mut rng).unwrap();
    assert_eq!(shares.len(), degree(n));
    assert!(shares.iter().all(|x| graph.linked(0, x.to)));
    let stranger = (1..n as u32).find(|v| !graph.linked(0, *v)).unwrap();
    let mut extra = shares[0].clone();
    extra.to = stranger;
    shares.push(extra);
    assert!(matches!(
        agg.add_shares(&all[0].key(), shares),
        Err(SecAggError::Malformed(_))
    ));
    drop(parts.drain(..));
    // Participant 0 and 10 of its neighbours drop before masking: 25 − 11 = 14 of its
    // neighbourhood remain, fewer than t_N = 17, so its mask key cannot be rebuilt.
    let hood: Vec<u32> = graph.neighbourhood(0).iter().copied().take(11).collect();
    assert!(hood.contains(&0));
    let drops: BTreeMap<u32, Step> = hood.iter().map(|i| (*i, Step::Masked)).collect();
    let (r, _) = run(n, t, 4, &drops, 9);
    assert_eq!(
        r,
        Err(SecAggError::TooFew {
            step: Step::Unmask,
            have: 14,
            need: 17
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Masks cancel for every survivor subset of size ≥ t.
    #[test]
    fn masks_cancel_for_every_survivor_subset(
        n in 2usize..8,
        t_frac in 0.0f64..1.0,
        drop_mask in any::<u8>(),
        seed in any::<u64>(),
    ) {
        let t = 1 + ((n - 1) as f64 * t_frac) as usize;
        // Dropouts before masking, at most n − t of them.
        let drops: BTreeMap<u32, Step> = (0..n as u32)
            .filter(|i| drop_mask & (1 << i) != 0)
            .take(n - t)
            .map(|i| (i, Step::Masked))
            .collect();
        let (r, xs) = run(n, t, 6, &drops, seed);
        let (sum, survivors) = r.unwrap();
        let expected: Vec<u32> = (0..n as u32).filter(|i| !drops.contains_key(i)).collect();
        prop_assert_eq!(&survivors, &expected);
        prop_assert_eq!(sum, sum_of(&xs, &expected, 6));
    }
}
