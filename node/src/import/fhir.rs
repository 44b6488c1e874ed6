//! FHIR R4 JSON import: a Bundle, a single resource, a JSON array, or NDJSON (one resource per
//! line), as EHRs and questionnaire apps export them (README.md, "FHIR").
//!
//! Mapping: Practitioner → therapist, Patient → patient, EpisodeOfCare → episode (careManager =
//! primary therapist), Encounter of an episode → session (status `finished` = attended,
//! `cancelled`/`noshow` = not attended; `planned` and `entered-in-error` are skipped), and the
//! scores: QuestionnaireResponses and Observations in the shapes of `fhir/scores.rs`. Scores
//! without an episode get a derived one (`fhir/sessions.rs`). References are resolved by
//! `fhir/bundle.rs`. Resources are keyed by their logical id, which must be the same local
//! identifier a CSV export would use. Fields FHIR has no element for (case mix, matching
//! attributes, session number) travel as extensions under [`EXT_BASE`]. Every record the
//! file holds that is not imported is counted by reason in the summary.

mod bundle;
mod scores;
mod sessions;

use std::collections::{BTreeMap, HashMap};

use self::bundle::{Bundle, Res};
use self::scores::Tally;
use super::fields::{ERASED_SKIPPED, FieldError, FieldResult};
use super::records::{Casemix, EpisodeAttrs, Fields, PatientAttrs, TherapistAttrs};
use super::writer::Writer;
use super::{ImportError, Problems, Progress};
use crate::registry::Registry;

/// Canonical URL prefix of mbc-node's extensions; the field name follows, e.g.
/// `…/StructureDefinition/session-number`.
pub(crate) const EXT_BASE: &str = "https://mbc-node.org/fhir/StructureDefinition/";

/// What a FHIR file gave.
pub(crate) struct Read {
    /// Resources read.
    pub(crate) resources: u64,
    /// Records not imported, by reason.
    pub(crate) skipped: BTreeMap<String, u64>,
}

/// Reads every supported resource into `writer`.
pub(crate) fn import(
    content: &[u8],
    file: &str,
    registry: &Registry,
    writer: &mut Writer<'_>,
    progress: &mut Progress,
    gap_weeks: u32,
) -> Result<Read, Problems> {
    let b = Bundle::parse(content, file)?;
    let fail = |r: &Res| {
        let loc = r.loc();
        move |e: FieldError| ImportError::at(file, loc, e)
    };
    // Every problem of the file, not only the first (each resource is read on its own).
    let mut problems = Problems::new();
    let mut erased = 0u64;
    let mut note = |r: &Res, result: FieldResult<()>| match result {
        Err(e) if e.is_erased() => erased += 1,
        Err(e) => problems.push(fail(r)(e)),
        Ok(()) => {}
    };
    let mut tally = Tally::default();
    for (ty, n) in &b.other {
        *tally
            .0
            .entry(format!("{ty} resources: not outcome data, ignored"))
            .or_default() += n;
    }
    for _ in b.of("Questionnaire") {
        tally.add("Questionnaires (forms, not answers): read to identify responses");
    }
    let mut people = 0u64;
    for r in b.of("Practitioner") {
        note(r, practitioner(r, writer));
        people += 1;
        progress.row(0);
    }
    for r in b.of("Patient") {
        note(r, patient(r, writer));
        people += 1;
        progress.row(0);
    }
    let mut episode_people = HashMap::new();
    for r in b.of("EpisodeOfCare") {
        match episode(&b, r, writer) {
            Ok(who) => {
                episode_people.insert(r.id.clone(), who);
            }
            Err(e) => note(r, Err(e)),
        }
        people += 1;
        progress.row(0);
    }
    let mut found = Vec::new();
    let forms = scores::Forms::of(&b);
    for r in b.of("QuestionnaireResponse") {
        match scores::questionnaire_response(&b, &forms, r, registry, &mut tally) {
            Ok(Some(score)) => found.push(score),
            Ok(None) => {}
            Err(e) => note(r, Err(e)),
        }
    }
    for score in scores::observations(&b, registry, &mut tally) {
        match score {
            Ok(score) => found.push(score),
            Err((r, e)) => note(r, Err(e)),
        }
    }
    let scored = found.len();
    let mut failed = Vec::new();
    let context = sessions::Context {
        episode_people: &episode_people,
        gap_weeks,
    };
    let written = sessions::write(
        &b,
        registry,
        writer,
        found,
        &context,
        &mut tally,
        &mut failed,
    )
    .unwrap_or_else(|stopped| {
        failed.push(stopped);
        0
    });
    for (r, e) in failed {
        note(r, Err(e));
    }
    problems.check()?;
    if erased > 0 {
        *tally.0.entry(ERASED_SKIPPED.to_string()).or_default() += erased;
    }
    for _ in 0..written {
        progress.row(0);
    }
    if scored == 0 && people == 0 && b.of("Encounter").next().is_none() {
        let seen = if tally.0.is_empty() {
            "no resources".to_string()
        } else {
            tally
                .0
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let hint = if b.of("Questionnaire").next().is_some() {
            ". A Questionnaire is the form, not the answers: export the QuestionnaireResponses \
             or score Observations"
        } else {
            ""
        };
        return Err(ImportError::file(
            file,
            format!(
                "holds no score of a registered instrument and no patient, practitioner or \
                 episode ({seen}){hint}"
            ),
        )
        .into());
    }
    Ok(Read {
        resources: b.all.len() as u64 + b.other.iter().map(|(_, n)| n).sum::<u64>(),
        skipped: tally.0,
    })
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
fn episode(b: &Bundle, r: &Res, w: &mut Writer<'_>) -> FieldResult<(String, String)> {
    let patient = b
        .reference(r, "patient", &["patient", "reference"], "Patient")?
        .ok_or_else(|| FieldError::new("patient", "is missing"))?;
    let therapist = b
        .reference(
            r,
            "careManager",
            &["careManager", "reference"],
            "Practitioner",
        )?
        .ok_or_else(|| FieldError::new("careManager", "is missing"))?;
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
