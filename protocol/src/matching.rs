//! Outcome-informed patient–therapist matching (DOMAIN.md §3, §8; issue 17): a shortlist of
//! 3–5 therapists with plain-language reasons, never one forced name. Pure: the node loads the
//! patient's intake, the request and the therapists (profiles, capacity, track records), this
//! decides.
//!
//! **Method** (parameters in [`Settings`]):
//! 1. *Intake* ([`intake`]): each domain score is standardised past its elevation threshold
//!    (the domain's, else the instrument's caseness cut-off) in units of the instrument's
//!    clinical SD (z domains: 1; without one, its reliable change; else a quarter of its
//!    range), oriented so that positive = worse. Elevated domains (the same rule as the
//!    track records' eligibility, [`crate::analysis::elevated`]) are ranked by that severity;
//!    the first three are the patient's *top* domains. A safety item at its critical answer
//!    (or the referrer's word) makes the request *urgent*.
//! 2. *Filters first* (logistics and must-haves, each exclusion with its reason): not
//!    accepting new patients; the week's new-case cap reached; a first slot later than the
//!    wait the patient accepts ([`Settings::max_wait_days`], or [`Settings::urgent_wait_days`]
//!    when urgent); no weekly time window in common (when both are known); too far for an
//!    in-person-only therapist (when the patient gave a position and radius; video
//!    therapists are within reach unless the patient requires in person); the payer not
//!    taken; a required preference (gender, language, modality, delivery) not met or not
//!    recorded.
//! 3. *Level* ([`level`], DOMAIN.md §3, \[D\] where the paper is silent): **L0** ineffective on
//!    an elevated domain; else **L3** effective on every top domain; else **L2** effective on
//!    the first; else **L1**. Ineffectiveness on a domain the patient is not elevated on does
//!    not count (it is not this patient's problem); a domain without a classified record
//!    ("insufficient data", or below the display minimum) is neither.
//! 4. *Rank*: score = w · level/3 + (1 − w) · fit, w = [`Settings::weight`] (the clinic's
//!    weighting of track record against preferences; default ½), fit = the share of the
//!    patient's nice-to-haves met (1 without any). Urgent requests rank by first slot, then
//!    level: the first available safe therapist comes first and no waiting is offered. Ties
//!    rotate: fewer allocations, then fewer first places in recent shortlists
//!    ([`Profile::allocations`], [`Profile::first_offers`]), then the sooner slot, so equal
//!    therapists take turns.
//! 5. *Shortlist*: the first [`Settings::length`] (3–5) therapists above L0. An L0 therapist
//!    is offered only to make up three when fewer safe ones remain, and carries a note for
//!    staff ([`Offer::staff_note`]). Fewer than three eligible: all of them, with a note of
//!    what excluded the others.
//!
//! Each offer has at most three [`Reason`]s (outcome, fit, logistics) and a
//! [`Badge`] per top domain whose record is thin; the shortlist has a one-line trade-off
//! between the best level and the soonest slot.

mod filters;
mod oversight;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::analysis::{domain_score, elevated};
use crate::instrument::{Direction, Domain, Instrument, ScoreTransform};
use crate::therapist::{Label, Minimums, TrackRecord};

pub use oversight::{
    EQUITY_RATIO, Equity, EquityGroup, LevelOutcome, Load, equity, fairness, outcomes_by_level,
};

/// Invalid matching input. Messages name the value and say what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A preference key other than gender, language, modality, delivery.
    #[error("unknown preference '{0}': use gender, language, modality or delivery")]
    UnknownKey(String),
    /// Not KEY=VALUE.
    #[error("preference '{0}': expected KEY=VALUE, e.g. language=pl")]
    BadPreference(String),
    /// A time window that is not DAY-PART.
    #[error(
        "window '{0}': expected DAY-PART with DAY mon…sun, weekdays or weekend and PART am, \
         pm or eve (or a DAY alone for the whole day), e.g. mon-pm"
    )]
    BadWindow(String),
    /// A delivery mode other than in-person / video.
    #[error("delivery '{0}': expected in-person or video")]
    BadDelivery(String),
    /// A score outside its instrument's range.
    #[error("{instrument} score {score} is outside [{min}, {max}]")]
    ScoreOutOfRange {
        /// Instrument id.
        instrument: String,
        /// The score given.
        score: f64,
        /// Lowest possible.
        min: f64,
        /// Highest possible.
        max: f64,
    },
    /// A setting or logistics value out of its range.
    #[error("{0}")]
    Invalid(String),
}

/// What a preference is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// The therapist's gender.
    Gender,
    /// A language the therapist works in (codes as in therapists.csv, e.g. `pl`).
    Language,
    /// A therapy the therapist offers (e.g. CBT, EMDR).
    Modality,
    /// In person or video.
    Delivery,
}

impl Key {
    /// The spelling in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Gender => "gender",
            Key::Language => "language",
            Key::Modality => "modality",
            Key::Delivery => "delivery",
        }
    }
}

/// One preference: a must-have (`required`) or a nice-to-have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preference {
    /// What it is about.
    pub key: Key,
    /// The wanted value, lower case (a delivery mode as `in-person` / `video`).
    pub value: String,
    /// A must-have: therapists without it are not offered.
    pub required: bool,
}

impl Preference {
    /// Parses `KEY=VALUE` (e.g. `language=pl`).
    pub fn parse(s: &str, required: bool) -> Result<Self, Error> {
        let (key, value) = s
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| Error::BadPreference(s.to_string()))?;
        let key = match key.to_ascii_lowercase().as_str() {
            "gender" => Key::Gender,
            "language" => Key::Language,
            "modality" => Key::Modality,
            "delivery" => Key::Delivery,
            _ => return Err(Error::UnknownKey(key.to_string())),
        };
        let value = match key {
            Key::Delivery => value.parse::<Delivery>()?.as_str().to_string(),
            _ => value.to_lowercase(),
        };
        Ok(Self {
            key,
            value,
            required,
        })
    }
}

/// How sessions are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Face to face at the therapist's site.
    InPerson,
    /// Video call.
    Video,
}

impl Delivery {
    /// The spelling in requests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::InPerson => "in-person",
            Delivery::Video => "video",
        }
    }
}

impl FromStr for Delivery {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['_', ' '], "-")
            .as_str()
        {
            "in-person" | "inperson" | "face-to-face" => Ok(Delivery::InPerson),
            "video" | "online" => Ok(Delivery::Video),
            _ => Err(Error::BadDelivery(s.to_string())),
        }
    }
}

/// Part of a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Morning.
    Am,
    /// Afternoon.
    Pm,
    /// Evening.
    Eve,
}

/// One weekly time window: a day (0 = Monday) and a part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Slot {
    /// 0 = Monday … 6 = Sunday.
    pub day: u8,
    /// Morning, afternoon or evening.
    pub part: Part,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Slot {
    /// Parses one window: `mon-pm`, `mon` (the whole day), `weekdays-eve`, `weekend`.
    pub fn parse(s: &str) -> Result<Vec<Slot>, Error> {
        let bad = || Error::BadWindow(s.to_string());
        let lower = s.trim().to_ascii_lowercase();
        let (day, part) = match lower.split_once('-') {
            Some((d, p)) => (d, Some(p)),
            None => (lower.as_str(), None),
        };
        let days: Vec<u8> = match day {
            "weekdays" => (0..5).collect(),
            "weekend" => vec![5, 6],
            d => vec![DAYS.iter().position(|x| *x == d).ok_or_else(bad)? as u8],
        };
        let parts = match part {
            None => vec![Part::Am, Part::Pm, Part::Eve],
            Some("am") => vec![Part::Am],
            Some("pm") => vec![Part::Pm],
            Some("eve") => vec![Part::Eve],
            Some(_) => return Err(bad()),
        };
        Ok(days
            .iter()
            .flat_map(|&day| parts.iter().map(move |&part| Slot { day, part }))
            .collect())
    }

    /// Parses a `;`- or `,`-separated list of windows (sorted, without repeats).
    pub fn parse_list(s: &str) -> Result<Vec<Slot>, Error> {
        let mut slots = Vec::new();
        for w in s.split([';', ',']).map(str::trim).filter(|w| !w.is_empty()) {
            slots.extend(Slot::parse(w)?);
        }
        slots.sort();
        slots.dedup();
        Ok(slots)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = match self.part {
            Part::Am => "am",
            Part::Pm => "pm",
            Part::Eve => "eve",
        };
        write!(f, "{}-{part}", DAYS[usize::from(self.day)])
    }
}

/// A point on the map (degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

impl Position {
    /// Great-circle distance in km (haversine, mean Earth radius 6,371 km).
    pub fn distance_km(self, other: Position) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * 6371.0 * a.sqrt().min(1.0).asin()
    }

    /// Checks the ranges.
    pub fn validate(self) -> Result<Self, Error> {
        if (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lon) {
            Ok(self)
        } else {
            Err(Error::Invalid(format!(
                "position {},{}: latitude must be within ±90 and longitude within ±180",
                self.lat, self.lon
            )))
        }
    }
}

/// The patient's practical constraints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Logistics {
    /// Weekly windows the patient can attend; empty = any time.
    pub windows: Vec<Slot>,
    /// Where the patient travels from, with how far they can travel (km).
    pub reach: Option<(Position, f64)>,
    /// The patient's payer (e.g. NHS, an insurer); `None` = not a constraint.
    pub payer: Option<String>,
    /// The longest wait the patient accepts, days (default [`Settings::max_wait_days`]).
    pub max_wait_days: Option<u32>,
}

/// One domain of the patient's intake.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainScore {
    /// Domain id, e.g. `depression`.
    pub domain: String,
    /// Instrument id, e.g. `PHQ-9`.
    pub instrument: String,
    /// The unit effects on this domain are in: `PHQ-9 points`, or `SD` for z domains.
    pub unit: String,
    /// The instrument total given.
    pub score: f64,
    /// Standardised distance past the elevation threshold (positive = worse than it).
    pub severity: f64,
    /// At or beyond the threshold.
    pub elevated: bool,
}

/// The patient's intake profile: domains ranked by severity, and urgency.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Intake {
    /// Every domain given, elevated ones first, each group by severity (worst first).
    pub domains: Vec<DomainScore>,
    /// Why the request is urgent (a safety item, the referrer's word); `None` = routine.
    pub urgent: Option<String>,
}

/// Domains in the top of the patient's ranking that define level 3.
pub const TOP_DOMAINS: usize = 3;

impl Intake {
    /// The elevated domains, worst first.
    pub fn elevated(&self) -> impl Iterator<Item = &DomainScore> {
        self.domains.iter().filter(|d| d.elevated)
    }

    /// The top (at most three) elevated domains.
    pub fn top(&self) -> Vec<&DomainScore> {
        self.elevated().take(TOP_DOMAINS).collect()
    }
}

/// Builds the intake from (domain, its instrument, the instrument total) per domain.
pub fn intake(
    scores: &[(&Domain, &Instrument, f64)],
    urgent: Option<String>,
) -> Result<Intake, Error> {
    let mut domains = Vec::with_capacity(scores.len());
    for &(domain, inst, total) in scores {
        if !inst.in_range(total) {
            return Err(Error::ScoreOutOfRange {
                instrument: inst.id.clone(),
                score: total,
                min: inst.min,
                max: inst.max,
            });
        }
        let s = domain_score(domain, inst, total);
        domains.push(DomainScore {
            domain: domain.id.clone(),
            instrument: inst.id.clone(),
            unit: unit(domain, inst),
            score: total,
            severity: severity(domain, inst, s),
            elevated: elevated(domain, inst, s),
        });
    }
    domains.sort_by(|a, b| {
        b.elevated
            .cmp(&a.elevated)
            .then(b.severity.total_cmp(&a.severity))
            .then(a.domain.cmp(&b.domain))
    });
    Ok(Intake { domains, urgent })
}

fn unit(domain: &Domain, inst: &Instrument) -> String {
    match domain.transform {
        ScoreTransform::Z => "SD".to_string(),
        ScoreTransform::Raw => format!("{} points", inst.id),
    }
}

/// Distance of a domain score past its threshold in the instrument's clinical SDs (module doc).
fn severity(domain: &Domain, inst: &Instrument, s: f64) -> f64 {
    let (threshold, scale) = match domain.transform {
        ScoreTransform::Z => (domain.elevated_threshold.unwrap_or(0.0), 1.0),
        ScoreTransform::Raw => {
            let threshold = domain
                .elevated_threshold
                .or(inst.caseness_cutoff)
                .unwrap_or(match inst.direction {
                    Direction::LowerIsBetter => inst.min,
                    Direction::HigherIsBetter => inst.max,
                });
            let scale = inst
                .norms
                .clinical_sd
                .or(inst.reliable_change())
                .unwrap_or((inst.max - inst.min) / 4.0);
            (threshold, scale)
        }
    };
    let past = match inst.direction {
        Direction::LowerIsBetter => s - threshold,
        Direction::HigherIsBetter => threshold - s,
    };
    if scale > 0.0 { past / scale } else { past }
}

/// What the referrer asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Request {
    /// The patient's intake.
    pub intake: Intake,
    /// Preferences, must-haves and nice-to-haves.
    pub preferences: Vec<Preference>,
    /// Practical constraints.
    pub logistics: Logistics,
}

/// A therapist's profile and capacity, as the clinic recorded them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Profile {
    /// How the therapist is shown (a pseudonym, or the clinic's staff id when revealed).
    pub id: String,
    /// Gender, lower case.
    pub gender: Option<String>,
    /// Languages, lower case.
    pub languages: Vec<String>,
    /// Therapies offered, lower case.
    pub modalities: Vec<String>,
    /// Delivery modes; empty = not recorded (in person assumed).
    pub delivery: Vec<Delivery>,
    /// Weekly windows with clinic hours; empty = not recorded.
    pub availability: Vec<Slot>,
    /// Payers taken, lower case; empty = not recorded (any).
    pub payers: Vec<String>,
    /// Site name.
    pub site: Option<String>,
    /// The site's position, when the clinic configured it.
    pub position: Option<Position>,
    /// Accepting new patients (`None` = not recorded, taken as yes).
    pub accepting_new: Option<bool>,
    /// Days to the first free slot (`None` = not recorded).
    pub wait_days: Option<u32>,
    /// Most new patients a week (`None` = no cap recorded).
    pub new_per_week: Option<u32>,
    /// New patients allocated in the last 7 days (against the cap).
    pub allocated_this_week: u32,
    /// Allocations in the rotation window (fairness: fewer first).
    pub allocations: u32,
    /// First places in shortlists of the rotation window (fewer first).
    pub first_offers: u32,
}

/// A therapist's record on one domain (`None` record = fewer patients than the display
/// minimum).
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRecord {
    /// Domain id.
    pub domain: String,
    /// The track record, as `stats` computed it.
    pub record: Option<TrackRecord>,
}

/// A therapist the clinic could offer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// Profile and capacity.
    pub profile: Profile,
    /// Track records by domain (missing domains: no record).
    pub records: Vec<DomainRecord>,
}

impl Candidate {
    fn record(&self, domain: &str) -> Option<&TrackRecord> {
        self.records
            .iter()
            .find(|r| r.domain == domain)
            .and_then(|r| r.record.as_ref())
    }

    fn label(&self, domain: &str) -> Label {
        self.record(domain)
            .map_or(Label::InsufficientData, |r| r.label)
    }
}

/// The clinic's matching settings (`[matching]` in config.toml).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Settings {
    /// Weight of the track record against preferences, 0–1.
    pub weight: f64,
    /// Therapists on a shortlist, 3–5.
    pub length: usize,
    /// Longest wait offered to a routine patient unless the request says otherwise (days).
    pub max_wait_days: u32,
    /// Longest wait offered to an urgent patient (days).
    pub urgent_wait_days: u32,
    /// The track records' minimums (badges: below `classify` = limited data).
    #[serde(skip)]
    pub minimums: Minimums,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            weight: 0.5,
            length: 5,
            max_wait_days: 28,
            urgent_wait_days: 7,
            minimums: Minimums::default(),
        }
    }
}

/// Shortest shortlist (when that many therapists are eligible).
pub const MIN_LENGTH: usize = 3;
/// Longest shortlist.
pub const MAX_LENGTH: usize = 5;

impl Settings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(Error::Invalid(format!(
                "track_record_weight {} is outside [0, 1]",
                self.weight
            )));
        }
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&self.length) {
            return Err(Error::Invalid(format!(
                "shortlist {} is outside {MIN_LENGTH}–{MAX_LENGTH}",
                self.length
            )));
        }
        if self.urgent_wait_days > self.max_wait_days {
            return Err(Error::Invalid(format!(
                "urgent_wait_days {} is longer than max_wait_days {}",
                self.urgent_wait_days, self.max_wait_days
            )));
        }
        Ok(())
    }
}

/// Match level (DOMAIN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Ineffective on an elevated domain: offered only when unavoidable, for staff.
    L0,
    /// Not ineffective on any elevated domain.
    L1,
    /// Effective on the most elevated domain, ineffective on none.
    L2,
    /// Effective on every top domain, ineffective on none.
    L3,
}

impl Level {
    /// 0–3.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// From 0–3.
    pub fn from_number(n: u8) -> Option<Level> {
        [Level::L0, Level::L1, Level::L2, Level::L3]
            .get(usize::from(n))
            .copied()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {}", self.number())
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

/// The level of a therapist for an intake (module doc, step 3).
pub fn level(intake: &Intake, c: &Candidate) -> Level {
    if intake
        .elevated()
        .any(|d| c.label(&d.domain) == Label::Ineffective)
    {
        return Level::L0;
    }
    let top = intake.top();
    let effective = |d: &&DomainScore| c.label(&d.domain) == Label::Effective;
    match top.first() {
        Some(_) if top.iter().all(effective) => Level::L3,
        Some(first) if effective(first) => Level::L2,
        _ => Level::L1,
    }
}

/// What a reason is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aspect {
    /// The track record.
    Outcome,
    /// Preferences met.
    Fit,
    /// Slot, place, delivery.
    Logistics,
}

/// One plain-language reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// What it is about.
    pub aspect: Aspect,
    /// The sentence.
    pub text: String,
}

/// How thin a top domain's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Thin {
    /// Shown but below the classification minimum.
    LimitedData,
    /// Below the display minimum.
    NotEnoughData,
}

impl Thin {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Thin::LimitedData => "limited data",
            Thin::NotEnoughData => "not enough data",
        }
    }
}

/// A badge: a top domain whose record is thin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Badge {
    /// Domain id.
    pub domain: String,
    /// How thin.
    pub thin: Thin,
}

/// One therapist on the shortlist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offer {
    /// As shown.
    pub therapist: String,
    /// Match level.
    pub level: Level,
    /// The ranking score, w · level/3 + (1 − w) · fit.
    pub score: f64,
    /// Share of nice-to-haves met.
    pub fit: f64,
    /// Days to the first slot, when recorded.
    pub wait_days: Option<u32>,
    /// At most three reasons: outcome, fit, logistics.
    pub reasons: Vec<Reason>,
    /// Thin records on the top domains.
    pub badges: Vec<Badge>,
    /// For staff only: why a therapist with a poor record on the patient's problem is here.
    pub staff_note: Option<String>,
}

/// A therapist left out before ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exclusion {
    /// As shown.
    pub therapist: String,
    /// Every filter the therapist failed.
    pub reasons: Vec<String>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shortlist {
    /// Therapists offered, best first.
    pub offers: Vec<Offer>,
    /// Eligible therapists not on the list (beyond its length, or L0 with alternatives).
    pub not_listed: usize,
    /// Therapists excluded by a filter, with why.
    pub excluded: Vec<Exclusion>,
    /// The wait-versus-fit trade-off in one line.
    pub trade_off: String,
    /// Urgent: the first available safe therapist first, no waiting offered.
    pub urgent: bool,
    /// Notes for staff (urgency, thin lists, relaxations that would widen it).
    pub notes: Vec<String>,
}

impl Shortlist {
    /// The same shortlist with each therapist shown as `name` gives (a staff id from the
    /// clinic's display list), else as before: on the offers, the exclusions, and in the
    /// trade-off line and notes that name them. For display only; what is logged is the
    /// shortlist as made, by pseudonym.
    pub fn shown_as(mut self, name: impl Fn(&str) -> Option<String>) -> Shortlist {
        let mut renamed = Vec::new();
        for id in self
            .offers
            .iter_mut()
            .map(|o| &mut o.therapist)
            .chain(self.excluded.iter_mut().map(|e| &mut e.therapist))
        {
            if let Some(shown) = name(id) {
                renamed.push((std::mem::replace(id, shown.clone()), shown));
            }
        }
        for (from, to) in &renamed {
            self.trade_off = self.trade_off.replace(from.as_str(), to);
            for note in &mut self.notes {
                *note = note.replace(from.as_str(), to);
            }
        }
        self
    }
}

struct Eligible<'c> {
    candidate: &'c Candidate,
    level: Level,
    fit: f64,
    score: f64,
    distance_km: Option<f64>,
}

/// Matches one request against the clinic's therapists (module doc).
pub fn shortlist(
    request: &Request,
    candidates: &[Candidate],
    settings: &Settings,
) -> Result<Shortlist, Error> {
    settings.validate()?;
    let urgent = request.intake.urgent.is_some();
    let max_wait = if urgent {
        settings.urgent_wait_days
    } else {
        request
            .logistics
            .max_wait_days
            .unwrap_or(settings.max_wait_days)
    };
    let mut excluded = Vec::new();
    let mut eligible = Vec::new();
    for c in candidates {
        let (reasons, distance_km) = filters::check(request, c, max_wait);
        if !reasons.is_empty() {
            excluded.push(Exclusion {
                therapist: c.profile.id.clone(),
                reasons,
            });
            continue;
        }
        let level = level(&request.intake, c);
        let fit = filters::fit(&request.preferences, &c.profile);
        let score =
            settings.weight * f64::from(level.number()) / 3.0 + (1.0 - settings.weight) * fit;
        eligible.push(Eligible {
            candidate: c,
            level,
            fit,
            score,
            distance_km,
        });
    }
    eligible.sort_by(|a, b| order(a, b, urgent));
    let (safe, unsafe_): (Vec<Eligible>, Vec<Eligible>) =
        eligible.into_iter().partition(|e| e.level > Level::L0);
    let take_safe = safe.len().min(settings.length);
    let take_unsafe = MIN_LENGTH.saturating_sub(take_safe).min(unsafe_.len());
    let not_listed = safe.len() - take_safe + unsafe_.len() - take_unsafe;
    let listed: Vec<&Eligible> = safe[..take_safe]
        .iter()
        .chain(&unsafe_[..take_unsafe])
        .collect();
    let offers: Vec<Offer> = listed
        .iter()
        .map(|e| text::offer(request, e, settings, take_safe))
        .collect();
    let notes = text::notes(request, &offers, &excluded, max_wait);
    Ok(Shortlist {
        trade_off: text::trade_off(&offers, urgent, max_wait),
        offers,
        not_listed,
        excluded,
        urgent,
        notes,
    })
}

fn order(a: &Eligible, b: &Eligible, urgent: bool) -> std::cmp::Ordering {
    let (pa, pb) = (&a.candidate.profile, &b.candidate.profile);
    let wait = |p: &Profile| p.wait_days.unwrap_or(u32::MAX);
    let first = if urgent {
        wait(pa).cmp(&wait(pb)).then(b.level.cmp(&a.level))
    } else {
        b.score.total_cmp(&a.score)
    };
    first
        .then(pa.allocations.cmp(&pb.allocations))
        .then(pa.first_offers.cmp(&pb.first_offers))
        .then(wait(pa).cmp(&wait(pb)))
        .then(pa.id.cmp(&pb.id))
}

/// Whether the profile meets a preference (`None` = the attribute is not recorded).
fn meets(q: &Preference, p: &Profile) -> Option<bool> {
    let has = |list: &[String]| {
        (!list.is_empty()).then(|| list.iter().any(|v| v.eq_ignore_ascii_case(&q.value)))
    };
    match q.key {
        Key::Gender => p.gender.as_ref().map(|g| g.eq_ignore_ascii_case(&q.value)),
        Key::Language => has(&p.languages),
        Key::Modality => has(&p.modalities),
        Key::Delivery => {
            let modes: &[Delivery] = if p.delivery.is_empty() {
                &[Delivery::InPerson]
            } else {
                &p.delivery
            };
            Some(modes.iter().any(|d| d.as_str() == q.value))
        }
    }
}
