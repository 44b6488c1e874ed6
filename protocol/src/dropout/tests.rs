use proptest::prelude::*;

use super::*;
use crate::benchmark::tests::{each_patient_within_sensitivity, phq9_spec};

prop_compose! {
    fn contribution()(
        patient in 0u64..8,
        domain in 0usize..2,
        features in prop::collection::vec(-50.0f64..50.0, FEATURES.len()),
        dropout in prop::option::of(any::<bool>()),
    ) -> Contribution {
        Contribution {
            patient, therapist: None, domain, pre: features[1], post: 0.0, finished: true,
            caseness: None, reliable: None, features, residual: None, sessions: Vec::new(),
            dropout,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// P2 for an iteration's vector: at any coefficients, removing one patient (every episode,
    /// features far outside their bounds included) never moves it by more than the declared
    /// sensitivity, block by block and entry by entry.
    #[test]
    fn one_patient_moves_an_iteration_at_most_the_sensitivity(
        k in 1u32..3,
        model in prop::collection::vec(-MAX_COEFFICIENT..MAX_COEFFICIENT, FEATURES.len()),
        contributions in prop::collection::vec(contribution(), 1..30),
    ) {
        let b = DropoutLayout::new(phq9_spec(), k, model).unwrap();
        let within =
            each_patient_within_sensitivity(b.layout(), k, &contributions, |c| b.encode(c).unwrap());
        prop_assert!(within.is_ok(), "{within:?}");
    }
}

/// A deterministic cohort: every feature varies (the binary ones by bits of a hash); dropout
/// is drawn (a fixed hash as the
/// uniform) from a planted logistic model on the standardised features.
fn cohort(n: u64, planted: &[f64]) -> Vec<Contribution> {
    let spec = phq9_spec();
    (0..n)
        .map(|i| {
            let mut features = vec![0.0; FEATURES.len()];
            features[0] = 1.0;
            features[1] = (i * 7 % 28) as f64;
            features[2] = ((i * 13) % 9) as f64 / 2.0 - 2.0;
            let bit = |k: u32| ((i.wrapping_mul(2_654_435_761) >> (3 + k)) & 1) as f64;
            for (k, slot) in [3, 4, 5, 6, 7, 9, 11].into_iter().enumerate() {
                features[slot] = bit(k as u32);
            }
            features[8] = (i % 4) as f64;
            features[10] = ((i * 5) % 9) as f64 / 2.0 - 2.0;
            let p = risk(planted, spec.lo, spec.hi, &features).unwrap();
            let u = (i.wrapping_mul(2_654_435_761) % 1_000_003) as f64 / 1_000_003.0;
            Contribution {
                patient: i,
                therapist: None,
                domain: 0,
                pre: features[1],
                post: 0.0,
                finished: true,
                caseness: None,
                reliable: None,
                features,
                residual: None,
                sessions: Vec::new(),
                dropout: Some(u < p),
            }
        })
        .collect()
}

/// The pooled (ridge-penalised, as the layout's) maximum-likelihood fit, directly: Newton on
/// the standardised rows in f64.
fn pooled_fit(data: &[Contribution]) -> Vec<f64> {
    let spec = phq9_spec();
    let p = FEATURES.len();
    let rows: Vec<(Vec<f64>, f64)> = data
        .iter()
        .map(|c| {
            (
                standardised(spec.lo, spec.hi, &c.features),
                f64::from(u8::from(c.dropout.unwrap())),
            )
        })
        .collect();
    let mut beta = vec![0.0; p];
    for _ in 0..100 {
        let mut h = nalgebra::DMatrix::<f64>::zeros(p, p);
        let mut g = nalgebra::DVector::<f64>::zeros(p);
        for (x, y) in &rows {
            let q = logistic(x.iter().zip(&beta).map(|(a, b)| a * b).sum());
            for a in 0..p {
                g[a] += (y - q) * x[a];
                for b in 0..p {
                    h[(a, b)] += q * (1.0 - q) * x[a] * x[b];
                }
            }
        }
        // The layout's ridge of an exact sum (features always 0 here are held at 0).
        let ridge = MIN_RIDGE_PER_EPISODE * rows.len() as f64;
        for a in 0..p {
            h[(a, a)] += ridge;
            g[a] -= ridge * beta[a];
        }
        let step = h.cholesky().unwrap().solve(&g);
        let step: Vec<f64> = step.iter().copied().collect();
        beta = damped(&beta, &step);
        if step.iter().all(|s| s.abs() < 1e-12) {
            break;
        }
    }
    beta
}

/// Runs the training as a network would with noise off: `clinics` sum their encoded vectors
/// at each iteration's coefficients, the step is taken from the sum. Returns the steps.
fn train(clinics: &[&[Contribution]], iterations: u32) -> Vec<Step> {
    let mut model = vec![0.0; FEATURES.len()];
    let mut steps = Vec::new();
    for _ in 0..iterations {
        let layout = DropoutLayout::new(phq9_spec(), 1, model.clone()).unwrap();
        let mut sum = vec![0i64; layout.layout().len()];
        for c in clinics {
            for (s, v) in sum.iter_mut().zip(layout.encode(c).unwrap()) {
                *s += v;
            }
        }
        let step = layout.step(&sum, 0.0).unwrap();
        model = step.model.clone();
        let done = step.converged;
        steps.push(step);
        if done {
            break;
        }
    }
    steps
}

/// With exact sums, Newton steps over summed clinic vectors reach the pooled maximum-
/// likelihood fit (its risks to 10⁻⁶; the clinics' fixed-point rounding is all that differs),
/// converge within a few iterations, recover the planted model, and report the counts and the Brier
/// score of the data.
#[test]
fn exact_training_is_the_pooled_fit() {
    let mut planted = vec![0.0; FEATURES.len()];
    planted[0] = -0.9; // about 30 % drop out
    planted[1] = 0.8; // more severe, more dropout
    planted[2] = -0.6; // older, less
    planted[9] = 0.0;
    let data = cohort(6000, &planted);
    let (a, rest) = data.split_at(2500);
    let (b, c) = rest.split_at(2000);
    let steps = train(&[a, b, c], MAX_ITERATIONS);
    let last = steps.last().unwrap();
    assert!(last.converged, "{} iterations: {last:?}", steps.len());
    assert!(steps.len() <= 8, "{} iterations", steps.len());
    let pooled = pooled_fit(&data);
    // Every episode's predicted risk is the pooled fit's to 10⁻⁶; each coefficient within
    // three of its reported SD (for an exact sum, the clinics' fixed-point rounding: ±1.3·10⁻⁷
    // per episode and entry, which the near-collinear intercept, intake and comorbidity
    // columns, standardised to their bounds, amplify to about 10⁻³; the rest agree to 10⁻⁷).
    let spec = phq9_spec();
    for c in &data {
        let ours = risk(&last.model, spec.lo, spec.hi, &c.features).unwrap();
        let theirs = risk(&pooled, spec.lo, spec.hi, &c.features).unwrap();
        assert!((ours - theirs).abs() < 1e-6, "{ours} vs {theirs}");
    }
    for (k, (got, want)) in last.model.iter().zip(&pooled).enumerate() {
        let sd = last.noise_sd[k];
        assert!(sd < 3e-3, "coefficient {k}: rounding SD {sd}");
        assert!(
            (got - want).abs() < 3.0 * sd + 1e-6,
            "coefficient {k}: {got} vs {want} (SD {sd})"
        );
    }
    // Intake and age are well identified; the intercept trades off with the comorbidity
    // column (both nearly constant once standardised), so their sum is what the data fix: the
    // mean predicted risk is the observed dropout rate (the logistic score equation).
    let mean_risk = data
        .iter()
        .map(|c| risk(&last.model, spec.lo, spec.hi, &c.features).unwrap())
        .sum::<f64>()
        / data.len() as f64;
    let rate = data.iter().filter(|c| c.dropout == Some(true)).count() as f64 / data.len() as f64;
    assert!((mean_risk - rate).abs() < 1e-4, "{mean_risk} vs {rate}");
    for k in [1, 2] {
        assert!(
            (last.model[k] - planted[k]).abs() < 0.25,
            "coefficient {k}: {} vs planted {}",
            last.model[k],
            planted[k]
        );
    }
    let dropouts = data.iter().filter(|c| c.dropout == Some(true)).count() as f64;
    assert!((last.episodes - 6000.0).abs() < 1e-3, "{}", last.episodes);
    assert!((last.dropouts - dropouts).abs() < 1e-3);
    assert!((0.2..0.4).contains(&(dropouts / 6000.0)), "{dropouts}");
    // The Brier score at the last iteration's coefficients (the step before's), directly.
    let spec = phq9_spec();
    let model = &steps[steps.len() - 2].model;
    let brier: f64 = data
        .iter()
        .map(|c| {
            let q = risk(model, spec.lo, spec.hi, &c.features).unwrap();
            (f64::from(u8::from(c.dropout.unwrap())) - q).powi(2)
        })
        .sum::<f64>()
        / 6000.0;
    assert!(
        (last.brier.unwrap() - brier).abs() < 1e-6,
        "{:?} vs {brier}",
        last.brier
    );
}

/// A step never moves a coefficient by more than MAX_STEP: nearly separable data would send
/// the first Newton step from β = 0 far out.
#[test]
fn steps_are_damped() {
    let mut planted = vec![0.0; FEATURES.len()];
    planted[1] = 30.0;
    let data = cohort(2000, &planted);
    let steps = train(&[&data], 3);
    let mut before = vec![0.0; FEATURES.len()];
    for s in &steps {
        for (a, b) in s.model.iter().zip(&before) {
            assert!((a - b).abs() <= MAX_STEP + 1e-12, "{a} from {b}");
        }
        before = s.model.clone();
    }
    assert!(
        steps[0].change > MAX_STEP - 1e-9,
        "the first step was damped"
    );
}

/// Episodes without a known dropout, of other domains, and beyond a patient's cap are not
/// summed; a malformed model is refused.
#[test]
fn what_is_summed_and_what_is_refused() {
    let layout = DropoutLayout::new(phq9_spec(), 1, vec![0.0; FEATURES.len()]).unwrap();
    let mut data = cohort(10, &vec![0.0; FEATURES.len()]);
    data[1].dropout = None;
    data[2].domain = 1;
    data[3].patient = data[4].patient;
    let step = layout.step(&layout.encode(&data).unwrap(), 0.0).unwrap();
    assert!((step.episodes - 7.0).abs() < 1e-5, "{}", step.episodes);
    for bad in [
        vec![0.0; 3],
        vec![f64::NAN; FEATURES.len()],
        vec![MAX_COEFFICIENT + 1.0; FEATURES.len()],
    ] {
        assert!(DropoutLayout::new(phq9_spec(), 1, bad).is_err());
    }
}

/// The noise SD a step reports is the spread its coefficients have across independently
/// noised releases of the same data (seeded noise of the release's σ).
#[test]
fn step_noise_sds_match_the_spread_of_noised_releases() {
    let mut planted = vec![0.0; FEATURES.len()];
    planted[0] = -0.9;
    planted[1] = 0.8;
    let data = cohort(20_000, &planted);
    let layout = DropoutLayout::new(phq9_spec(), 1, vec![0.0; FEATURES.len()]).unwrap();
    let values = layout.encode(&data).unwrap();
    let sigma = dp::Mechanism::central(layout.layout().sensitivity().patient, 0.25)
        .unwrap()
        .total_sigma;
    let reported = layout.step(&values, sigma).unwrap().noise_sd;
    let mut draws: Vec<Vec<f64>> = Vec::new();
    for seed in 0..200u64 {
        let noisy = crate::trajectories::tests::seeded_noise(&values, sigma, seed);
        draws.push(layout.step(&noisy, sigma).unwrap().model);
    }
    for k in [0, 1] {
        let v: Vec<f64> = draws.iter().map(|d| d[k]).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        assert!(
            (0.6..1.6).contains(&(reported[k] / sd)),
            "coefficient {k}: reported {} vs spread {sd}",
            reported[k]
        );
    }
}

/// A clinic's check of a model: hand-computed figures of four episodes, and its own
/// cross-validated fit on a planted cohort ranks held-out episodes well (the planted model's
/// own AUC on them is the ceiling) while the in-sample fit of the same data does no worse.
#[test]
fn a_clinic_checks_a_model_on_its_own_episodes() {
    let c = Check::of(&[(0.9, true), (0.2, false), (0.6, false), (0.4, true)]);
    assert_eq!((c.episodes, c.dropouts), (4, 2));
    // Pairs (dropout, completion) ranked right: (0.9, 0.2), (0.9, 0.6), (0.4, 0.2); wrong:
    // (0.4, 0.6).
    assert!((c.auc.unwrap() - 0.75).abs() < 1e-12);
    let brier = (0.01 + 0.04 + 0.36 + 0.36) / 4.0;
    assert!((c.brier.unwrap() - brier).abs() < 1e-12);
    assert!((c.mean_risk.unwrap() - 0.525).abs() < 1e-12);

    let mut planted = vec![0.0; FEATURES.len()];
    planted[0] = -0.9;
    planted[1] = 1.2;
    planted[2] = -0.8;
    let data = cohort(1500, &planted);
    let spec = phq9_spec();
    let held_out = Check::of(&cross_validated(&spec, &data).unwrap());
    assert_eq!(held_out.episodes, 1500);
    let truth: Vec<(f64, bool)> = data
        .iter()
        .map(|c| {
            (
                risk(&planted, spec.lo, spec.hi, &c.features).unwrap(),
                c.dropout.unwrap(),
            )
        })
        .collect();
    let ceiling = Check::of(&truth).auc.unwrap();
    let model = fit(&spec, &data).unwrap();
    let in_sample: Vec<(f64, bool)> = data
        .iter()
        .map(|c| {
            (
                risk(&model, spec.lo, spec.hi, &c.features).unwrap(),
                c.dropout.unwrap(),
            )
        })
        .collect();
    let auc = held_out.auc.unwrap();
    assert!(
        auc > ceiling - 0.05 && auc > 0.6,
        "held out {auc}, planted {ceiling}"
    );
    assert!(Check::of(&in_sample).auc.unwrap() >= auc - 0.01);
    let rate = held_out.dropouts as f64 / 1500.0;
    assert!((held_out.mean_risk.unwrap() - rate).abs() < 0.02);
}
