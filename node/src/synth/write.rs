//! Writes a synthetic clinic as import-ready files: the CSV layouts, FHIR R4 NDJSON, and the
//! ground truth. Both formats carry exactly the same content.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;
use protocol::instrument::{GAD7_ITEMS, PHQ9_ITEMS};
use serde_json::{Value, json};

use super::model::{
    Clinic, DOMAINS, Dataset, GENERATOR_VERSION, Measure, Params, Patient, Session,
};
use crate::import::fhir::EXT_BASE;

/// CSV files in import order.
pub(super) fn csv(clinic: &Clinic, dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut file = |name: &str| -> Result<csv::Writer<BufWriter<File>>> {
        names.push(name.to_string());
        Ok(csv::Writer::from_writer(BufWriter::new(File::create(
            dir.join(name),
        )?)))
    };
    let mut w = file("therapists.csv")?;
    let Some(first) = clinic.therapists.first() else {
        return Ok(names);
    };
    w.write_record(std::iter::once("therapist_id").chain(first.attrs.iter().map(|(k, _)| *k)))?;
    for t in &clinic.therapists {
        w.write_record(
            std::iter::once(t.id.as_str()).chain(t.attrs.iter().map(|(_, v)| v.as_str())),
        )?;
    }
    w.flush()?;

    let mut w = file("patients.csv")?;
    let Some(first) = clinic.patients.first() else {
        return Ok(names);
    };
    w.write_record(
        std::iter::once("patient_id").chain(first.demographics.iter().map(|(k, _)| *k)),
    )?;
    for p in &clinic.patients {
        w.write_record(
            std::iter::once(p.id.as_str()).chain(p.demographics.iter().map(|(_, v)| v.as_str())),
        )?;
    }
    w.flush()?;

    let mut w = file("episodes.csv")?;
    w.write_record(
        ["episode_id", "patient_id", "therapist_id"]
            .into_iter()
            .chain(first.episode.iter().map(|(k, _)| *k)),
    )?;
    for p in &clinic.patients {
        let ids = [
            p.episode_id.as_str(),
            p.id.as_str(),
            clinic.therapists[p.therapist].id.as_str(),
        ];
        w.write_record(
            ids.into_iter()
                .chain(p.episode.iter().map(|(_, v)| v.as_str())),
        )?;
    }
    w.flush()?;

    let mut w = file("assessments.csv")?;
    w.write_record([
        "patient_id",
        "therapist_id",
        "episode_id",
        "session",
        "date",
        "kind",
        "instrument",
        "score",
        "items",
    ])?;
    for p in &clinic.patients {
        let therapist = clinic.therapists[p.therapist].id.as_str();
        for s in &p.sessions {
            let (seq, date) = (s.seq.to_string(), s.date.to_string());
            let ids = [
                p.id.as_str(),
                therapist,
                p.episode_id.as_str(),
                &seq,
                &date,
                kind(s),
            ];
            if s.measures.is_empty() {
                w.write_record(ids.iter().copied().chain(["", "", ""]))?;
            }
            for m in &s.measures {
                let score = m.score.map(|v| v.to_string()).unwrap_or_default();
                let items: Vec<String> = m
                    .items
                    .iter()
                    .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
                    .collect();
                let items = items.join(";");
                w.write_record(
                    ids.iter()
                        .copied()
                        .chain([DOMAINS[m.domain].1, &score, &items]),
                )?;
            }
        }
    }
    w.flush()?;
    Ok(names)
}

fn kind(s: &Session) -> &'static str {
    if s.seq == 1 {
        "assessment"
    } else {
        "treatment"
    }
}

/// An mbc-node extension with a string, integer, decimal or boolean value.
fn ext(name: &str, value: &str) -> Value {
    let url = format!("{EXT_BASE}{}", name.replace('_', "-"));
    if let Ok(i) = value.parse::<i64>() {
        json!({"url": url, "valueInteger": i})
    } else if let Ok(d) = value.parse::<f64>() {
        json!({"url": url, "valueDecimal": d})
    } else {
        json!({"url": url, "valueString": value})
    }
}

fn reference(ty: &str, id: &str) -> Value {
    json!({"reference": format!("{ty}/{id}")})
}

/// The clinic as FHIR R4 NDJSON, one resource per line.
pub(super) fn fhir(clinic: &Clinic, dir: &Path) -> Result<String> {
    let name = "fhir.ndjson";
    let mut out = BufWriter::new(File::create(dir.join(name))?);
    let mut emit = |v: Value| -> Result<()> {
        serde_json::to_writer(&mut out, &v)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    for t in &clinic.therapists {
        let mut gender = None;
        let mut extension = Vec::new();
        for (k, v) in &t.attrs {
            match *k {
                "gender" => gender = Some(v.clone()),
                // Booleans travel as valueBoolean.
                "accepting_new" => extension.push(json!({"url": format!("{EXT_BASE}accepting-new"), "valueBoolean": v == "yes"})),
                _ if matches!(*k, "profession" | "grade" | "languages" | "modalities" | "payers" | "location" | "delivery" | "availability") => {
                    extension.push(json!({"url": format!("{EXT_BASE}{}", k.replace('_', "-")), "valueString": v}))
                }
                _ => extension.push(ext(k, v)),
            }
        }
        emit(
            json!({"resourceType": "Practitioner", "id": t.id, "gender": gender, "extension": extension}),
        )?;
    }
    for p in &clinic.patients {
        emit(patient(p))?;
    }
    for p in &clinic.patients {
        emit(episode(p, &clinic.therapists[p.therapist].id))?;
        for s in &p.sessions {
            for v in session(p, &clinic.therapists[p.therapist].id, s) {
                emit(v)?;
            }
        }
    }
    out.flush()?;
    Ok(name.to_string())
}

fn field<'a>(pairs: &'a [(&'static str, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn patient(p: &Patient) -> Value {
    let d = &p.demographics;
    json!({
        "resourceType": "Patient",
        "id": p.id,
        "birthDate": field(d, "birth_year"),
        "gender": field(d, "sex"),
        "extension": [
            {"url": format!("{EXT_BASE}ethnicity-group"), "valueString": field(d, "ethnicity_group")},
            ext("deprivation-decile", field(d, "deprivation_decile")),
        ],
    })
}

fn episode(p: &Patient, therapist: &str) -> Value {
    let e = &p.episode;
    let strings = [
        "end_reason",
        "step",
        "provisional_dx",
        "employment",
        "referral_source",
        "referral_date",
    ];
    let booleans = [
        "prior_treatment",
        "psychotropic_med",
        "long_term_condition",
        "disability",
    ];
    let extension: Vec<Value> = e
        .iter()
        .filter(|(k, v)| !matches!(*k, "start_date" | "end_date") && !v.is_empty())
        .map(|(k, v)| {
            let url = format!("{EXT_BASE}{}", k.replace('_', "-"));
            if strings.contains(k) {
                json!({"url": url, "valueString": v})
            } else if booleans.contains(k) {
                json!({"url": url, "valueBoolean": v == "yes"})
            } else {
                ext(k, v)
            }
        })
        .collect();
    json!({
        "resourceType": "EpisodeOfCare",
        "id": p.episode_id,
        "status": if p.ongoing { "active" } else { "finished" },
        "patient": reference("Patient", &p.id),
        "careManager": reference("Practitioner", therapist),
        "period": if p.ongoing {
            json!({"start": field(e, "start_date")})
        } else {
            json!({"start": field(e, "start_date"), "end": field(e, "end_date")})
        },
        "extension": extension,
    })
}

fn session(p: &Patient, therapist: &str, s: &Session) -> Vec<Value> {
    let encounter = format!("{}-S{:02}", p.episode_id, s.seq);
    let mut out = vec![json!({
        "resourceType": "Encounter",
        "id": encounter,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"text": kind(s)}],
        "subject": reference("Patient", &p.id),
        "episodeOfCare": [reference("EpisodeOfCare", &p.episode_id)],
        "participant": [{"individual": reference("Practitioner", therapist)}],
        "period": {"start": s.date.to_string()},
        "extension": [ext("session-number", &s.seq.to_string())],
    })];
    for m in &s.measures {
        out.extend(measure(p, &encounter, s, m));
    }
    out
}

fn measure(p: &Patient, encounter: &str, s: &Session, m: &Measure) -> Vec<Value> {
    let (panel, total_code, codes): (&str, &str, &[&str]) = match m.domain {
        0 => ("44249-1", "44261-6", &PHQ9_ITEMS),
        _ => ("69737-5", "70274-6", &GAD7_ITEMS),
    };
    let qr_id = format!(
        "{encounter}-{}",
        DOMAINS[m.domain].1.to_lowercase().replace('-', "")
    );
    let items: Vec<Value> = m
        .items
        .iter()
        .zip(codes)
        .filter_map(|(v, code)| {
            let v = (*v)?;
            let answer = protocol::scoring::loinc_answer_code(f64::from(v))?;
            Some(json!({"linkId": code, "answer": [{"valueCoding": {"system": "http://loinc.org", "code": answer}}]}))
        })
        .collect();
    let mut out = vec![json!({
        "resourceType": "QuestionnaireResponse",
        "id": qr_id,
        "status": "completed",
        "questionnaire": format!("http://loinc.org/q/{panel}"),
        "subject": reference("Patient", &p.id),
        "encounter": reference("Encounter", encounter),
        "authored": s.date.to_string(),
        "item": items,
    })];
    // A total Observation only when every item was answered; otherwise the importer prorates.
    if let Some(score) = m.score {
        out.push(json!({
            "resourceType": "Observation",
            "id": format!("{qr_id}-total"),
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": total_code}]},
            "subject": reference("Patient", &p.id),
            "encounter": reference("Encounter", encounter),
            "effectiveDateTime": s.date.to_string(),
            "valueQuantity": {"value": score, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"},
            "derivedFrom": [reference("QuestionnaireResponse", &qr_id)],
        }));
    }
    out
}

/// Every planted effect and label, for tests that recover them.
pub(super) fn truth(params: &Params, data: &Dataset) -> Value {
    let ln8 = 8f64.ln();
    let clinics: Vec<Value> = data
        .clinics
        .iter()
        .map(|c| {
            let therapists: Vec<Value> = c
                .therapists
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    let caseload = c.patients.iter().filter(|p| p.therapist == j).count();
                    let domains: serde_json::Map<String, Value> = (0..2)
                        .map(|d| {
                            (DOMAINS[d].0.to_string(), json!({
                                "instrument": DOMAINS[d].1,
                                "effect_slope": t.effect[d],
                                "effect_points_at_session_8": t.effect[d] * ln8,
                                "planted": t.planted[d],
                            }))
                        })
                        .collect();
                    json!({"id": t.id, "caseload": caseload, "general_effect_slope": t.general, "domains": domains})
                })
                .collect();
            let episodes: serde_json::Map<String, Value> = c
                .patients
                .iter()
                .map(|p| {
                    (p.episode_id.clone(), json!({"class": p.class, "ongoing": p.ongoing}))
                })
                .collect();
            json!({"id": c.id, "name": c.name, "therapists": therapists, "episodes": episodes})
        })
        .collect();
    json!({
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "tau_end_points": params.tau_end(),
        "tau_slope": params.tau_slope(),
        "note": "effects are in slope units per ln(session); negative = better (lower scores); \
                 episodes: each episode's trajectory class (early_responder, late_responder, \
                 non_responder, deteriorator) and whether it was still in treatment at export",
        "clinics": clinics,
    })
}
