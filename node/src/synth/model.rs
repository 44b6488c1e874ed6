//! The generative model of DOMAIN.md §11, as a pure function of [`Params`] (seeded).
//!
//! Per domain d (PHQ-9 depression, GAD-7 anxiety; lower = better), patient i of therapist j,
//! session t: y_it = y_i1 + m_c·b_d·shape_c(t) + (b_i + s_i + g_j + h_jd)·ln t + e_it, c the
//! patient's trajectory class.
//! - b_PHQ = −7.6/ln 8, b_GAD = −7.2/ln 8: tuned, as §11 allows, so that finished courses
//!   (NHS TT definition, dropouts with ≥ 2 treatment sessions included) reach the NHS TT rates
//!   (measured with the engine at generator version 2, seed 7, 6 clinics: reliable improvement
//!   0.655, recovery 0.506, reliable recovery 0.501, deterioration 0.092); the published
//!   −6 / −5.6 give recovery near 0.40.
//! - A trajectory [`Class`] per patient (DOMAIN.md §4.1, Saunders 2019): early responders
//!   (44 % at average prognosis; most change by session 3), late responders (22 %; little
//!   change until session 6), non-responders (32 %) and deteriorators (2 %, about +3 points by
//!   session 8). The class is drawn from a multinomial logit on the prognostic index,
//!   chronicity and intake severity ([`Trajectories::Unrelated`] draws it from the shares
//!   alone), and its shape ([`Class::shape`]) carries the responders' change.
//! - b_i: within-class deviations per ln-session, SD 1.2, correlated 0.8 across domains;
//!   session noise SD 1.5 (not 2.5), correlated 0.8; severity s_i = −0.23·(y_i1 − intake mean)
//!   (DOMAIN's −0.1 gave post ≈ 0.8·pre, against the r ≈ .45 it also states); a centred
//!   prognostic index from case mix (unemployment, comorbidity, long-term condition,
//!   disability, prior treatment, WSAS). Neither severity nor prognosis moves the slope under
//!   [`Trajectories::Unrelated`].
//! - Therapist effect g_j + h_jd with total SD τ_slope = τ_end/(ln 8 · 0.77), τ_end =
//!   5.7·√(ICC/(1−ICC)) (≈1.31 PHQ-9 points at ICC .05); 0.77 is the share of an effect that
//!   reaches the observed last score ([`EFFECT_REACH`]); half general (g_j), half domain-specific (h_jd,
//!   correlated 0.3 across domains). Planted cells: 10 % effective (total −2τ), 5 % ineffective
//!   (+2τ), the rest drawn. ICC = 0 plants nothing.
//! - Planned sessions T = 2 + Poisson(6); Weibull-shaped dropout (shape 2) with a per-session
//!   hazard ×1.5 when the latest PHQ-9 is above the population expectation (MNAR).
//! - Episodes with sessions after the export day (day 900 of the start window) are still in
//!   treatment: cut there, no end recorded (about 6 %).
//! - Therapists' matching profile (gender, languages, modalities, accepting new, wait, payers,
//!   site) and, from a stream of its own (version 3), delivery modes, weekly clinic hours and
//!   a weekly cap of new patients.
//! - 3 % of items missing at random (one missing: the total is left to be prorated; two or
//!   more: the administration is dropped), 5 % of later sessions without a measure.

use chrono::{Days, NaiveDate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal, Poisson};

/// Version of the generator; recorded in truth.json. Bump when output for a seed changes.
pub const GENERATOR_VERSION: u32 = 3;

/// The two simulated domains: (domain id, instrument id, intake mean, intake SD, max score,
/// mean slope per ln-session, number of items).
pub const DOMAINS: [(&str, &str, f64, f64, f64, f64, usize); 2] = [
    ("depression", "PHQ-9", 15.4, 5.5, 27.0, -7.6, 9),
    ("anxiety", "GAD-7", 14.0, 4.5, 21.0, -7.2, 7),
];

/// How patients are assigned to therapists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// Case assignment as usual: at random.
    #[default]
    Random,
    /// Confounded by severity: some therapists get the more severe patients (tests risk
    /// adjustment).
    Confounded,
}

/// Generator parameters (also the `synth` command's flags).
#[derive(Debug, Clone, clap::Args, serde::Serialize)]
pub struct Params {
    /// Number of clinics
    #[arg(long, default_value_t = 3)]
    pub clinics: u32,
    /// Random seed; the same seed gives the same files
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Target patients per clinic (default: therapists × caseloads of mean 40)
    #[arg(long)]
    pub patients_per_clinic: Option<u32>,
    /// Therapists per clinic (default: uniform 5 to 15)
    #[arg(long)]
    pub therapists_per_clinic: Option<u32>,
    /// Give every therapist exactly this many patients (default: negative binomial, mean 40)
    #[arg(long)]
    pub caseload: Option<u32>,
    /// Intraclass correlation of therapist effects on the post score (0 = no therapist effects)
    #[arg(long, default_value_t = 0.05)]
    pub icc: f64,
    /// Patient-to-therapist assignment
    #[arg(long, value_enum, default_value_t = Assignment::Random)]
    pub assignment: Assignment,
    /// Also write each clinic's data as FHIR R4 NDJSON
    #[arg(long)]
    pub fhir: bool,
    /// How trajectory classes relate to what is known at intake
    #[arg(long, value_enum, default_value_t = Trajectories::Predicted)]
    pub trajectories: Trajectories,
}

/// How a patient's trajectory relates to what is known at intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trajectories {
    /// The class and the slope are partly predicted by intake severity and case mix.
    #[default]
    Predicted,
    /// No relation: the class is drawn with the same shares whatever the intake, and neither
    /// severity nor case mix moves the slope (a control for clinical-support validation).
    Unrelated,
}

/// A patient's trajectory class (DOMAIN.md §4.1; Saunders 2019: early and late responders,
/// non-responders, a few deteriorators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Most of the change by session 3.
    EarlyResponder,
    /// Little change until about session 6, then as much as an early responder.
    LateResponder,
    /// No change beyond noise.
    NonResponder,
    /// Gets worse.
    Deteriorator,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            clinics: 3,
            seed: 1,
            patients_per_clinic: None,
            therapists_per_clinic: None,
            caseload: None,
            icc: 0.05,
            assignment: Assignment::Random,
            fhir: false,
            trajectories: Trajectories::Predicted,
        }
    }
}

impl Params {
    /// Checks ranges.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=99).contains(&self.clinics),
            "--clinics must be 1 to 99"
        );
        anyhow::ensure!((0.0..0.5).contains(&self.icc), "--icc must be in [0, 0.5)");
        if let Some(t) = self.therapists_per_clinic {
            anyhow::ensure!(
                (1..=500).contains(&t),
                "--therapists-per-clinic must be 1 to 500"
            );
        }
        if let Some(c) = self.caseload {
            anyhow::ensure!((1..=10_000).contains(&c), "--caseload must be 1 to 10000");
        }
        if let Some(p) = self.patients_per_clinic {
            anyhow::ensure!(
                (1..=5_000_000).contains(&p),
                "--patients-per-clinic must be 1 to 5000000"
            );
        }
        Ok(())
    }

    /// Between-therapist SD of the end-of-treatment (session 8) score, in points.
    pub fn tau_end(&self) -> f64 {
        RESIDUAL_POST_SD * (self.icc / (1.0 - self.icc)).sqrt()
    }

    /// Between-therapist SD in slope units (per ln-session): τ_end reached on the observed
    /// last score, where an effect arrives as effect · ln t_last, clipped at the floor, on
    /// average [`EFFECT_REACH`] of effect · ln 8.
    pub fn tau_slope(&self) -> f64 {
        self.tau_end() / (8f64.ln() * EFFECT_REACH)
    }
}

/// Residual SD of the post score given pre, PHQ-9 points (DOMAIN.md §11; the generator's own
/// within-therapist residual SD is ≈ 5.8, checked by the τ² coverage test's data).
const RESIDUAL_POST_SD: f64 = 5.7;
/// Average share of a slope effect's session-8 value (effect · ln 8) that reaches the observed
/// last score: patients end before session 8 (mean ln t_last ≈ 1.88, not ln 8 = 2.08) and the
/// floor at 0 clips responders. Measured on generated data (mean over 100 seeds of the realized
/// contributions, `stats/tests.rs`); slopes are scaled by its inverse so that the requested
/// ICC holds on the observed scale. Re-measure it when the trajectory model changes.
pub const EFFECT_REACH: f64 = 0.77;
/// Within-class SD of patient slopes [D, calibrated].
const WITHIN_CLASS_SLOPE_SD: f64 = 1.2;
/// Shares of the trajectory classes (early, late, non-responder, deteriorator) for a patient of
/// average prognosis [D, calibrated: the responders' 60 % of the former two-class model, split
/// 3 : 2].
const CLASS_SHARES: [f64; 4] = [0.44, 0.22, 0.32, 0.02];
/// How strongly the prognostic index (standardised) moves the log-odds of each class against
/// an early response [D]: a worse prognosis makes non-response and deterioration likelier.
const CLASS_PROGNOSIS: [f64; 4] = [0.0, 0.0, 1.2, 1.2];
/// How strongly the (standardised log) duration of the problem moves the log-odds of a late
/// response [D]: chronic problems respond later.
const CLASS_CHRONICITY: [f64; 4] = [0.0, 1.5, 0.0, 0.0];
/// How strongly intake severity (PHQ-9, standardised) moves the log-odds of each class against
/// an early response [D]: more severe patients change more (as the severity slope says), so
/// they are likelier to respond early.
const CLASS_SEVERITY: [f64; 4] = [0.0, -0.2, -0.4, -0.4];
/// SD of the prognostic index (slope units), to standardise it [D, from its weights].
const PROGNOSIS_SD: f64 = 0.85;
/// Mean slope of a class as a multiple of the domain's mean slope [D, calibrated]: responders
/// carry the mean change (1.65 times it, tuned to the NHS TT rates), deteriorators get worse
/// by about 3 PHQ-9 points by session 8.
const CLASS_SCALE: [f64; 4] = [1.65, 1.65, 0.0, -0.4];
const NOISE_SD: f64 = 1.5;
/// Correlation of patient slopes across domains [D]: depression and anxiety change together.
const SLOPE_CORRELATION: f64 = 0.8;
/// Correlation of session-level noise across domains [D].
const NOISE_CORRELATION: f64 = 0.8;
/// Severity effect on the slope [D]: −0.48/ln 8, so that post ≈ 0.52·pre, the regression
/// implied by the pre–post correlation r ≈ .45 and SDs 5.5 → 6.4 of DOMAIN.md §11 / §6.3.
const SEVERITY_SLOPE: f64 = -0.23;
/// Prognostic effects on the slope per ln-session [D] (positive = less improvement):
/// unemployed, per comorbid problem, long-term condition, disability, prior treatment, per
/// WSAS point above 18. Case mix predicts change in routine data (DOMAIN.md §7).
const PROGNOSIS_WEIGHTS: [f64; 6] = [1.0, 0.5, 0.5, 0.8, 0.4, 0.06];
/// Expected value of the prognostic index: 1.0·0.2 + 0.5·0.8 + 0.5·0.25 + 0.8·0.1 + 0.4·0.35
/// (WSAS is centred at its mean), subtracted so that mean change is unchanged.
const PROGNOSIS_MEAN: f64 = 0.945;
/// The day after the first possible start on which the data are exported: episodes with
/// sessions after it are still in treatment (about 6 %), cut there with no end recorded.
const EXPORT_DAY: u64 = 900;
const ITEM_MISSING: f64 = 0.03;
const SESSION_UNMEASURED: f64 = 0.05;
const MNAR_FACTOR: f64 = 1.5;
/// Weibull scale of dropout by the end of planned treatment, before the MNAR factor; chosen
/// so that about 30 % of episodes end in dropout (0.303 at seed 7; checked by a test).
const DROPOUT_BASE: f64 = 0.35;

/// A planted therapist × domain label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Planted {
    /// Planted 2τ better than average.
    Effective,
    /// Planted 2τ worse than average.
    Ineffective,
    /// Drawn from N(0, τ²).
    Typical,
}

/// A synthetic therapist.
#[derive(Debug, Clone)]
pub struct Therapist {
    /// Local staff id, e.g. `C01-T007`.
    pub id: String,
    /// Matching attributes (column name, value) as written to therapists.csv.
    pub attrs: Vec<(&'static str, String)>,
    /// General effect g_j, slope units (negative = better).
    pub general: f64,
    /// Total effect g_j + h_jd per domain, slope units.
    pub effect: [f64; 2],
    /// Planted label per domain.
    pub planted: [Planted; 2],
}

/// One instrument administration.
#[derive(Debug, Clone)]
pub struct Measure {
    /// Index into [`DOMAINS`].
    pub domain: usize,
    /// Item answers (`None` = missing).
    pub items: Vec<Option<u8>>,
    /// The total when every item is answered; `None` when one is missing (to be prorated).
    pub score: Option<u32>,
}

impl Measure {
    /// The total the node will store: the score, or the importer's prorated total when an item
    /// is missing (`protocol::scoring`, the one place the prorating rule lives).
    pub fn total(&self) -> f64 {
        let Some(score) = self.score else {
            // Unwrap safety: DOMAINS names built-in instruments, and `measure` leaves at most
            // one item missing, which the scoring rule accepts.
            let inst = protocol::instrument::builtin_instrument(DOMAINS[self.domain].1).unwrap();
            let answers: Vec<Option<f64>> = self.items.iter().map(|v| v.map(f64::from)).collect();
            return protocol::scoring::total_from_items(&inst, &answers)
                .unwrap()
                .total;
        };
        f64::from(score)
    }
}

/// One attended session.
#[derive(Debug, Clone)]
pub struct Session {
    /// 1-based number within the episode.
    pub seq: u32,
    /// Date.
    pub date: NaiveDate,
    /// Measures taken.
    pub measures: Vec<Measure>,
}

/// A synthetic patient with one episode.
#[derive(Debug, Clone)]
pub struct Patient {
    /// Local MRN-like id, e.g. `C01-P00042`.
    pub id: String,
    /// Episode id.
    pub episode_id: String,
    /// Index of the therapist in the clinic.
    pub therapist: usize,
    /// Demographics (column, value) as in patients.csv.
    pub demographics: Vec<(&'static str, String)>,
    /// Episode attributes and case mix (column, value) as in episodes.csv.
    pub episode: Vec<(&'static str, String)>,
    /// True intake scores per domain.
    pub intake: [f64; 2],
    /// Whether the episode ended in dropout.
    pub dropout: bool,
    /// Planned sessions.
    pub planned: u32,
    /// Attended sessions, in order.
    pub sessions: Vec<Session>,
    /// Per domain, the therapist's realized contribution to the last session's score on the
    /// observed (rounded, clipped) scale: the score minus what the same noise would have given
    /// without the therapist effect. Clipping at the floor attenuates planted effects; tests
    /// use this to state the truth on the scale the engine sees.
    pub realized_effect: [f64; 2],
    /// The trajectory class.
    pub class: Class,
    /// Still in treatment on the export day (no end recorded).
    pub ongoing: bool,
}

impl Patient {
    /// Number of instrument administrations.
    pub fn measures(&self) -> usize {
        self.sessions.iter().map(|s| s.measures.len()).sum()
    }
}

/// One synthetic clinic.
#[derive(Debug, Clone)]
pub struct Clinic {
    /// Folder name and id, e.g. `clinic-01`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Therapists.
    pub therapists: Vec<Therapist>,
    /// Patients.
    pub patients: Vec<Patient>,
}

/// The whole synthetic network.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Clinics.
    pub clinics: Vec<Clinic>,
}

/// Draws the dataset. Deterministic in `params` (each clinic has its own stream).
pub fn generate(params: &Params) -> Dataset {
    let clinics = (1..=params.clinics)
        .map(|c| {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            rng.set_stream(u64::from(c));
            clinic(params, c, &mut rng)
        })
        .collect();
    Dataset { clinics }
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    // Unwrap safety: every SD passed here is a finite non-negative constant or derived from
    // a validated ICC.
    Normal::new(mean, sd).unwrap().sample(rng)
}

/// Two standard normals with correlation `rho`.
fn correlated(rng: &mut ChaCha8Rng, rho: f64) -> [f64; 2] {
    let a = normal(rng, 0.0, 1.0);
    let b = normal(rng, 0.0, 1.0);
    [a, rho * a + (1.0 - rho * rho).sqrt() * b]
}

fn pick<'a>(rng: &mut ChaCha8Rng, choices: &[(&'a str, f64)]) -> &'a str {
    let mut u = rng.r#gen::<f64>();
    for (value, p) in choices {
        if u < *p {
            return value;
        }
        u -= p;
    }
    choices[choices.len() - 1].0
}

fn clinic(params: &Params, c: u32, rng: &mut ChaCha8Rng) -> Clinic {
    let n_therapists = params
        .therapists_per_clinic
        .unwrap_or_else(|| rng.gen_range(5..=15)) as usize;
    let therapists: Vec<Therapist> = (1..=n_therapists)
        .map(|t| therapist(params, c, t, rng))
        .collect();
    let caseloads: Vec<usize> = match (params.caseload, params.patients_per_clinic) {
        (Some(k), _) => vec![k as usize; n_therapists],
        (None, target) => {
            let mean = target.map_or(40.0, |p| f64::from(p) / n_therapists as f64);
            // Negative binomial (size 4) as a gamma-Poisson mixture, at least 5 (or 1 for tiny targets).
            let min = if mean < 5.0 { 1 } else { 5 };
            (0..n_therapists)
                .map(|_| {
                    // Unwrap safety: shape 4 and a positive scale are valid.
                    let lambda = Gamma::new(4.0, mean.max(0.25) / 4.0).unwrap().sample(rng);
                    (Poisson::new(lambda.max(1e-9)).unwrap().sample(rng) as usize).max(min)
                })
                .collect()
        }
    };
    let n_patients: usize = caseloads.iter().sum();
    let mut profiles: Vec<Profile> = (0..n_patients).map(|_| profile(rng)).collect();
    let mut slots: Vec<usize> = caseloads
        .iter()
        .enumerate()
        .flat_map(|(j, k)| std::iter::repeat_n(j, *k))
        .collect();
    match params.assignment {
        Assignment::Random => slots.shuffle(rng),
        Assignment::Confounded => {
            // Therapists get a preference; patients sorted by intake severity (plus noise) fill
            // slots sorted by preference, so the most severe cases go to the same therapists.
            let prefs: Vec<f64> = (0..n_therapists).map(|_| normal(rng, 0.0, 1.0)).collect();
            slots.sort_by(|a, b| prefs[*a].total_cmp(&prefs[*b]));
            let mut keyed: Vec<(f64, Profile)> = profiles
                .into_iter()
                .map(|p| {
                    let key = (p.intake[0] - 15.4) / 5.5 + normal(rng, 0.0, 0.5);
                    (key, p)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            profiles = keyed.into_iter().map(|(_, p)| p).collect();
        }
    }
    let patients = profiles
        .into_iter()
        .zip(&slots)
        .enumerate()
        .map(|(i, (profile, j))| patient(params, c, i + 1, *j, profile, &therapists[*j], rng))
        .collect();
    Clinic {
        id: format!("clinic-{c:02}"),
        name: format!("Synthetic Clinic {c:02}"),
        therapists,
        patients,
    }
}

fn therapist(params: &Params, c: u32, t: usize, rng: &mut ChaCha8Rng) -> Therapist {
    let tau = params.tau_slope();
    let half = tau / std::f64::consts::SQRT_2;
    let general = normal(rng, 0.0, 1.0) * half;
    let specific = correlated(rng, 0.3).map(|z| z * half);
    let mut effect = [0.0; 2];
    let mut planted = [Planted::Typical; 2];
    for d in 0..2 {
        let u = rng.r#gen::<f64>();
        (effect[d], planted[d]) = match u {
            _ if params.icc == 0.0 => (0.0, Planted::Typical),
            u if u < 0.10 => (-2.0 * tau, Planted::Effective),
            u if u < 0.15 => (2.0 * tau, Planted::Ineffective),
            _ => (general + specific[d], Planted::Typical),
        };
    }
    let attrs = vec![
        (
            "profession",
            pick(
                rng,
                &[
                    ("CBT therapist", 0.45),
                    ("Counsellor", 0.25),
                    ("Clinical psychologist", 0.15),
                    ("PWP", 0.15),
                ],
            )
            .to_string(),
        ),
        (
            "grade",
            pick(
                rng,
                &[
                    ("Band 5", 0.2),
                    ("Band 6", 0.3),
                    ("Band 7", 0.35),
                    ("Band 8a", 0.15),
                ],
            )
            .to_string(),
        ),
        ("start_year", rng.gen_range(1995..=2023).to_string()),
        (
            "gender",
            pick(rng, &[("female", 0.7), ("male", 0.28), ("other", 0.02)]).to_string(),
        ),
        (
            "languages",
            pick(
                rng,
                &[
                    ("en", 0.8),
                    ("en;pl", 0.05),
                    ("en;ur", 0.05),
                    ("en;es", 0.05),
                    ("en;cy", 0.05),
                ],
            )
            .to_string(),
        ),
        (
            "modalities",
            pick(
                rng,
                &[
                    ("CBT", 0.4),
                    ("CBT;EMDR", 0.15),
                    ("Counselling", 0.2),
                    ("IPT", 0.1),
                    ("CBT;IPT", 0.15),
                ],
            )
            .to_string(),
        ),
        (
            "accepting_new",
            if rng.r#gen::<f64>() < 0.8 {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        ("wait_weeks", rng.gen_range(0..=12).to_string()),
        (
            "payers",
            pick(rng, &[("NHS", 0.8), ("NHS;private", 0.2)]).to_string(),
        ),
        (
            "location",
            pick(
                rng,
                &[("Central", 0.5), ("North site", 0.3), ("Remote", 0.2)],
            )
            .to_string(),
        ),
    ];
    let mut attrs = attrs;
    attrs.extend(logistics(params, c, t, &attrs));
    Therapist {
        id: format!("C{c:02}-T{t:03}"),
        attrs,
        general,
        effect,
        planted,
    }
}

/// The intake scores of new patient `i` of a cohort drawn from `seed`, before anyone treats
/// them (what a referrer matches on).
pub fn cohort_intake(seed: u64, i: usize) -> [f64; 2] {
    profile(&mut cohort_rng(seed, i)).intake
}

/// New patient `i` of the cohort `seed`, treated by therapist `j` of `clinic` (number `c`):
/// the same draws for the same (seed, i) whoever treats them (common random numbers), so
/// two allocations of one cohort differ by the therapists and what follows from them.
pub fn treat(params: &Params, clinic: &Clinic, c: u32, seed: u64, i: usize, j: usize) -> Patient {
    let mut rng = cohort_rng(seed, i);
    let profile = profile(&mut rng);
    patient(params, c, i, j, profile, &clinic.therapists[j], &mut rng)
}

fn cohort_rng(seed: u64, i: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x636f_686f_7274);
    rng.set_stream(i as u64);
    rng
}

/// Delivery modes, weekly clinic hours and a weekly cap of new patients (generator version
/// 3), from a stream of their own so that every earlier draw of a seed stays as it was.
fn logistics(
    params: &Params,
    c: u32,
    t: usize,
    attrs: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x6c6f_6769_7374_6963);
    rng.set_stream(u64::from(c) << 16 | t as u64);
    let remote = attrs.iter().any(|(k, v)| *k == "location" && v == "Remote");
    let delivery = if remote {
        "video"
    } else {
        pick(
            &mut rng,
            &[("in-person;video", 0.6), ("in-person", 0.3), ("video", 0.1)],
        )
    };
    let mut slots: Vec<String> = Vec::new();
    for day in ["mon", "tue", "wed", "thu", "fri"] {
        for (part, p) in [("am", 0.5), ("pm", 0.5), ("eve", 0.15)] {
            if rng.r#gen::<f64>() < p {
                slots.push(format!("{day}-{part}"));
            }
        }
    }
    if slots.is_empty() {
        slots.push("mon-am".into());
    }
    vec![
        ("delivery", delivery.to_string()),
        ("availability", slots.join(";")),
        ("new_per_week", rng.gen_range(1..=3).to_string()),
    ]
}

fn patient(
    params: &Params,
    c: u32,
    i: usize,
    j: usize,
    profile: Profile,
    th: &Therapist,
    rng: &mut ChaCha8Rng,
) -> Patient {
    let intake = profile.intake;
    let day0 = NaiveDate::from_ymd_opt(2023, 1, 2).unwrap_or_default();
    let start = day0 + Days::new(rng.gen_range(0..900));
    let referral = start - Days::new(rng.gen_range(7..60));
    let age = profile.age;
    let demographics = vec![
        (
            "birth_year",
            (chrono::Datelike::year(&start) - age).to_string(),
        ),
        (
            "sex",
            pick(rng, &[("female", 0.65), ("male", 0.33), ("other", 0.02)]).to_string(),
        ),
        (
            "ethnicity_group",
            pick(
                rng,
                &[
                    ("White", 0.8),
                    ("Asian", 0.08),
                    ("Black", 0.05),
                    ("Mixed", 0.04),
                    ("Other", 0.03),
                ],
            )
            .to_string(),
        ),
        ("deprivation_decile", rng.gen_range(1..=10).to_string()),
    ];
    // Trajectories per domain: a latent class (DOMAIN.md §4.1: distinct trajectory classes)
    // gives the shape and scales the domain's mean change, so the population mean change stays
    // near b_d·ln 8 while outcomes have the responder / non-responder shape behind the NHS TT
    // rates; the class is partly predicted by prognosis and chronicity. On top of it, a slope
    // per ln-session: within-class deviations (normal, correlated across domains), severity,
    // prognosis and the therapist's effect.
    let predicted = params.trajectories == Trajectories::Predicted;
    let class = draw_class(rng, predicted.then_some(&profile));
    let zi = correlated(rng, SLOPE_CORRELATION);
    let slopes: [f64; 2] = [0, 1].map(|d| {
        let (_, _, mean, _, _, _, _) = DOMAINS[d];
        let known = if predicted {
            SEVERITY_SLOPE * (intake[d] - mean) + profile.prognosis
        } else {
            0.0
        };
        WITHIN_CLASS_SLOPE_SD * zi[d] + known + th.effect[d]
    });
    let class_change =
        |d: usize, t: u32| CLASS_SCALE[class as usize] * DOMAINS[d].5 / 8f64.ln() * class.shape(t);
    // Unwrap safety: constant rate.
    let planned = 2 + Poisson::new(6.0).unwrap().sample(rng) as u32;
    let mut sessions = Vec::new();
    let mut dropout = false;
    let mut realized_effect = [0.0; 2];
    let mut ongoing = false;
    for t in 1..=planned {
        let date = start + Days::new(u64::from(7 * (t - 1)) + rng.gen_range(0..3));
        if t >= 2 && date > day0 + Days::new(EXPORT_DAY) {
            ongoing = true;
            break;
        }
        let lt = f64::from(t).ln();
        let noise = correlated(rng, NOISE_CORRELATION);
        let score = |d: usize, slope: f64| {
            if t == 1 {
                intake[d]
            } else {
                (intake[d] + class_change(d, t) + slope * lt + NOISE_SD * noise[d])
                    .round()
                    .clamp(0.0, DOMAINS[d].4)
            }
        };
        let true_scores: [f64; 2] = [0, 1].map(|d| score(d, slopes[d]));
        realized_effect = [0, 1].map(|d| true_scores[d] - score(d, slopes[d] - th.effect[d]));
        let measured = t == 1 || rng.r#gen::<f64>() >= SESSION_UNMEASURED;
        let measures = if measured {
            (0..2)
                .filter_map(|d| measure(d, true_scores[d] as u32, rng))
                .collect()
        } else {
            Vec::new()
        };
        sessions.push(Session {
            seq: t,
            date,
            measures,
        });
        if t >= 2 && t < planned {
            let f = |s: u32| DROPOUT_BASE * (f64::from(s) / f64::from(planned)).powi(2);
            let mut hazard = (f(t) - f(t - 1)) / (1.0 - f(t - 1));
            let expected = intake[0] + (DOMAINS[0].5 / 8f64.ln()) * lt;
            if true_scores[0] > expected {
                hazard *= MNAR_FACTOR;
            }
            if rng.r#gen::<f64>() < hazard {
                dropout = true;
                break;
            }
        }
    }
    let last = sessions.last().map_or(start, |s| s.date);
    let dx = if intake[0] - 15.4 > intake[1] - 14.0 + 2.0 {
        "F32.1"
    } else if intake[1] - 14.0 > intake[0] - 15.4 + 2.0 {
        "F41.1"
    } else {
        "F41.2"
    };
    let severe = intake[0] >= 15.0;
    let episode = vec![
        ("referral_date", referral.to_string()),
        ("start_date", start.to_string()),
        (
            "end_date",
            if ongoing {
                String::new()
            } else {
                last.to_string()
            },
        ),
        (
            "end_reason",
            match (ongoing, dropout) {
                (true, _) => "",
                (false, true) => "dropout",
                (false, false) => "completed",
            }
            .to_string(),
        ),
        ("sessions_planned", planned.to_string()),
        ("sessions_attended", sessions.len().to_string()),
        (
            "step",
            if (rng.r#gen::<f64>() < 0.7) == severe {
                "HI"
            } else {
                "LI"
            }
            .to_string(),
        ),
        ("provisional_dx", dx.to_string()),
    ];
    let mut episode = episode;
    episode.extend(profile.casemix);
    Patient {
        id: format!("C{c:02}-P{i:05}"),
        episode_id: format!("C{c:02}-E{i:05}"),
        therapist: j,
        demographics,
        episode,
        intake,
        dropout,
        planned,
        sessions,
        realized_effect,
        class,
        ongoing,
    }
}

/// Draws a trajectory class: with the profile, from shares moved by its prognosis and
/// chronicity and intake severity (a multinomial logit around [`CLASS_SHARES`]); without, from the shares alone.
fn draw_class(rng: &mut ChaCha8Rng, profile: Option<&Profile>) -> Class {
    let (z, chronic, severity) = profile.map_or((0.0, 0.0, 0.0), |p| {
        let (_, _, mean, sd, _, _, _) = DOMAINS[0];
        (
            p.prognosis / PROGNOSIS_SD,
            p.chronicity,
            (p.intake[0] - mean) / sd,
        )
    });
    let weights: Vec<f64> = (0..4)
        .map(|c| {
            let eta = CLASS_PROGNOSIS[c] * z
                + CLASS_CHRONICITY[c] * chronic
                + CLASS_SEVERITY[c] * severity;
            CLASS_SHARES[c] * eta.exp()
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.r#gen::<f64>() * total;
    for (c, w) in weights.iter().enumerate() {
        if u < *w {
            return Class::ALL[c];
        }
        u -= w;
    }
    Class::Deteriorator
}

impl Class {
    /// In class-index order.
    pub const ALL: [Class; 4] = [
        Class::EarlyResponder,
        Class::LateResponder,
        Class::NonResponder,
        Class::Deteriorator,
    ];

    /// The class's change by session t in units of ln-sessions (ln 8 at session 8 for both
    /// responder shapes, so they reach the same change by the planned end): early responders
    /// rise steeply (81 % of it by session 3), late ones follow a logistic step centred on
    /// session 6 (8 % by session 4); deteriorators and non-responders follow ln t.
    pub fn shape(self, t: u32) -> f64 {
        let t = f64::from(t);
        let ln8 = 8f64.ln();
        match self {
            Class::EarlyResponder => {
                let f = |t: f64| 1.0 - (-(t - 1.0) / 1.2).exp();
                ln8 * f(t) / f(8.0)
            }
            Class::LateResponder => {
                let f = |t: f64| 1.0 / (1.0 + (-(t - 6.0) * 1.2).exp());
                ln8 * (f(t) - f(1.0)) / (f(8.0) - f(1.0))
            }
            Class::NonResponder | Class::Deteriorator => t.ln(),
        }
    }
}

/// What is known of a patient at intake: scores and case mix. Drawn before assignment so that
/// confounded assignment can sort on it.
struct Profile {
    intake: [f64; 2],
    age: i32,
    /// Case-mix columns of episodes.csv, in order.
    casemix: Vec<(&'static str, String)>,
    /// Centred prognostic index, slope units (positive = less improvement).
    prognosis: f64,
    /// Standardised log duration of the problem.
    chronicity: f64,
}

fn profile(rng: &mut ChaCha8Rng) -> Profile {
    let z = correlated(rng, 0.65);
    let intake = [0, 1].map(|d| {
        let (_, _, mean, sd, max, _, _) = DOMAINS[d];
        (mean + sd * z[d]).round().clamp(0.0, max)
    });
    let age = normal(rng, 38.0, 13.0).round().clamp(18.0, 85.0) as i32;
    let flag = |rng: &mut ChaCha8Rng, p: f64| rng.r#gen::<f64>() < p;
    let employment = pick(
        rng,
        &[
            ("employed", 0.55),
            ("unemployed", 0.2),
            ("student", 0.1),
            ("retired", 0.08),
            ("other", 0.07),
        ],
    );
    let prior = flag(rng, 0.35);
    let med = flag(rng, 0.4);
    let ltc = flag(rng, 0.25);
    let disability = flag(rng, 0.1);
    let log_duration = normal(rng, 2.5, 1.0);
    let duration = log_duration.exp();
    // Unwrap safety: constant rate.
    let comorbidity = Poisson::new(0.8).unwrap().sample(rng) as u32;
    let referral = pick(rng, &[("self", 0.5), ("gp", 0.4), ("other", 0.1)]);
    let wsas = normal(rng, 18.0 + 0.5 * (intake[0] - 15.4), 8.0)
        .round()
        .clamp(0.0, 40.0);
    let f = f64::from;
    let index = PROGNOSIS_WEIGHTS[0] * f(u8::from(employment == "unemployed"))
        + PROGNOSIS_WEIGHTS[1] * f64::from(comorbidity)
        + PROGNOSIS_WEIGHTS[2] * f(u8::from(ltc))
        + PROGNOSIS_WEIGHTS[3] * f(u8::from(disability))
        + PROGNOSIS_WEIGHTS[4] * f(u8::from(prior))
        + PROGNOSIS_WEIGHTS[5] * (wsas - 18.0);
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    Profile {
        intake,
        age,
        casemix: vec![
            ("age", age.to_string()),
            ("employment", employment.to_string()),
            ("prior_treatment", yes(prior)),
            ("psychotropic_med", yes(med)),
            ("long_term_condition", yes(ltc)),
            ("disability", yes(disability)),
            ("duration_of_problem_months", format!("{duration:.1}")),
            ("comorbidity_count", comorbidity.to_string()),
            ("referral_source", referral.to_string()),
            ("wsas", wsas.to_string()),
        ],
        prognosis: index - PROGNOSIS_MEAN,
        chronicity: log_duration - 2.5,
    }
}

/// Item answers adding up to `total`, with items missing at random. `None` when two or more
/// are missing (the administration cannot be scored and is left out).
fn measure(domain: usize, total: u32, rng: &mut ChaCha8Rng) -> Option<Measure> {
    let n = DOMAINS[domain].6;
    let mut items = vec![0u8; n];
    // PHQ-9 item 9 (thoughts of being better off dead or of self-harm) takes points a fifth
    // as often as the others: answered 1 or more by about a third of intakes rather than
    // nearly every severe one, as in routine services.
    let weight = |i: usize| if domain == 0 && i == 8 { 0.2 } else { 1.0 };
    for _ in 0..total {
        let open: Vec<usize> = (0..n).filter(|i| items[*i] < 3).collect();
        let Ok(i) = open.choose_weighted(rng, |i| weight(*i)) else {
            break;
        };
        items[*i] += 1;
    }
    let items: Vec<Option<u8>> = items
        .into_iter()
        .map(|v| (rng.r#gen::<f64>() >= ITEM_MISSING).then_some(v))
        .collect();
    let missing = items.iter().filter(|v| v.is_none()).count();
    match missing {
        0 => Some(Measure {
            domain,
            score: Some(total),
            items,
        }),
        1 => Some(Measure {
            domain,
            score: None,
            items,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
