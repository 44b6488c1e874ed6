//! Matching as a referrer uses it (issue 17): `match` on a synthetic clinic, from given
//! scores, a stored patient and a request file; the audit it keeps; `match record` and
//! `match report`; bad requests refused with nothing logged; erasure of a patient's requests.

use std::path::Path;

use integration_tests::{Synth, clinic_node, mbc, open, open_rw, rows};
use serde_json::Value;

fn node(cwd: &Path) {
    clinic_node(
        cwd,
        "node",
        "Riverside",
        &Synth::new(3).therapists(12).caseload(50).summary(cwd)["clinics"][0],
    );
}

/// Rows of the audit: "requests/offers/outcomes".
fn logged(cwd: &Path) -> String {
    let conn = open(&cwd.join("node/local.db"));
    rows(
        &conn,
        "SELECT (SELECT count(*) FROM match_request) || '/' || (SELECT count(*) FROM match_offer)
                || '/' || (SELECT count(*) FROM match_outcome)",
    )
    .concat()
    .trim_matches('"')
    .to_string()
}

fn shortlist(cwd: &Path, args: &[&str]) -> Value {
    let mut all = vec!["match", "--data-dir", "node", "--json"];
    all.extend_from_slice(args);
    mbc(cwd, &all).ok().json()
}

#[test]
fn a_referrer_gets_a_logged_shortlist_and_records_the_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd);
    let reveal = "data/clinic-01/therapists.csv";
    let request = [
        "--phq9",
        "18",
        "--gad7",
        "12",
        "--max-wait-days",
        "90",
        "--reveal",
        reveal,
    ];
    let m = shortlist(cwd, &request);
    let offers = m["shortlist"]["offers"].as_array().unwrap();
    assert!((3..=5).contains(&offers.len()), "{m:#}");
    for o in offers {
        let reasons = o["reasons"].as_array().unwrap();
        assert!(!reasons.is_empty() && reasons.len() <= 3);
        assert!(o["therapist"].as_str().unwrap().starts_with("C01-T"));
        // Shown in level order after the clinic's weight, with L0 only as a last resort.
        assert!(o["level"].as_u64().unwrap() <= 3);
    }
    let l0 = offers.iter().filter(|o| o["level"] == 0).count();
    let safe = offers.len() - l0;
    assert!(
        l0 == 0 || safe < 3,
        "an L0 was offered beside {safe} alternatives"
    );
    assert_eq!(m["request_id"], 1);
    assert!(
        m["shortlist"]["trade_off"]
            .as_str()
            .unwrap()
            .contains("level")
    );
    let n = offers.len();
    assert_eq!(logged(cwd), format!("1/{n}/0"));

    // The same request again: equal therapists rotate, so the first place moves on.
    let again = shortlist(cwd, &request);
    let first = |m: &Value| m["shortlist"]["offers"][0]["therapist"].clone();
    let tied = offers[0]["score"] == offers[1]["score"];
    assert!(tied, "the test needs a tie at the top: {m:#}");
    assert_ne!(first(&again), first(&m));

    // Recording: the choice must be on the list, once; declines are kept too.
    let chosen = offers[1]["therapist"].as_str().unwrap();
    let rec = mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            "1",
            "--chose",
            chosen,
            "--by",
            "A. Khan",
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(rec["kind"], "chosen");
    assert_eq!(rec["therapist"], chosen);
    let twice = mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            "1",
            "--chose",
            chosen,
            "--by",
            "x",
        ],
    );
    assert_eq!(twice.code, 1);
    assert!(
        twice.stderr.contains("already has a choice"),
        "{}",
        twice.stderr
    );
    let stranger = mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            "2",
            "--chose",
            "C01-T999",
            "--by",
            "x",
        ],
    );
    assert!(
        stranger
            .stderr
            .contains("C01-T999 was not offered on shortlist 2"),
        "{}",
        stranger.stderr
    );
    mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            "2",
            "--declined",
            "--reason",
            "prefers to wait for evenings",
            "--by",
            "A. Khan",
        ],
    )
    .ok();
    let report = mbc(
        cwd,
        &[
            "match",
            "report",
            "--data-dir",
            "node",
            "--reveal",
            reveal,
            "--json",
        ],
    )
    .ok()
    .json();
    assert_eq!(report["shortlists"], 2);
    assert_eq!(report["allocations"], 1);
    assert_eq!(report["declines"], 1);
    assert_eq!(report["fairness"][0]["therapist"], chosen);
    assert_eq!(report["fairness"][0]["total"], 1);
    // No patient stored: no outcome to link, no groups given.
    assert_eq!(report["without_outcome"], 1);
    let text = mbc(cwd, &["match", "report", "--data-dir", "node"])
        .ok()
        .stdout;
    assert!(
        text.contains("Caseload fairness") && text.contains("Equity monitor"),
        "{text}"
    );
    // The staff ids were shown, never stored: the audit holds pseudonyms.
    let dump = integration_tests::decrypted_dump(&cwd.join("node/local.db"));
    assert!(!integration_tests::contains(&dump, b"C01-T0"));

    // The audit is append-only.
    let conn = open_rw(&cwd.join("node/local.db"));
    for sql in [
        "UPDATE match_request SET urgent = 1",
        "DELETE FROM match_offer",
        "DELETE FROM match_outcome",
    ] {
        let err = conn.execute(sql, []).unwrap_err().to_string();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
}

#[test]
fn bad_requests_are_refused_clearly_and_nothing_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd);
    std::fs::write(
        cwd.join("request.toml"),
        "prefer = [\"language=pl\"]\nwindow = [\"mon-pm\"]\n[scores]\n\"PHQ-9\" = 18\n",
    )
    .unwrap();
    for (args, says) in [
        (
            vec!["--phq9", "18", "--prefer", "star-sign=leo"],
            "unknown preference 'star-sign': use gender, language, modality or delivery",
        ),
        (
            vec!["--phq9", "18", "--window", "mon-night"],
            "window 'mon-night': expected DAY-PART",
        ),
        // Every problem of a request at once.
        (
            vec![
                "--phq9",
                "18",
                "--prefer",
                "star-sign=leo",
                "--window",
                "fri-night",
            ],
            "unknown preference 'star-sign': use gender, language, modality or delivery; \
             window 'fri-night'",
        ),
        (
            vec!["--patient", "MRN-NOBODY"],
            "no patient MRN-NOBODY in this store",
        ),
        (vec!["--phq9", "28"], "PHQ-9 score 28 is outside [0, 27]"),
        (vec!["--score", "BDI=20"], "unknown instrument \"BDI\""),
        (
            vec!["--phq9", "18", "--near", "Mars", "--radius-km", "5"],
            "unknown site \"Mars\"",
        ),
        (vec![], "say whose intake to match on"),
        // A request file with a misspelt key names the file, its line and the key.
        (
            vec!["--request", "request.toml"],
            "request.toml: not a valid request",
        ),
    ] {
        let mut all = vec!["match", "--data-dir", "node"];
        all.extend_from_slice(&args);
        let r = mbc(cwd, &all);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
    }
    let r = mbc(
        cwd,
        &["match", "--data-dir", "node", "--request", "request.toml"],
    );
    assert!(
        r.stderr.contains("line 2") && r.stderr.contains("unknown field `window`"),
        "{}",
        r.stderr
    );
    assert_eq!(logged(cwd), "0/0/0");
    // A node without therapists says so and logs nothing.
    mbc(cwd, &["init", "--data-dir", "empty", "--name", "Empty"]).ok();
    let r = mbc(cwd, &["match", "--data-dir", "empty", "--phq9", "18"]);
    assert!(
        r.stderr.contains("no therapists in this store"),
        "{}",
        r.stderr
    );
    // The corrected file works.
    std::fs::write(
        cwd.join("request.toml"),
        "windows = [\"mon-pm\", \"weekdays-eve\"]\nprefer = [\"language=pl\"]\n\
         max_wait_days = 90\n[scores]\n\"PHQ-9\" = 18\n[groups]\nsex = \"female\"\nage = 29\n",
    )
    .unwrap();
    let m = shortlist(cwd, &["--request", "request.toml"]);
    assert!(
        !m["shortlist"]["offers"].as_array().unwrap().is_empty(),
        "{m:#}"
    );
    let conn = open(&cwd.join("node/local.db"));
    assert_eq!(
        rows(&conn, "SELECT groups FROM match_request"),
        ["\"{\\\"sex\\\":\\\"female\\\",\\\"age_band\\\":\\\"25–34\\\"}\""]
    );
}

#[test]
fn a_stored_patients_intake_urgency_and_erasure() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd);
    // A patient whose PHQ-9 item 9 is never critical, and one whose is.
    let text = std::fs::read_to_string(cwd.join("data/clinic-01/assessments.csv")).unwrap();
    let mut ever = std::collections::BTreeMap::<String, bool>::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f[6] == "PHQ-9" && !f[8].is_empty() {
            let nine = f[8].split(';').nth(8).unwrap_or("0") != "0";
            *ever.entry(f[0].to_string()).or_default() |= nine;
        }
    }
    let calm = ever.iter().find(|(_, v)| !**v).unwrap().0.clone();
    let m = shortlist(cwd, &["--patient", &calm, "--max-wait-days", "90"]);
    assert_eq!(m["patient"], calm.as_str());
    assert_eq!(m["shortlist"]["urgent"], false);
    let domains = m["intake"]["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 2, "PHQ-9 and GAD-7 from the latest episode");
    // The urgent path: only slots within the urgent wait, the trade-off says so.
    let u = shortlist(cwd, &["--patient", &calm, "--urgent"]);
    assert_eq!(u["shortlist"]["urgent"], true);
    assert!(
        u["shortlist"]["trade_off"]
            .as_str()
            .unwrap()
            .starts_with("urgent:")
    );
    for o in u["shortlist"]["offers"].as_array().unwrap() {
        assert!(o["wait_days"].as_u64().unwrap() <= 7, "{u:#}");
    }
    let conn = open(&cwd.join("node/local.db"));
    let stored = rows(
        &conn,
        "SELECT count(*) FROM match_request WHERE patient_id IS NOT NULL",
    );
    assert_eq!(stored, ["2"]);
    drop(conn);
    // Erasing the patient removes their requests and what followed them.
    mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            "1",
            "--declined",
            "--by",
            "A. Khan",
        ],
    )
    .ok();
    mbc(
        cwd,
        &["erase", "--data-dir", "node", "--patient", &calm, "--yes"],
    )
    .ok();
    assert_eq!(logged(cwd), "0/0/0");
}

/// `match report` links an allocation to the stored patient's episode with the chosen
/// therapist and reports its residual (the engine's, on the most elevated domain) under the
/// level allocated, and the patient's groups in the equity monitor.
#[test]
fn the_report_links_an_allocation_to_its_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    node(cwd);
    let reveal = "data/clinic-01/therapists.csv";
    let episodes = std::fs::read_to_string(cwd.join("data/clinic-01/episodes.csv")).unwrap();
    // The first patient whose shortlist offers their own (past) therapist.
    let (request, patient, therapist, level, instrument) = episodes
        .lines()
        .skip(1)
        .take(40)
        .find_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let m = shortlist(
                cwd,
                &[
                    "--patient",
                    f[1],
                    "--max-wait-days",
                    "90",
                    "--reveal",
                    reveal,
                ],
            );
            let offer = m["shortlist"]["offers"]
                .as_array()?
                .iter()
                .find(|o| o["therapist"] == f[2])?
                .clone();
            let top = m["intake"]["domains"]
                .as_array()?
                .iter()
                .find(|d| d["elevated"] == true)?["instrument"]
                .as_str()?
                .to_string();
            Some((
                m["request_id"].as_i64()?,
                f[1].to_string(),
                f[2].to_string(),
                offer["level"].as_u64()?,
                top,
            ))
        })
        .expect("some patient's own therapist is on their shortlist");
    mbc(
        cwd,
        &[
            "match",
            "record",
            "--data-dir",
            "node",
            &request.to_string(),
            "--chose",
            &therapist,
            "--by",
            "A. Khan",
        ],
    )
    .ok();
    let report = mbc(cwd, &["match", "report", "--data-dir", "node", "--json"])
        .ok()
        .json();
    assert_eq!(report["allocations"], 1);
    let by_level = report["by_level"].as_array().unwrap();
    assert_eq!(by_level.len(), 1, "{report:#}");
    assert_eq!(by_level[0]["level"], level);
    assert_eq!(by_level[0]["n"], 1);
    // The same residual the engine stored for the episode.
    let conn = open(&cwd.join("node/local.db"));
    let episode = episodes
        .lines()
        .find(|l| l.split(',').nth(1) == Some(patient.as_str()))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let pseudonym = mbc_node::node::Node::open(&cwd.join("node"))
        .unwrap()
        .pseudonymiser()
        .pseudonym(protocol::pseudonym::IdKind::Episode, &episode);
    let stored: f64 = conn
        .query_row(
            "SELECT o.residual FROM episode_outcome o JOIN episode e USING (episode_id)
             WHERE e.pseudonym = ?1 AND o.instrument_id = ?2",
            [&pseudonym, &instrument],
            |r| r.get(0),
        )
        .unwrap();
    assert!((by_level[0]["mean"].as_f64().unwrap() - stored).abs() < 1e-9);
    // The patient's groups come from the store.
    let attributes: Vec<&str> = report["equity"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["attribute"].as_str().unwrap())
        .collect();
    assert!(attributes.contains(&"ethnicity") && attributes.contains(&"age band"));
}
