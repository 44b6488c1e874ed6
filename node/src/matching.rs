//! `mbc-node match`: a shortlist of therapists for a patient (protocol::matching decides;
//! this loads and logs). Local only: nothing of it leaves the clinic.
//!
//! [`shortlist`] reads the patient's intake (a stored patient's latest episode: first scores,
//! safety items at its first and latest administrations, demographics for the equity
//! monitor; or scores given with the request), the therapists' profiles and capacity from the
//! store, their track records from the engine (`stats`, against the same reference), and the
//! clinic's `[matching]` settings; then logs the request and the shortlist as shown in the
//! append-only audit (`match_request`, `match_offer`) in one transaction. Anything wrong with
//! the request is refused before anything is logged. [`record`] adds what happened
//! (`match_outcome`: the therapist chosen, or a decline). [`report()`] is the oversight.

mod audit;
pub mod report;
pub mod request;

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use protocol::instrument::{Domain, Instrument};
use protocol::matching::{
    self, Candidate, Delivery, DomainRecord, Intake, Logistics, Position, Preference, Profile,
    Request, Shortlist, Slot,
};
use protocol::pseudonym::IdKind;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

pub use audit::{Choice, Recorded, record};
pub use report::{MatchReport, report};

use crate::node::{Node, Reference};
use crate::staff::StaffList;
use crate::stats::output::short;
use crate::{clock, stats};

/// The equity monitor's groups of a patient, as far as known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Groups {
    /// Ethnicity group (as the clinic records it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ethnicity: Option<String>,
    /// Sex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    /// Age band (`18–24`, …, `65+`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_band: Option<String>,
    /// Deprivation decile, 1 (most deprived) – 10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprivation_decile: Option<i64>,
}

impl Groups {
    /// (attribute, group) for each known attribute, as the report names them.
    pub fn pairs(&self) -> Vec<(String, String)> {
        [
            ("ethnicity", self.ethnicity.clone()),
            ("sex", self.sex.clone()),
            ("age band", self.age_band.clone()),
            (
                "deprivation decile",
                self.deprivation_decile.map(|d| d.to_string()),
            ),
        ]
        .into_iter()
        .filter_map(|(a, g)| g.map(|g| (a.to_string(), g)))
        .collect()
    }
}

/// The age band of an age in years.
pub fn age_band(age: i64) -> String {
    match age {
        ..18 => "under 18",
        18..=24 => "18–24",
        25..=34 => "25–34",
        35..=44 => "35–44",
        45..=54 => "45–54",
        55..=64 => "55–64",
        _ => "65+",
    }
    .to_string()
}

/// Who a request is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Patient {
    /// A stored patient, by the clinic's own id: intake and groups from the store.
    Stored(String),
    /// Scores given with the request: (instrument id or alias, total), and the groups.
    Given {
        /// Instrument totals.
        scores: Vec<(String, f64)>,
        /// The equity groups, when the referrer gives them.
        groups: Groups,
    },
}

/// A request as the referrer makes it (the command line or a request file).
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// Whose intake.
    pub patient: Patient,
    /// The referrer says it is urgent (beyond any safety item).
    pub urgent: bool,
    /// Preferences (must-haves and nice-to-haves).
    pub preferences: Vec<Preference>,
    /// Weekly windows the patient can attend (empty = any).
    pub windows: Vec<Slot>,
    /// Where the patient travels from: a position, or a configured site's name.
    pub from: Option<Origin>,
    /// How far the patient can travel, km.
    pub radius_km: Option<f64>,
    /// The patient's payer.
    pub payer: Option<String>,
    /// The longest wait the patient accepts (default `[matching] max_wait_days`).
    pub max_wait_days: Option<u32>,
    /// Who asks (kept in the audit).
    pub by: Option<String>,
}

/// Where a patient travels from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// A position.
    Position(Position),
    /// A site of `[matching] sites`.
    Site(String),
}

/// A logged shortlist.
#[derive(Debug, Clone, Serialize)]
pub struct Matched {
    /// The audit row: `match record ID …` refers to it.
    pub request_id: i64,
    /// When.
    pub created_at: String,
    /// The patient, as the request named them (a stored patient's own id), else none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The intake matched on.
    pub intake: Intake,
    /// The shortlist.
    pub shortlist: Shortlist,
    /// What the track records were measured against.
    pub reference: String,
}

/// A therapist as loaded: its rowid and pseudonym beside the candidate.
struct Loaded {
    id: i64,
    candidate: Candidate,
}

/// Matches `ask` and logs it (module doc). The shortlist returned shows therapists by the
/// staff ids of `staff` (`--reveal`, `[dashboard] staff_list`); the one logged does not, nor
/// does the ranking depend on them.
pub fn shortlist(node: &Node, ask: &Ask, staff: &StaffList) -> Result<Matched> {
    let config = node.config();
    let settings = config.matching.settings(&config.stats)?;
    let now = clock::now_utc();
    let (intake, groups, patient_id) = {
        let store = node.store();
        let registry = store.registry()?;
        read_intake(
            store.conn(),
            node,
            &ask.patient,
            ask.urgent,
            registry.instruments(),
            registry.domains(),
            now,
        )?
    };
    let logistics = logistics(node, ask)?;
    let derived = node.derive(&stats::Overrides::default(), &Reference::Latest)?;
    let records = records_by_therapist(&derived);
    let store = node.store();
    let therapists = load_therapists(
        store.conn(),
        node,
        &records,
        &clock::rfc3339(now - chrono::Days::new(7)),
        &clock::rfc3339(now - chrono::Days::new(u64::from(config.matching.rotation_days))),
    )?;
    drop(store);
    if therapists.is_empty() {
        bail!(
            "no therapists in this store to match with: import the clinic's therapists \
             (therapists.csv, or FHIR Practitioners) first"
        );
    }
    let request = Request {
        intake,
        preferences: ask.preferences.clone(),
        logistics,
    };
    let candidates: Vec<Candidate> = therapists.iter().map(|t| t.candidate.clone()).collect();
    let list = matching::shortlist(&request, &candidates, &settings)?;
    let ids: HashMap<&str, i64> = therapists
        .iter()
        .map(|t| (t.candidate.profile.id.as_str(), t.id))
        .collect();
    let created_at = clock::rfc3339(now);
    let reference = derived.reference_description();
    let mut store = node.store();
    let request_id = audit::log(
        &mut store,
        &audit::Entry {
            created_at: &created_at,
            by: ask.by.as_deref(),
            patient_id,
            request: &request,
            settings: &settings,
            groups: &groups,
            shortlist: &list,
            reference: &reference,
            therapist_ids: &ids,
        },
    )?;
    Ok(Matched {
        request_id,
        created_at,
        patient: match &ask.patient {
            Patient::Stored(raw) => Some(raw.clone()),
            Patient::Given { .. } => None,
        },
        intake: request.intake,
        // Staff ids for this screen only: the log above holds pseudonyms.
        shortlist: list.shown_as(|id| staff.get(id).map(str::to_owned)),
        reference,
    })
}

/// The request's logistics, with a site's name resolved to its position.
fn logistics(node: &Node, ask: &Ask) -> Result<Logistics> {
    let sites = &node.config().matching.sites;
    let from = match &ask.from {
        None => None,
        Some(Origin::Position(p)) => Some(p.validate()?),
        Some(Origin::Site(name)) => {
            Some(node.config().matching.position(name).with_context(|| {
                let known: Vec<&str> = sites.keys().map(String::as_str).collect();
                format!(
                    "unknown site {name:?} (sites in [matching] sites: {})",
                    if known.is_empty() {
                        "none configured".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            })?)
        }
    };
    if let Some(r) = ask.radius_km
        && !(r.is_finite() && r > 0.0)
    {
        bail!("a travel radius must be a positive number of km, not {r}");
    }
    let reach = match (from, ask.radius_km) {
        (Some(p), Some(r)) => Some((p, r)),
        (None, Some(_)) => bail!("a travel radius needs where the patient travels from"),
        // A position without a radius: distances are shown, nobody is excluded.
        (Some(p), None) => Some((p, f64::INFINITY)),
        (None, None) => None,
    };
    Ok(Logistics {
        windows: ask.windows.clone(),
        reach,
        payer: ask.payer.clone(),
        max_wait_days: ask.max_wait_days,
    })
}

/// The intake, the equity groups and the patient's rowid (stored patients).
fn read_intake(
    conn: &Connection,
    node: &Node,
    patient: &Patient,
    urgent: bool,
    instruments: &[Instrument],
    domains: &[Domain],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Intake, Groups, Option<i64>)> {
    let referrer = urgent.then(|| "the referrer marked the request urgent".to_string());
    match patient {
        Patient::Given { scores, groups } => {
            let mut totals = Vec::new();
            for (name, total) in scores {
                let inst = instruments
                    .iter()
                    .find(|i| {
                        i.id.eq_ignore_ascii_case(name)
                            || i.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
                    })
                    .with_context(|| {
                        let known: Vec<&str> = instruments.iter().map(|i| i.id.as_str()).collect();
                        format!("unknown instrument {name:?} (known: {})", known.join(", "))
                    })?;
                totals.push((inst.id.clone(), *total));
            }
            let intake = intake(&totals, instruments, domains, referrer)?;
            Ok((intake, groups.clone(), None))
        }
        Patient::Stored(raw) => stored_intake(conn, node, raw, instruments, domains, referrer, now),
    }
}

/// The intake of `scores` (instrument id, total) over every domain those instruments back.
fn intake(
    scores: &[(String, f64)],
    instruments: &[Instrument],
    domains: &[Domain],
    urgent: Option<String>,
) -> Result<Intake> {
    let mut rows: Vec<(&Domain, &Instrument, f64)> = Vec::new();
    for (id, total) in scores {
        let inst = instruments
            .iter()
            .find(|i| i.id == *id)
            .with_context(|| format!("unknown instrument {id:?}"))?;
        let backed: Vec<&Domain> = domains.iter().filter(|d| d.instrument_id == *id).collect();
        if backed.is_empty() {
            bail!("no domain is measured by {id} (see `mbc-node instruments`)");
        }
        rows.extend(backed.into_iter().map(|d| (d, inst, *total)));
    }
    if rows.is_empty() {
        bail!("no intake scores to match on: give a stored patient or at least one score");
    }
    Ok(matching::intake(&rows, urgent)?)
}

fn stored_intake(
    conn: &Connection,
    node: &Node,
    raw: &str,
    instruments: &[Instrument],
    domains: &[Domain],
    referrer: Option<String>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Intake, Groups, Option<i64>)> {
    let pseudonym = node.pseudonymiser().pseudonym(IdKind::Patient, raw.trim());
    // (patient rowid, birth year, groups without the age band)
    let row: Option<(i64, Option<i64>, Groups)> = conn
        .query_row(
            "SELECT patient_id, birth_year, sex, ethnicity_group, deprivation_decile
             FROM patient WHERE pseudonym = ?1",
            [&pseudonym],
            |r| {
                let groups = Groups {
                    sex: r.get(2)?,
                    ethnicity: r.get(3)?,
                    deprivation_decile: r.get(4)?,
                    age_band: None,
                };
                Ok((r.get(0)?, r.get(1)?, groups))
            },
        )
        .optional()?;
    let Some((patient, birth_year, groups)) = row else {
        bail!(
            "no patient {raw} in this store (the id as the clinic's export names it, e.g. the \
             patient_id column or the FHIR Patient id)"
        );
    };
    let episode: Option<i64> = conn
        .query_row(
            "SELECT episode_id FROM episode WHERE patient_id = ?1
             ORDER BY coalesce(start_date, referral_date, '') DESC, episode_id DESC LIMIT 1",
            [patient],
            |r| r.get(0),
        )
        .optional()?;
    let episode = episode.with_context(|| format!("patient {raw} has no episode to match on"))?;
    let mut stmt = conn.prepare(
        "SELECT instrument_id, first_score FROM episode_scores WHERE episode_id = ?1
         ORDER BY instrument_id",
    )?;
    let scores: Vec<(String, f64)> = stmt
        .query_map([episode], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let scores: Vec<(String, f64)> = scores
        .into_iter()
        .filter(|(id, _)| domains.iter().any(|d| d.instrument_id == *id))
        .collect();
    if scores.is_empty() {
        bail!(
            "patient {raw} has no intake score on any domain's instrument in their latest \
             episode; import the intake assessment, or give the scores with --score"
        );
    }
    let mut urgent: Vec<String> = referrer.into_iter().collect();
    urgent.extend(safety(conn, episode, instruments)?);
    let urgent = (!urgent.is_empty()).then(|| urgent.join("; "));
    let intake = intake(&scores, instruments, domains, urgent)?;
    let groups = Groups {
        age_band: birth_year.map(|y| age_band(i64::from(chrono::Datelike::year(&now)) - y)),
        ..groups
    };
    Ok((intake, groups, Some(patient)))
}

/// Safety items at critical answers in the episode's first and latest administration of
/// each instrument.
fn safety(conn: &Connection, episode: i64, instruments: &[Instrument]) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT a.assessment_id, a.instrument_id, s.seq FROM assessment a
         JOIN session s ON s.session_id = a.session_id
         WHERE s.episode_id = ?1 ORDER BY a.instrument_id, s.seq",
    )?;
    let rows: Vec<(i64, String, i64)> = stmt
        .query_map([episode], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut picked: Vec<&(i64, String, i64)> = Vec::new();
    for inst in instruments {
        let of: Vec<&(i64, String, i64)> = rows.iter().filter(|r| r.1 == inst.id).collect();
        picked.extend(of.first());
        if of.len() > 1 {
            picked.extend(of.last());
        }
    }
    let mut items = conn.prepare_cached(
        "SELECT item_no, value FROM item_response WHERE assessment_id = ?1 ORDER BY item_no",
    )?;
    let mut out = Vec::new();
    for (assessment, id, seq) in picked {
        let Some(inst) = instruments.iter().find(|i| i.id == *id) else {
            continue;
        };
        let answers: Vec<(usize, f64)> = items
            .query_map([assessment], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for s in protocol::trajectory::safety(inst, &answers) {
            out.push(format!(
                "{} item {} answered {} at session {seq}",
                inst.id, s.item, s.value
            ));
        }
    }
    Ok(out)
}

/// Track records by therapist pseudonym, one entry per domain the engine computed.
fn records_by_therapist(derived: &stats::Derived) -> HashMap<String, Vec<DomainRecord>> {
    let mut out: HashMap<String, Vec<DomainRecord>> = HashMap::new();
    for (t, pseudonym) in derived.therapists.iter().enumerate() {
        let records = derived
            .analysis
            .domains
            .iter()
            .map(|d| DomainRecord {
                domain: derived.domains[d.domain].id.clone(),
                record: d.records.iter().find(|(i, _)| *i == t).map(|(_, r)| *r),
            })
            .collect();
        out.insert(pseudonym.clone(), records);
    }
    out
}

/// A `;`-separated profile field as its items, trimmed and lower-case.
pub(crate) fn list(v: Option<String>) -> Vec<String> {
    v.map(|s| {
        s.split(';')
            .map(|x| x.trim().to_lowercase())
            .filter(|x| !x.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// Every therapist with a recorded identity, with profile, capacity and track records.
fn load_therapists(
    conn: &Connection,
    node: &Node,
    records: &HashMap<String, Vec<DomainRecord>>,
    week_ago: &str,
    rotation_since: &str,
) -> Result<Vec<Loaded>> {
    let matching = &node.config().matching;
    let mut stmt = conn.prepare(
        "SELECT t.therapist_id, t.pseudonym, t.gender, t.languages, t.modalities, t.delivery,
                t.availability, t.payers, t.location, t.accepting_new, t.wait_weeks,
                t.new_per_week,
                (SELECT count(*) FROM match_outcome o WHERE o.therapist_id = t.therapist_id
                   AND o.kind = 'chosen' AND o.at >= ?1),
                (SELECT count(*) FROM match_outcome o WHERE o.therapist_id = t.therapist_id
                   AND o.kind = 'chosen' AND o.at >= ?2),
                (SELECT count(*) FROM match_offer f JOIN match_request r USING (request_id)
                   WHERE f.therapist_id = t.therapist_id AND f.rank = 1
                   AND r.created_at >= ?2)
         FROM therapist t WHERE t.unrecorded = 0 ORDER BY t.pseudonym",
    )?;
    let mut rows = stmt.query([week_ago, rotation_since])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let pseudonym: String = r.get(1)?;
        let site: Option<String> = r.get(8)?;
        let delivery = list(r.get(5)?)
            .iter()
            .filter_map(|d| d.parse::<Delivery>().ok())
            .collect();
        let availability = match r.get::<_, Option<String>>(6)? {
            Some(s) => Slot::parse_list(&s)
                .with_context(|| format!("therapist {}: stored availability", short(&pseudonym)))?,
            None => Vec::new(),
        };
        let wait_weeks: Option<f64> = r.get(10)?;
        let profile = Profile {
            id: short(&pseudonym).to_string(),
            gender: r.get::<_, Option<String>>(2)?.map(|g| g.to_lowercase()),
            languages: list(r.get(3)?),
            modalities: list(r.get(4)?),
            delivery,
            availability,
            payers: list(r.get(7)?),
            position: site.as_deref().and_then(|s| matching.position(s)),
            site,
            accepting_new: r.get(9)?,
            wait_days: wait_weeks.map(|w| (w.max(0.0) * 7.0).round() as u32),
            new_per_week: r.get(11)?,
            allocated_this_week: r.get(12)?,
            allocations: r.get(13)?,
            first_offers: r.get(14)?,
        };
        out.push(Loaded {
            id: r.get(0)?,
            candidate: Candidate {
                profile,
                records: records.get(&pseudonym).cloned().unwrap_or_default(),
            },
        });
    }
    Ok(out)
}
