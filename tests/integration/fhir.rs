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
