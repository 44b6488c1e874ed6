//! The local effectiveness engine as one pure function: episodes in, outcomes, risk models,
//! therapist × domain track records and rates out (DOMAIN.md §2.5, §6, §7).
//!
//! The node loads [`EpisodeData`] from its store and stores what [`analyse`] returns; tests
//! feed it synthetic episodes directly.

use crate::instrument::{Direction, Domain, Instrument, ScoreTransform};
use crate::outcome::{self, EpisodeMetrics, IaptRules, MeasureOutcome};
use crate::risk::{RiskModel, SuffStats};
use crate::therapist::{self, Group, Minimums, Rule, TrackRecord, VarianceComponents};

/// Version of the derivation; stored with every derived row.
pub const ALGORITHM_VERSION: u32 = 1;

/// Intake case mix; `None` = not recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Covariates {
    /// Age in years.
    pub age: Option<f64>,
    /// Female (sex recorded as female).
    pub female: Option<bool>,
    /// Previous psychological treatment.
    pub prior_treatment: Option<bool>,
    /// On psychotropic medication.
    pub psychotropic_med: Option<bool>,
    /// Long-term physical condition.
    pub long_term_condition: Option<bool>,
    /// Disability.
    pub disability: Option<bool>,
    /// Number of comorbid problems.
    pub comorbidity_count: Option<f64>,
    /// Unemployed.
    pub unemployed: Option<bool>,
    /// Work and Social Adjustment Scale total.
    pub wsas: Option<f64>,
}

/// A released risk model replaces a clinic's own only when release noise moves its predicted
/// end scores by at most this many points (RMS over the clinic's episodes, typical replicate).
pub const REFERENCE_MAX_PREDICTION_SD: f64 = 1.0;

/// Names of the risk model's features, in order.
pub const FEATURES: [&str; 12] = [
    "intercept",
    "intake",
    "age_per_decade_from_40",
    "female",
    "prior_treatment",
    "psychotropic_med",
    "long_term_condition",
    "disability",
    "comorbidity_count",
    "unemployed",
    "wsas_per_10_from_20",
    "casemix_missing",
];

impl Covariates {
    /// The feature vector for intake score `pre`: missing values enter as 0 (the centre of
    /// each covariate's scale) and set the `casemix_missing` indicator.
    pub fn features(&self, pre: f64) -> [f64; FEATURES.len()] {
        let b = |v: Option<bool>| v.map(f64::from);
        let values = [
            self.age.map(|a| (a - 40.0) / 10.0),
            b(self.female),
            b(self.prior_treatment),
            b(self.psychotropic_med),
            b(self.long_term_condition),
            b(self.disability),
            self.comorbidity_count,
            b(self.unemployed),
            self.wsas.map(|w| (w - 20.0) / 10.0),
        ];
        let missing = values.iter().any(Option::is_none);
        let mut x = [0.0; FEATURES.len()];
        x[0] = 1.0;
        x[1] = pre;
        for (i, v) in values.iter().enumerate() {
            x[2 + i] = v.unwrap_or(0.0);
        }
        x[FEATURES.len() - 1] = f64::from(missing);
        x
    }
}

/// First and last valid scores of one instrument in an episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Index into the instrument list.
    pub instrument: usize,
    /// First valid score.
    pub pre: f64,
    /// Last valid score.
    pub post: f64,
    /// Number of valid scores.
    pub count: u32,
}

/// One episode as the engine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeData {
    /// Index of the primary therapist (caller's numbering); `None` when the data does not say
    /// who treated the patient: the episode counts for the clinic (rates, the risk model) and
    /// for no therapist (no track record, label or place in the variance components).
    pub therapist: Option<usize>,
    /// Attended treatment sessions.
    pub treatment_sessions: u32,
    /// Intake case mix.
    pub covariates: Covariates,
    /// Per instrument with at least one score.
    pub scores: Vec<Scores>,
}

/// Engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// IAPT rule switches.
    pub iapt: IaptRules,
    /// Labelling rule.
    pub rule: Rule,
    /// Display / classification minimums.
    pub minimums: Minimums,
    /// Clinical margin of the eb-interval rule, in points of the domain's scale (0: none).
    pub margin: f64,
    /// Ridge penalty of the risk model.
    pub ridge: f64,
    /// Instruments (indexes) paired for the IAPT metrics (default: PHQ-9 and GAD-7).
    pub paired: Vec<usize>,
    /// The network reference to benchmark against (risk model, τ², σ² per domain), from a
    /// signed release; `None`: the clinic's own data is its reference.
    pub reference: Option<NetworkReference>,
}

/// Per-domain figures of a network benchmark release that local track records use.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkReference {
    /// The release they come from.
    pub release_id: String,
    /// By domain id.
    pub domains: Vec<(String, DomainReference)>,
}

/// One domain's network reference; a figure the release suppressed is `None`, and the
/// clinic's own estimate is used for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DomainReference {
    /// Risk-model coefficients in [`FEATURES`] order.
    pub beta: Option<Vec<f64>>,
    /// The coefficients refitted under the release's noise (its bootstrap replicates): the
    /// model is used only if they move this clinic's predictions by at most
    /// [`REFERENCE_MAX_PREDICTION_SD`] points.
    pub replicates: Vec<Vec<f64>>,
    /// Between-therapist variance τ², with the 95 % interval its release noise gives.
    pub tau2: Option<(f64, (f64, f64))>,
    /// Within-therapist variance σ².
    pub sigma2: Option<f64>,
}

impl NetworkReference {
    /// The reference of domain `id`.
    pub fn domain(&self, id: &str) -> Option<&DomainReference> {
        self.domains.iter().find(|(d, _)| d == id).map(|(_, r)| r)
    }
}

/// One instrument's outcome in an episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasureResult {
    /// Index into the instrument list.
    pub instrument: usize,
    /// Pre/post outcome.
    pub outcome: MeasureOutcome,
    /// (expected post, residual) in domain-score units, residual negative = better, for the
    /// first domain measured by this instrument, when its risk model exists.
    pub fit: Option<(f64, f64)>,
}

/// Per-episode results.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeResult {
    /// Per instrument with at least two scores.
    pub measures: Vec<MeasureResult>,
    /// NHS TT metrics over the paired instruments.
    pub iapt: Option<EpisodeMetrics>,
    /// Finished course (≥ 2 attended treatment sessions).
    pub finished: bool,
}

/// Counts behind the NHS TT rates, for a therapist or the clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Finished courses with paired measures (denominator of RI and RD).
    pub finished: u64,
    /// Of those, at caseness at the start (denominator of recovery and RR).
    pub at_caseness: u64,
    /// Reliable improvement.
    pub reliable_improvement: u64,
    /// Reliable deterioration.
    pub reliable_deterioration: u64,
    /// Recovery (among those at caseness).
    pub recovered: u64,
    /// Reliable recovery (among those at caseness).
    pub reliable_recovery: u64,
}

impl Rates {
    fn add(&mut self, m: &EpisodeMetrics) {
        self.finished += 1;
        self.reliable_improvement += u64::from(m.reliable_improvement);
        self.reliable_deterioration += u64::from(m.reliable_deterioration);
        if m.caseness_pre {
            self.at_caseness += 1;
            self.recovered += u64::from(m.recovered);
            self.reliable_recovery += u64::from(m.reliable_recovery);
        }
    }
}

/// Results for one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainResult {
    /// Index into the domain list.
    pub domain: usize,
    /// The risk model, if enough episodes.
    pub model: Option<RiskModel>,
    /// Whether `model` is the network reference's (else this clinic's own fit).
    pub network_model: bool,
    /// How far the reference's noise moves this clinic's predictions (points, RMS over its
    /// episodes, typical bootstrap replicate), when a reference model was offered.
    pub reference_prediction_sd: Option<f64>,
    /// Whether τ² and σ² are the network reference's.
    pub network_variance: bool,
    /// Variance components of eligible residuals.
    pub variance: Option<VarianceComponents>,
    /// Track records by therapist index (only those at or above the display minimum).
    pub records: Vec<(usize, TrackRecord)>,
    /// Per-therapist residual sums of eligible episodes (all therapists, for shrinkage and release).
    pub groups: Vec<(usize, Group)>,
    /// Episodes with pre and post on the domain.
    pub episodes: u64,
    /// Of those, elevated at intake (eligible).
    pub eligible: u64,
}

/// Everything the engine computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Per episode, in input order.
    pub episodes: Vec<EpisodeResult>,
    /// Per domain, in input order.
    pub domains: Vec<DomainResult>,
    /// Clinic-level rates.
    pub clinic_rates: Rates,
    /// Per-therapist rates, by therapist index.
    pub therapist_rates: Vec<(usize, Rates)>,
}

/// How far the replicates move predictions on `profiles`: the median over replicates of the
/// RMS over profiles of (replicate − β)·x. `None` without replicates or profiles.
fn prediction_noise(
    beta: &[f64],
    replicates: &[Vec<f64>],
    profiles: impl Iterator<Item = [f64; FEATURES.len()]>,
) -> Option<f64> {
    let profiles: Vec<[f64; FEATURES.len()]> = profiles.collect();
    if replicates.is_empty() || profiles.is_empty() {
        return None;
    }
    let mut rms: Vec<f64> = replicates
        .iter()
        .filter(|r| r.len() == beta.len())
        .map(|r| {
            let sq: f64 = profiles
                .iter()
                .map(|x| {
                    r.iter()
                        .zip(beta)
                        .zip(x)
                        .map(|((a, b), x)| (a - b) * x)
                        .sum::<f64>()
                        .powi(2)
                })
                .sum();
            (sq / profiles.len() as f64).sqrt()
        })
        .collect();
    if rms.is_empty() {
        return None;
    }
    rms.sort_by(f64::total_cmp);
    Some(rms[rms.len() / 2])
}

/// The domain score for an instrument total (z against functional norms for `z` domains).
pub fn domain_score(domain: &Domain, inst: &Instrument, total: f64) -> f64 {
    match (
        domain.transform,
        inst.norms.functional_mean,
        inst.norms.functional_sd,
    ) {
        (ScoreTransform::Z, Some(m), Some(sd)) => (total - m) / sd,
        _ => total,
    }
}

/// Whether a patient is elevated on the domain at intake (caseness-like; direction-aware).
pub fn elevated(domain: &Domain, inst: &Instrument, pre: f64) -> bool {
    match domain.elevated_threshold {
        None => true,
        Some(t) => match inst.direction {
            Direction::LowerIsBetter => pre >= t,
            Direction::HigherIsBetter => pre <= t,
        },
    }
}

/// Runs the engine.
pub fn analyse(
    instruments: &[Instrument],
    domains: &[Domain],
    episodes: &[EpisodeData],
    settings: &Settings,
) -> Analysis {
    let mut results: Vec<EpisodeResult> = episodes
        .iter()
        .map(|e| {
            let measures = e
                .scores
                .iter()
                .filter(|s| s.count >= 2)
                .map(|s| MeasureResult {
                    instrument: s.instrument,
                    outcome: outcome::measure_outcome(&instruments[s.instrument], s.pre, s.post),
                    fit: None,
                })
                .collect::<Vec<_>>();
            let paired: Vec<MeasureOutcome> = measures
                .iter()
                .filter(|m| settings.paired.contains(&m.instrument))
                .map(|m| m.outcome)
                .collect();
            EpisodeResult {
                iapt: outcome::iapt_metrics(&paired, settings.iapt),
                finished: outcome::finished_course(e.treatment_sessions),
                measures,
            }
        })
        .collect();
    let domain_results = domains
        .iter()
        .enumerate()
        .filter_map(|(d, domain)| {
            let inst_index = instruments
                .iter()
                .position(|i| i.id == domain.instrument_id)?;
            Some(analyse_domain(
                d,
                domain,
                inst_index,
                &instruments[inst_index],
                episodes,
                &mut results,
                settings,
            ))
        })
        .collect();
    let mut clinic_rates = Rates::default();
    let mut by_therapist: std::collections::BTreeMap<usize, Rates> = Default::default();
    for (e, r) in episodes.iter().zip(&results) {
        if let (true, Some(m)) = (r.finished, &r.iapt) {
            clinic_rates.add(m);
            if let Some(t) = e.therapist {
                by_therapist.entry(t).or_default().add(m);
            }
        }
    }
    Analysis {
        episodes: results,
        domains: domain_results,
        clinic_rates,
        therapist_rates: by_therapist.into_iter().collect(),
    }
}

fn analyse_domain(
    d: usize,
    domain: &Domain,
    inst_index: usize,
    inst: &Instrument,
    episodes: &[EpisodeData],
    results: &mut [EpisodeResult],
    settings: &Settings,
) -> DomainResult {
    // Orientation: residuals are negative when the patient did better than expected.
    let sign = match inst.direction {
        Direction::LowerIsBetter => 1.0,
        Direction::HigherIsBetter => -1.0,
    };
    let pairs: Vec<(usize, f64, f64)> = episodes
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let s = e
                .scores
                .iter()
                .find(|s| s.instrument == inst_index && s.count >= 2)?;
            Some((
                i,
                domain_score(domain, inst, s.pre),
                domain_score(domain, inst, s.post),
            ))
        })
        .collect();
    let mut stats = SuffStats::new(FEATURES.len());
    for (i, pre, post) in &pairs {
        // Unwrap safety: the feature vector has FEATURES.len() entries by construction.
        stats
            .add(&episodes[*i].covariates.features(*pre), *post)
            .unwrap();
    }
    let reference = settings
        .reference
        .as_ref()
        .and_then(|r| r.domain(&domain.id));
    // The network's model, if release noise moves this clinic's predictions little enough.
    let features = |i: usize, pre: f64| episodes[i].covariates.features(pre);
    let network = reference.and_then(|r| {
        let beta = r.beta.as_ref().filter(|b| b.len() == FEATURES.len())?;
        let noise = prediction_noise(
            beta,
            &r.replicates,
            pairs.iter().map(|(i, pre, _)| features(*i, *pre)),
        )?;
        Some((beta.clone(), noise))
    });
    let reference_prediction_sd = network.as_ref().map(|(_, noise)| *noise);
    let model = match network {
        Some((beta, noise)) if noise <= REFERENCE_MAX_PREDICTION_SD => {
            let mut model = RiskModel {
                beta,
                n: pairs.len() as u64,
                residual_sd: 0.0,
            };
            let rss: f64 = pairs
                .iter()
                .map(|(i, pre, post)| (post - model.predict(&features(*i, *pre))).powi(2))
                .sum();
            model.residual_sd = (rss / pairs.len() as f64).sqrt();
            Some(model)
        }
        _ => stats.fit(settings.ridge).ok(),
    };
    let network_model = model.is_some()
        && reference_prediction_sd.is_some_and(|n| n <= REFERENCE_MAX_PREDICTION_SD);
    let mut groups: std::collections::BTreeMap<usize, Group> = Default::default();
    let mut eligible = 0;
    // Σ expected change of the eligible (oriented): the average case of the Kraus rule.
    let mut expected_change = 0.0;
    if let Some(model) = &model {
        for (i, pre, post) in &pairs {
            let expected = model.predict(&episodes[*i].covariates.features(*pre));
            let residual = sign * (post - expected);
            if let Some(m) = results[*i]
                .measures
                .iter_mut()
                .find(|m| m.instrument == inst_index && m.fit.is_none())
            {
                m.fit = Some((expected, residual));
            }
            if elevated(domain, inst, *pre) {
                eligible += 1;
                expected_change += sign * (expected - pre);
                if let Some(t) = episodes[*i].therapist {
                    groups.entry(t).or_default().add(residual);
                }
            }
        }
    }
    let groups: Vec<(usize, Group)> = groups.into_iter().collect();
    let plain: Vec<Group> = groups.iter().map(|(_, g)| *g).collect();
    let variance = therapist::variance_components(&plain).map(|mut vc| {
        if let Some(r) = reference {
            if let Some((tau2, interval)) = r.tau2 {
                vc.tau2 = tau2;
                vc.tau2_interval = interval;
            }
            if let Some(sigma2) = r.sigma2 {
                vc.sigma2 = sigma2;
            }
            vc.icc = if vc.tau2 + vc.sigma2 > 0.0 {
                vc.tau2 / (vc.tau2 + vc.sigma2)
            } else {
                0.0
            };
        }
        vc
    });
    let reliable_change = inst.reliable_change().map(|rc| match domain.transform {
        ScoreTransform::Z => rc / inst.norms.functional_sd.unwrap_or(1.0),
        ScoreTransform::Raw => rc,
    });
    let criteria = therapist::Criteria {
        rule: settings.rule,
        minimums: settings.minimums,
        margin: settings.margin,
        reliable_change,
        expected_change: (eligible > 0).then(|| expected_change / eligible as f64),
    };
    let records = match &variance {
        Some(vc) => groups
            .iter()
            .filter_map(|(t, g)| Some((*t, therapist::track_record(g, vc, &criteria)?)))
            .collect(),
        None => Vec::new(),
    };
    let network_variance = reference.is_some_and(|r| r.tau2.is_some()) && variance.is_some();
    DomainResult {
        domain: d,
        model,
        network_model,
        reference_prediction_sd,
        network_variance,
        variance,
        records,
        groups,
        episodes: pairs.len() as u64,
        eligible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::{builtin_domains, builtin_instruments};

    fn settings() -> Settings {
        Settings {
            iapt: IaptRules::default(),
            rule: Rule::EbInterval,
            minimums: Minimums {
                show: 1,
                classify: 1,
            },
            margin: 0.0,
            ridge: 1e-6,
            paired: vec![0, 1],
            reference: None,
        }
    }

    #[test]
    fn episodes_without_a_recorded_therapist_count_for_the_clinic_and_no_therapist() {
        // 10 therapists × 20 patients, plus 100 episodes whose export named no therapist,
        // all much better than expected: they must not become a group of their own.
        let episode = |i: usize, therapist: Option<usize>, post: f64| EpisodeData {
            therapist,
            treatment_sessions: 6,
            covariates: Covariates::default(),
            scores: vec![Scores {
                instrument: 0,
                pre: 12.0 + (i % 11) as f64,
                post: post + (i % 7) as f64,
                count: 4,
            }],
        };
        let known: Vec<EpisodeData> = (0..200).map(|i| episode(i, Some(i % 10), 8.0)).collect();
        let mut all = known.clone();
        all.extend((0..100).map(|i| episode(i, None, 1.0)));
        let run =
            |e: &[EpisodeData]| analyse(&builtin_instruments(), &builtin_domains(), e, &settings());
        let (a, b) = (run(&known), run(&all));
        let therapists =
            |x: &Analysis| -> Vec<usize> { x.domains[0].records.iter().map(|(t, _)| *t).collect() };
        assert_eq!(therapists(&b), (0..10).collect::<Vec<_>>());
        assert_eq!(therapists(&a), therapists(&b));
        let rated: Vec<usize> = b.therapist_rates.iter().map(|(t, _)| *t).collect();
        assert_eq!(rated, (0..10).collect::<Vec<_>>());
        // The clinic's rates and risk model include them.
        assert_eq!(
            (a.clinic_rates.finished, b.clinic_rates.finished),
            (200, 300)
        );
        let n = |x: &Analysis| x.domains[0].model.as_ref().unwrap().n;
        assert_eq!((n(&a), n(&b)), (200, 300));
        // The variance components are those of the ten therapists' groups only (the same
        // episodes, measured against the now different risk model).
        let vc = |x: &Analysis| {
            let v = x.domains[0].variance.unwrap();
            (v.therapists, v.patients)
        };
        assert_eq!(vc(&a), (10, 200));
        assert_eq!(vc(&b), (10, 200));
    }

    #[test]
    fn planted_therapist_effect_is_recovered() {
        // 20 therapists × 40 patients; therapist 0 is 4 points better, 1 is 4 points worse.
        let mut state = 7u64;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 6.0
        };
        let episodes: Vec<EpisodeData> = (0..800)
            .map(|i| {
                let t = i % 20;
                let pre = 12.0 + (i % 13) as f64;
                let effect = match t {
                    0 => -4.0,
                    1 => 4.0,
                    _ => 0.0,
                };
                let post = (0.6 * pre + effect + noise()).clamp(0.0, 27.0);
                EpisodeData {
                    therapist: Some(t),
                    treatment_sessions: 6,
                    covariates: Covariates::default(),
                    scores: vec![Scores {
                        instrument: 0,
                        pre,
                        post,
                        count: 5,
                    }],
                }
            })
            .collect();
        let a = analyse(
            &builtin_instruments(),
            &builtin_domains(),
            &episodes,
            &settings(),
        );
        let dep = &a.domains[0];
        let model = dep.model.as_ref().unwrap();
        assert!((model.beta[1] - 0.6).abs() < 0.1, "slope {}", model.beta[1]);
        let label = |t: usize| dep.records.iter().find(|(k, _)| *k == t).unwrap().1.label;
        assert_eq!(label(0), therapist::Label::Effective);
        assert_eq!(label(1), therapist::Label::Ineffective);
        let others = (2..20)
            .filter(|t| label(*t) != therapist::Label::Neutral)
            .count();
        assert!(others <= 2, "{others} false labels");
        // Without GAD-7 the NHS TT metrics use PHQ-9 alone; every intake here is at caseness.
        assert_eq!(
            (a.clinic_rates.finished, a.clinic_rates.at_caseness),
            (800, 800)
        );
        assert!(a.clinic_rates.recovered <= a.clinic_rates.at_caseness);
        assert!(a.clinic_rates.reliable_recovery <= a.clinic_rates.recovered);

        // A network reference: its model is used when its noise replicates move this clinic's
        // predictions by at most a point, and the clinic's own fit otherwise; τ² and σ² when
        // given.
        let domain = builtin_domains()[0].id.clone();
        let mut network = model.beta.clone();
        network[0] += 1.0; // the network expects one point more
        let with = |replicates: Vec<Vec<f64>>| {
            let reference = NetworkReference {
                release_id: "r".into(),
                domains: vec![(
                    domain.clone(),
                    DomainReference {
                        beta: Some(network.clone()),
                        replicates,
                        tau2: Some((9.0, (8.0, 10.0))),
                        sigma2: Some(9.0),
                    },
                )],
            };
            let s = Settings {
                reference: Some(reference),
                ..settings()
            };
            analyse(&builtin_instruments(), &builtin_domains(), &episodes, &s)
        };
        let shift = |d: f64| {
            let mut r = network.clone();
            r[0] += d;
            r
        };
        let precise = with(vec![shift(0.5), shift(-0.5), shift(0.2)]);
        let d = &precise.domains[0];
        assert!(d.network_model && d.network_variance);
        assert_eq!(d.model.as_ref().unwrap().beta, network);
        assert!((d.reference_prediction_sd.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(
            (d.variance.unwrap().tau2, d.variance.unwrap().sigma2),
            (9.0, 9.0)
        );
        let noisy = with(vec![shift(3.0), shift(-3.0), shift(2.0)]);
        let d = &noisy.domains[0];
        assert!(!d.network_model && d.network_variance);
        assert_eq!(
            d.model.as_ref().unwrap().beta,
            model.beta,
            "the clinic's own fit"
        );
        assert!((d.reference_prediction_sd.unwrap() - 3.0).abs() < 1e-9);
    }
}
