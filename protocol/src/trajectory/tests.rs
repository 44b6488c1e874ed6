use nalgebra::{DMatrix, DVector};
use proptest::prelude::*;

use super::*;
use crate::instrument::builtin_instruments;

fn phq9() -> Instrument {
    builtin_instruments().remove(0)
}

/// A seeded uniform generator in [0, 1).
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn features(n: usize) -> Vec<Feature> {
    (0..n)
        .map(|i| Feature {
            name: format!("f{i}"),
            weight: if i == 0 { 2.0 } else { 1.0 },
        })
        .collect()
}

/// A pool of `n` episodes with `dims` random features and PHQ-9 scores at sessions 1–8 whose
/// slope is set by feature 0: high values recover slowly.
fn pool(n: usize, dims: usize, seed: u64) -> Vec<PoolEpisode> {
    let mut u = uniform(seed);
    (0..n)
        .map(|_| {
            let f: Vec<Option<f64>> = (0..dims).map(|_| Some(u() * 10.0)).collect();
            let slow = f[0].unwrap() / 10.0;
            let scores = (1..=8)
                .map(|t| {
                    let y = 18.0 - (1.0 - slow) * 5.0 * f64::from(t).ln() + (u() - 0.5) * 2.0;
                    (t, y)
                })
                .collect();
            PoolEpisode {
                features: f,
                scores,
            }
        })
        .collect()
}

#[test]
fn weighted_quantiles_match_hand_computed_cases() {
    let equal = [(3.0, 1.0), (1.0, 1.0), (4.0, 1.0), (2.0, 1.0)];
    let q = |p, pts: &[(f64, f64)]| weighted_quantile(pts, p).unwrap();
    assert_eq!(
        [
            q(0.25, &equal),
            q(0.5, &equal),
            q(0.75, &equal),
            q(0.9, &equal)
        ],
        [1.0, 2.0, 3.0, 4.0]
    );
    // Weights 1, 1, 1, 5 (total 8): P25 needs 2 → the second value; P50 needs 4 → the last.
    let heavy = [(1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 5.0)];
    assert_eq!([q(0.25, &heavy), q(0.5, &heavy)], [2.0, 4.0]);
    assert_eq!(weighted_quantile(&[], 0.5), None);
    assert_eq!(q(0.5, &[(7.0, 0.3)]), 7.0);
}

#[test]
fn the_log_linear_fit_matches_hand_computed_cases() {
    // Exact: y = 20 − 3 ln t.
    let exact: Vec<(u32, f64, f64)> = (1..=6)
        .map(|t| (t, 20.0 - 3.0 * f64::from(t).ln(), 1.0))
        .collect();
    let (a, b) = log_linear_fit(&exact).unwrap();
    assert!((a - 20.0).abs() < 1e-12 && (b + 3.0).abs() < 1e-12);
    // By hand: t = 1, 2, 4 (x = 0, ln 2, 2 ln 2), y = 10, 8, 7: b = −3 / (2 ln 2),
    // a = 25/3 − b·ln 2 = 25/3 + 3/2.
    let (a, b) = log_linear_fit(&[(1, 10.0, 1.0), (2, 8.0, 1.0), (4, 7.0, 1.0)]).unwrap();
    assert!((b + 3.0 / (2.0 * 2f64.ln())).abs() < 1e-12, "{b}");
    assert!((a - (25.0 / 3.0 + 1.5)).abs() < 1e-12, "{a}");
    // Weights count: doubling the last point's weight is the same as repeating it.
    let w = log_linear_fit(&[(1, 10.0, 1.0), (2, 8.0, 1.0), (4, 7.0, 2.0)]).unwrap();
    let r = log_linear_fit(&[(1, 10.0, 1.0), (2, 8.0, 1.0), (4, 7.0, 1.0), (4, 7.0, 1.0)]).unwrap();
    assert!((w.0 - r.0).abs() < 1e-12 && (w.1 - r.1).abs() < 1e-12);
    assert_eq!(log_linear_fit(&[(3, 1.0, 1.0), (3, 2.0, 1.0)]), None);
}

proptest! {
    #[test]
    fn nearest_equals_a_full_sort(
        distances in proptest::collection::vec(0.0f64..5.0, 0..200),
        k in 0usize..250,
    ) {
        let mut all: Vec<usize> = (0..distances.len()).collect();
        all.sort_by(|a, b| distances[*a].total_cmp(&distances[*b]).then(a.cmp(b)));
        all.truncate(k);
        prop_assert_eq!(nearest(&distances, k), all);
    }
}

/// The Mahalanobis distance of the method computed directly: z-scores on the pool,
/// d² = Δᵀ W (S + λI)⁻¹ W Δ.
fn direct_distances(pool: &[PoolEpisode], query: &[f64], weights: &[f64], ridge: f64) -> Vec<f64> {
    let dims = query.len();
    let n = pool.len() as f64;
    let col = |j: usize| pool.iter().map(move |e| e.features[j].unwrap());
    let mean: Vec<f64> = (0..dims).map(|j| col(j).sum::<f64>() / n).collect();
    let sd: Vec<f64> = (0..dims)
        .map(|j| (col(j).map(|v| (v - mean[j]).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
        .collect();
    let z = |v: &[f64]| DVector::from_iterator(dims, (0..dims).map(|j| (v[j] - mean[j]) / sd[j]));
    let rows: Vec<DVector<f64>> = pool
        .iter()
        .map(|e| z(&e.features.iter().map(|v| v.unwrap()).collect::<Vec<_>>()))
        .collect();
    let mut s = DMatrix::zeros(dims, dims);
    for r in &rows {
        s += r * r.transpose();
    }
    s /= n - 1.0;
    s += DMatrix::identity(dims, dims) * ridge;
    let w = DMatrix::from_diagonal(&DVector::from_vec(weights.to_vec()));
    let m = &w * s.try_inverse().unwrap() * &w;
    let q = z(query);
    rows.iter()
        .map(|r| {
            let d = r - &q;
            (d.transpose() * &m * &d)[(0, 0)].sqrt()
        })
        .collect()
}

#[test]
fn neighbours_are_the_brute_force_mahalanobis_nearest() {
    for seed in 1..6 {
        let pool = pool(1500, 6, seed);
        let mut u = uniform(seed + 100);
        let query: Vec<f64> = (0..6).map(|_| u() * 10.0).collect();
        let q = Query {
            features: query.iter().copied().map(Some).collect(),
            early: Vec::new(),
        };
        let e = expect(
            &features(6),
            &pool,
            &q,
            Direction::LowerIsBetter,
            &Settings::default(),
        )
        .unwrap();
        assert_eq!(e.metric, Metric::Mahalanobis);
        assert_eq!(e.neighbours, 75, "5 % of 1500");
        let weights: Vec<f64> = features(6).iter().map(|f| f.weight).collect();
        let direct = direct_distances(&pool, &query, &weights, 0.01);
        let brute = nearest(&direct, 75);
        let got: Vec<usize> = e.nearest.iter().map(|(i, _)| *i).collect();
        assert_eq!(got, brute, "seed {seed}");
        for (i, d) in &e.nearest {
            assert!((d - direct[*i]).abs() < 1e-9, "{d} vs {}", direct[*i]);
        }
    }
}

#[test]
fn few_features_use_weighted_euclidean_distance_on_z_scores() {
    let pool = pool(400, 2, 9);
    let q = Query {
        features: vec![Some(5.0), Some(1.0)],
        early: Vec::new(),
    };
    let e = expect(
        &features(2),
        &pool,
        &q,
        Direction::LowerIsBetter,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(e.metric, Metric::Euclidean);
    let n = pool.len() as f64;
    let stats = |j: usize| {
        let m = pool.iter().map(|p| p.features[j].unwrap()).sum::<f64>() / n;
        let v = pool
            .iter()
            .map(|p| (p.features[j].unwrap() - m).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        (m, v.sqrt())
    };
    let ((m0, s0), (m1, s1)) = (stats(0), stats(1));
    let (i, d) = e.nearest[0];
    let f = &pool[i].features;
    let direct = ((2.0 * ((f[0].unwrap() - m0) / s0 - (5.0 - m0) / s0)).powi(2)
        + ((f[1].unwrap() - m1) / s1 - (1.0 - m1) / s1).powi(2))
    .sqrt();
    assert!((d - direct).abs() < 1e-12);
    assert_eq!(e.neighbours, 50, "k is at least 50");
}

#[test]
fn neighbours_follow_the_planted_trajectory_and_the_band_is_ordered() {
    let pool = pool(4000, 5, 3);
    let at = |slow: f64| {
        let q = Query {
            features: vec![Some(slow), Some(5.0), Some(5.0), Some(5.0), Some(5.0)],
            early: Vec::new(),
        };
        expect(
            &features(5),
            &pool,
            &q,
            Direction::LowerIsBetter,
            &Settings::default(),
        )
        .unwrap()
    };
    let (fast, slow) = (at(0.5), at(9.5));
    assert_eq!(fast.neighbours, 200);
    let (f8, s8) = (fast.at(8).unwrap(), slow.at(8).unwrap());
    // Planted: session 8 expected near 18 − 5·(1 − slow/10)·ln 8.
    let truth = |s: f64| 18.0 - 5.0 * (1.0 - s / 10.0) * 8f64.ln();
    assert!(
        (f8.expected - truth(0.5)).abs() < 1.5,
        "{} vs {}",
        f8.expected,
        truth(0.5)
    );
    assert!(
        (s8.expected - truth(9.5)).abs() < 1.5,
        "{} vs {}",
        s8.expected,
        truth(9.5)
    );
    for b in &fast.bands {
        assert!(
            b.p25 <= b.expected && b.expected <= b.p75 && b.p75 <= b.p90,
            "{b:?}"
        );
    }
    // A plateau after the last session with data, never extrapolated.
    let last = *fast.bands.last().unwrap();
    assert_eq!(last.session, 8);
    let later = fast.at(15).unwrap();
    assert_eq!(
        (later.expected, later.p90, later.n),
        (last.expected, last.p90, 0)
    );
    assert_eq!(fast.at(0), None);
    assert!(!fast.atypical);
    // Far outside the pool: atypical.
    let q = Query {
        features: vec![Some(60.0), Some(5.0), Some(5.0), Some(5.0), Some(5.0)],
        early: Vec::new(),
    };
    let far = expect(
        &features(5),
        &pool,
        &q,
        Direction::LowerIsBetter,
        &Settings::default(),
    );
    assert!(far.unwrap().atypical);
}

#[test]
fn missing_features_are_left_out_or_imputed_and_said() {
    let mut pool = pool(300, 4, 5);
    for e in pool.iter_mut().take(200) {
        e.features[3] = None; // missing for most: left out
    }
    for e in pool.iter_mut().skip(200).take(30) {
        e.features[2] = None; // missing for a few: imputed
    }
    let q = Query {
        features: vec![Some(5.0), None, Some(3.0), Some(1.0)],
        early: Vec::new(),
    };
    let e = expect(
        &features(4),
        &pool,
        &q,
        Direction::LowerIsBetter,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(e.used, ["f0", "f2"]);
    assert_eq!(
        e.left_out,
        [
            ("f1".to_string(), "not recorded for this patient"),
            ("f3".to_string(), "missing for most past patients")
        ]
    );
    assert_eq!(e.imputed, 30);
    assert_eq!(e.metric, Metric::Euclidean);
}

#[test]
fn the_dynamic_variant_uses_early_scores_and_only_pool_episodes_that_have_them() {
    let mut pool = pool(600, 4, 8);
    for e in pool.iter_mut().take(100) {
        e.scores.retain(|(t, _)| *t != 3);
    }
    let q = Query {
        features: vec![Some(5.0), Some(5.0), Some(5.0), Some(5.0)],
        early: vec![(2, 15.0), (3, 14.0), (5, 1.0)],
    };
    let e = expect(
        &features(4),
        &pool,
        &q,
        Direction::LowerIsBetter,
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(e.candidates, 500);
    assert!(e.nearest.iter().all(|(i, _)| *i >= 100));
    assert_eq!(
        e.used[4..],
        [
            "score at session 2".to_string(),
            "score at session 3".to_string()
        ]
    );
    let few = expect(
        &features(4),
        &pool[..20],
        &Query {
            early: Vec::new(),
            ..q
        },
        Direction::LowerIsBetter,
        &Settings::default(),
    );
    assert_eq!(
        few,
        Err(Error::TooFew {
            candidates: 20,
            needed: 30
        })
    );
}

/// An expectation with one band at session 2.
fn band(p75: f64, p90: f64) -> Expectation {
    Expectation {
        bands: vec![Band {
            session: 2,
            n: 40,
            p25: p75 - 4.0,
            p50: p75 - 2.0,
            expected: p75 - 2.0,
            p75,
            p90,
        }],
        fit: None,
        candidates: 100,
        nearest: Vec::new(),
        neighbours: 50,
        used: Vec::new(),
        left_out: Vec::new(),
        imputed: 0,
        metric: Metric::Euclidean,
        atypical: false,
    }
}

#[test]
fn signals_at_every_boundary_lower_is_better() {
    let phq = phq9(); // caseness ≥ 10, reliable change 6
    let e = band(12.0, 15.0);
    let s = |t: u32, intake: f64, score: f64| signal(&phq, Some(&e), t, intake, score);
    assert_eq!(s(2, 16.0, 12.0), Signal::Green, "at P75");
    assert_eq!(s(2, 16.0, 13.0), Signal::Yellow, "above P75");
    assert_eq!(s(2, 16.0, 15.0), Signal::Yellow, "at P90");
    assert_eq!(s(2, 16.0, 16.0), Signal::Red, "above P90");
    assert_eq!(s(2, 16.0, 9.0), Signal::White, "below caseness");
    assert_eq!(s(2, 16.0, 10.0), Signal::Green, "at caseness");
    assert_eq!(s(1, 16.0, 16.0), Signal::Grey, "intake has no signal");
    assert_eq!(
        s(5, 16.0, 14.0),
        Signal::Yellow,
        "the plateau applies later"
    );
    assert_eq!(
        signal(&phq, None, 2, 16.0, 14.0),
        Signal::Grey,
        "no expectation"
    );
    // Reliable deterioration is red whatever the band says, with or without one.
    let wide = band(20.0, 25.0);
    assert_eq!(signal(&phq, Some(&wide), 2, 8.0, 14.0), Signal::Red);
    assert_eq!(signal(&phq, Some(&wide), 2, 8.0, 13.0), Signal::Green);
    assert_eq!(signal(&phq, None, 2, 8.0, 14.0), Signal::Red);
}

#[test]
fn signals_at_every_boundary_higher_is_better() {
    let mut wellbeing = phq9();
    wellbeing.direction = Direction::HigherIsBetter;
    wellbeing.caseness_cutoff = None;
    // On a higher-is-better scale the worse tail is low: P75 = 12 and P90 = 9 below it.
    let e = band(12.0, 9.0);
    let s = |intake: f64, score: f64| signal(&wellbeing, Some(&e), 2, intake, score);
    assert_eq!(s(10.0, 12.0), Signal::Green);
    assert_eq!(s(10.0, 13.0), Signal::Green);
    assert_eq!(s(10.0, 11.0), Signal::Yellow);
    assert_eq!(s(10.0, 9.0), Signal::Yellow);
    assert_eq!(s(12.0, 8.0), Signal::Red, "below P90, not reliably worse");
    assert_eq!(s(16.0, 10.0), Signal::Red, "reliably worse (6 points down)");
    wellbeing.caseness_cutoff = Some(10.0); // a case at 10 or less
    let s = |score: f64| signal(&wellbeing, Some(&e), 2, 8.0, score);
    assert_eq!((s(11.0), s(10.0)), (Signal::White, Signal::Yellow));
}

#[test]
fn expectations_are_oriented_for_higher_is_better_instruments() {
    // Mirror the pool: the same patients on a scale where higher is better.
    let lower = pool(2000, 4, 4);
    let higher: Vec<PoolEpisode> = lower
        .iter()
        .map(|e| PoolEpisode {
            features: e.features.clone(),
            scores: e.scores.iter().map(|(t, y)| (*t, 30.0 - y)).collect(),
        })
        .collect();
    let q = Query {
        features: vec![Some(4.0), Some(4.0), Some(4.0), Some(4.0)],
        early: Vec::new(),
    };
    let s = Settings::default();
    let a = expect(&features(4), &lower, &q, Direction::LowerIsBetter, &s).unwrap();
    let b = expect(&features(4), &higher, &q, Direction::HigherIsBetter, &s).unwrap();
    for (x, y) in a.bands.iter().zip(&b.bands) {
        assert!(
            (30.0 - x.p90 - y.p90).abs() < 1e-9 && (30.0 - x.expected - y.expected).abs() < 1e-9
        );
        assert!(
            y.p90 <= y.p75,
            "the failure boundary is below on this scale"
        );
    }
}

#[test]
fn item_9_of_the_phq9_is_a_safety_signal() {
    let phq = phq9();
    let answers = |nine: f64| -> Vec<(usize, f64)> {
        (1..=9)
            .map(|i| (i, if i == 9 { nine } else { 2.0 }))
            .collect()
    };
    assert!(safety(&phq, &answers(0.0)).is_empty());
    let s = safety(&phq, &answers(1.0));
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].item, s[0].code.as_str(), s[0].value),
        (9, "44260-8", 1.0)
    );
    // Other instruments have no critical item unless declared.
    let gad = builtin_instruments().remove(1);
    assert!(safety(&gad, &[(7, 3.0)]).is_empty());
    let mut declared = gad.clone();
    declared.items[6].critical = Some(3.0);
    assert_eq!(safety(&declared, &[(7, 3.0)]).len(), 1);
}
