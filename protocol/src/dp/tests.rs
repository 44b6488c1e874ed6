use proptest::prelude::*;

use std::collections::HashMap;

use super::*;

fn distance(a: &[i64], b: &[i64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x as f64) - (*y as f64);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// One episode of a random dataset: a group and raw values, often outside the block's bounds.
#[derive(Debug, Clone)]
struct Episode {
    patient: u64,
    group: usize,
    values: Vec<f64>,
}

/// Encodes `episodes` into a layout with one block (index 0) through the entry point of its kind;
/// aggregates are the sum of the first clipped value over admitted episodes (declared change
/// bound: the clip bound).
fn encode(layout: &Layout, episodes: &[Episode]) -> Vec<i64> {
    let mut enc = layout.encoder();
    let mut aggregate = 0.0;
    let mut used: HashMap<u64, u32> = HashMap::new();
    for e in episodes {
        let b = &layout.blocks()[0];
        match b.kind() {
            BlockKind::Histogram => {
                enc.add_bin(e.patient, 0, e.group % b.groups()).unwrap();
            }
            BlockKind::SumOfProducts => {
                let p = e.values.len() - 1;
                enc.add_products(e.patient, 0, &e.values[..p], e.values[p])
                    .unwrap();
            }
            BlockKind::Aggregate => {
                let n = used.entry(e.patient).or_insert(0);
                if *n < layout.max_episodes() {
                    *n += 1;
                    let (lo, hi) = b.bounds().next().unwrap();
                    aggregate += e.values[0].clamp(lo, hi);
                }
            }
            _ => {
                enc.add(e.patient, 0, e.group % b.groups(), &e.values)
                    .unwrap();
            }
        }
    }
    if layout.blocks()[0].kind() == BlockKind::Aggregate {
        enc.set_aggregate(0, &[aggregate]).unwrap();
    }
    enc.finish()
}

fn block_of(kind: u8, width: usize, groups: usize, bound: f64) -> Block {
    match kind % 5 {
        0 => Block::counts("b", width),
        1 => Block::histogram("b", groups),
        2 => Block::clipped_sums("b", groups, vec![-bound; width], vec![bound * 0.5; width]),
        3 => Block::sum_of_products(
            "b",
            (0..width).map(|i| (-bound, bound + i as f64)).collect(),
            (0.0, bound),
        ),
        _ => Block::aggregate("b", vec![bound], None),
    }
}

fn values_for(block: &Block, raw: &[f64]) -> Vec<f64> {
    let n = match block.kind() {
        BlockKind::Histogram | BlockKind::Aggregate => 1,
        BlockKind::SumOfProducts => {
            // p features + target, from p(p+1)/2 + p + 1 entries.
            let w = block.width();
            (0..).find(|p| p * (p + 1) / 2 + p + 1 == w).unwrap() + 1
        }
        _ => block.width(),
    };
    (0..n).map(|i| raw[i % raw.len()]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// P2, for every block kind: removing any one patient (all their episodes) from a random
    /// dataset never moves the encoded vector by more than the layout's declared sensitivity.
    #[test]
    fn one_patient_moves_the_vector_at_most_the_sensitivity(
        kind in 0u8..5,
        width in 1usize..5,
        groups in 1usize..4,
        bound in 0.5f64..30.0,
        k in 1u32..4,
        raw in prop::collection::vec((0u64..6, 0usize..4, prop::collection::vec(-80.0f64..80.0, 1..4)), 1..30),
    ) {
        let layout = Layout::new(vec![block_of(kind, width, groups, bound)], k).unwrap();
        let block = &layout.blocks()[0];
        let episodes: Vec<Episode> = raw
            .iter()
            .map(|(patient, group, v)| Episode {
                patient: *patient,
                group: *group,
                values: values_for(block, v),
            })
            .collect();
        let full = encode(&layout, &episodes);
        let delta = layout.sensitivity().patient;
        for p in 0..6u64 {
            let without: Vec<Episode> = episodes.iter().filter(|e| e.patient != p).cloned().collect();
            let d = distance(&full, &encode(&layout, &without));
            prop_assert!(d <= delta, "patient {p}: moved {d}, declared {delta}");
        }
    }

    /// Calibration is monotone: more ρ, less noise; more ρ, more ε.
    #[test]
    fn calibration_is_monotone(rho in 1e-4f64..2.0, factor in 1.01f64..5.0) {
        prop_assert!(sigma(1.0, rho * factor).unwrap() < sigma(1.0, rho).unwrap());
        prop_assert!(epsilon(rho * factor, DEFAULT_DELTA).unwrap() > epsilon(rho, DEFAULT_DELTA).unwrap());
    }

    /// Layouts from any bounds, weights and episode caps are built or refused, never panic, and
    /// a layout that is built has a finite positive sensitivity and representable entry bounds
    /// (issue 12, finding 7: degenerate domains once overflowed the integer bounds).
    #[test]
    fn any_bounds_give_a_layout_or_an_error(
        bounds in prop::collection::vec((any_f64(), any_f64()), 1..5),
        groups in 1usize..3,
        weight in any_f64(),
        therapist in prop::option::of(prop::collection::vec(any_f64(), 1..5)),
        k in any::<u32>(),
        kind in 0u8..3,
    ) {
        let (lo, hi): (Vec<f64>, Vec<f64>) = bounds.iter().copied().unzip();
        let block = match kind {
            0 => Block::clipped_sums("s", groups, lo, hi),
            1 => Block::sum_of_products("p", bounds.clone(), (lo[0], hi[0])),
            _ => Block::aggregate("a", hi.clone(), therapist),
        };
        if let Ok(layout) = Layout::new(vec![block.weighted(weight), Block::counts("c", 2)], k) {
            let s = layout.sensitivity();
            prop_assert!(s.patient.is_finite() && s.patient > 0.0);
            for b in layout.blocks() {
                prop_assert!(b.patient_entry_bounds(k).is_ok());
                prop_assert!(b.scale().is_finite() && b.scale() > 0.0);
            }
        }
    }
}

/// Any f64, weighted towards the awkward ones (0, subnormals, huge, infinite, NaN).
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        -100.0f64..100.0,
        Just(0.0),
        Just(1e-300),
        Just(-1e-300),
        Just(f64::MIN_POSITIVE / 4.0),
        Just(1e300),
        Just(f64::MAX),
        Just(f64::INFINITY),
        Just(f64::NAN),
        any::<f64>(),
    ]
}

/// Issue 12, finding 7: a domain of range 10^-300 made the fixed-point scale infinite and the
/// integer bounds overflow (a panic in debug builds, a wrong sensitivity in release). It is now
/// refused with the block's name.
#[test]
fn degenerate_bounds_are_refused_not_overflowed() {
    for (lo, hi) in [
        (0.0, 1e-300),
        (-1e-310, 1e-310),
        (0.0, 1e13),
        (0.0, f64::MAX),
    ] {
        let err = Layout::new(vec![Block::clipped_sums("tiny", 1, vec![lo], vec![hi])], 1)
            .expect_err("a degenerate bound was accepted");
        assert!(err.to_string().contains("tiny"), "{err}");
    }
    let err = Layout::new(vec![Block::aggregate("a", vec![1e-300, 1.0], None)], 1).unwrap_err();
    assert!(err.to_string().contains("\"a\""), "{err}");
    // A patient cap as large as a u32 still gives exact, checked bounds.
    let layout = Layout::new(vec![Block::counts("c", 3)], u32::MAX).unwrap();
    assert!(layout.sensitivity().patient.is_finite());
}

#[test]
fn the_bound_is_attained_by_a_patient_with_max_episodes_in_one_bin() {
    // Not a loose bound: k episodes in the same histogram bin move the vector by k·e = Δ.
    let layout = Layout::new(vec![Block::histogram("h", 5)], 3).unwrap();
    let patient = |p| {
        (0..3).map(move |_| Episode {
            patient: p,
            group: 2,
            values: vec![1.0],
        })
    };
    let with: Vec<Episode> = patient(0).chain(patient(1)).collect();
    let without: Vec<Episode> = patient(1).collect();
    let d = distance(&encode(&layout, &with), &encode(&layout, &without));
    let delta = layout.sensitivity().patient;
    // (Rounding of the fixed-point scale costs at most one unit per episode.)
    assert!(d <= delta && d >= delta - 3.0 - 1e-6, "{d} vs {delta}");
}

#[test]
fn sensitivity_is_derived_exactly_from_the_blocks() {
    // Two equal-weight blocks: each gets D = 2^24/√2; counts of 3 entries (norm √3) and a
    // histogram (norm 1), k = 2.
    let layout = Layout::new(vec![Block::counts("c", 3), Block::histogram("h", 4)], 2).unwrap();
    let share = TARGET_SENSITIVITY / 2f64.sqrt();
    let c = &layout.blocks()[0];
    let h = &layout.blocks()[1];
    assert!((c.scale() / (share / (2.0 * 3f64.sqrt())) - 1.0).abs() < 1e-15);
    assert!((h.scale() / (share / 2.0) - 1.0).abs() < 1e-15);
    let ec = (c.scale()).ceil() as u128;
    let eh = (h.scale()).ceil() as u128;
    let sq = 3 * (2 * ec) * (2 * ec) + (2 * eh) * (2 * eh);
    let delta = layout.sensitivity().patient;
    assert!(delta * delta >= sq as f64);
    assert!(delta <= (sq as f64).sqrt() * (1.0 + 1e-15));
    assert_eq!(layout.sensitivity().therapist, None);
    assert_eq!((c.offset(), h.offset(), layout.len()), (0, 3, 7));
}

#[test]
fn therapist_sensitivity_covers_declared_aggregates_only() {
    let layout = Layout::new(
        vec![
            Block::counts("c", 1),
            Block::aggregate("a", vec![1.0, 2.0], Some(vec![10.0, 20.0])),
        ],
        1,
    )
    .unwrap();
    let a = &layout.blocks()[1];
    let e = |m: f64| (a.scale() * m).ceil() + 1.0;
    let expected = (e(10.0).powi(2) + e(20.0).powi(2)).sqrt();
    let got = layout.sensitivity().therapist.unwrap();
    assert!(got >= expected && got <= expected * (1.0 + 1e-15));
}

#[test]
fn layouts_reject_bad_blocks() {
    assert!(Layout::new(vec![], 1).is_err());
    assert!(Layout::new(vec![Block::counts("c", 1)], 0).is_err());
    assert!(Layout::new(vec![Block::counts("c", 1), Block::counts("c", 2)], 1).is_err());
    assert!(Layout::new(vec![Block::clipped_sums("s", 1, vec![1.0], vec![0.0])], 1).is_err());
    assert!(
        Layout::new(
            vec![Block::clipped_sums("s", 1, vec![0.0], vec![f64::NAN])],
            1
        )
        .is_err()
    );
    assert!(Layout::new(vec![Block::counts("c", 1).weighted(0.0)], 1).is_err());
    assert!(Layout::new(vec![Block::counts("c", 0)], 1).is_err());
}

#[test]
fn encoder_clips_caps_and_rejects_misuse() {
    let layout = Layout::new(
        vec![
            Block::clipped_sums("s", 2, vec![0.0], vec![10.0]),
            Block::aggregate("a", vec![1.0], None),
        ],
        2,
    )
    .unwrap();
    let mut enc = layout.encoder();
    assert!(enc.add(7, 0, 1, &[1e9]).unwrap());
    assert!(enc.add(7, 0, 0, &[-5.0]).unwrap());
    // Third episode of the same patient: dropped.
    assert!(!enc.add(7, 0, 1, &[3.0]).unwrap());
    assert!(enc.add(8, 0, 1, &[3.0]).unwrap());
    assert!(enc.add(8, 0, 2, &[3.0]).is_err());
    assert!(enc.add(8, 0, 0, &[f64::NAN]).is_err());
    assert!(enc.add(8, 1, 0, &[1.0]).is_err());
    enc.set_aggregate(1, &[4.0]).unwrap();
    assert!(enc.set_aggregate(1, &[4.0]).is_err());
    let v = layout.decode(&enc.finish()).unwrap();
    let s = layout.blocks()[0].scale();
    assert!((v[0] - 0.0).abs() < 1.0 / s);
    assert!((v[1] - 13.0).abs() < 2.0 / s, "{v:?}");
    assert!((v[2] - 4.0).abs() < 1.0 / layout.blocks()[1].scale());
}

#[test]
fn sum_of_products_bounds_come_from_interval_products() {
    let b = Block::sum_of_products("r", vec![(1.0, 1.0), (-2.0, 3.0)], (0.0, 27.0));
    let bounds: Vec<(f64, f64)> = b.bounds().collect();
    assert_eq!(
        bounds,
        vec![
            (1.0, 1.0),    // 1·1
            (-2.0, 3.0),   // 1·x
            (-6.0, 9.0),   // x·x over the interval (not squared: a sound outer bound)
            (0.0, 27.0),   // 1·y
            (-54.0, 81.0), // x·y
            (0.0, 729.0),  // y·y
        ]
    );
}

#[test]
fn rho_is_opendps_map_and_matches_the_formula() {
    // Δ = 3, σ = 1.5: ρ = Δ²/(2σ²) = 2 exactly.
    assert_eq!(rho(3.0, 1.5).unwrap(), 2.0);
    for (d, s) in [(1.0, 1.0), (16_777_216.0, 1e7), (12.5, 0.3), (1e3, 7e4)] {
        let exact = d * d / (2.0 * s * s);
        let r = rho(d, s).unwrap();
        assert!(
            r >= exact * (1.0 - 1e-15) && r <= exact * (1.0 + 1e-12),
            "{d} {s}: {r}"
        );
    }
    // σ = Δ/√(2ρ) round-trips through the map.
    for r in [1e-3, 0.05, 0.5, 4.0] {
        let m = Mechanism::central(TARGET_SENSITIVITY, r).unwrap();
        assert!((m.rho - r).abs() <= r * 1e-12, "{r}: {}", m.rho);
        assert_eq!(m.sigma, m.total_sigma);
    }
}

#[test]
fn distributed_shares_are_sigma_over_root_t_minus_one_and_cost_the_central_rho() {
    let central = Mechanism::central(100.0, 0.25).unwrap();
    let shared = Mechanism::distributed(100.0, 0.25, 10).unwrap();
    // σ = Δ/√(2ρ), nudged up by at most a few ulps so that the certified ρ ≤ 0.25.
    assert!((central.sigma / (100.0 / 0.5f64.sqrt()) - 1.0).abs() < 1e-14);
    assert!(central.rho <= 0.25);
    assert_eq!(shared.total_sigma, central.sigma);
    // Nine other shares (t − 1) carry σ² between them.
    assert!((shared.sigma - central.sigma / 3.0).abs() < 1e-9);
    assert_eq!(shared.rho, central.rho);
    assert!((shared.sigma_of_sum(9) - central.sigma).abs() < 1e-9);
    // t = 1 would let the only other party see an un-noised contribution; t = 0 is nonsense.
    assert!(Mechanism::distributed(100.0, 0.25, 1).is_err());
    assert!(Mechanism::distributed(100.0, 0.25, 0).is_err());
}

/// Issue 12, finding 6: ρ near f64::MAX made the ulp-by-ulp certification loop forever (and
/// pinned a core). ρ outside [`RHO_RANGE`] is refused at once, with the value in the message.
#[test]
fn rho_outside_the_sane_range_is_refused_before_calibration() {
    for rho in [
        1e308,
        9e307,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
        0.0,
        -1.0,
        1e-7,
        10.5,
    ] {
        for m in [
            Mechanism::central(16_777_216.0, rho),
            Mechanism::distributed(16_777_216.0, rho, 3),
        ] {
            let err = m.expect_err("an insane ρ was calibrated");
            assert!(err.to_string().contains("ρ"), "{err}");
        }
    }
    let (lo, hi) = RHO_RANGE;
    assert!(Mechanism::central(16_777_216.0, lo).is_ok());
    assert!(Mechanism::central(16_777_216.0, hi).is_ok());
}

#[test]
fn epsilon_matches_hand_computed_values() {
    // δ(ε) = min over α > 1 of exp((α−1)(αρ−ε) + α·ln(1−1/α))/(α−1) (Canonne, Kamath & Steinke
    // 2020, Prop. 12), solved for δ = 1e-6 by a separate grid search over α and bisection on ε
    // (Python, 2026-11-23).
    for (rho, hand) in [(0.1, 2.141_938_9), (0.5, 5.221_534_5), (1.0, 7.766_216_7)] {
        let eps = epsilon(rho, 1e-6).unwrap();
        assert!((eps - hand).abs() < 1e-5, "ρ = {rho}: {eps} vs {hand}");
        // Never above the classic bound ρ + 2√(ρ ln(1/δ)).
        assert!(eps <= rho + 2.0 * (rho * 1e6f64.ln()).sqrt());
    }
    assert_eq!(epsilon(0.0, 1e-6).unwrap(), 0.0);
    assert!(epsilon(-1.0, 1e-6).is_err());
    assert!(epsilon(1.0, 0.0).is_err());
}

fn moments(z: &[i64]) -> (f64, f64) {
    let n = z.len() as f64;
    let mean = z.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = z.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

#[test]
fn central_noise_has_variance_sigma_squared() {
    // σ = 20. With 100 000 draws the sample variance has relative SD √(2/n) ≈ 0.45 %, so
    // ±2.5 % is a 5.6-SD interval; a σ off by 2.5 % (or a share σ/√t for t ≥ 2) fails.
    let m = Mechanism::central(20.0, 0.5).unwrap();
    assert_eq!(m.sigma, 20.0);
    let z = m.noise(100_000).unwrap();
    let (mean, var) = moments(&z);
    assert!((var / 400.0 - 1.0).abs() < 0.025, "variance {var}");
    assert!(
        mean.abs() < 6.0 * 20.0 / (z.len() as f64).sqrt(),
        "mean {mean}"
    );
}

#[test]
fn any_t_minus_one_noise_shares_carry_variance_sigma_squared() {
    // Issue 12, finding 1: whoever knows one contribution (a clinic its own; the coordinator
    // when it contributes too) subtracts it from a release of t and faces the other t − 1.
    // t = 5: shares of σ/2 each; 4 × 12 500 draws, summed in fours: 12 500 sums with variance
    // σ². Relative SD of the sample variance 1.3 %; ±7 % is 5.5 SD, so the old share σ/√t
    // (four of them: 0.8σ²) fails, as does the central σ (4σ²).
    let m = Mechanism::distributed(20.0, 0.5, 5).unwrap();
    let z = m.noise(50_000).unwrap();
    let sums: Vec<i64> = z.chunks(4).map(|c| c.iter().sum()).collect();
    let (_, var) = moments(&sums);
    assert!((var / 400.0 - 1.0).abs() < 0.07, "variance of sums {var}");
    let (_, share_var) = moments(&z);
    assert!(
        (share_var / 100.0 - 1.0).abs() < 0.04,
        "share variance {share_var}"
    );
}

#[test]
fn noise_is_added_exactly_and_capacity_is_checked() {
    let mut v = vec![5, -3];
    Mechanism::apply(&mut v, &[1, 1]).unwrap();
    assert_eq!(v, vec![6, -2]);
    assert!(Mechanism::apply(&mut v, &[1]).is_err());
    assert!(Mechanism::apply(&mut [i64::MAX], &[1]).is_err());
    let layout = Layout::new(vec![Block::counts("c", 2)], 1).unwrap();
    assert!(layout.check_capacity(1 << 32, 1e8).is_ok());
    assert!(layout.check_capacity(1 << 40, 1e8).is_err());
}
