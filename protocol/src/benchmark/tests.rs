use proptest::prelude::*;

use super::*;
use crate::instrument::{builtin_domains, builtin_instruments};
use crate::risk::SuffStats;
use crate::therapist::variance_components;

pub(crate) fn phq9_spec() -> DomainSpec {
    let inst = builtin_instruments()
        .into_iter()
        .find(|i| i.id == "PHQ-9")
        .unwrap();
    let domain = builtin_domains()
        .into_iter()
        .find(|d| d.instrument_id == "PHQ-9")
        .unwrap();
    DomainSpec::new(&domain, &inst)
}

pub(crate) fn two_domains() -> Vec<DomainSpec> {
    let mut b = phq9_spec();
    b.id = "other".into();
    b.hi = 21.0;
    vec![phq9_spec(), b]
}

pub(crate) fn distance(a: &[i64], b: &[i64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x as f64) - (*y as f64)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Whether `without` (a layout's vector with one patient removed) lies within the layout's
/// sensitivity of `full`: overall, per block and per entry (a patient contributing at most `k`
/// episodes); the first violation otherwise.
pub(crate) fn within_sensitivity(
    layout: &dp::Layout,
    k: u32,
    full: &[i64],
    without: &[i64],
) -> Result<(), String> {
    let d = distance(full, without);
    if d > layout.sensitivity().patient {
        return Err(format!(
            "moved {d}, sensitivity {}",
            layout.sensitivity().patient
        ));
    }
    for bl in layout.blocks() {
        let r = bl.offset()..bl.offset() + bl.len();
        let d = distance(&full[r.clone()], &without[r]);
        if d > bl.patient_bound() {
            return Err(format!("{}: {d}", bl.name()));
        }
        let bounds = bl.patient_entry_bounds(k).map_err(|e| e.to_string())?;
        for i in 0..bl.len() {
            let moved = (full[bl.offset() + i] - without[bl.offset() + i]).unsigned_abs();
            if moved > bounds[i % bl.width()] {
                return Err(format!("{}[{i}]: {moved}", bl.name()));
            }
        }
    }
    Ok(())
}

/// [`within_sensitivity`] for each of patients 0–7 left out of `contributions` in turn, the
/// vectors encoded by `encode` under `layout`; the first violation, with its patient.
pub(crate) fn each_patient_within_sensitivity(
    layout: &dp::Layout,
    k: u32,
    contributions: &[Contribution],
    encode: impl Fn(&[Contribution]) -> Vec<i64>,
) -> Result<(), String> {
    let full = encode(contributions);
    for p in 0..8 {
        let rest: Vec<Contribution> = contributions
            .iter()
            .filter(|c| c.patient != p)
            .cloned()
            .collect();
        within_sensitivity(layout, k, &full, &encode(&rest))
            .map_err(|e| format!("patient {p}: {e}"))?;
    }
    Ok(())
}

prop_compose! {
    fn contribution()(
        patient in 0u64..8,
        therapist in 0u64..3,
        domain in 0usize..2,
        pre in -5.0f64..35.0,
        post in -5.0f64..35.0,
        finished in any::<bool>(),
        caseness in prop::option::of((any::<bool>(), any::<bool>())),
        reliable in prop::option::of((any::<bool>(), any::<bool>())),
        features in prop::collection::vec(-50.0f64..50.0, FEATURES.len()),
        residual in prop::option::of(-60.0f64..60.0),
        sessions in prop::collection::vec((0u32..15, -5.0f64..35.0), 0..6),
    ) -> Contribution {
        Contribution { patient, therapist: Some(therapist), domain, pre, post, finished, caseness, reliable, features, residual, sessions, dropout: None }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// P2 for the whole benchmark vector: removing one patient (every episode, every domain)
    /// never moves it by more than the declared sensitivity, with caseload caps small enough
    /// that episodes displace each other in the `anova` block.
    #[test]
    fn one_patient_moves_the_benchmark_at_most_the_sensitivity(
        k in 1u32..3,
        cap in 1u32..4,
        contributions in prop::collection::vec(contribution(), 1..40),
    ) {
        let b = BenchmarkLayout::new(two_domains(), Params { max_episodes: k, caseload_cap: cap }).unwrap();
        // Overall, block by block (slack in one block cannot hide an excess in another) and
        // entry by entry (the declared bounds themselves).
        let within =
            each_patient_within_sensitivity(b.layout(), k, &contributions, |c| b.encode(c).unwrap());
        prop_assert!(within.is_ok(), "{within:?}");
    }

    /// P3: changing one therapist's whole caseload's outcomes (every residual, anywhere in the
    /// clipping range) moves the `anova` blocks (the therapist quantities) by at most the
    /// therapist-level sensitivity.
    #[test]
    fn one_therapists_outcomes_move_the_anova_blocks_at_most_the_therapist_sensitivity(
        cap in 1u32..5,
        contributions in prop::collection::vec(contribution(), 1..40),
        replacement in prop::collection::vec(-60.0f64..60.0, 40),
    ) {
        let b = BenchmarkLayout::new(two_domains(), Params { max_episodes: 2, caseload_cap: cap }).unwrap();
        let anova = |v: &[i64]| -> Vec<i64> {
            b.layout().blocks().iter().filter(|bl| bl.name().contains(".anova"))
                .flat_map(|bl| v[bl.offset()..bl.offset() + bl.len()].to_vec()).collect()
        };
        let full = anova(&b.encode(&contributions).unwrap());
        let delta = b.layout().sensitivity().therapist.unwrap();
        for t in 0..3 {
            let changed: Vec<Contribution> = contributions
                .iter()
                .zip(&replacement)
                .map(|(c, r)| {
                    let mut c = c.clone();
                    if c.therapist == Some(t) && c.residual.is_some() {
                        c.residual = Some(*r);
                    }
                    c
                })
                .collect();
            let d = distance(&full, &anova(&b.encode(&changed).unwrap()));
            prop_assert!(d <= delta, "therapist {t}: {d} > {delta}");
        }
    }
}

/// A small hand-made clinic on one domain.
fn clinic() -> Vec<Contribution> {
    let mut out = Vec::new();
    for i in 0..60u64 {
        let pre = 10.0 + (i % 15) as f64;
        let post = (pre - 3.0 - (i % 7) as f64).max(0.0);
        let mut features = vec![0.0; FEATURES.len()];
        features[0] = 1.0;
        features[1] = pre;
        features[2] = ((i % 5) as f64 - 2.0) / 2.0;
        features[3] = (i % 2) as f64;
        out.push(Contribution {
            patient: i,
            therapist: Some(i % 4),
            domain: 0,
            pre,
            post,
            finished: i % 10 != 0,
            caseness: Some((pre >= 10.0, post >= 10.0)),
            reliable: Some((pre - post >= 6.0, post - pre >= 6.0)),
            features,
            residual: Some((i % 9) as f64 - 4.0 + (i % 4) as f64),
            sessions: vec![(1, pre), (2, (pre + post) / 2.0), (3, post)],
            dropout: None,
        });
    }
    out
}

#[test]
fn episodes_without_a_recorded_therapist_are_in_the_counts_and_not_the_anova_blocks() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let known = clinic();
    let mut all = known.clone();
    all.extend(clinic().into_iter().map(|c| Contribution {
        patient: c.patient + 1000,
        therapist: None,
        ..c
    }));
    let (k, a) = (b.encode(&known).unwrap(), b.encode(&all).unwrap());
    for block in b.layout().blocks() {
        let (k, a) = (
            &k[block.offset()..block.offset() + block.len()],
            &a[block.offset()..block.offset() + block.len()],
        );
        if block.name().contains(".anova") {
            assert_eq!(k, a, "{}", block.name());
        } else if block.name().contains("outcomes") {
            assert_ne!(k, a, "{}", block.name());
        }
    }
    let (s, t) = (
        &b.summarise(&k, 0.0).unwrap()[0],
        &b.summarise(&a, 0.0).unwrap()[0],
    );
    assert!((s.episodes - 60.0).abs() < 1e-4 && (t.episodes - 120.0).abs() < 1e-4);
}

#[test]
fn exact_sums_decode_to_the_local_statistics() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let data = clinic();
    let values = b.encode(&data).unwrap();
    let s = &b.summarise(&values, 0.0).unwrap()[0];
    let finished: Vec<&Contribution> = data.iter().filter(|c| c.finished).collect();
    // Fixed-point rounding: at most half a unit per episode and entry.
    let tol = 1e-4;
    assert!((s.episodes - 60.0).abs() < tol);
    assert!((s.finished - finished.len() as f64).abs() < tol);
    let ri = finished.iter().filter(|c| c.reliable.unwrap().0).count() as f64;
    assert!((s.rates.reliable_improvement.unwrap() - ri / finished.len() as f64).abs() < tol);
    let recovered = finished
        .iter()
        .filter(|c| c.caseness.unwrap() == (true, false))
        .count() as f64;
    let at_case = finished.iter().filter(|c| c.caseness.unwrap().0).count() as f64;
    assert!((s.rates.recovery.unwrap() - recovered / at_case).abs() < tol);
    // Unit bins: the histogram mean is the exact mean of integer intake scores.
    let mean_pre = data.iter().map(|c| c.pre).sum::<f64>() / 60.0;
    assert!((s.intake.unwrap().mean - mean_pre).abs() < tol);
    // Risk model: the same as fitting the raw data (ridge only 1e-6 at σ = 0).
    let mut stats = SuffStats::new(FEATURES.len());
    for c in &data {
        stats.add(&c.features, c.post).unwrap();
    }
    // Compared through predictions: unused features make β itself ill-determined, and the
    // solve amplifies fixed-point rounding (≤ ½ unit per episode and entry) by the condition
    // number; on a 0–27 scale a hundredth of a point is far below any DP noise.
    let exact = stats.fit(1e-6).unwrap();
    let released = crate::risk::RiskModel {
        beta: s.risk.clone().unwrap(),
        n: 60,
        residual_sd: 0.0,
    };
    for c in &data {
        let (a, e) = (released.predict(&c.features), exact.predict(&c.features));
        assert!((a - e).abs() < 1e-2, "{a} vs {e}");
    }
    // Variance components: the same as from the therapist groups.
    let mut groups: std::collections::BTreeMap<u64, Group> = Default::default();
    for c in &data {
        groups
            .entry(c.therapist.unwrap())
            .or_default()
            .add(c.residual.unwrap());
    }
    let g: Vec<Group> = groups.into_values().collect();
    let local = variance_components(&g).unwrap();
    let v = s.variance.unwrap();
    assert!((v.tau2 - local.tau2).abs() < 1e-4 && (v.sigma2 - local.sigma2).abs() < 1e-4);
    // Curves: band of intake 10–14 at session 1 is the mean intake of those patients.
    let band = b.domains()[0].band(12.0);
    let in_band: Vec<f64> = data
        .iter()
        .filter(|c| b.domains()[0].band(c.pre) == band)
        .map(|c| c.pre)
        .collect();
    let expected = in_band.iter().sum::<f64>() / in_band.len() as f64;
    assert!((s.curves[band][0].unwrap() - expected).abs() < tol);
    assert!(s.curves[band][5].is_none(), "no data at session 6");
    assert!(s.suppressed.is_empty(), "{:?}", s.suppressed);
}

#[test]
fn a_patients_later_episodes_are_not_counted() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let mut data = clinic();
    let mut again = data[0].clone();
    again.pre = 27.0;
    data.push(again);
    let s = &b.summarise(&b.encode(&data).unwrap(), 0.0).unwrap()[0];
    assert!((s.episodes - 60.0).abs() < 1e-4);
}

#[test]
fn noise_that_dominates_suppresses_figures() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let values = b.encode(&clinic()).unwrap();
    // σ so large that the count of 60 episodes is pure noise.
    let sigma = dp::sigma(b.layout().sensitivity().patient, 1e-4).unwrap();
    let s = &b.summarise(&values, sigma).unwrap()[0];
    assert!(s.rates.recovery.is_none() && s.intake.is_none());
    assert!(s.suppressed.iter().any(|x| x == "recovery"));
}

#[test]
fn noise_replicates_of_the_risk_model_follow_the_noise() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let values = b.encode(&clinic()).unwrap();
    // No noise: every replicate is the estimate.
    let exact = &b.summarise(&values, 0.0).unwrap()[0];
    assert_eq!(exact.risk_replicates.len(), BOOTSTRAP);
    assert!(exact.risk_sd.as_ref().unwrap().iter().all(|sd| *sd < 1e-9));
    // With noise: a positive spread, growing with the noise (intake slope).
    let scale = b.layout().block("depression.risk").unwrap().scale();
    let sd = |k: f64| {
        b.summarise(&values, k * scale).unwrap()[0]
            .risk_sd
            .clone()
            .unwrap()[1]
    };
    let (small, large) = (sd(0.05), sd(5.0));
    assert!(small > 0.0 && large > 10.0 * small, "{small} vs {large}");
    // Reproducible: the replicates are seeded by the released sums.
    assert_eq!(
        b.summarise(&values, scale).unwrap()[0].risk_replicates,
        b.summarise(&values, scale).unwrap()[0].risk_replicates
    );
    assert_eq!(
        robust_spread(&[1.0], &[vec![2.0], vec![0.0], vec![1.5]]),
        vec![1.4826]
    );
}

#[test]
fn a_released_tau2_is_used_only_when_precise() {
    // Noise SD at most half of max(τ², σ²/10).
    assert!(tau2_usable(4.0, 30.0, 1.9));
    assert!(!tau2_usable(4.0, 30.0, 2.1));
    assert!(tau2_usable(0.0, 30.0, 1.4));
    assert!(!tau2_usable(0.0, 30.0, 1.6));
}

#[test]
fn bands_and_bins_follow_the_instrument() {
    let spec = phq9_spec();
    assert_eq!((spec.lo, spec.hi), (0.0, 27.0));
    assert_eq!(spec.band(0.0), 0);
    assert_eq!(spec.band(27.0), spec.bands.len() - 1);
    let b = BenchmarkLayout::new(vec![spec], Params::default()).unwrap();
    let (intake, change) = b.bins(0);
    assert_eq!(
        (intake.n, intake.index(0.0), intake.index(27.0)),
        (28, 0, 27)
    );
    assert_eq!(
        (change.n, change.index(-27.0), change.index(0.0)),
        (55, 0, 27)
    );
    assert_eq!(b.layout().blocks().len(), BLOCKS.len());
}

/// Issue 13, fix 1: a τ² clamped at 0 (the groups differ less than chance would make them, as
/// with two small clinics) keeps the noise SD of the estimate it was clamped from, instead of
/// "noise SD 0" that made clinics adopt it as exact (nodes also never adopt a τ² of 0:
/// `node::benchmark::reference`).
#[test]
fn a_tau2_clamped_at_zero_keeps_its_noise_sd() {
    use crate::therapist::{AnovaSums, Group, tau2_unclamped};
    // 10 therapists × 20 patients with residuals ±3, every therapist the same mean: MSB = 0.
    let groups: Vec<Group> = (0..10)
        .map(|_| {
            let mut g = Group::default();
            for i in 0..20 {
                g.add(if i % 2 == 0 { 3.0 } else { -3.0 });
            }
            g
        })
        .collect();
    let sums = AnovaSums::of(&groups);
    assert!(tau2_unclamped(sums).unwrap() < 0.0);
    // Noise of SD 2 on each sum (the count of therapists rounds back): small, not nothing.
    let (_, small) = summary::noisy_variance(sums.to_array(), [2.0, 2.0, 2.0, 2.0, 0.4, 2.0]);
    assert!(
        small.unwrap() > 0.01,
        "a clamped τ² reported noise SD {small:?}"
    );
    // Noise of SD 100 on the sums (a release of two small clinics): the clamped τ² says so.
    let sd = [5.0, 100.0, 100.0, 100.0, 0.4, 100.0];
    let (vc, tau2_sd) = summary::noisy_variance(sums.to_array(), sd);
    assert!(tau2_sd.unwrap() > 0.1, "{tau2_sd:?}");
    assert_eq!(vc.map(|v| v.tau2), Some(0.0));
    // The same noise on sums whose τ² is well above it: released, with a comparable SD.
    let spread: Vec<Group> = (0..10)
        .map(|j| {
            let mut g = Group::default();
            for i in 0..20 {
                g.add(if i % 2 == 0 { 3.0 } else { -3.0 } + 2.0 * (j as f64 - 4.5));
            }
            g
        })
        .collect();
    let (vc, sd_spread) = summary::noisy_variance(AnovaSums::of(&spread).to_array(), sd);
    assert!(vc.is_some_and(|v| v.tau2 > 5.0), "{vc:?}");
    assert!(sd_spread.unwrap() > 0.01);
}

/// Issue 13, fix 13: at the demo's scale (five clinics, ρ = 0.25, a band with 1,500 patients a
/// session) the expected curve of the band shows, each point within a few noise SDs of the
/// band's mean score, while a band of 40 patients stays suppressed. In layout 2 the counts
/// carried the score sums' noise (±700 patients a cell here) and every point was suppressed.
#[test]
fn expected_curves_show_at_the_demos_scale() {
    let b = BenchmarkLayout::new(vec![phq9_spec()], Params::default()).unwrap();
    let spec = &b.domains()[0];
    let score = |i: u64, s: u32, pre: f64| pre - 0.6 * f64::from(s) + (i % 5) as f64 - 2.0;
    let data: Vec<Contribution> = (0..1540u64)
        .map(|i| {
            let pre = if i < 1500 { 18.0 } else { 3.0 };
            Contribution {
                patient: i,
                therapist: Some(i % 30),
                domain: 0,
                pre,
                post: score(i, 12, pre),
                finished: true,
                caseness: None,
                reliable: None,
                features: vec![0.0; FEATURES.len()],
                residual: None,
                sessions: (1..=12).map(|s| (s, score(i, s, pre))).collect(),
                dropout: None,
            }
        })
        .collect();
    let mut values = b.encode(&data).unwrap();
    let mechanism = dp::Mechanism::distributed(b.layout().sensitivity().patient, 0.25, 4).unwrap();
    for _ in 0..5 {
        let noise = mechanism.noise(values.len()).unwrap();
        dp::Mechanism::apply(&mut values, &noise).unwrap();
    }
    let sigma = mechanism.sigma_of_sum(5);
    let s = &b.summarise(&values, sigma).unwrap()[0];
    let (busy, quiet) = (spec.band(18.0), spec.band(3.0));
    assert_ne!(busy, quiet);
    let scale = |block: &str| b.layout().block(block).unwrap().scale();
    let (sum_sd, count_sd) = (
        sigma / scale("depression.curve_sums"),
        sigma / scale("depression.curve_counts"),
    );
    for session in 1..=12u32 {
        let truth = (0..1500).map(|i| score(i, session, 18.0)).sum::<f64>() / 1500.0;
        let sd = sum_sd.hypot(truth * count_sd) / 1500.0;
        let shown = s.curves[busy][session as usize - 1]
            .unwrap_or_else(|| panic!("session {session} suppressed (point SD {sd:.2})"));
        assert!(
            (shown - truth).abs() < 5.0 * sd,
            "session {session}: {shown} vs {truth}"
        );
    }
    assert!(
        s.curves[quiet].iter().all(Option::is_none),
        "{:?}",
        s.curves[quiet]
    );
}
