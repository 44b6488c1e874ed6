use proptest::prelude::*;

use super::*;
use crate::analysis::FEATURES;
use crate::benchmark::tests::{each_patient_within_sensitivity, phq9_spec, two_domains};
use crate::dp::Mechanism;

prop_compose! {
    fn contribution()(
        patient in 0u64..8,
        domain in 0usize..2,
        pre in -5.0f64..35.0,
        features in prop::collection::vec(-50.0f64..50.0, FEATURES.len()),
        sessions in prop::collection::vec((0u32..20, -5.0f64..35.0), 0..24),
    ) -> Contribution {
        Contribution {
            patient, therapist: None, domain, pre, post: pre, finished: true, caseness: None,
            reliable: None, features, residual: None, sessions, dropout: None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// P2 for the trajectories vector: removing one patient (every episode, every domain,
    /// every session, scores repeated within a session and outside 1..=16 included) never
    /// moves it by more than the declared sensitivity, block by block and entry by entry.
    #[test]
    fn one_patient_moves_the_trajectories_at_most_the_sensitivity(
        k in 1u32..3,
        contributions in prop::collection::vec(contribution(), 1..30),
    ) {
        let b = TrajectoriesLayout::new(two_domains(), k).unwrap();
        let within =
            each_patient_within_sensitivity(b.layout(), k, &contributions, |c| b.encode(c).unwrap());
        prop_assert!(within.is_ok(), "{within:?}");
    }
}

/// An episode's features for intake `pre` (intercept, intake, the rest 0).
fn features(pre: f64) -> Vec<f64> {
    let mut f = vec![0.0; FEATURES.len()];
    f[0] = 1.0;
    f[1] = pre;
    f
}

/// `n` patients of PHQ-9 intake `pre + i % 5` whose score falls by `slope` × ln t, plus a
/// deterministic spread of ±2 points; each seen at sessions 1..=`last`.
fn cohort(n: u64, pre: f64, slope: f64, last: u32) -> Vec<Contribution> {
    (0..n)
        .map(|i| {
            let pre = pre + (i % 5) as f64;
            let spread = ((i / 5) % 5) as f64 - 2.0;
            Contribution {
                patient: i,
                therapist: None,
                domain: 0,
                pre,
                post: pre,
                finished: true,
                caseness: None,
                reliable: None,
                features: features(pre),
                residual: None,
                sessions: (1..=last)
                    .map(|t| {
                        let y = if t == 1 {
                            pre
                        } else {
                            pre - slope * f64::from(t).ln() + spread
                        };
                        (t, y.round().clamp(0.0, 27.0))
                    })
                    .collect(),
                dropout: None,
            }
        })
        .collect()
}

/// With an exact sum, every histogram is the pooled count of first scores by band, session
/// and bin, and every released percentile is the grouped-data percentile of those counts.
#[test]
fn exact_sums_are_the_pooled_histograms_and_their_percentiles() {
    let spec = phq9_spec();
    let b = TrajectoriesLayout::new(vec![spec.clone()], 1).unwrap();
    let mut data = cohort(120, 16.0, 3.0, 12);
    // A second score at the same session is not counted; session 17 is beyond the curves.
    data[0].sessions.push((3, 27.0));
    data[0].sessions.push((17, 0.0));
    let values = b.encode(&data).unwrap();
    let bins = b.bins(0);
    assert_eq!((bins.start, bins.width, bins.n), (-0.5, 2.0, 14));
    let decoded = b.layout().decode(&values).unwrap();
    for t in 1..=SESSIONS {
        let bl = b
            .layout()
            .block(&format!("depression.scores_s{t}"))
            .unwrap();
        let mut expected = vec![0.0; bl.len()];
        for c in &data {
            if let Some(score) = first_scores(&c.sessions, SESSIONS)[t - 1] {
                expected[spec.band(c.pre) * bins.n + bins.index(score)] += 1.0;
            }
        }
        let got = &decoded[bl.offset()..bl.offset() + bl.len()];
        for (g, e) in got.iter().zip(&expected) {
            // Exact up to the fixed-point unit (a count is round(scale) units, read / scale).
            assert!(
                (g - e).abs() < 1e-6 * e.max(1.0),
                "session {t}: {got:?} vs {expected:?}"
            );
        }
    }
    let s = &b.summarise(&values, 0.0).unwrap()[0];
    // Intakes 16..=19 are PHQ-9's band 15–19; 20 is in 20–27.
    let band = spec.band(16.0);
    assert_eq!(band + 1, spec.band(20.0));
    let point = s.curves[band].at(1).unwrap();
    // 96 patients, 24 each of 16, 17, 18, 19; bins of 2 points centred on the integers:
    // [15.5, 17.5) holds 48, [17.5, 19.5) 48, so P25 is halfway through the first bin and
    // P10 a fifth of the way.
    assert!((point.count - 96.0).abs() < 1e-4);
    let p = point.percentiles.unwrap();
    for (got, want) in p
        .iter()
        .zip([15.9, 16.5, 17.5, 18.5, 17.5 + (86.4 - 48.0) / 48.0 * 2.0])
    {
        assert!((got - want).abs() < 1e-6, "{p:?}");
    }
    assert_eq!(point.noise_sd, Some([0.0; 5]));
    // Band 20–27 has 24 patients: below the minimum, withheld and said.
    assert!((s.curves[band + 1].points[0].count - 24.0).abs() < 1e-4);
    assert!(s.curves[band + 1].at(1).is_none());
    assert!(s.suppressed.iter().any(|x| x.contains("fewer than 50")));
    // Sessions after 12 have no one.
    assert!(s.curves[band].at(13).is_none());
}

/// With an exact sum the model is the least-squares fit of the pooled rows x_t = [z, z·u_t]
/// (z = 1, s, s² of the standardised intake s),
/// fitted directly here; it recovers a planted log-linear decline; and its residual SD at
/// each session is the SD of the pooled residuals.
#[test]
fn the_model_is_the_pooled_fit_and_recovers_a_planted_curve() {
    let spec = phq9_spec();
    let b = TrajectoriesLayout::new(vec![spec.clone()], 1).unwrap();
    let data = cohort(400, 12.0, 4.0, SESSIONS as u32);
    let values = b.encode(&data).unwrap();
    let model = b.summarise(&values, 0.0).unwrap()[0].model.clone().unwrap();
    let mut direct = SuffStats::new(MODEL_FEATURES);
    let mut rows = Vec::new();
    for c in &data {
        let z = model_terms(spec.lo, spec.hi, c.pre);
        for (t, y) in &c.sessions {
            if *t < 2 {
                continue;
            }
            let u = time_term(*t as usize);
            let x: Vec<f64> = z.iter().copied().chain(z.iter().map(|v| v * u)).collect();
            let y = standardise(*y, (spec.lo, spec.hi));
            direct.add(&x, y).unwrap();
            rows.push((*t, x, y));
        }
    }
    let beta = direct.fit(1e-6).unwrap().beta;
    // Equal up to the fixed-point rounding of each row's products (about 2·10⁻⁶ of the
    // range each): expected scores to 10⁻³ points; the coefficients to 10⁻², as five intake
    // values make 1, s and s² nearly collinear, which rounding moves along.
    for (a, b) in model.coefficients.iter().zip(&beta) {
        assert!((a - b).abs() < 1e-2, "{a} vs {b}");
    }
    let (c, h) = centre_half((spec.lo, spec.hi));
    for (t, x, _) in rows.iter().take(500) {
        let direct: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
        let z = &x[..MODEL_TERMS];
        let ours: f64 = (0..MODEL_TERMS)
            .map(|k| {
                z[k] * (model.coefficients[k]
                    + time_term(*t as usize) * model.coefficients[MODEL_TERMS + k])
            })
            .sum();
        assert!(
            (h * (ours - direct)).abs() < 1e-3,
            "session {t}: {ours} vs {direct}"
        );
        assert!(((c + h * ours).clamp(0.0, 27.0) - (c + h * direct).clamp(0.0, 27.0)).abs() < 1e-3);
    }
    // Sums of integers are exact: clinics' vectors add up to the pooled vector, bit for bit,
    // so a network's model is the pooled model of the same encoding.
    let (a, rest) = data.split_at(150);
    let mut sum = b.encode(a).unwrap();
    for (s, v) in sum.iter_mut().zip(b.encode(rest).unwrap()) {
        *s += v;
    }
    assert_eq!(sum, values);
    assert!((model.observations - rows.len() as f64).abs() < 1e-5 * rows.len() as f64);
    // Planted: y = pre − 4 ln t + spread (rounded); the mean spread is 0.
    for pre in [12.0, 14.0, 16.0] {
        for t in [2u32, 6, 16] {
            let e = model.expected(pre, t).unwrap();
            let truth = pre - 4.0 * f64::from(t).ln();
            assert!((e - truth).abs() < 0.35, "pre {pre}, t {t}: {e} vs {truth}");
        }
    }
    for t in 2..=SESSIONS as u32 {
        let res: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == t)
            .map(|(_, x, y)| {
                let fit: f64 = x.iter().zip(&beta).map(|(a, b)| a * b).sum();
                (c + h * y) - (c + h * fit)
            })
            .collect();
        let sd = (res.iter().map(|r| r * r).sum::<f64>() / res.len() as f64).sqrt();
        let got = model.residual_sd(t).unwrap();
        assert!((got - sd).abs() < 1e-3, "session {t}: {got} vs {sd}");
        // The spread is ±2 points (SD √2) plus rounding.
        assert!((1.2..1.7).contains(&got), "session {t}: {got}");
        let boundary = model.boundary(14.0, t, 1.28).unwrap();
        assert!((boundary - (model.expected(14.0, t).unwrap() + 1.28 * got)).abs() < 1e-9);
    }
}

/// The noise SD a release gives a percentile (parametric bootstrap) is the spread the
/// percentile actually has across independently noised releases of the same data.
#[test]
fn percentile_noise_sds_match_the_spread_of_noised_releases() {
    let b = TrajectoriesLayout::new(vec![phq9_spec()], 1).unwrap();
    let values = b.encode(&cohort(400, 15.0, 3.0, 4)).unwrap();
    let rho = 0.5;
    let m = Mechanism::central(b.layout().sensitivity().patient, rho).unwrap();
    let band = phq9_spec().band(15.0);
    let medians: Vec<(f64, f64)> = (0..200)
        .map(|_| {
            let mut v = values.clone();
            let noise = m.noise(v.len()).unwrap();
            Mechanism::apply(&mut v, &noise).unwrap();
            let s = &b.summarise(&v, m.total_sigma).unwrap()[0];
            let p = s.curves[band].at(2).unwrap();
            (p.percentiles.unwrap()[2], p.noise_sd.unwrap()[2])
        })
        .collect();
    let mean = medians.iter().map(|m| m.0).sum::<f64>() / medians.len() as f64;
    let spread = (medians.iter().map(|m| (m.0 - mean).powi(2)).sum::<f64>()
        / (medians.len() - 1) as f64)
        .sqrt();
    let claimed = medians.iter().map(|m| m.1).sum::<f64>() / medians.len() as f64;
    assert!(spread > 0.0);
    assert!(
        (0.6..1.6).contains(&(claimed / spread)),
        "claimed {claimed} vs actual {spread}"
    );
}

#[test]
fn score_bins_follow_the_instrument() {
    let b = |lo, hi| {
        let b = score_bins(lo, hi);
        (b.start, b.width, b.n)
    };
    assert_eq!(b(0.0, 27.0), (-0.5, 2.0, 14)); // PHQ-9
    assert_eq!(b(0.0, 21.0), (-0.5, 2.0, 11)); // GAD-7
    assert_eq!(b(0.0, 40.0), (-0.5, 3.0, 14)); // CORE-10
    assert_eq!(b(0.0, 10.0), (-0.5, 1.0, 11));
    let z = score_bins(-2.0, 3.5);
    assert_eq!((z.start, z.n), (-2.0, MAX_SCORE_BINS));
    assert!(TrajectoriesLayout::new(two_domains(), 0).is_err());
}

/// Gaussian noise of SD `sd` (encoded units) on every entry, from a seeded stream: the
/// post-processing under test sees only values and σ, so the draws need not be OpenDP's, and
/// seeded draws make the test's outcome fixed.
pub(crate) fn seeded_noise(values: &[i64], sd: f64, seed: u64) -> Vec<i64> {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut u = || ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    values
        .iter()
        .map(|v| {
            let (a, b) = (u(), u());
            let z = (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos();
            v + (sd * z).round() as i64
        })
        .collect()
}

/// Noise alone releases nothing: a domain no patient scored on, noised as a release at
/// ρ = 0.25 is (20 draws), has counts that scatter around 0 (not the positive half of every
/// bin's noise summed: before the fix every stratum showed 60+ patients and released medians
/// of noise), no released point and no model band; the 12 patients of the PHQ-9 20+ band are
/// withheld too.
#[test]
fn noise_alone_releases_no_curve() {
    let b = TrajectoriesLayout::new(two_domains(), 1).unwrap();
    let values = b.encode(&cohort(60, 16.0, 3.0, 8)).unwrap();
    let sigma = Mechanism::central(b.layout().sensitivity().patient, 0.25)
        .unwrap()
        .total_sigma;
    let severe = phq9_spec().band(20.0);
    let mut counts = Vec::new();
    for seed in 0..20 {
        let s = b
            .summarise(&seeded_noise(&values, sigma, seed), sigma)
            .unwrap();
        assert!(
            s[0].curves[severe]
                .points
                .iter()
                .all(|p| p.percentiles.is_none()),
            "seed {seed}"
        );
        let empty = &s[1];
        assert!(
            empty
                .curves
                .iter()
                .all(|c| c.points.iter().all(|p| p.percentiles.is_none())),
            "seed {seed}"
        );
        if let Some(model) = &empty.model {
            assert!(model.bands(16.0).is_empty(), "seed {seed}");
        }
        counts.extend(
            empty
                .curves
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.count)),
        );
    }
    // Counts of the empty domain are its noise clamped at 0: mean about 0.4 noise SDs of a
    // count, far below what clamping every bin first gave (≈ 14 × 0.4 SDs of a bin).
    let per_bin = sigma / b.layout().block("other.scores_s1").unwrap().scale();
    let mean = counts.iter().sum::<f64>() / counts.len() as f64;
    let bins = b.bins(1).n as f64;
    assert!(
        mean < 0.8 * per_bin * bins.sqrt(),
        "mean {mean}, per bin {per_bin}"
    );
}
