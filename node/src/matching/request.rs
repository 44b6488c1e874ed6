//! A matching request as people give it (a request file, `match`'s flags, the dashboard's form),
//! checked into an [`Ask`], with every problem of its preferences and windows at once.

use anyhow::{Result, bail};
use protocol::matching::{Position, Preference, Slot};
use serde::Deserialize;

use super::{Ask, Groups, Origin, Patient};

/// A request as a file, the command line's flags or the dashboard's form say it: the flags'
/// keys, closed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// A stored patient, by the clinic's id.
    pub patient: Option<String>,
    /// Intake totals by instrument id or alias (instead of a stored patient).
    #[serde(default)]
    pub scores: std::collections::BTreeMap<String, f64>,
    /// A crisis: the first available safe therapist.
    #[serde(default)]
    pub urgent: bool,
    /// Nice-to-haves, KEY=VALUE.
    #[serde(default)]
    pub prefer: Vec<String>,
    /// Must-haves, KEY=VALUE.
    #[serde(default)]
    pub require: Vec<String>,
    /// Weekly windows, DAY-PART.
    #[serde(default)]
    pub windows: Vec<String>,
    /// Where the patient travels from, [lat, lon].
    pub from: Option<[f64; 2]>,
    /// Where the patient travels from, a site of `[matching] sites`.
    pub near: Option<String>,
    /// How far the patient can travel, km.
    pub radius_km: Option<f64>,
    /// The patient's payer.
    pub payer: Option<String>,
    /// The longest wait the patient accepts, days.
    pub max_wait_days: Option<u32>,
    /// The equity groups (given scores only).
    #[serde(default)]
    pub groups: GroupsFile,
}

/// The equity groups of a request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFile {
    /// Sex.
    pub sex: Option<String>,
    /// Age in years.
    pub age: Option<i64>,
    /// Ethnicity group.
    pub ethnicity: Option<String>,
    /// Deprivation decile, 1–10.
    pub deprivation_decile: Option<i64>,
}

/// The preferences and windows of a request, or every problem with them at once.
pub fn parse_wishes(
    prefer: &[String],
    require: &[String],
    windows: &[String],
) -> Result<(Vec<Preference>, Vec<Slot>)> {
    let mut problems = Vec::new();
    let mut preferences = Vec::new();
    for (list, required) in [(prefer, false), (require, true)] {
        for p in list.iter().filter(|p| !p.trim().is_empty()) {
            match Preference::parse(p, required) {
                Ok(p) => preferences.push(p),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    let mut slots = Vec::new();
    for w in windows.iter().filter(|w| !w.trim().is_empty()) {
        match Slot::parse(w) {
            Ok(s) => slots.extend(s),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    slots.sort();
    slots.dedup();
    Ok((preferences, slots))
}

/// The equity groups given with a request, checked.
pub fn groups(
    sex: Option<String>,
    age: Option<i64>,
    ethnicity: Option<String>,
    decile: Option<i64>,
) -> Result<Groups> {
    if let Some(a) = age
        && !(0..=130).contains(&a)
    {
        bail!("age {a} is not an age in years (0–130)");
    }
    if let Some(d) = decile
        && !(1..=10).contains(&d)
    {
        bail!("deprivation decile {d} is outside 1–10");
    }
    Ok(Groups {
        ethnicity,
        sex: sex.map(|s| s.to_lowercase()),
        age_band: age.map(super::age_band),
        deprivation_decile: decile,
    })
}

/// A request (from flags or a file) checked into an [`Ask`].
pub fn ask(r: RequestFile) -> Result<Ask> {
    let patient = match (r.patient, r.scores.is_empty()) {
        (Some(_), false) => bail!("give either a stored patient or scores, not both"),
        (Some(p), true) => Patient::Stored(p),
        (None, true) => bail!("say whose intake to match on: patient = \"ID\" or [scores]"),
        (None, false) => Patient::Given {
            scores: r.scores.into_iter().collect(),
            groups: groups(
                r.groups.sex,
                r.groups.age,
                r.groups.ethnicity,
                r.groups.deprivation_decile,
            )?,
        },
    };
    let from = match (r.from, r.near) {
        (Some(_), Some(_)) => bail!("give either from or near, not both"),
        (Some([lat, lon]), None) => Some(Origin::Position(Position { lat, lon }.validate()?)),
        (None, Some(site)) => Some(Origin::Site(site)),
        (None, None) => None,
    };
    let (preferences, windows) = parse_wishes(&r.prefer, &r.require, &r.windows)?;
    Ok(Ask {
        patient,
        urgent: r.urgent,
        preferences,
        windows,
        from,
        radius_km: r.radius_km,
        payer: r.payer,
        max_wait_days: r.max_wait_days,
        by: None,
    })
}
