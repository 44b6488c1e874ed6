//! Does matching help? A trial on synthetic data with planted therapist × domain effects
//! (issue 17; DOMAIN.md §11, acceptance test 7).
//!
//! A clinic's history is generated ([`Trial::history`]) and its track records computed by the
//! engine, exactly as `stats` would (EB-interval rule, 10 to show, 30 to label). A cohort of
//! new patients then arrives, [`Trial::per_week`] a week, and is allocated twice: by
//! **care as usual** (availability only: a therapist drawn at random among those with a free
//! new-patient slot this week, [`Trial::cap`] a week each) and by **`match`**
//! (protocol::matching over the same capacity, the patient taking the first offer, or one of
//! the list at random with [`Pick::AnyOfList`]). Each patient's course is then drawn from the
//! generator with the allocated therapist's planted effect, with the same random draws in
//! both arms (common random numbers), so the paired difference is the effect of the
//! allocation alone. Outcomes are on the patient's most elevated domain at intake, as the
//! match trial's domain-specific outcome (Constantino et al. 2021): change from the first to
//! the last score, and reliable improvement (at least the instrument's reliable change).

use protocol::analysis::{self, Settings};
use protocol::instrument::{Domain, Instrument, builtin_domains, builtin_instruments};
use protocol::matching::{self, Candidate, DomainRecord, Profile, Request};
use protocol::outcome::IaptRules;
use protocol::therapist::{Minimums, Rule, z95};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::engine::episodes;
use super::model::{self, DOMAINS, Params};

/// How the patient picks from a shortlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pick {
    /// The first offer.
    First,
    /// Any offer on the list, at random.
    AnyOfList,
}

/// The trial's parameters.
#[derive(Debug, Clone)]
pub struct Trial {
    /// The clinic's history (one clinic).
    pub history: Params,
    /// New patients.
    pub cohort: usize,
    /// New patients a week.
    pub per_week: usize,
    /// New patients a therapist takes a week.
    pub cap: u32,
    /// The cohort's seed.
    pub seed: u64,
    /// How patients pick from a shortlist.
    pub pick: Pick,
}

impl Default for Trial {
    fn default() -> Self {
        Self {
            history: Params {
                clinics: 1,
                seed: 1,
                therapists_per_clinic: Some(12),
                caseload: Some(60),
                ..Params::default()
            },
            cohort: 600,
            per_week: 18,
            cap: 2,
            seed: 1,
            pick: Pick::First,
        }
    }
}

/// One arm's outcomes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Arm {
    /// Patients with a first and a last score on their most elevated domain.
    pub n: usize,
    /// Mean change on it (last − first; negative = improvement).
    pub mean_change: f64,
    /// Share reliably improved on it.
    pub reliable_improvement: f64,
    /// Allocations by level (0–3) under the track records.
    pub levels: [usize; 4],
    /// Allocations to a therapist planted effective on the patient's most elevated domain.
    pub planted_effective: usize,
}

/// The trial's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Care as usual.
    pub cau: Arm,
    /// Matched.
    pub matched: Arm,
    /// Patients with outcomes in both arms.
    pub paired: usize,
    /// Mean paired difference in change, matched − CAU (negative = matched improved more),
    /// with its normal 95 % interval.
    pub change_difference: (f64, f64, f64),
    /// Difference in the reliable-improvement rate, matched − CAU, with its 95 % interval
    /// (paired).
    pub improvement_difference: (f64, f64, f64),
    /// Odds ratio of reliable improvement, matched against CAU.
    pub odds_ratio: f64,
}

/// Runs the trial (module doc).
pub fn run(t: &Trial) -> Outcome {
    let params = Params {
        clinics: 1,
        ..t.history.clone()
    };
    let clinic = model::generate(&params).clinics.remove(0);
    let instruments = builtin_instruments();
    let domains: Vec<Domain> = builtin_domains().into_iter().take(DOMAINS.len()).collect();
    let analysis = analysis::analyse(&instruments, &domains, &episodes(&clinic), &settings());
    let n = clinic.therapists.len();
    let records: Vec<Vec<DomainRecord>> = (0..n)
        .map(|j| {
            analysis
                .domains
                .iter()
                .map(|d| DomainRecord {
                    domain: domains[d.domain].id.clone(),
                    record: d.records.iter().find(|(i, _)| *i == j).map(|(_, r)| *r),
                })
                .collect()
        })
        .collect();
    assert!(
        t.per_week <= n * t.cap as usize,
        "more arrivals than weekly capacity"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed ^ 0x0061_6c6c_6f63);
    let mut cau = Allocator::new(n);
    let mut matched = Allocator::new(n);
    let mut arms = [Arm::default(), Arm::default()];
    let mut paired = Vec::new();
    for i in 0..t.cohort {
        if i % t.per_week == 0 {
            cau.new_week();
            matched.new_week();
        }
        let intake = intake(&instruments, &domains, model::cohort_intake(t.seed, i));
        let top = intake
            .domains
            .first()
            .and_then(|d| domains.iter().position(|x| x.id == d.domain))
            .unwrap_or(0);
        let free: Vec<usize> = (0..n).filter(|j| cau.this_week[*j] < t.cap).collect();
        let j_cau = free[rng.gen_range(0..free.len())];
        let candidates: Vec<Candidate> = (0..n)
            .map(|j| matched.candidate(j, t.cap, &records[j]))
            .collect();
        let request = Request {
            intake: intake.clone(),
            ..Request::default()
        };
        // Unwrap safety: the default settings are valid.
        let list = matching::shortlist(&request, &candidates, &matching::Settings::default())
            .expect("default settings are valid");
        let k = match t.pick {
            Pick::First => 0,
            Pick::AnyOfList => rng.gen_range(0..list.offers.len()),
        };
        let j_match: usize = list.offers[k].therapist.parse().unwrap_or(0);
        matched.first(list.offers[0].therapist.parse().unwrap_or(0));
        cau.allocate(j_cau);
        matched.allocate(j_match);
        let mut outcome = [None, None];
        for (a, j) in [j_cau, j_match].into_iter().enumerate() {
            let level = matching::level(&intake, &candidates[j]);
            arms[a].levels[level.number() as usize] += 1;
            if clinic.therapists[j].planted[top] == model::Planted::Effective {
                arms[a].planted_effective += 1;
            }
            let p = model::treat(&params, &clinic, 1, t.seed, i, j);
            outcome[a] = change(&p, top).map(|c| (c, c <= -rc(&instruments[top])));
        }
        if let [Some(a), Some(b)] = outcome {
            paired.push((a, b));
        }
    }
    for (a, arm) in arms.iter_mut().enumerate() {
        let pick = |x: &((f64, bool), (f64, bool))| if a == 0 { x.0 } else { x.1 };
        arm.n = paired.len();
        arm.mean_change = mean(paired.iter().map(|x| pick(x).0));
        arm.reliable_improvement = mean(paired.iter().map(|x| f64::from(u8::from(pick(x).1))));
    }
    let diff = |f: &dyn Fn(&(f64, bool)) -> f64| {
        interval(paired.iter().map(|(c, m)| f(m) - f(c)).collect())
    };
    let ri = |x: &(f64, bool)| f64::from(u8::from(x.1));
    let [cau_arm, matched_arm] = arms;
    let odds = |r: f64| r / (1.0 - r);
    Outcome {
        odds_ratio: odds(matched_arm.reliable_improvement) / odds(cau_arm.reliable_improvement),
        paired: paired.len(),
        change_difference: diff(&|x| x.0),
        improvement_difference: diff(&ri),
        cau: cau_arm,
        matched: matched_arm,
    }
}

fn settings() -> Settings {
    Settings {
        iapt: IaptRules::default(),
        rule: Rule::EbInterval,
        minimums: Minimums::default(),
        margin: 0.0,
        ridge: 1e-6,
        paired: vec![0, 1],
        reference: None,
    }
}

fn intake(instruments: &[Instrument], domains: &[Domain], scores: [f64; 2]) -> matching::Intake {
    let rows: Vec<(&Domain, &Instrument, f64)> = domains
        .iter()
        .zip(scores)
        .map(|(d, s)| {
            let inst = instruments
                .iter()
                .find(|i| i.id == d.instrument_id)
                .unwrap_or(&instruments[0]);
            (d, inst, s)
        })
        .collect();
    // Unwrap safety: generated scores are within their instruments' ranges.
    matching::intake(&rows, None).expect("generated scores are in range")
}

fn rc(inst: &Instrument) -> f64 {
    inst.reliable_change().unwrap_or(f64::INFINITY)
}

/// Last minus first measured score on domain `d`, with at least two measures.
fn change(p: &model::Patient, d: usize) -> Option<f64> {
    let scores: Vec<f64> = p
        .sessions
        .iter()
        .flat_map(|s| s.measures.iter())
        .filter(|m| m.domain == d)
        .map(model::Measure::total)
        .collect();
    (scores.len() >= 2).then(|| scores[scores.len() - 1] - scores[0])
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Mean with its normal 95 % interval.
fn interval(v: Vec<f64>) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let m = mean(v.iter().copied());
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let half = z95() * (var / n.max(1.0)).sqrt();
    (m, m - half, m + half)
}

/// One arm's capacity and rotation counts.
struct Allocator {
    this_week: Vec<u32>,
    /// Per week, allocations and first places (rotation over the last four weeks).
    weeks: Vec<(Vec<u32>, Vec<u32>)>,
}

const ROTATION_WEEKS: usize = 4;

impl Allocator {
    fn new(n: usize) -> Self {
        Self {
            this_week: vec![0; n],
            weeks: Vec::new(),
        }
    }

    fn new_week(&mut self) {
        let n = self.this_week.len();
        self.this_week = vec![0; n];
        self.weeks.push((vec![0; n], vec![0; n]));
    }

    fn allocate(&mut self, j: usize) {
        self.this_week[j] += 1;
        if let Some(w) = self.weeks.last_mut() {
            w.0[j] += 1;
        }
    }

    fn first(&mut self, j: usize) {
        if let Some(w) = self.weeks.last_mut() {
            w.1[j] += 1;
        }
    }

    fn candidate(&self, j: usize, cap: u32, records: &[DomainRecord]) -> Candidate {
        let recent = self.weeks.iter().rev().take(ROTATION_WEEKS);
        let (allocations, first_offers) = recent.fold((0, 0), |(a, f), w| (a + w.0[j], f + w.1[j]));
        Candidate {
            profile: Profile {
                id: j.to_string(),
                new_per_week: Some(cap),
                allocated_this_week: self.this_week[j],
                allocations,
                first_offers,
                ..Profile::default()
            },
            records: records.to_vec(),
        }
    }
}

/// Level counts as shares (for printing).
pub fn level_shares(arm: &Arm) -> [f64; 4] {
    let total: usize = arm.levels.iter().sum();
    arm.levels.map(|k| k as f64 / total.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: on a clinic with planted effects (ICC 0.05), matching allocates more patients
    /// to therapists planted effective on their main problem and they improve more than under
    /// care as usual, in change and in reliable improvement.
    #[test]
    fn matching_beats_care_as_usual_on_planted_effects() {
        let out = run(&Trial::default());
        assert!(out.paired > 400, "{out:?}");
        assert!(
            out.matched.planted_effective > 2 * out.cau.planted_effective,
            "{out:?}"
        );
        assert!(out.matched.levels[0] < out.cau.levels[0], "{out:?}");
        let (d, _, hi) = out.change_difference;
        assert!(d < 0.0 && hi < 0.0, "matched should improve more: {out:?}");
        assert!(
            out.matched.reliable_improvement > out.cau.reliable_improvement,
            "{out:?}"
        );
        // Without therapist effects the allocation changes nothing: with the same draws in
        // both arms the outcomes are identical, so the trial itself adds no difference.
        let null = run(&Trial {
            history: Params {
                icc: 0.0,
                ..Trial::default().history
            },
            ..Trial::default()
        });
        assert_eq!(null.change_difference, (0.0, 0.0, 0.0), "{null:?}");
        assert_eq!(null.improvement_difference, (0.0, 0.0, 0.0));
    }
}
