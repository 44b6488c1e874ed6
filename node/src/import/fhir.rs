//! FHIR R4 JSON import: a Bundle, a single resource, or NDJSON (one resource per line).
//!
//! Mapping (README.md, "FHIR"): Practitioner → therapist, Patient → patient, EpisodeOfCare →
//! episode (careManager = primary therapist), Encounter → session (status `finished` =
//! attended, `cancelled`/`noshow` = not attended; `planned` and `entered-in-error` are
//! skipped), QuestionnaireResponse → item answers (LOINC item codes as linkId, answers as LOINC
//! LA codes, the ordinalValue extension, or integers), Observation with a total-score code
//! (LOINC 44261-6 / 70274-6, SNOMED 720433000 / 445455005) → total. A response and a total
//! Observation for the same encounter and instrument are merged; without an Observation the
//! total is computed from the items. Resources are keyed by their logical id, which must be
//! the same local identifier a CSV export would use. Fields FHIR has no element for (case mix,
//! matching attributes, session number) travel as extensions under [`EXT_BASE`].

use std::collections::HashMap;

use serde_json::Value;

use super::fields::{self, FieldError, FieldResult};
use super::records::{
    AssessmentRecord, Casemix, EpisodeAttrs, Fields, PatientAttrs, SessionKey, SessionRecord,
    TherapistAttrs,
};
use super::writer::Writer;
use super::{ImportError, Location, Progress};
use crate::registry::Registry;

/// Canonical URL prefix of mbc-node's extensions; the field name follows, e.g.
/// `…/StructureDefinition/session-number`.
pub(crate) const EXT_BASE: &str = "https://mbc-node.org/fhir/StructureDefinition/";
const ORDINAL_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/ordinalValue";

/// One resource with where it came from.
struct Res {
    value: Value,
    ty: String,
    id: String,
}

impl Res {
    fn loc(&self) -> Location {
        Location::Resource(format!("{}/{}", self.ty, self.id))
    }

    fn str(&self, path: &[&str]) -> Option<&str> {
        path_get(&self.value, path)?.as_str()
    }

    /// An mbc-node extension's value (valueString, valueInteger, …).
    fn ext(&self, name: &str) -> Option<&Value> {
        self.value
            .get("extension")?
            .as_array()?
            .iter()
            .find_map(|e| {
                let url = e.get("url")?.as_str()?;
                (url.strip_prefix(EXT_BASE) == Some(name))
                    .then(|| value_x(e))
                    .flatten()
            })
    }

    fn ext_str(&self, name: &str) -> Option<String> {
        match self.ext(name)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    fn ext_parse<T>(
        &self,
        name: &str,
        f: impl Fn(&str, &str) -> FieldResult<T>,
    ) -> FieldResult<Option<T>> {
        self.ext_str(name)
            .map(|v| f(&format!("extension {name}"), &v))
            .transpose()
    }
}

fn path_get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter()
        .try_fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(*key),
        })
}

/// The `value[x]` of an extension or answer.
fn value_x(v: &Value) -> Option<&Value> {
    v.as_object()?
        .iter()
        .find_map(|(k, v)| k.starts_with("value").then_some(v))
}

/// Splits the input into resources.
fn resources(content: &[u8], file: &str) -> Result<Vec<Res>, ImportError> {
    let values: Vec<(Value, Option<u64>)> = match serde_json::from_slice::<Value>(content) {
        Ok(Value::Array(items)) => items.into_iter().map(|v| (v, None)).collect(),
        Ok(v) if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") => v
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .map(|r| (r, None))
                    .collect()
            })
            .unwrap_or_default(),
        Ok(v) => vec![(v, None)],
        Err(whole) => {
            // Not one JSON document: try NDJSON, reporting the first bad line.
            let text = std::str::from_utf8(content)
                .map_err(|_| ImportError::file(file, "is not UTF-8 text"))?;
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v = serde_json::from_str(line).map_err(|e| ImportError {
                    file: file.to_string(),
                    location: Some(Location::Line(i as u64 + 1)),
                    field: None,
                    reason: if i == 0 {
                        format!("not valid JSON: {whole}")
                    } else {
                        format!("not valid JSON: {e}")
                    },
                })?;
                out.push((v, Some(i as u64 + 1)));
            }
            out
        }
    };
    values
        .into_iter()
        .map(|(value, line)| {
            let at = |reason: &str| ImportError {
                file: file.to_string(),
                location: line.map(Location::Line),
                field: None,
                reason: reason.to_string(),
            };
            let ty = value
                .get("resourceType")
                .and_then(Value::as_str)
                .ok_or_else(|| at("a resource has no resourceType"))?;
            let id = value
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| at(&format!("a {ty} resource has no id")))?;
            Ok(Res {
                ty: ty.to_string(),
                id: fields::identifier("id", id).map_err(|e| at(&e.reason))?,
                value,
            })
        })
        .collect()
}

/// The id a reference points at: `Patient/123` and `https://host/fhir/Patient/123` give `123`.
fn reference_id(res: &Res, field: &str, path: &[&str], expect: &str) -> FieldResult<String> {
    let reference = res
        .str(path)
        .ok_or_else(|| FieldError::new(field, "is missing"))?;
    let mut parts = reference.rsplit('/');
    let id = parts.next().unwrap_or_default();
    let ty = parts.next().unwrap_or_default();
    if ty != expect {
        return Err(FieldError::new(
            field,
            format!("{reference:?} is not a reference to a {expect}"),
        ));
    }
    fields::identifier(field, id)
}

/// Reads every supported resource into `writer`. Returns the number of resources read.
pub(crate) fn import(
    content: &[u8],
    file: &str,
    registry: &Registry,
    writer: &mut Writer<'_>,
    progress: &mut Progress,
) -> Result<u64, ImportError> {
    let all = resources(content, file)?;
    fn of<'a>(all: &'a [Res], ty: &'static str) -> impl Iterator<Item = &'a Res> {
        all.iter().filter(move |r| r.ty == ty)
    }
    let fail = |r: &Res| {
        let loc = r.loc();
        move |e: FieldError| ImportError::at(file, loc, e)
    };
    for r in of(&all, "Practitioner") {
        practitioner(r, writer).map_err(fail(r))?;
        progress.row(0);
    }
    for r in of(&all, "Patient") {
        patient(r, writer).map_err(fail(r))?;
        progress.row(0);
    }
    let mut episode_people = HashMap::new();
    for r in of(&all, "EpisodeOfCare") {
        let people = episode(r, writer).map_err(fail(r))?;
        episode_people.insert(r.id.clone(), people);
        progress.row(0);
    }
    let sessions =
        encounters(of(&all, "Encounter"), &episode_people).map_err(|(r, e)| fail(r)(e))?;
    for (r, s) in &sessions {
        writer.session(s).map_err(fail(r))?;
        progress.row(0);
    }
    let by_encounter: HashMap<&str, &SessionRecord> =
        sessions.iter().map(|(r, s)| (r.id.as_str(), s)).collect();
    let mut pending: HashMap<(String, String), Pending<'_>> = HashMap::new();
    for r in of(&all, "QuestionnaireResponse") {
        questionnaire_response(r, registry, &mut pending).map_err(fail(r))?;
    }
    for r in of(&all, "Observation") {
        observation(r, registry, &mut pending).map_err(fail(r))?;
    }
    let mut pending: Vec<_> = pending.into_iter().collect();
    pending.sort_by(|a, b| a.0.cmp(&b.0));
    for ((encounter, instrument), p) in pending {
        let r = p.source;
        let session = by_encounter.get(encounter.as_str()).ok_or_else(|| {
            fail(r)(FieldError::new(
                "encounter",
                format!(
                    "Encounter/{encounter} is not in this file (or is planned / entered in error)"
                ),
            ))
        })?;
        // Unwrap safety: `pending` keys are instrument ids taken from the registry.
        let inst = registry.get(&instrument).unwrap();
        let record =
            AssessmentRecord::from_parts(inst, p.score, p.items.as_deref()).map_err(fail(r))?;
        writer.assessment(session, &record).map_err(fail(r))?;
        progress.row(0);
    }
    Ok(all.len() as u64)
}

/// A resource's attributes by CSV column name: the FHIR element where FHIR has one, else the
/// mbc-node extension named after the column (`_` written `-`).
struct ResourceFields<'r> {
    res: &'r Res,
    /// (column, JSON path of the element)
    elements: &'static [(&'static str, &'static [&'static str])],
}

const PRACTITIONER: &[(&str, &[&str])] = &[("gender", &["gender"])];
const PATIENT: &[(&str, &[&str])] = &[("birth_year", &["birthDate"]), ("sex", &["gender"])];
const EPISODE: &[(&str, &[&str])] = &[
    ("start_date", &["period", "start"]),
    ("end_date", &["period", "end"]),
];

impl ResourceFields<'_> {
    fn element(&self, column: &str) -> Option<&'static [&'static str]> {
        self.elements
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, path)| *path)
    }
}

impl Fields for ResourceFields<'_> {
    fn get(&self, column: &str) -> Option<String> {
        let Some(path) = self.element(column) else {
            return self.res.ext_str(&column.replace('_', "-"));
        };
        let value = self.res.str(path)?;
        // A FHIR date may be a full date; the store keeps only the birth year.
        let value = if column == "birth_year" {
            value.get(..4).unwrap_or(value)
        } else {
            value
        };
        Some(value.to_string())
    }

    fn name(&self, column: &str) -> String {
        match self.element(column) {
            Some(path) => path.join("."),
            None => format!("extension {}", column.replace('_', "-")),
        }
    }
}

fn practitioner(r: &Res, w: &mut Writer<'_>) -> FieldResult<()> {
    let f = ResourceFields {
        res: r,
        elements: PRACTITIONER,
    };
    w.upsert_therapist(&r.id, &TherapistAttrs::read(&f)?)
}

fn patient(r: &Res, w: &mut Writer<'_>) -> FieldResult<()> {
    let f = ResourceFields {
        res: r,
        elements: PATIENT,
    };
    w.upsert_patient(&r.id, &PatientAttrs::read(&f)?)
}

/// Stores an EpisodeOfCare; returns its (patient, therapist) raw ids.
fn episode(r: &Res, w: &mut Writer<'_>) -> FieldResult<(String, String)> {
    let patient = reference_id(r, "patient", &["patient", "reference"], "Patient")?;
    let therapist = reference_id(
        r,
        "careManager",
        &["careManager", "reference"],
        "Practitioner",
    )?;
    let f = ResourceFields {
        res: r,
        elements: EPISODE,
    };
    w.upsert_episode(
        &r.id,
        &patient,
        &therapist,
        &EpisodeAttrs::read(&f)?,
        &Casemix::read(&f)?,
    )?;
    Ok((patient, therapist))
}

/// Turns Encounters into sessions. Session numbers come from the `session-number` extension,
/// else from the order of dates within the episode.
fn encounters<'r>(
    list: impl Iterator<Item = &'r Res>,
    episode_people: &HashMap<String, (String, String)>,
) -> Result<Vec<(&'r Res, SessionRecord)>, (&'r Res, FieldError)> {
    let mut out = Vec::new();
    for r in list {
        let status = r.str(&["status"]).unwrap_or("unknown");
        let attended = match status {
            "finished" | "arrived" | "triaged" | "in-progress" | "onleave" => true,
            "cancelled" | "noshow" => false,
            "planned" | "entered-in-error" => continue,
            other => {
                return Err((
                    r,
                    FieldError::new(
                        "status",
                        format!("{other:?} is not a supported Encounter status"),
                    ),
                ));
            }
        };
        let session = (|| {
            let episode = reference_id(
                r,
                "episodeOfCare",
                &["episodeOfCare", "0", "reference"],
                "EpisodeOfCare",
            )?;
            let known = episode_people.get(&episode);
            let patient = match r.str(&["subject", "reference"]) {
                Some(_) => reference_id(r, "subject", &["subject", "reference"], "Patient")?,
                None => known
                    .map(|k| k.0.clone())
                    .ok_or_else(|| FieldError::new("subject", "is missing"))?,
            };
            let therapist = match r.str(&["participant", "0", "individual", "reference"]) {
                Some(_) => reference_id(
                    r,
                    "participant",
                    &["participant", "0", "individual", "reference"],
                    "Practitioner",
                )?,
                None => known.map(|k| k.1.clone()).ok_or_else(|| {
                    FieldError::new(
                        "participant",
                        "is missing and the episode is not in this file",
                    )
                })?,
            };
            let date = fields::date(
                "period.start",
                r.str(&["period", "start"])
                    .ok_or_else(|| FieldError::new("period.start", "is missing"))?,
            )?;
            let seq = r
                .ext_parse("session-number", |f, v| fields::integer(f, v, 1, 10_000))?
                .unwrap_or(0);
            let kind = r
                .str(&["type", "0", "text"])
                .or_else(|| r.str(&["type", "0", "coding", "0", "code"]))
                .map(|k| fields::one_of("type", k, fields::SESSION_KINDS))
                .transpose()?
                .unwrap_or("treatment");
            Ok(SessionRecord {
                key: SessionKey {
                    patient,
                    therapist,
                    episode,
                    seq,
                },
                date,
                attended,
                kind,
            })
        })()
        .map_err(|e| (r, e))?;
        out.push((r, session));
    }
    // Number sessions without an explicit number by date (then id) within their episode.
    let mut order: Vec<usize> = (0..out.len()).filter(|i| out[*i].1.key.seq == 0).collect();
    order.sort_by(|a, b| {
        let (ra, sa) = &out[*a];
        let (rb, sb) = &out[*b];
        (&sa.key.episode, &sa.date, &ra.id).cmp(&(&sb.key.episode, &sb.date, &rb.id))
    });
    let mut counter: HashMap<String, i64> = HashMap::new();
    for i in order {
        let n = counter.entry(out[i].1.key.episode.clone()).or_insert(0);
        *n += 1;
        out[i].1.key.seq = *n;
    }
    Ok(out)
}

/// What is known so far of one (encounter, instrument) administration.
struct Pending<'r> {
    source: &'r Res,
    score: Option<f64>,
    items: Option<Vec<Option<f64>>>,
}

fn pending_entry<'p, 'r>(
    pending: &'p mut HashMap<(String, String), Pending<'r>>,
    encounter: String,
    instrument: &str,
    source: &'r Res,
) -> &'p mut Pending<'r> {
    pending
        .entry((encounter, instrument.to_string()))
        .or_insert(Pending {
            source,
            score: None,
            items: None,
        })
}

fn questionnaire_response<'r>(
    r: &'r Res,
    registry: &Registry,
    pending: &mut HashMap<(String, String), Pending<'r>>,
) -> FieldResult<()> {
    if !matches!(r.str(&["status"]), Some("completed") | Some("amended")) {
        return Ok(()); // in-progress, stopped or entered-in-error: not a valid administration
    }
    let canonical = r
        .str(&["questionnaire"])
        .ok_or_else(|| FieldError::new("questionnaire", "is missing"))?;
    let inst = registry
        .instruments()
        .iter()
        .find(|i| {
            i.loinc_panel
                .as_deref()
                .is_some_and(|p| canonical.contains(p))
        })
        .or_else(|| {
            registry.find(
                canonical
                    .rsplit(['/', '|'])
                    .find(|s| !s.is_empty())
                    .unwrap_or(canonical),
            )
        })
        .ok_or_else(|| {
            FieldError::new(
                "questionnaire",
                format!("{canonical:?} is not a known instrument"),
            )
        })?;
    let encounter = reference_id(r, "encounter", &["encounter", "reference"], "Encounter")?;
    let mut answers = vec![None; inst.items.len()];
    let mut total = None;
    for (n, item) in r
        .value
        .get("item")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("item[{n}]");
        let link = item
            .get("linkId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(answer) = path_get(item, &["answer", "0"]) else {
            continue;
        };
        let value = || {
            answer_value(answer).ok_or_else(|| {
                FieldError::new(
                    &field,
                    "has no numeric answer, LOINC answer code or ordinalValue",
                )
            })
        };
        if let Some(i) = inst.items.iter().position(|it| it.code == link) {
            answers[i] = Some(value()?);
        } else if inst.loinc_total.as_deref() == Some(link) {
            total = Some(value()?);
        }
    }
    let entry = pending_entry(pending, encounter, &inst.id, r);
    if entry.items.is_some() {
        return Err(FieldError::new(
            "encounter",
            format!("a second {} response for the same encounter", inst.id),
        ));
    }
    entry.items = (!inst.items.is_empty()).then_some(answers);
    entry.score = entry.score.or(total);
    entry.source = r;
    Ok(())
}

fn answer_value(answer: &Value) -> Option<f64> {
    if let Some(coding) = answer.get("valueCoding") {
        let ordinal = coding
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|e| {
                (e.get("url")?.as_str()? == ORDINAL_VALUE)
                    .then(|| value_x(e)?.as_f64())
                    .flatten()
            });
        return ordinal
            .or_else(|| protocol::scoring::loinc_answer_value(coding.get("code")?.as_str()?));
    }
    answer
        .get("valueInteger")
        .or_else(|| answer.get("valueDecimal"))?
        .as_f64()
}

fn observation<'r>(
    r: &'r Res,
    registry: &Registry,
    pending: &mut HashMap<(String, String), Pending<'r>>,
) -> FieldResult<()> {
    if !matches!(
        r.str(&["status"]),
        Some("final") | Some("amended") | Some("corrected")
    ) {
        return Ok(());
    }
    let codes = r
        .value
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array);
    let inst = codes.into_iter().flatten().find_map(|c| {
        let code = c.get("code")?.as_str()?;
        registry.instruments().iter().find(|i| {
            i.loinc_total.as_deref() == Some(code) || i.snomed_total.as_deref() == Some(code)
        })
    });
    let Some(inst) = inst else { return Ok(()) }; // not a total score we know: other clinical data
    let score = r
        .value
        .get("valueQuantity")
        .and_then(|q| q.get("value"))
        .or_else(|| r.value.get("valueInteger"))
        .and_then(Value::as_f64)
        .ok_or_else(|| FieldError::new("valueQuantity.value", "is missing or not a number"))?;
    let encounter = reference_id(r, "encounter", &["encounter", "reference"], "Encounter")?;
    let entry = pending_entry(pending, encounter, &inst.id, r);
    if let Some(previous) = entry.score
        && previous != score
    {
        return Err(FieldError::new(
            "valueQuantity.value",
            format!(
                "{score} conflicts with another {} total of {previous} for the same encounter",
                inst.id
            ),
        ));
    }
    entry.score = Some(score);
    entry.source = r;
    Ok(())
}
