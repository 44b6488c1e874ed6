//! FHIR as third parties publish it (issue 14): every file of `tests/data/fhir-third-party/`
//! (HL7 US Core, the German Medical Informatics Initiative's PROMs module; provenance in its
//! README) imports exactly the scores it holds, or is refused saying why, and the shapes real
//! exports take (no encounter, no episode, `urn:uuid:` and conditional references, linkIds in
//! groups, STU3) are read or refused as documented.

use std::path::{Path, PathBuf};

use integration_tests::{checksum, mbc, open, rows};
use serde_json::{Value, json};

fn corpus(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/fhir-third-party")
        .join(file)
}

/// A fresh node in `cwd/node`.
fn node() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    mbc(tmp.path(), &["init", "--data-dir", "node", "--name", "F"]).ok();
    tmp
}

/// Every stored administration as "instrument date score items=answered", by date.
fn stored(cwd: &Path) -> Vec<String> {
    let conn = open(&cwd.join("node/local.db"));
    rows(
        &conn,
        "SELECT a.instrument_id || ' ' || s.date || ' ' || a.score || ' items=' ||
                (SELECT count(*) FROM item_response i WHERE i.assessment_id = a.assessment_id)
         FROM assessment a JOIN session s USING (session_id) ORDER BY s.date, a.instrument_id",
    )
    .into_iter()
    .map(|r| r.trim_matches('"').to_string())
    .collect()
}

fn import(cwd: &Path, files: &[&Path]) -> integration_tests::Run {
    let mut args = vec!["import", "--data-dir", "node"];
    let names: Vec<String> = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    args.extend(names.iter().map(String::as_str));
    mbc(cwd, &args)
}

/// What one file does on its own: `Ok(stored rows)` or `Err(fragments of the refusal)`.
type Expect = Result<&'static [&'static str], &'static [&'static str]>;

#[test]
fn every_third_party_file_imports_what_it_holds_or_says_why_not() {
    let refused_item: Expect = Err(&["8 items missing", "prorated only when at most 1"]);
    let cases: &[(&str, Expect)] = &[
        // US Core 9.0.0: a response with "/LOINC" linkIds, LOINC answer codes, the total as
        // valueDecimal, no encounter, authored by a practitioner.
        (
            "us-core/QuestionnaireResponse-phq-9-example.json",
            Ok(&["PHQ-9 2022-11-29 12.0 items=9"]),
        ),
        // The total as an Observation whose value is a string "12".
        (
            "us-core/Observation-PHQ9-item-example-44261-6.json",
            Ok(&["PHQ-9 2022-11-29 12.0 items=0"]),
        ),
        // A panel whose members are other files.
        (
            "us-core/Observation-PHQ9-panel-example-44249-1.json",
            Err(&[
                "hasMember items",
                "are not in this file",
                "one Bundle or NDJSON",
            ]),
        ),
        // One item on its own is not an administration.
        (
            "us-core/Observation-PHQ9-item-example-44250-9.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44255-8.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44259-0.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44254-1.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44251-7.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44258-2.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44252-5.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44253-3.json",
            refused_item,
        ),
        (
            "us-core/Observation-PHQ9-item-example-44260-8.json",
            refused_item,
        ),
        // The difficulty question (item 10) is not scored.
        (
            "us-core/Observation-PHQ9-item-example-69722-7.json",
            Err(&[
                "holds no score",
                "code 69722-7",
                "not a registered instrument",
            ]),
        ),
        (
            "us-core/Questionnaire-phq-9-example.json",
            Err(&[
                "holds no score",
                "A Questionnaire is the form, not the answers",
            ]),
        ),
        // MII PROMs: linkIds "PHQ.1"…"PHQ.10" (item 10 unscored), answer codes without a
        // system, a canonical "Questionnaire/mii-qst-pro-phq-9" that is not in the file.
        (
            "mii-proms/QuestionnaireResponse-mii-exa-pro-phq-9-response.json",
            Ok(&["PHQ-9 2023-10-01 27.0 items=9"]),
        ),
        // The total coded with the panel's code (44249-1).
        (
            "mii-proms/Observation-mii-exa-pro-phq-9-observation.json",
            Ok(&["PHQ-9 2023-10-01 27.0 items=0"]),
        ),
        (
            "mii-proms/Questionnaire-mii-qst-pro-phq-9.json",
            Err(&["holds no score", "A Questionnaire is the form"]),
        ),
    ];
    let listed: Vec<&str> = cases.iter().map(|(f, _)| *f).collect();
    for dir in ["us-core", "mii-proms"] {
        for entry in std::fs::read_dir(corpus(dir)).unwrap() {
            let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(listed.contains(&name.as_str()), "{name} has no expectation");
        }
    }
    for (file, expect) in cases {
        let tmp = node();
        let cwd = tmp.path();
        let before = checksum(&cwd.join("node/local.db"));
        let out = import(cwd, &[&corpus(file)]);
        match expect {
            Ok(want) => {
                assert_eq!(out.code, 0, "{file}: {}", out.stderr);
                assert_eq!(stored(cwd), *want, "{file}");
            }
            Err(fragments) => {
                assert_eq!(out.code, 1, "{file} was accepted: {}", out.stdout);
                for f in fragments.iter().chain(&["nothing was imported"]) {
                    assert!(
                        out.stderr.contains(f),
                        "{file}: lacks {f:?}: {}",
                        out.stderr
                    );
                }
                assert_eq!(checksum(&cwd.join("node/local.db")), before, "{file}");
            }
        }
    }
}

/// One NDJSON line per resource of the given corpus files.
fn ndjson(files: &[&str]) -> String {
    files
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(corpus(f)).unwrap()).unwrap();
            format!("{v}\n")
        })
        .collect()
}

/// US Core's whole example set of one PHQ-9 (the response, the panel, its eleven member
/// Observations) as one bulk export: one administration, the three records of it agreeing.
/// MII's response with its Questionnaire: identified by the Questionnaire's LOINC code.
#[test]
fn a_whole_third_party_example_set_is_one_administration() {
    let tmp = node();
    let cwd = tmp.path();
    let mut us_core: Vec<String> = std::fs::read_dir(corpus("us-core"))
        .unwrap()
        .map(|e| format!("us-core/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| !f.contains("/Questionnaire-"))
        .collect();
    us_core.sort();
    let refs: Vec<&str> = us_core.iter().map(String::as_str).collect();
    std::fs::write(cwd.join("us-core.ndjson"), ndjson(&refs)).unwrap();
    let out = import(cwd, &[&cwd.join("us-core.ndjson")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(stored(cwd), ["PHQ-9 2022-11-29 12.0 items=9"]);
    // The unscored difficulty item is counted, not dropped in silence.
    assert!(out.stdout.contains("69722-7"), "{}", out.stdout);

    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": serde_json::from_slice::<Value>(&std::fs::read(corpus("mii-proms/Questionnaire-mii-qst-pro-phq-9.json")).unwrap()).unwrap()},
        {"resource": serde_json::from_slice::<Value>(&std::fs::read(corpus("mii-proms/QuestionnaireResponse-mii-exa-pro-phq-9-response.json")).unwrap()).unwrap()},
    ]});
    std::fs::write(cwd.join("mii.json"), bundle.to_string()).unwrap();
    let out = import(cwd, &[&cwd.join("mii.json")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        stored(cwd),
        [
            "PHQ-9 2022-11-29 12.0 items=9",
            "PHQ-9 2023-10-01 27.0 items=9"
        ]
    );
}

/// An Observation of a GAD-7 total as Synthea writes it into a transaction Bundle: `urn:uuid:`
/// references to entries, an Encounter whose practitioner is a conditional reference by NPI.
fn synthea_gad7(patient: &str, encounter: &str, date: &str, score: u32) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{encounter}-obs"),
        "resource": {
            "resourceType": "Observation", "id": format!("{encounter}-obs"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "70274-6",
                "display": "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"}]},
            "subject": {"reference": format!("urn:uuid:{patient}")},
            "encounter": {"reference": format!("urn:uuid:{encounter}")},
            "effectiveDateTime": format!("{date}T10:44:52-05:00"),
            "valueQuantity": {"value": score, "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}
        },
        "request": {"method": "POST", "url": "Observation"}
    })
}

fn synthea_encounter(patient: &str, id: &str, date: &str, snomed: &str, display: &str) -> Value {
    json!({
        "fullUrl": format!("urn:uuid:{id}"),
        "resource": {
            "resourceType": "Encounter", "id": id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "type": [{"coding": [{"system": "http://snomed.info/sct", "code": snomed, "display": display}], "text": display}],
            "subject": {"reference": format!("urn:uuid:{patient}")},
            "participant": [{"individual": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999962229"}}],
            "period": {"start": format!("{date}T10:44:52-05:00"), "end": format!("{date}T11:14:52-05:00")}
        },
        "request": {"method": "POST", "url": "Encounter"}
    })
}

/// A Synthea-style patient bundle: scores at the given (encounter, date, GAD-7), plus a visit
/// with no score and a Condition.
fn synthea_bundle(scores: &[(&str, &str, u32)]) -> String {
    let patient = "d5582579-7193-4866-5560-a01e723b6552";
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{patient}"),
        "resource": {"resourceType": "Patient", "id": patient, "gender": "male", "birthDate": "1950-10-24"},
        "request": {"method": "POST", "url": "Patient"}
    })];
    for (enc, date, score) in scores {
        entries.push(synthea_encounter(
            patient,
            enc,
            date,
            "390906007",
            "Follow-up encounter (procedure)",
        ));
        entries.push(synthea_gad7(patient, enc, date, *score));
    }
    entries.push(synthea_encounter(
        patient,
        "imm-visit",
        "2019-01-02",
        "410620009",
        "Well child visit (procedure)",
    ));
    entries.push(json!({"fullUrl": "urn:uuid:cond-1", "resource": {"resourceType": "Condition", "id": "cond-1",
        "subject": {"reference": format!("urn:uuid:{patient}")}}}));
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}).to_string()
}

/// (episodes, sessions of the patient's episodes in seq order as "episode:seq:date").
fn episodes(cwd: &Path) -> Vec<String> {
    let conn = open(&cwd.join("node/local.db"));
    rows(
        &conn,
        "SELECT e.episode_id || ':' || s.seq || ':' || s.date || ':' || e.derived
         FROM session s JOIN episode e USING (episode_id) ORDER BY s.date",
    )
    .into_iter()
    .map(|r| r.trim_matches('"').to_string())
    .collect()
}

/// Issue 14, shapes 1–3 and 7: Synthea's shape (no EpisodeOfCare, `urn:uuid:` references, a
/// conditional practitioner reference, SNOMED visit types, a visit with no score). The scores
/// import with their dates into a derived episode; the unscored visit and the Condition are
/// counted, not stored. A later export continues the episode (new sessions numbered after
/// the stored ones), a score more than 12 weeks after the last starts a new one, and a day
/// inside a stored episode that the first export did not have is refused.
#[test]
fn synthea_shaped_bundles_derive_episodes_and_later_exports_continue_them() {
    let tmp = node();
    let cwd = tmp.path();
    let first = [("e1", "2020-03-02", 14), ("e2", "2020-03-16", 11)];
    std::fs::write(cwd.join("a.json"), synthea_bundle(&first)).unwrap();
    let out = import(cwd, &[&cwd.join("a.json")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        stored(cwd),
        [
            "GAD-7 2020-03-02 14.0 items=0",
            "GAD-7 2020-03-16 11.0 items=0"
        ]
    );
    for said in [
        "1 Condition resources: not outcome data, ignored",
        "1 Encounters with no score and no EpisodeOfCare: not therapy sessions, ignored",
    ] {
        assert!(out.stdout.contains(said), "lacks {said:?}: {}", out.stdout);
    }
    assert_eq!(episodes(cwd), ["1:1:2020-03-02:1", "1:2:2020-03-16:1"]);
    // The therapist is the practitioner the conditional reference names (by NPI), not
    // "unknown".
    assert!(!out.stdout.contains("unknown"), "{}", out.stdout);
    let conn = open(&cwd.join("node/local.db"));
    assert_eq!(rows(&conn, "SELECT count(*) FROM therapist"), ["1"]);
    // The next export: the same two days again, one within the gap, one 13 weeks later.
    let second = [
        ("e1", "2020-03-02", 14),
        ("e2", "2020-03-16", 11),
        ("e3", "2020-04-13", 8),
        ("e4", "2020-07-13", 16),
    ];
    std::fs::write(cwd.join("b.json"), synthea_bundle(&second)).unwrap();
    let out = import(cwd, &[&cwd.join("b.json")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        episodes(cwd),
        [
            "1:1:2020-03-02:1",
            "1:2:2020-03-16:1",
            "1:3:2020-04-13:1",
            "2:1:2020-07-13:1"
        ]
    );
    // A day inside the stored first episode that no earlier export had.
    let before = checksum(&cwd.join("node/local.db"));
    let third = [("e5", "2020-03-09", 12)];
    std::fs::write(cwd.join("c.json"), synthea_bundle(&third)).unwrap();
    let out = import(cwd, &[&cwd.join("c.json")]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("already has scores stored from 2020-03-02 to 2020-04-13")
            && out.stderr.contains("2020-03-09"),
        "{}",
        out.stderr
    );
    assert_eq!(checksum(&cwd.join("node/local.db")), before);
}

/// Issue 14, shapes 4–6: a response to a contained Questionnaire (`#gad7`, coded 69737-5)
/// whose items are numbered `1`…`7`, nested in a group as SDC and LHC-Forms write them, with
/// answers weighted by the Questionnaire's `itemWeight`, one given as `valueString`, and the
/// total declared by code: read and checked against the items.
#[test]
fn a_response_to_a_contained_questionnaire_with_nested_numbered_items_is_read() {
    let tmp = node();
    let cwd = tmp.path();
    let options: Vec<Value> = (0..4)
        .map(|w| {
            json!({"valueCoding": {"system": "http://example.org/answers", "code": format!("a{w}")},
                   "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": w}]})
        })
        .collect();
    let mut q_items: Vec<Value> = (1..=7)
        .map(|n| json!({"linkId": n.to_string(), "type": "choice", "answerOption": options}))
        .collect();
    q_items.push(json!({"linkId": "total", "type": "integer",
        "code": [{"system": "http://loinc.org", "code": "70274-6"}]}));
    let answers = [2, 1, 3, 0, 1, 2, 1];
    let mut r_items: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({"linkId": (i + 1).to_string(),
                   "answer": [{"valueCoding": {"system": "http://example.org/answers", "code": format!("a{a}")}}]})
        })
        .collect();
    r_items.push(json!({"linkId": "total", "answer": [{"valueString": "10"}]}));
    let qr = json!({
        "resourceType": "QuestionnaireResponse", "id": "qr-1", "status": "completed",
        "contained": [{"resourceType": "Questionnaire", "id": "gad7", "status": "active",
            "code": [{"system": "http://loinc.org", "code": "69737-5"}],
            "item": [{"linkId": "g", "type": "group", "item": q_items}]}],
        "questionnaire": "#gad7",
        "subject": {"reference": "Patient/P-1"},
        "authored": "2024-05-06T09:00:00+01:00",
        "item": [{"linkId": "g", "item": r_items}]
    });
    std::fs::write(cwd.join("qr.json"), qr.to_string()).unwrap();
    let out = import(cwd, &[&cwd.join("qr.json")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(stored(cwd), ["GAD-7 2024-05-06 10.0 items=7"]);
    assert!(
        out.stdout.contains("assigned to therapist \"unknown\"")
            && out.stdout.contains("text holding a number"),
        "{}",
        out.stdout
    );
    // A total that disagrees with the items is refused.
    let wrong = qr
        .to_string()
        .replace(r#""valueString":"10""#, r#""valueString":"11""#);
    std::fs::write(cwd.join("wrong.json"), wrong).unwrap();
    let out = import(cwd, &[&cwd.join("wrong.json")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("does not equal the sum of the item answers"),
        "{}",
        out.stderr
    );
}

/// Issue 14, shape 9: FHIR STU3 (a QuestionnaireResponse whose `questionnaire` is a Reference,
/// an Observation with `context`) is refused as a whole, saying to export R4; a response to
/// a questionnaire nothing identifies says what was looked at and how to declare it.
#[test]
fn stu3_and_unidentifiable_instruments_are_refused_saying_what_to_do() {
    let tmp = node();
    let cwd = tmp.path();
    let before = checksum(&cwd.join("node/local.db"));
    for (name, resource, fragments) in [
        (
            "stu3-qr.json",
            json!({"resourceType": "QuestionnaireResponse", "id": "x", "status": "completed",
                   "questionnaire": {"reference": "Questionnaire/phq-9"},
                   "subject": {"reference": "Patient/1"}, "authored": "2018-01-01"}),
            &[
                "this is FHIR STU3",
                "QuestionnaireResponse/x",
                "export the data as R4",
            ][..],
        ),
        (
            "stu3-obs.json",
            json!({"resourceType": "Observation", "id": "o", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
                   "context": {"reference": "Encounter/1"}, "valueQuantity": {"value": 3}}),
            &["this is FHIR STU3", "`context`"][..],
        ),
        (
            "mystery.json",
            json!({"resourceType": "QuestionnaireResponse", "id": "m", "status": "completed",
                   "questionnaire": "http://example.org/Questionnaire/wellbeing-check",
                   "subject": {"reference": "Patient/1"}, "authored": "2024-01-01",
                   "item": [{"linkId": "q1", "answer": [{"valueInteger": 2}]}]}),
            &[
                "could not be identified",
                "\"http://example.org/Questionnaire/wellbeing-check\"",
                "1 answered linkIds (q1",
                "aliases",
            ][..],
        ),
    ] {
        std::fs::write(cwd.join(name), resource.to_string()).unwrap();
        let out = import(cwd, &[&cwd.join(name)]);
        assert_eq!(out.code, 1, "{name}: {}", out.stdout);
        for f in fragments {
            assert!(
                out.stderr.contains(f),
                "{name}: lacks {f:?}: {}",
                out.stderr
            );
        }
    }
    assert_eq!(checksum(&cwd.join("node/local.db")), before);
}

#[test]
fn a_clinics_own_observation_codes_are_read_through_its_mapping() {
    let tmp = node();
    let cwd = tmp.path();
    let resource = json!({
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey"
        }]}],
        "code": {"coding": [{"system": "https://ehr.clinic.example/measures", "code": "DEP-TOTAL"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-05-02T10:00:00Z",
        "valueInteger": 14
    });
    std::fs::write(cwd.join("local.json"), resource.to_string()).unwrap();
    let out = import(cwd, &[Path::new("local.json")]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("DEP-TOTAL") && out.stderr.contains("not a registered instrument"),
        "{}",
        out.stderr
    );
    std::fs::write(
        cwd.join("mapping.toml"),
        "[instruments]\n\"DEP-TOTAL\" = \"phq9\"\n",
    )
    .unwrap();
    let out = mbc(
        cwd,
        &[
            "import",
            "--data-dir",
            "node",
            "--mapping",
            "mapping.toml",
            "local.json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(stored(cwd), ["PHQ-9 2024-05-02 14.0 items=0"]);
}

#[test]
fn scores_that_name_no_therapist_count_for_the_clinic_and_give_no_track_record() {
    let tmp = node();
    let cwd = tmp.path();
    let mut entries = Vec::new();
    for p in 0..24 {
        for (day, score) in [("2024-03-04", 18 - p % 5), ("2024-04-01", 9 + p % 6)] {
            let mut o = json!({
                "resourceType": "Observation",
                "id": format!("o{p}-{day}"),
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
                "subject": {"reference": format!("Patient/p{p}")},
                "effectiveDateTime": day,
                "valueInteger": score
            });
            // Two thirds name who gave the questionnaire; the rest name nobody.
            if p % 3 != 0 {
                o["performer"] = json!([{"reference": format!("Practitioner/d{}", p % 2)}]);
            }
            entries.push(json!({"resource": o}));
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
    std::fs::write(cwd.join("b.json"), bundle.to_string()).unwrap();
    let out = import(cwd, &[Path::new("b.json")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("assigned to therapist \"unknown\""),
        "{}",
        out.stdout
    );
    let s = mbc(
        cwd,
        &[
            "stats",
            "--data-dir",
            "node",
            "--json",
            "--min-show",
            "1",
            "--min-classify",
            "1",
        ],
    )
    .ok()
    .json();
    assert_eq!(s["clinic_rates"]["finished_courses"], 24);
    let depression = s["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "depression")
        .unwrap();
    assert_eq!(depression["episodes_with_pre_and_post"], 24);
    let n: Vec<u64> = depression["therapists"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        n,
        [8, 8],
        "only the two named practitioners have track records"
    );
    assert_eq!(s["therapist_rates"].as_array().unwrap().len(), 2);
}
