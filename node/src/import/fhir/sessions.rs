//! Where each score belongs: a session and an episode.
//!
//! An Encounter with an `episodeOfCare` is a therapy session of that episode (as our own and
//! many clinical exports write them). Real EHR and questionnaire-app exports rarely have
//! either: there a score's session is its patient and day, and episodes are derived — a
//! patient's scored days, in date order, until a gap of more than `[import]
//! episode_gap_weeks`, form one episode (every instrument together, as a referral is measured
//! on both PHQ-9 and GAD-7 at each session). A scored day is recorded as an attended treatment
//! session. Its therapist is the score's performer or author, else the practitioner of the
//! Encounter it names, else `unknown`; an episode's primary therapist is that of its first
//! day. An episode derived by an earlier import is continued by a later export of the same
//! patient; a new day inside its stored span (not the first time that day is seen) is refused
//! rather than renumbering stored sessions. Encounters that no score names and that belong to
//! no episode (a well-child visit, an immunisation) are not sessions; they are counted.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;

use super::super::fields::{self, FieldError, FieldResult};
use super::super::records::{AssessmentRecord, SessionKey, SessionRecord};
use super::super::writer::Writer;
use super::bundle::{Bundle, Res};
use super::scores::{Score, Tally};
use crate::registry::Registry;

/// The therapist of scores that name none.
use super::super::records::UNRECORDED_THERAPIST as UNKNOWN_THERAPIST;

/// An Encounter as the scores see it.
struct Visit<'b> {
    source: &'b Res,
    patient: Option<String>,
    date: Option<String>,
    therapist: Option<String>,
    /// The session it is, when it belongs to an episode.
    session: Option<SessionRecord>,
}

/// Failures are (resource, error).
type Failed<'b> = (&'b Res, FieldError);

/// Turns Encounters into visits; the ones with an episode into sessions, numbered by the
/// `session-number` extension, else by date within the episode.
fn visits<'b>(
    b: &'b Bundle,
    episode_people: &HashMap<String, (String, String)>,
    tally: &mut Tally,
) -> Result<HashMap<&'b str, Visit<'b>>, Failed<'b>> {
    let mut out: HashMap<&str, Visit<'b>> = HashMap::new();
    let mut numbered: Vec<(&Res, SessionRecord)> = Vec::new();
    for r in b.of("Encounter") {
        let status = r.str(&["status"]).unwrap_or("unknown");
        let attended = match status {
            "finished" | "arrived" | "triaged" | "in-progress" | "onleave" => true,
            "cancelled" | "noshow" => false,
            "planned" | "entered-in-error" => {
                tally.add(format!("Encounters with status {status:?}: skipped"));
                continue;
            }
            other => {
                return Err((
                    r,
                    FieldError::new(
                        "status",
                        format!("{other:?} is not an Encounter status of FHIR R4"),
                    ),
                ));
            }
        };
        let visit = (|| {
            let date = r
                .str(&["period", "start"])
                .map(|d| fields::date("period.start", d))
                .transpose()?;
            let therapist = (0..4).find_map(|i| {
                let reference =
                    r.str(&["participant", &i.to_string(), "individual", "reference"])?;
                b.reference_to(reference, "participant.individual", "Practitioner")
                    .ok()
            });
            let subject = b.reference(r, "subject", &["subject", "reference"], "Patient")?;
            let Some(episode) = b.reference(
                r,
                "episodeOfCare",
                &["episodeOfCare", "0", "reference"],
                "EpisodeOfCare",
            )?
            else {
                return Ok(Visit {
                    source: r,
                    patient: subject,
                    date,
                    therapist,
                    session: None,
                });
            };
            let known = episode_people.get(&episode);
            let patient = match subject {
                Some(p) => p,
                None => known
                    .map(|k| k.0.clone())
                    .ok_or_else(|| FieldError::new("subject", "is missing"))?,
            };
            let therapist_id = match &therapist {
                Some(t) => t.clone(),
                None => known.map(|k| k.1.clone()).ok_or_else(|| {
                    FieldError::new(
                        "participant",
                        "is missing and the episode is not in this file",
                    )
                })?,
            };
            let date = date
                .clone()
                .ok_or_else(|| FieldError::new("period.start", "is missing"))?;
            let seq = r
                .ext_parse("session-number", |f, v| fields::integer(f, v, 1, 10_000))?
                .unwrap_or(0);
            let kind = session_kind(r, tally);
            Ok(Visit {
                source: r,
                patient: Some(patient.clone()),
                date: Some(date.clone()),
                therapist,
                session: Some(SessionRecord {
                    key: SessionKey {
                        patient,
                        therapist: therapist_id,
                        episode,
                        seq,
                    },
                    date,
                    attended,
                    kind,
                }),
            })
        })()
        .map_err(|e| (r, e))?;
        if let Some(s) = &visit.session {
            numbered.push((r, s.clone()));
        }
        out.insert(r.id.as_str(), visit);
    }
    // Number sessions without an explicit number by date (then id) within their episode.
    numbered.sort_by(|(ra, a), (rb, b)| {
        (&a.key.episode, &a.date, &ra.id).cmp(&(&b.key.episode, &b.date, &rb.id))
    });
    let mut counter: HashMap<String, i64> = HashMap::new();
    for (r, s) in numbered {
        if s.key.seq != 0 {
            continue;
        }
        let n = counter.entry(s.key.episode.clone()).or_insert(0);
        *n += 1;
        if let Some(Visit {
            session: Some(session),
            ..
        }) = out.get_mut(r.id.as_str())
        {
            session.key.seq = *n;
        }
    }
    Ok(out)
}

/// An Encounter's session kind: `assessment`, `treatment` or `review` when its type says so,
/// else `treatment` (a clinical visit type such as "Office Visit" or a SNOMED procedure code
/// says nothing about the session's role; counted).
fn session_kind(r: &Res, tally: &mut Tally) -> &'static str {
    let given = r
        .str(&["type", "0", "text"])
        .or_else(|| r.str(&["type", "0", "coding", "0", "code"]));
    match given {
        None => "treatment",
        Some(k) => match fields::one_of("type", k, fields::SESSION_KINDS) {
            Ok(kind) => kind,
            Err(_) => {
                tally.add(
                    "Encounters whose type is a visit type (not assessment, treatment or \
                     review): recorded as treatment sessions",
                );
                "treatment"
            }
        },
    }
}

/// Where an administration was taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Place {
    /// A session from an Encounter of an episode.
    Encounter(String),
    /// A patient's day (the episode is derived).
    Day { patient: String, date: String },
}

/// One administration, merged from every resource that records it.
struct Administration<'b> {
    source: &'b Res,
    therapist: Option<String>,
    total: Option<f64>,
    items: Option<Vec<Option<f64>>>,
}

impl<'b> Administration<'b> {
    fn merge(&mut self, s: Score<'b>, instrument: &str) -> FieldResult<()> {
        if let (Some(a), Some(b)) = (self.total, s.total)
            && a != b
        {
            return Err(FieldError::new(
                "value",
                format!(
                    "{b} conflicts with a {instrument} total of {a} for the same patient and day \
                     ({}/{})",
                    self.source.ty, self.source.id
                ),
            ));
        }
        self.total = self.total.or(s.total);
        self.therapist = self.therapist.take().or(s.therapist);
        match (&mut self.items, s.items) {
            (Some(mine), Some(theirs)) => {
                for (i, (m, t)) in mine.iter_mut().zip(theirs).enumerate() {
                    if let (Some(a), Some(b)) = (*m, t)
                        && a != b
                    {
                        return Err(FieldError::new(
                            "item",
                            format!(
                                "{instrument} item {} is {b} here and {a} in {}/{}",
                                i + 1,
                                self.source.ty,
                                self.source.id
                            ),
                        ));
                    }
                    *m = m.or(t);
                }
            }
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

/// What sessions are derived from besides the scores.
pub(crate) struct Context<'a> {
    /// EpisodeOfCare id → (patient, therapist) raw ids.
    pub(crate) episode_people: &'a HashMap<String, (String, String)>,
    /// `[import] episode_gap_weeks`.
    pub(crate) gap_weeks: u32,
}

/// Writes the scores: each into its Encounter's session, or its patient's day in a derived
/// episode. Returns the number of administrations written; what failed of them is in
/// `failed`, and an `Err` is a failure that stopped the rest.
pub(crate) fn write<'b>(
    b: &'b Bundle,
    registry: &Registry,
    writer: &mut Writer<'_>,
    scores: Vec<Score<'b>>,
    context: &Context<'_>,
    tally: &mut Tally,
    failed: &mut Vec<Failed<'b>>,
) -> Result<u64, Failed<'b>> {
    let (episode_people, gap_weeks) = (context.episode_people, context.gap_weeks);
    let visits = visits(b, episode_people, tally)?;
    // Every session of an episode, scored or not (attendance counts, therapist spans).
    let mut ordered: Vec<(&&str, &Visit)> = visits.iter().collect();
    ordered.sort_by_key(|(id, _)| **id);
    for (_, v) in ordered {
        if let Some(session) = &v.session
            && let Err(e) = writer.session(session)
        {
            failed.push((v.source, e));
        }
    }
    let mut named: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut administrations: BTreeMap<(Place, String), Administration<'b>> = BTreeMap::new();
    for mut s in scores {
        let visit = s.encounter.as_deref().and_then(|e| visits.get(e));
        if let Some(e) = &s.encounter {
            named.insert(e.clone());
        }
        let place = match visit {
            Some(Visit {
                session: Some(_), ..
            }) => Place::Encounter(s.encounter.clone().unwrap_or_default()),
            _ => {
                let e = s.encounter.as_deref().unwrap_or_default();
                let missing = |field: &str, what: &str| {
                    let (field, why) = match visit {
                        None => (
                            "encounter",
                            format!(
                                "Encounter/{e} is not in this file, and the score has no \
                                 {field} of its own"
                            ),
                        ),
                        Some(_) => (
                            field,
                            format!("is missing, and Encounter/{e} does not say either"),
                        ),
                    };
                    (
                        s.source,
                        FieldError::new(field, format!("{why}: a score needs {what}")),
                    )
                };
                let date = s.date.clone().or_else(|| visit?.date.clone());
                let date = date.ok_or_else(|| missing("effective[x]", "the date it was taken"))?;
                let patient = s.patient.clone().or_else(|| visit?.patient.clone());
                let patient = patient.ok_or_else(|| missing("subject", "its patient"))?;
                Place::Day { patient, date }
            }
        };
        if s.therapist.is_none() {
            s.therapist = visit.and_then(|v| v.therapist.clone());
        }
        let key = (place, s.instrument.to_string());
        let source = s.source;
        match administrations.get_mut(&key) {
            Some(a) => {
                if let Err(e) = a.merge(s, &key.1) {
                    failed.push((source, e));
                }
            }
            None => {
                administrations.insert(
                    key,
                    Administration {
                        source,
                        therapist: s.therapist,
                        total: s.total,
                        items: s.items,
                    },
                );
            }
        }
    }
    for (id, v) in &visits {
        if v.session.is_none() && !named.contains(*id) {
            tally.add(
                "Encounters with no score and no EpisodeOfCare: not therapy sessions, ignored",
            );
        }
    }
    let (days, erased) = derive_episodes(writer, &administrations, gap_weeks, tally)?;
    let mut written = 0;
    for ((place, instrument), a) in &administrations {
        let fail = |e| (a.source, e);
        let session = match place {
            Place::Encounter(e) => visits.get(e.as_str()).and_then(|v| v.session.clone()),
            Place::Day { patient, .. } if erased.contains(patient) => {
                failed.push(fail(FieldError::erased()));
                continue;
            }
            Place::Day { patient, date } => days.get(&(patient.clone(), date.clone())).cloned(),
        }
        .ok_or_else(|| {
            fail(FieldError::new(
                "encounter",
                "(internal) the session was not derived",
            ))
        })?;
        // Unwrap safety: the instrument id came from the registry.
        let inst = registry.get(instrument).unwrap();
        match AssessmentRecord::from_parts(inst, a.total, a.items.as_deref())
            .and_then(|record| writer.assessment(&session, &record))
        {
            Ok(()) => written += 1,
            Err(e) => failed.push(fail(e)),
        }
    }
    Ok(written)
}

/// A derived episode of one patient.
struct Derived {
    first: String,
    last: String,
    max_seq: i64,
    /// date → session number.
    seqs: HashMap<String, i64>,
    /// Stored by an earlier import.
    stored: bool,
}

/// The session of each scored day, by (patient, date).
type Days = HashMap<(String, String), SessionRecord>;

/// The session of every scored day (patient, date): its derived episode and number; and the
/// patients erased on request, whose days get none.
fn derive_episodes<'b>(
    writer: &mut Writer<'_>,
    administrations: &BTreeMap<(Place, String), Administration<'b>>,
    gap_weeks: u32,
    tally: &mut Tally,
) -> Result<(Days, HashSet<String>), Failed<'b>> {
    // Per patient, per day: a therapist and a resource to blame.
    let mut patients: BTreeMap<&str, BTreeMap<&str, (Option<&str>, &'b Res)>> = BTreeMap::new();
    for ((place, _), a) in administrations {
        if let Place::Day { patient, date } = place {
            let day = patients
                .entry(patient)
                .or_default()
                .entry(date)
                .or_insert((None, a.source));
            day.0 = day.0.or(a.therapist.as_deref());
        }
    }
    let gap = i64::from(gap_weeks) * 7;
    let days_between = |a: &str, b: &str| -> i64 {
        let parse = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        match (parse(a), parse(b)) {
            (Some(a), Some(b)) => (b - a).num_days(),
            _ => 0,
        }
    };
    let mut out = HashMap::new();
    let mut erased = HashSet::new();
    for (patient, days) in patients {
        let Some((_, first_source)) = days.values().next().copied() else {
            continue;
        };
        let stored = match writer.derived_episodes(patient) {
            Ok(stored) => stored,
            // Erased on request: no session is derived, and its scores are skipped.
            Err(e) if e.is_erased() => {
                erased.insert(patient.to_string());
                continue;
            }
            Err(e) => return Err((first_source, e)),
        };
        // Its episodes: stored ones this file may continue, then new ones.
        let mut episodes: Vec<Derived> = stored
            .into_iter()
            .filter_map(|sessions| {
                Some(Derived {
                    first: sessions.iter().map(|s| s.0.clone()).min()?,
                    last: sessions.iter().map(|s| s.0.clone()).max()?,
                    max_seq: sessions.iter().map(|s| s.1).max()?,
                    seqs: sessions.into_iter().collect(),
                    stored: true,
                })
            })
            .collect();
        episodes.sort_by(|a, b| a.first.cmp(&b.first));
        for (date, (therapist, source)) in days {
            let refuse = |what: String| {
                Err((
                    source,
                    FieldError::new(
                        "date",
                        format!(
                            "patient {patient} already has scores stored {what}; a new scored day \
                             {date} there cannot be added (it would renumber stored sessions): \
                             import the complete export into a fresh store, or leave the day out"
                        ),
                    ),
                ))
            };
            // Just before a stored episode: it would have been its first day.
            if let Some(e) = episodes.iter().find(|e| {
                e.stored && date < e.first.as_str() && days_between(date, &e.first) <= gap
            }) {
                return refuse(format!("in an episode starting {}", e.first));
            }
            // The episode holding this day or ending within the gap before it, else a new one.
            let index = match episodes
                .iter()
                .rposition(|e| e.first.as_str() <= date && days_between(&e.last, date) <= gap)
            {
                Some(i) => i,
                None => {
                    episodes.push(Derived {
                        first: date.to_string(),
                        last: date.to_string(),
                        max_seq: 0,
                        seqs: HashMap::new(),
                        stored: false,
                    });
                    episodes.len() - 1
                }
            };
            let therapist = therapist.unwrap_or_else(|| {
                tally.add(format!(
                    "scored days with no therapist (no performer, author or Encounter \
                     participant): assigned to therapist {UNKNOWN_THERAPIST:?}"
                ));
                UNKNOWN_THERAPIST
            });
            let e = &mut episodes[index];
            let raw = format!("derived:{patient}:{}", e.first);
            let seq = match e.seqs.get(date) {
                Some(seq) => *seq,
                None if e.stored && date < e.last.as_str() => {
                    return refuse(format!("from {} to {} in one episode", e.first, e.last));
                }
                None => {
                    e.max_seq += 1;
                    e.seqs.insert(date.to_string(), e.max_seq);
                    e.last = date.to_string();
                    e.max_seq
                }
            };
            if seq == 1 {
                writer
                    .derived_episode(&raw, patient, therapist)
                    .map_err(|e| (source, e))?;
            }
            out.insert(
                (patient.to_string(), date.to_string()),
                SessionRecord {
                    key: SessionKey {
                        patient: patient.to_string(),
                        therapist: therapist.to_string(),
                        episode: raw,
                        seq,
                    },
                    date: date.to_string(),
                    attended: true,
                    kind: "treatment",
                },
            );
        }
    }
    Ok((out, erased))
}
